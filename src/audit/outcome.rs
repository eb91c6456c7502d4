//! [`AuditOutcome`]: the `outcome` member of an audit record.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How an audited step ended; written as its snake_case word (`success`,
/// `rolled_back`, ...), the spelling docs/governance.md lists per event.
///
/// Which words go with which event: `issued` and `published` take
/// `success`/`failure`; `reloaded` the same; `verified` takes `verified`,
/// `unverified`, `unreachable` or `failed`; `rolled_back` takes
/// `rolled_back` or `kept`; `tampered` takes `restoring` or `refused`;
/// `adopted` takes `adopted` or `refused`; `config_loaded` and
/// `config_reloaded` take `success` or `rejected`; `revoked` takes
/// `success` or `failure`; `retired` takes `retired` or `failed`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The step did what it was asked.
    Success,
    /// The step failed (the reason says why).
    Failure,
    /// A probe saw the application use the new generation.
    Verified,
    /// Nothing was checked (`verify = "none"`).
    Unverified,
    /// The probes could not reach the application.
    Unreachable,
    /// The probes saw something else, or files could not be removed on retirement.
    Failed,
    /// The previous generation was put back after a failed handoff.
    RolledBack,
    /// The new generation stays after a failed handoff (`on_failure = "keep"`).
    Kept,
    /// Tampered files are being put back.
    Restoring,
    /// rekey would not act: a replaced directory, or a credential found on
    /// disk that is not adopted.
    Refused,
    /// A credential found on disk was taken over.
    Adopted,
    /// A new config was not applied.
    Rejected,
    /// A credential was decommissioned.
    Retired,
    /// A word this version does not know, read back from a log another
    /// version wrote. Reading keeps it rather than failing: `rekey audit`
    /// and `rekey report` must show every record of an old or newer log,
    /// and the chain is checked on the line's text, not on this type.
    /// rekey never writes it.
    #[serde(untagged)]
    Other(String),
}

impl AuditOutcome {
    /// The JSON spelling, e.g. "rolled_back".
    pub fn as_str(&self) -> &str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Failure => "failure",
            AuditOutcome::Verified => "verified",
            AuditOutcome::Unverified => "unverified",
            AuditOutcome::Unreachable => "unreachable",
            AuditOutcome::Failed => "failed",
            AuditOutcome::RolledBack => "rolled_back",
            AuditOutcome::Kept => "kept",
            AuditOutcome::Restoring => "restoring",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Adopted => "adopted",
            AuditOutcome::Rejected => "rejected",
            AuditOutcome::Retired => "retired",
            AuditOutcome::Other(s) => s,
        }
    }
}

impl fmt::Display for AuditOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
