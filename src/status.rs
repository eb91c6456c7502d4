//! The status snapshot the engine publishes (through a watch channel) and the
//! server reads. Holds no secret by construction: only names, dates,
//! fingerprints and messages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Every credential's status, keyed by name.
pub type Snapshot = BTreeMap<String, CredentialStatus>;

/// Where a credential stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not yet looked at.
    Starting,
    /// Valid and not due.
    Valid,
    /// A rotation is in progress.
    Renewing,
    /// The last attempt failed; retrying later while the current one stays.
    Backoff,
    /// No usable credential is published.
    Missing,
    /// The published credential has expired.
    Expired,
}

/// Whether the application was seen using the current generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handoff {
    /// A probe saw the app serve it.
    Verified,
    /// Published, but nothing checks that the app uses it (`verify = none`).
    Unverified,
    /// The app did not pick it up.
    Failed,
    /// Waiting for the app.
    Pending,
}

/// The last rotation attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRotation {
    /// When it finished, RFC 3339.
    pub at: String,
    /// `success`, `rolled_back` or `failed`.
    pub result: String,
    /// From the start of issuing to commit.
    pub duration_ms: u64,
    /// From publish to the handoff's verdict (reload + verify + settle).
    pub handoff_ms: Option<u64>,
}

/// One credential in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialStatus {
    /// Credential name.
    pub name: String,
    /// `certificate` (API keys come later).
    pub kind: String,
    /// Issuer name.
    pub issuer: String,
    /// Where it stands.
    pub state: State,
    /// Committed generation.
    pub generation: Option<u64>,
    /// `sha256:` of the leaf DER.
    pub fingerprint: Option<String>,
    /// Serial, hex.
    pub serial: Option<String>,
    /// RFC 3339.
    pub not_before: Option<String>,
    /// RFC 3339.
    pub not_after: Option<String>,
    /// RFC 3339; the next attempt when in backoff.
    pub next_renewal: Option<String>,
    /// Handoff state of the current generation.
    pub handoff: Handoff,
    /// The fingerprint the probes last saw the app serve.
    pub served_fingerprint: Option<String>,
    /// The last rotation attempt.
    pub last_rotation: Option<LastRotation>,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
}

impl CredentialStatus {
    /// A credential nobody has looked at yet.
    pub fn starting(name: &str, kind: &str, issuer: &str) -> CredentialStatus {
        CredentialStatus {
            name: name.to_string(),
            kind: kind.to_string(),
            issuer: issuer.to_string(),
            state: State::Starting,
            generation: None,
            fingerprint: None,
            serial: None,
            not_before: None,
            not_after: None,
            next_renewal: None,
            handoff: Handoff::Pending,
            served_fingerprint: None,
            last_rotation: None,
            last_error: None,
            consecutive_failures: 0,
        }
    }
}

/// The answer to a "rotate now" request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateOutcome {
    /// Credential name.
    pub credential: String,
    /// `success` or `failed`.
    pub result: String,
    /// The committed generation afterwards.
    pub generation: Option<u64>,
    /// Its fingerprint.
    pub fingerprint: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}
