//! Why one rotation attempt failed, for every kind of credential.

use std::time::Duration;

use crate::{cert, store};

/// Why one rotation attempt failed. Messages name the credential and say
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// Key generation or CSR building failed.
    #[error("{credential}: {source}")]
    Cert {
        /// Credential name.
        credential: String,
        /// Cause.
        source: cert::CertError,
    },
    /// The issuer failed.
    #[error(transparent)]
    Issuer(#[from] crate::issuer::IssuerError),
    /// The key service failed to mint an API key; nothing was published.
    #[error("{credential}: {source}")]
    Mint {
        /// Credential name.
        credential: String,
        /// Cause.
        source: crate::issuer::keys::KeyError,
    },
    /// The issuer returned something we will not install.
    #[error(
        "{credential}: issuer {issuer} returned an unusable certificate, not installed: {why}"
    )]
    Invalid {
        /// Credential name.
        credential: String,
        /// Issuer name.
        issuer: String,
        /// What was wrong.
        why: cert::Invalid,
    },
    /// The PKCS#12 keystore could not be encoded (password file gone,
    /// unreadable or empty); nothing was published.
    #[error("{credential}: {source}; the old credential stays in place")]
    Keystore {
        /// Credential name.
        credential: String,
        /// Cause.
        source: crate::keystore::KeystoreError,
    },
    /// The committed certificate could not be republished with a new trust
    /// bundle or keystore (it cannot be read back); the old files stay.
    #[error("{credential}: cannot republish the committed certificate with a new trust bundle or keystore: {why}")]
    Refresh {
        /// Credential name.
        credential: String,
        /// Why.
        why: String,
    },
    /// A disk operation failed; the old credential stays in place.
    #[error("{credential}: {source}")]
    Store {
        /// Credential name.
        credential: String,
        /// Cause.
        source: store::StoreError,
    },
    /// The app did not pick up the new generation.
    #[error("{}", handoff_message(credential, *generation, key.as_deref(), why, *rolled_back))]
    Handoff {
        /// Credential name.
        credential: String,
        /// The generation that was handed over.
        generation: u64,
        /// The API key's id (an API key's handoff; `None` for a certificate).
        key: Option<String>,
        /// What the reload or the probes reported.
        why: String,
        /// Whether the previous generation was put back.
        rolled_back: bool,
    },
    /// An exhausted issuance budget held the issuance back: nothing was
    /// asked of the issuer and nothing changed.
    #[error("{message}")]
    Budget {
        /// Names the credential, the budget, when it frees up and what stays.
        message: String,
        /// When to try again (Unix seconds).
        until: u64,
        /// When the budget frees up (Unix seconds).
        frees_at: u64,
    },
}

impl RotateError {
    /// How long the issuer asked to be left alone (`Retry-After`).
    pub(in crate::engine) fn retry_after(&self) -> Option<Duration> {
        match self {
            RotateError::Issuer(e) => e.retry_after(),
            _ => None,
        }
    }

    /// Whether the issuer issued nothing, so the issuance counted against
    /// the budget is given back: it refused or failed (a failed order), or
    /// was never asked. An answer that fails validation was issued and
    /// stays counted.
    pub(in crate::engine) fn issued_nothing(&self) -> bool {
        matches!(
            self,
            RotateError::Issuer(_) | RotateError::Cert { .. } | RotateError::Mint { .. }
        )
    }
}

/// A failed handoff, in the words of its kind: a certificate's generation
/// is rolled back; an API key's new key is also revoked.
fn handoff_message(
    credential: &str,
    generation: u64,
    key: Option<&str>,
    why: &str,
    rolled_back: bool,
) -> String {
    match key {
        None => format!(
            "{credential}: handoff of generation {generation} failed: {why}{}",
            if rolled_back {
                "; rolled back to the previous generation"
            } else {
                ""
            }
        ),
        Some(id) => format!(
            "{credential}: handoff of key {id} (generation {generation}) failed: {why}{}",
            if rolled_back {
                "; the previous key was put back and the new one revoked"
            } else {
                ""
            }
        ),
    }
}
