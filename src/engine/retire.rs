//! Decommissioning: `POST /v1/retire/NAME` (or a config reload dropping a
//! credential with `on_remove = "revoke"`) revokes the credential at its
//! issuer where it can, removes its published files, records `revoked` and
//! `retired` in the audit log, alerts `retired`, and stops the task.
//!
//! Revocation comes first, while the certificate is still at hand; a failed
//! revocation does not keep the files: the operator asked for the
//! credential to go, and a CA that is down must not block that. The outcome
//! then says `revocation = "failed"` and why, so it is never silently lost.

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::task::{Kind, Steps, Task};
use super::{Command, EngineError, Handle};
use crate::alert::{Alert, Event};
use crate::audit::{AuditEvent, AuditOutcome};
use crate::issuer;
use crate::store;

/// What the issuer did about a retired credential; `revocation` in the
/// outcome, the log and the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revocation {
    /// The issuer revoked the credential.
    Revoked,
    /// The issuer (or the key's config) has no way to revoke.
    Unsupported,
    /// The issuer was asked and failed; revoke by hand.
    Failed,
    /// Nothing had been issued, so nothing to revoke.
    Nothing,
}

impl Revocation {
    /// The spelling on the wire, e.g. "unsupported".
    pub const fn as_str(self) -> &'static str {
        match self {
            Revocation::Revoked => "revoked",
            Revocation::Unsupported => "unsupported",
            Revocation::Failed => "failed",
            Revocation::Nothing => "nothing",
        }
    }
}

impl std::fmt::Display for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether retiring removed the credential's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetireResult {
    /// Files removed (revoked or not: see [`Revocation`]); the task stopped.
    Retired,
    /// Files could not be removed; the task still stopped.
    Failed,
}

impl RetireResult {
    /// The spelling on the wire and in the audit log, e.g. "retired".
    pub const fn as_str(self) -> &'static str {
        match self {
            RetireResult::Retired => "retired",
            RetireResult::Failed => "failed",
        }
    }
}

impl std::fmt::Display for RetireResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<RetireResult> for AuditOutcome {
    /// The `retired` record's outcome.
    fn from(r: RetireResult) -> AuditOutcome {
        match r {
            RetireResult::Retired => AuditOutcome::Retired,
            RetireResult::Failed => AuditOutcome::Failed,
        }
    }
}

/// What retiring a credential did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetireOutcome {
    /// Credential name.
    pub credential: String,
    /// `retired`, or `failed` when files could not be removed (the task still stops).
    pub result: RetireResult,
    /// Published files removed.
    pub removed: Vec<String>,
    /// Whether the issuer revoked the credential.
    pub revoked: bool,
    /// `revoked`, `unsupported`, `failed` or `nothing`.
    pub revocation: Revocation,
    /// How it was revoked, why not, or what failed.
    pub detail: String,
}

/// The revocation step's result, in the words the outcome and audit use.
pub(super) struct RevokeStep {
    /// What the issuer did.
    pub(super) revocation: Revocation,
    /// How, why not, or the error.
    pub(super) detail: String,
}

impl RevokeStep {
    /// From an issuer's answer.
    pub(super) fn from_issuer(r: Result<issuer::Revocation, issuer::IssuerError>) -> RevokeStep {
        match r {
            Ok(issuer::Revocation::Revoked(how)) => RevokeStep {
                revocation: Revocation::Revoked,
                detail: format!("revoked at the issuer ({how})"),
            },
            Ok(issuer::Revocation::Unsupported(why)) => RevokeStep {
                revocation: Revocation::Unsupported,
                detail: format!("not revoked: {why}"),
            },
            Err(e) => RevokeStep {
                revocation: Revocation::Failed,
                detail: format!("NOT revoked: {e}"),
            },
        }
    }

    /// The `rekey_issuer_requests_total` result of the step, when the
    /// issuer was asked.
    pub(super) fn metric(&self) -> Option<&'static str> {
        match self.revocation {
            Revocation::Revoked => Some(crate::metrics::SUCCESS),
            Revocation::Failed => Some(crate::metrics::FAILURE),
            Revocation::Unsupported | Revocation::Nothing => None,
        }
    }

    /// The audit outcome of a `revoked` record, when one is due: attempts
    /// that reached the issuer are recorded, "cannot revoke" is not.
    pub(super) fn audit_outcome(&self) -> Option<AuditOutcome> {
        match self.revocation {
            Revocation::Revoked => Some(AuditOutcome::Success),
            Revocation::Failed => Some(AuditOutcome::Failure),
            Revocation::Unsupported | Revocation::Nothing => None,
        }
    }
}

/// Build the outcome from the revocation step and the file removal.
pub(super) fn outcome(
    credential: &str,
    step: &RevokeStep,
    removed: Result<Vec<std::path::PathBuf>, store::StoreError>,
) -> RetireOutcome {
    let (result, removed, detail) = match removed {
        Ok(paths) => (
            RetireResult::Retired,
            paths.iter().map(|p| p.display().to_string()).collect(),
            step.detail.clone(),
        ),
        Err(e) => (
            RetireResult::Failed,
            Vec::new(),
            format!("{e}; remove the files by hand; {}", step.detail),
        ),
    };
    RetireOutcome {
        credential: credential.to_string(),
        result,
        removed,
        revoked: step.revocation == Revocation::Revoked,
        revocation: step.revocation,
        detail,
    }
}

impl Handle {
    /// Retire `name`: its task revokes, removes the files, records and
    /// alerts, then stops.
    pub async fn retire(&self, name: &str) -> Result<RetireOutcome, EngineError> {
        let tx = self
            .sender(name)
            .ok_or_else(|| EngineError::UnknownCredential(name.to_string()))?;
        let (reply, rx) = oneshot::channel();
        tx.request(Command::Retire(reply))
            .map_err(|e| EngineError::refused(name, e))?;
        let outcome = rx
            .await
            .map_err(|_| EngineError::Stopped(name.to_string()))?;
        // Later rotate/retire requests get 404 instead of a stopped task.
        self.senders
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        Ok(outcome)
    }
}

impl<K: Kind> Task<K>
where
    Task<K>: Steps,
{
    /// Revoke, remove the files, record, alert and reply; the caller's loop
    /// then ends.
    pub(crate) async fn retire(&mut self, reply: oneshot::Sender<RetireOutcome>) {
        let committed = self.committed();
        let step = self.revoke_all().await;
        if let Some(result) = step.metric() {
            self.metrics
                .issuer_request(K::issuer_name(&self.cfg), result);
        }
        if let Some(outcome) = step.audit_outcome() {
            let entry = self
                .entry(AuditEvent::Revoked, outcome)
                .reason(step.detail.clone());
            self.audit.record(entry);
        }
        // What else the kind still owes its issuer goes too: nothing will be
        // left to do it once this task stops.
        let rest = self.revoke_rest().await;
        let removed = self.remove_files();
        let mut out = outcome(self.name(), &step, removed);
        out.detail.push_str(&rest);
        let entry = self
            .entry(AuditEvent::Retired, out.result.into())
            .reason(format!(
                "removed {}; {}",
                out.removed.join(", "),
                out.detail
            ));
        // Gone from the status before the `retired` record and alert: whoever
        // sees those finds the credential gone.
        self.forget();
        let name = self.name().to_string();
        self.status_tx.send_modify(|s| {
            s.remove(&name);
        });
        tracing::warn!(result = %out.result, revocation = %out.revocation, detail = %out.detail, event = "retired", "{}", self.words().retired);
        self.audit.record(entry);
        let mut a = Alert::new(
            Event::Retired,
            self.name(),
            K::LABEL,
            format!(
                "retired: files removed ({}); {}",
                out.removed.join(", "),
                out.detail
            ),
        );
        a.generation = committed.as_ref().map(|c| c.0);
        a.fingerprint = committed.map(|c| c.1);
        self.alerter.raise(a);
        let _ = reply.send(out);
    }
}
