//! Adoption at start: a valid pair already published is adopted instead of
//! reissued, when the issuer vouches for it; anything else found there is
//! said (WARN, audit record) and reissued.

use std::time::SystemTime;

use super::{Current, Task};
use crate::audit::{AuditEvent, AuditOutcome, Entry};
use crate::engine::disk::{self, DiskState};

impl Task {
    /// A valid pair already published (by an earlier install, or a state dir
    /// that was lost) is adopted instead of reissued: reissuing on every
    /// restart burns CA rate limits. No journal vouches for it, so it must
    /// chain to the issuer and pass `[policy]` ([`disk::vouch`]); anything
    /// else found there is reissued, with a WARN and an audit record saying why.
    pub(super) fn adopt(&mut self) {
        let now = SystemTime::now();
        let (state, material) = disk::assess(&self.cfg, now);
        let (info, material) = match (state, material) {
            (DiskState::Valid(info), Some(material)) => (info, material),
            (DiskState::Missing(_), _) => {
                tracing::info!("no credential on disk yet; will issue");
                return;
            }
            (state, _) => return self.refuse_found(&state.describe(), None),
        };
        let vouched = self
            .issuer
            .trust_anchors()
            .map_err(|e| format!("its issuer's trust anchors cannot be loaded: {e}"))
            .and_then(|anchors| disk::vouch(&self.cfg, &material, &info, &anchors, now));
        if let Err(why) = vouched {
            return self.refuse_found(&why, Some(&info.fingerprint));
        }
        let mut material = material;
        if let Err(e) = self.encode(&mut material) {
            tracing::error!(error = %e, "cannot encode the keystore of the credential found on disk; will issue");
            return;
        }
        let g = self.journal.allocate();
        if let Err(e) = self.store.stage(g, &material) {
            tracing::error!(error = %e, "cannot stage the adopted credential; will issue");
            return;
        }
        self.journal.commit(g, fastrand::f64());
        self.save_and_prune();
        tracing::info!(generation = g, fingerprint = %info.fingerprint, event = "adopted", "adopted the valid credential found on disk");
        self.audit.gen(
            &self.cfg,
            AuditEvent::Adopted,
            g,
            &info.fingerprint,
            AuditOutcome::Adopted,
            Some("found on disk, valid, chains to the issuer"),
        );
        self.own.current = Some(Current::new(g, *info, &self.targets(), &material));
    }

    /// What was found on disk is not adopted: say why (WARN, audit record);
    /// the task then issues a new credential.
    fn refuse_found(&self, why: &str, fingerprint: Option<&str>) {
        tracing::warn!(fingerprint, reason = %why, event = "not_adopted", "the credential found on disk is not adopted; issuing a new one");
        let mut e = Entry::cert(&self.cfg, AuditEvent::Adopted, AuditOutcome::Refused)
            .reason(format!("{why}; issuing a new one"));
        e.fingerprint = fingerprint.map(str::to_string);
        self.audit.record(e);
    }
}
