//! The status snapshot the engine publishes (through a watch channel) and the
//! server reads. Holds no secret by construction: only names, dates,
//! fingerprints and messages.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use crate::timestamp::Timestamp;

/// Every credential's status, keyed by name.
///
/// Each entry is boxed: inserted in name order, a map's nodes stay about
/// half full, and a half-empty node of 400-byte entries wastes more than a
/// half-empty node of pointers (10,000 credentials: about 2 MiB).
pub type Snapshot = BTreeMap<String, Box<CredentialStatus>>;

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
    /// A watched certificate is inside its `alert_before` window (watches only).
    Expiring,
    /// A watched file or endpoint could not be read (watches only).
    Unreadable,
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
    /// rekey does not hand this one over: a watched certificate.
    Unmanaged,
}

/// How a rotation ended; the `result` of `/status`'s `last_rotation`, of a
/// rotate request's answer and of `rekey_rotations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotateResult {
    /// The new generation is committed.
    Success,
    /// The handoff failed and the previous generation was put back.
    RolledBack,
    /// Issuing or handing over failed; nothing was put back.
    Failed,
    /// An exhausted issuance budget held the issuance back: nothing was
    /// asked of the issuer and nothing changed (rotate requests only).
    Refused,
}

impl RotateResult {
    /// The spelling on the wire and in metrics, e.g. "rolled_back".
    pub const fn as_str(self) -> &'static str {
        match self {
            RotateResult::Success => "success",
            RotateResult::RolledBack => "rolled_back",
            RotateResult::Failed => "failed",
            RotateResult::Refused => "refused",
        }
    }
}

impl std::fmt::Display for RotateResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last rotation attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRotation {
    /// When it finished.
    pub at: Timestamp,
    /// `success`, `rolled_back` or `failed`.
    pub result: RotateResult,
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
    /// `certificate`, `api_key` or `watch` (borrowed from the kind's label:
    /// no allocation per credential).
    pub kind: std::borrow::Cow<'static, str>,
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
    /// Start of the certificate's validity.
    pub not_before: Option<Timestamp>,
    /// End of the certificate's validity.
    pub not_after: Option<Timestamp>,
    /// The next renewal; the next attempt when in backoff.
    pub next_renewal: Option<Timestamp>,
    /// Handoff state of the current generation.
    pub handoff: Handoff,
    /// The fingerprint the probes last saw the app serve.
    pub served_fingerprint: Option<String>,
    /// The last rotation attempt.
    pub last_rotation: Option<LastRotation>,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Why the handoff is not verified yet, when something said why: the
    /// reload's error (a pid file naming no process, a signal not
    /// permitted, a process /proc hides) or what the probes saw. Cleared
    /// once the handoff is verified.
    #[serde(default)]
    pub handoff_reason: Option<String>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The owning team (`team` in the config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Free-form labels from the config.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// When the current run of failures began (absent while none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Timestamp>,
    /// What a watch (`kind = "watch"`) found; absent for credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<Box<WatchStatus>>,
    /// Why the current certificate lives shorter than its `lifetime`, when
    /// its CA ends sooner (the local CA near its end, before its rollover
    /// could complete); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortened_by_ca: Option<String>,
    /// The issuance budget: how much of it is used, and whether it holds
    /// issuance back. Boxed: most of 10,000 idle credentials keep a pointer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuance_budget: Option<Box<BudgetStatus>>,
    /// A generation issued and staged whose handoff failed: it is handed over
    /// again with backoff, without asking the issuer for another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<Box<StagedStatus>>,
}

/// The `kind` of a watched certificate in `/status` (never a credential:
/// it does not count for readiness).
pub const KIND_WATCH: &str = "watch";

/// The watch part of a `/status` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStatus {
    /// `file` or `endpoint`.
    pub source: String,
    /// The watched file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The probed `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The SNI sent to the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// The protocol negotiated before the endpoint's handshake (`starttls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starttls: Option<String>,
    /// `alert_before` in words.
    pub alert_before: String,
    /// When the first certificate enters its `alert_before` window.
    pub alert_at: Option<Timestamp>,
    /// The last read or probe (successful or not).
    pub last_checked: Option<Timestamp>,
    /// The next planned read or probe.
    pub next_check: Option<Timestamp>,
    /// Every certificate found, in file (or chain) order.
    pub certificates: Vec<WatchedCert>,
}

/// One certificate of a watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchedCert {
    /// Subject DN.
    pub subject: String,
    /// Subject common name, when it has one.
    pub subject_cn: Option<String>,
    /// Issuer DN.
    pub issuer: String,
    /// Issuer common name, when it has one.
    pub issuer_cn: Option<String>,
    /// Serial, hex.
    pub serial: String,
    /// `sha256:` of the DER.
    pub fingerprint: String,
    /// Start of its validity.
    pub not_before: Timestamp,
    /// End of its validity.
    pub not_after: Timestamp,
    /// A CA certificate.
    pub is_ca: bool,
}

/// A credential's issuance budget in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// The credential's own budget, e.g. `5/7d`, or `unlimited`.
    pub limit: String,
    /// Issuances counted in its window.
    pub used: u32,
    /// Issuances it still allows in its window (absent when unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
    /// Set while an exhausted budget holds issuance back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exhausted: Option<BudgetExhausted>,
}

/// Why and until when issuance is held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetExhausted {
    /// The budget that is used up, as configured, e.g.
    /// `max_issuances = "5/7d" of issuer.dev`.
    pub budget: String,
    /// When it allows the next issuance.
    pub frees_at: Timestamp,
    /// When issuance is tried again: when the budget frees up, or
    /// earlier, when the current credential enters the last tenth of its
    /// lifetime (the budget then gives way).
    pub retry_at: Timestamp,
}

/// A staged generation waiting for its handoff, in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedStatus {
    /// Its generation number.
    pub generation: u64,
    /// `sha256:` of its leaf.
    pub fingerprint: String,
    /// End of its validity.
    pub not_after: Timestamp,
    /// Failed handoffs so far.
    pub attempts: u32,
}

impl CredentialStatus {
    /// A credential nobody has looked at yet.
    pub fn starting(name: &str, kind: &'static str, issuer: &str) -> CredentialStatus {
        CredentialStatus {
            name: name.to_string(),
            kind: kind.into(),
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
            handoff_reason: None,
            consecutive_failures: 0,
            team: None,
            labels: BTreeMap::new(),
            failing_since: None,
            watch: None,
            shortened_by_ca: None,
            issuance_budget: None,
            staged: None,
        }
    }

    /// This status with the team and labels of `cfg`.
    pub fn owned_by(mut self, cfg: &crate::config::CertificateConfig) -> CredentialStatus {
        self.team = cfg.team.clone();
        self.labels = cfg.labels.clone();
        self
    }
}

/// The answer to a "rotate now" request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateOutcome {
    /// Credential name.
    pub credential: String,
    /// `success`, `failed`, `rolled_back`, or `refused` (an exhausted
    /// issuance budget held the issuance back; nothing was asked of the
    /// issuer and nothing changed).
    pub result: RotateResult,
    /// The committed generation afterwards.
    pub generation: Option<u64>,
    /// Its fingerprint.
    pub fingerprint: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// With `refused`, when the budget allows the next issuance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
}

/// `failing_since` of a credential's next status: kept from its previous
/// status while failures go on, `now` when they start, none without failures.
pub fn failing_since(
    prev: Option<&CredentialStatus>,
    failures: u32,
    now: SystemTime,
) -> Option<Timestamp> {
    if failures == 0 {
        return None;
    }
    prev.and_then(|p| p.failing_since)
        .or_else(|| Some(Timestamp::new(now)))
}

/// One reason a credential makes the daemon not ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotReady {
    /// Credential name.
    pub credential: String,
    /// Why, in words.
    pub reason: String,
}

/// How strict readiness is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strictness {
    /// The app can use a valid credential (`/readyz`, `rekey status`): a
    /// failed handoff that left a valid credential in place is not a reason.
    #[default]
    Usable,
    /// Also the last handoff did not fail (`/readyz?strict`, `rekey status
    /// --strict`): for a canary or a deploy gate, never for a load balancer.
    HandoffOk,
}

/// The readiness rule shared by `/readyz` and `rekey status`'s exit code:
/// every credential has a valid published credential the app can use.
///
/// A credential is ready when its state is `valid`, `renewing` or `backoff`
/// (a retry in backoff still serves the old, valid credential) and its
/// certificate has not expired at `now`. A handoff that failed and was
/// rolled back leaves a valid credential the app still serves, so it is
/// ready: pulling every replica out of its Service over one bad reload
/// would turn that into an outage (the failure shows in `/status`, metrics
/// and alerts). A pending handoff is ready too: the app loads the published
/// files when it starts. [`Strictness::HandoffOk`] adds "the last handoff did
/// not fail". An empty list means ready; otherwise every reason is listed,
/// several per credential when several things are wrong.
///
/// Watches (`kind = "watch"`) never count: an expired certificate rekey only
/// watches must not pull the application out of its Service. They alert
/// instead.
pub fn readiness<'a>(
    credentials: impl IntoIterator<Item = &'a CredentialStatus>,
    now: SystemTime,
) -> Vec<NotReady> {
    readiness_with(credentials, now, Strictness::Usable)
}

/// [`readiness`] at a chosen [`Strictness`].
pub fn readiness_with<'a>(
    credentials: impl IntoIterator<Item = &'a CredentialStatus>,
    now: SystemTime,
    strictness: Strictness,
) -> Vec<NotReady> {
    let mut out = Vec::new();
    for c in credentials.into_iter().filter(|c| c.kind != KIND_WATCH) {
        let mut why = |reason: String| {
            out.push(NotReady {
                credential: c.name.clone(),
                reason,
            })
        };
        match c.state {
            State::Valid | State::Renewing | State::Backoff => {
                match c.not_after {
                    Some(t) if t.time() > now => {}
                    Some(t) => why(format!("certificate expired at {t}")),
                    // Renewing for the first time: nothing is published yet.
                    None => why(format!(
                        "state is {} but no certificate is published yet",
                        c.state.as_str()
                    )),
                }
            }
            State::Starting => why("not loaded yet (starting)".into()),
            State::Missing => why(match &c.last_error {
                Some(e) => format!("no usable credential is published; last error: {e}"),
                None => "no usable credential is published".into(),
            }),
            State::Expired => why(format!(
                "certificate expired at {}",
                c.not_after
                    .map_or_else(|| "-".to_string(), |t| t.to_string())
            )),
            // Watch states; a credential never has them.
            State::Expiring => {}
            State::Unreadable => why("unreadable".into()),
        }
        if strictness == Strictness::HandoffOk && c.handoff == Handoff::Failed {
            why(format!(
                "handoff failed: the application did not pick up generation {}{}",
                c.generation
                    .map_or_else(|| "-".to_string(), |g| g.to_string()),
                c.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
    }
    out
}

impl State {
    /// The spelling used in `/status`, e.g. "backoff".
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Valid => "valid",
            State::Renewing => "renewing",
            State::Backoff => "backoff",
            State::Missing => "missing",
            State::Expired => "expired",
            State::Expiring => "expiring",
            State::Unreadable => "unreadable",
        }
    }
}

impl Handoff {
    /// The spelling used in `/status`, e.g. "unverified".
    pub fn as_str(&self) -> &'static str {
        match self {
            Handoff::Verified => "verified",
            Handoff::Unverified => "unverified",
            Handoff::Failed => "failed",
            Handoff::Pending => "pending",
            Handoff::Unmanaged => "unmanaged",
        }
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
