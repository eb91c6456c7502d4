//! A new generation with the committed certificate and key, no issuance:
//! when the issuer's trust bundle changed (the local CA rolls over) and the
//! credential has a `ca` file, or when its PKCS#12 keystore no longer fits
//! (added to the config, or the password file changed). It is staged,
//! published, reloaded, verified, committed or rolled back like any
//! rotation; generations stay immutable. A completed handoff of a bundle is
//! reported to the issuer, so it knows when every app trusts a new root.

use std::sync::Arc;
use std::time::SystemTime;

use super::{Current, Task};
use crate::config::FileKind;
use crate::engine::journal::Step;
use crate::engine::task::RotateError;
use crate::issuer::TrustBundle;

impl Task {
    /// The bundle the issuer wants in this credential's `ca` file, when it
    /// manages one and the file is configured.
    pub(in crate::engine) fn wanted_bundle(&self) -> Option<Arc<TrustBundle>> {
        self.trust.as_ref().map(|rx| rx.borrow().clone())
    }

    /// Whether the committed generation's `ca` file lacks that bundle.
    pub(in crate::engine) fn trust_owed(&self) -> bool {
        match (self.wanted_bundle(), &self.own.current) {
            (Some(b), Some(cur)) => cur.expected.digest(FileKind::Ca) != Some(&b.digest),
            _ => false,
        }
    }

    /// Only a refresh is due, not the certificate: hand the committed one
    /// over again instead of issuing (a failing app must not turn a bundle
    /// change into a stream of new certificates). A refresh whose handoff
    /// failed is staged like any generation, and the rotation retries it.
    pub(in crate::engine) fn refresh_only(&self, now: SystemTime) -> bool {
        (self.trust_owed() || self.own.keystore_owed)
            && self.journal.staged.is_none()
            && !self.own.rotate_to_repair
            && self.natural_due(now) > now
    }

    /// Tell the issuer the committed generation's `ca` file holds the bundle
    /// it wants and the handoff completed.
    pub(in crate::engine) fn report_trust(&self) {
        if let (Some(b), Some(cur)) = (self.wanted_bundle(), &self.own.current) {
            if cur.expected.digest(FileKind::Ca) == Some(&b.digest) {
                tracing::debug!("the trust bundle is delivered");
                self.issuer.trust_delivered(&self.cfg.name, &b.digest);
            }
        }
    }

    /// Publish the committed certificate and key as a new generation, with
    /// the wanted bundle and a keystore that fits, and hand it over.
    pub(in crate::engine) async fn try_refresh(&mut self) -> Result<(), RotateError> {
        let Some(cur) = &self.own.current else {
            return Ok(());
        };
        let mut material = self
            .committed_material(cur)
            .map_err(|e| RotateError::Refresh {
                credential: self.cfg.name.clone(),
                why: e.to_string(),
            })?;
        let (info, shortened, from) = (cur.info.clone(), cur.shortened.clone(), cur.generation);
        let bundle = self.wanted_bundle();
        let new_bundle = bundle
            .as_ref()
            .is_some_and(|b| material.ca_pem.as_deref() != Some(b.pem.as_str()));
        if let Some(b) = bundle {
            material.ca_pem = Some(b.pem.clone());
        }
        let encoded = self
            .encode(&mut material)
            .map_err(|source| RotateError::Keystore {
                credential: self.cfg.name.clone(),
                source,
            })?;
        if !new_bundle && !encoded {
            self.own.keystore_owed = false;
            return Ok(());
        }
        let g = self.journal.allocate();
        self.set_pending(g, Step::Staging)?;
        if let Err(e) = self.store.stage(g, &material) {
            self.journal.pending = None;
            self.save_and_prune();
            return Err(self.store_err(e));
        }
        let mut next = Current::new(g, info, &self.targets(), &material);
        next.shortened = shortened;
        if new_bundle {
            tracing::info!(
                generation = g,
                from,
                event = "trust_refresh",
                "publishing the issuer's new trust bundle with the committed certificate"
            );
        }
        if encoded {
            tracing::info!(generation = g, from, event = "keystore_encoded", "encoded the PKCS#12 keystore again for the password configured now; publishing it with the committed certificate");
        }
        self.hand_over(super::Next {
            current: next,
            material: Some(material),
        })
        .await
    }
}
