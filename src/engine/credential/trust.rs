//! Trust bundles an issuer rolls over (the local CA's): a credential with a
//! `ca` file publishes each new bundle with its committed certificate as a
//! generation of its own (staged, published, reloaded, verified, committed
//! or rolled back like any rotation, no issuance), and reports the
//! completed handoff so the issuer knows when every app trusts a new root.

use std::sync::Arc;
use std::time::SystemTime;

use super::{Current, Task};
use crate::config::FileKind;
use crate::engine::journal::Step;
use crate::engine::rotate::RotateError;
use crate::issuer::TrustBundle;

impl Task {
    /// The bundle the issuer wants in this credential's `ca` file, when it
    /// manages one and the file is configured.
    pub(in crate::engine) fn wanted_bundle(&self) -> Option<Arc<TrustBundle>> {
        self.trust.as_ref().map(|rx| rx.borrow().clone())
    }

    /// Whether the committed generation's `ca` file lacks that bundle.
    pub(in crate::engine) fn trust_owed(&self) -> bool {
        match (self.wanted_bundle(), &self.current) {
            (Some(b), Some(cur)) => cur.expected.digest(FileKind::Ca) != Some(&b.digest),
            _ => false,
        }
    }

    /// Only the bundle is due, not the certificate: hand the committed one
    /// over again with the new bundle instead of issuing (a failing app
    /// must not turn a bundle change into a stream of new certificates).
    pub(in crate::engine) fn trust_only(&self, now: SystemTime) -> bool {
        self.trust_owed() && !self.rotate_to_repair && self.natural_due(now) > now
    }

    /// Tell the issuer the committed generation's `ca` file holds the bundle
    /// it wants and the handoff completed.
    pub(in crate::engine) fn report_trust(&self) {
        if let (Some(b), Some(cur)) = (self.wanted_bundle(), &self.current) {
            if cur.expected.digest(FileKind::Ca) == Some(&b.digest) {
                tracing::debug!(credential = %self.cfg.name, "the trust bundle is delivered");
                self.issuer.trust_delivered(&self.cfg.name, &b.digest);
            }
        }
    }

    /// Publish the wanted bundle with the committed certificate and key as
    /// a new generation, and hand it over.
    pub(in crate::engine) async fn try_refresh_trust(&mut self) -> Result<(), RotateError> {
        let (Some(bundle), Some(cur)) = (self.wanted_bundle(), &self.current) else {
            return Ok(());
        };
        let mut material = self
            .committed_material(cur)
            .map_err(|e| RotateError::Trust {
                credential: self.cfg.name.clone(),
                why: e.to_string(),
            })?;
        material.ca_pem = Some(bundle.pem.clone());
        let (info, shortened, from) = (cur.info.clone(), cur.shortened.clone(), cur.generation);
        let g = self.journal.allocate();
        self.set_pending(g, Step::Staging)?;
        if let Err(e) = self.store.stage(g, &material) {
            self.journal.pending = None;
            self.save_and_prune();
            return Err(self.store_err(e));
        }
        let mut next = Current::new(g, info, &self.targets(), &material);
        next.shortened = shortened;
        tracing::info!(credential = %self.cfg.name, generation = g, from, event = "trust_refresh", "publishing the issuer's new trust bundle with the committed certificate");
        self.hand_over(next, material).await
    }
}
