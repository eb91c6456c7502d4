//! Retiring an API key: revoke the committed key (and any old key still in
//! its overlap) through the key issuer's revoke path; the shared retirement
//! (`engine/retire.rs`) then removes the key file and the staged secret,
//! records `revoked` and `retired`, and alerts `retired`.

use std::time::SystemTime;

use super::upkeep::{at, unix};
use super::KeyTask;
use crate::engine::retire::{Revocation, RevokeStep};

impl KeyTask {
    /// Revoke the committed key, when there is one and a revoke is configured.
    pub(super) async fn revoke_committed(&mut self) -> RevokeStep {
        let name = &self.cfg.name;
        let Some(k) = self.journal.committed.clone() else {
            return RevokeStep {
                revocation: Revocation::Nothing,
                detail: "not revoked: no key had been minted".to_string(),
            };
        };
        if self.cfg.revoke.is_none() {
            return RevokeStep {
                revocation: Revocation::Unsupported,
                detail: format!(
                    "not revoked: api_key \"{name}\" has no revoke configured; key {} stays valid until {} (add revoke = {{ ... }} or revoke it at issuer \"{}\" by hand)",
                    k.id,
                    crate::timestamp::rfc3339(at(k.expires_at)),
                    self.cfg.issuer
                ),
            };
        }
        match self.issuer.revoke(&k.id, k.lease.as_deref()).await {
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
        }
    }

    /// Revoke the older keys still in their overlap now; what could not be
    /// revoked, for the outcome's detail.
    pub(super) async fn revoke_owed(&mut self) -> String {
        if self.journal.revokes.is_empty() {
            return String::new();
        }
        let now = unix(SystemTime::now());
        for r in &mut self.journal.revokes {
            r.at = now;
        }
        self.revoke_due(SystemTime::now()).await;
        let left: Vec<String> = self.journal.revokes.iter().map(|r| r.id.clone()).collect();
        if left.is_empty() {
            return String::new();
        }
        format!(
            "; older key(s) {} could not be revoked either: revoke them by hand",
            left.join(", ")
        )
    }
}
