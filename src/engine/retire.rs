//! Decommissioning: `POST /v1/retire/NAME` stops a credential, removes its
//! published files, records `retired` in the audit log and alerts `retired`.

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::credential::Task;
use super::{Command, EngineError, Handle};
use crate::alert::{Alert, Event};
use crate::audit::AuditEvent;
use crate::store;

/// What retiring a credential did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetireOutcome {
    /// Credential name.
    pub credential: String,
    /// `retired`, or `failed` when files could not be removed (the task still stops).
    pub result: String,
    /// Published files removed.
    pub removed: Vec<String>,
    /// Whether the issuer revoked the certificate; false says it could not.
    pub revoked: bool,
    /// Why not revoked, or what failed.
    pub detail: String,
}

impl Handle {
    /// Retire `name`: its task removes the files, records and alerts, then stops.
    pub async fn retire(&self, name: &str) -> Result<RetireOutcome, EngineError> {
        let tx = self
            .sender(name)
            .ok_or_else(|| EngineError::UnknownCredential(name.to_string()))?;
        let (reply, rx) = oneshot::channel();
        tx.send(Command::Retire(reply))
            .await
            .map_err(|_| EngineError::Stopped(name.to_string()))?;
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

impl Task {
    /// Remove the files, record, alert and reply; the caller's loop then ends.
    pub(super) async fn retire(&mut self, reply: oneshot::Sender<RetireOutcome>) {
        let generation = self.current.as_ref().map(|c| c.generation);
        let fingerprint = self.current.as_ref().map(|c| c.info.fingerprint.clone());
        // No issuer exposes revocation yet: say so rather than drop it silently.
        let not_revoked = format!(
            "not revoked: issuer \"{}\" has no revoke path in rekey yet; the certificate stays valid until it expires",
            self.cfg.issuer
        );
        let (result, removed, detail) = match store::unpublish(&self.targets, self.cfg.swap) {
            Ok(paths) => (
                "retired",
                paths.iter().map(|p| p.display().to_string()).collect(),
                not_revoked,
            ),
            Err(e) => ("failed", Vec::new(), format!("{e}; {not_revoked}")),
        };
        tracing::warn!(credential = %self.cfg.name, result, detail = %detail, event = "retired", "credential retired");
        let mut entry = crate::audit::Entry::cert(&self.cfg, AuditEvent::Retired, result)
            .reason(format!("removed {}; {detail}", removed.join(", ")));
        if let (Some(g), Some(fp)) = (generation, &fingerprint) {
            entry = entry.generation(g, fp);
        }
        self.audit.record(entry);
        let mut a = Alert::new(
            Event::Retired,
            &self.cfg.name,
            "certificate",
            format!("retired: files removed ({}); {detail}", removed.join(", ")),
        );
        a.generation = generation;
        a.fingerprint = fingerprint;
        self.alerter.raise(a);
        let name = self.cfg.name.clone();
        self.status_tx.send_modify(|s| {
            s.remove(&name);
        });
        let _ = reply.send(RetireOutcome {
            credential: name,
            result: result.to_string(),
            removed,
            revoked: false,
            detail,
        });
    }
}
