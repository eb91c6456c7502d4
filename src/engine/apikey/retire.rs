//! Retiring an API key: revoke the committed key (and any old key still in
//! its overlap) through the key issuer's revoke path, remove the key file
//! and the staged secret, record `revoked` and `retired`, alert `retired`.

use std::time::SystemTime;

use tokio::sync::oneshot;

use super::task::{at, unix, KeyTask};
use crate::alert::{Alert, Event};
use crate::audit::{AuditEvent, Entry};
use crate::engine::retire::{outcome, RetireOutcome, Revocation, RevokeStep};

impl KeyTask {
    /// Revoke, remove the file, record, alert and reply; the caller's loop then ends.
    pub(super) async fn retire(&mut self, reply: oneshot::Sender<RetireOutcome>) {
        let name = self.cfg.name.clone();
        let committed = self.journal.committed.clone();
        let step = match &committed {
            None => RevokeStep {
                revocation: Revocation::Nothing,
                detail: "not revoked: no key had been minted".to_string(),
            },
            Some(k) if self.cfg.revoke.is_none() => RevokeStep {
                revocation: Revocation::Unsupported,
                detail: format!(
                    "not revoked: api_key \"{name}\" has no revoke configured; key {} stays valid until {} (add revoke = {{ ... }} or revoke it at issuer \"{}\" by hand)",
                    k.id,
                    crate::timestamp::rfc3339(at(k.expires_at)),
                    self.cfg.issuer
                ),
            },
            Some(k) => match self.issuer.revoke(&k.id, k.lease.as_deref()).await {
                Ok(()) => RevokeStep {
                    revocation: Revocation::Revoked,
                    detail: format!("revoked key {} at issuer \"{}\"", k.id, self.cfg.issuer),
                },
                Err(e) => RevokeStep {
                    revocation: Revocation::Failed,
                    detail: format!(
                        "NOT revoked: {e}; key {} stays valid until {}: revoke it at issuer \"{}\" by hand",
                        k.id,
                        crate::timestamp::rfc3339(at(k.expires_at)),
                        self.cfg.issuer
                    ),
                },
            },
        };
        if let Some(result) = step.metric() {
            self.metrics.issuer_request(self.issuer.name(), result);
        }
        let key_id = committed.as_ref().map(|k| k.id.as_str());
        if let Some(o) = step.audit_outcome() {
            let mut e =
                Entry::key(&self.cfg, AuditEvent::Revoked, o, key_id).reason(step.detail.clone());
            e.fingerprint = committed.as_ref().map(|k| k.hash.clone());
            e.generation = committed.as_ref().map(|k| k.generation);
            self.audit.record(e);
        }
        let mut detail_extra = String::new();
        // Old keys still in their overlap go too: nothing will be left to
        // revoke them once this task stops.
        if !self.journal.revokes.is_empty() {
            let now = unix(SystemTime::now());
            for r in &mut self.journal.revokes {
                r.at = now;
            }
            self.revoke_due(SystemTime::now()).await;
            let left: Vec<String> = self.journal.revokes.iter().map(|r| r.id.clone()).collect();
            if !left.is_empty() {
                detail_extra = format!(
                    "; older key(s) {} could not be revoked either: revoke them by hand",
                    left.join(", ")
                );
            }
        }
        let removed = match crate::store::remove_file(&self.cfg.file, &self.pins) {
            Ok(true) => Ok(vec![self.cfg.file.clone()]),
            Ok(false) => Ok(Vec::new()),
            Err(e) => {
                self.tampered_dir(&e);
                Err(e)
            }
        };
        let mut out = outcome(&name, &step, removed);
        out.detail.push_str(&detail_extra);
        if let Some(k) = &committed {
            // The staged copy of a decommissioned secret is no use to anyone.
            self.unstage(k.generation);
            self.journal.committed = None;
            self.save();
        }
        tracing::warn!(result = %out.result, revocation = %out.revocation, detail = %out.detail, event = "retired", "api key retired");
        let mut e = Entry::key(&self.cfg, AuditEvent::Retired, out.result.into(), key_id).reason(
            format!("removed {}; {}", out.removed.join(", "), out.detail),
        );
        e.fingerprint = committed.as_ref().map(|k| k.hash.clone());
        e.generation = committed.as_ref().map(|k| k.generation);
        self.audit.record(e);
        let mut a = Alert::new(
            Event::Retired,
            &name,
            "api_key",
            format!(
                "retired: files removed ({}); {}",
                out.removed.join(", "),
                out.detail
            ),
        );
        a.generation = committed.as_ref().map(|k| k.generation);
        a.fingerprint = committed.as_ref().map(|k| k.hash.clone());
        self.alerter.raise(a);
        self.status_tx.send_modify(|s| {
            s.remove(&name);
        });
        let _ = reply.send(out);
    }
}
