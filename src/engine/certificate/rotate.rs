//! A certificate's rotation steps: issue (key made here, only the CSR sent,
//! the answer validated) → stage → publish → hand over → commit, or roll
//! back. Each step is journaled before it starts; the shared driver
//! (`engine/task/`) runs them in order.

use std::time::{Duration, SystemTime};

use super::{Current, Next, Task};
use crate::engine::journal::{Pending, Step};
use crate::engine::task::{RotateError, Steps};
use crate::handoff::{Generation, Verdict};
use crate::schedule;
use crate::status::Handoff;
use crate::store::{self, Expected, Material};

impl Task {
    pub(super) fn set_pending(&mut self, generation: u64, step: Step) -> Result<(), RotateError> {
        self.journal.pending = Some(Pending { generation, step });
        self.save_strict()
    }

    /// Hand over again the generation an earlier rotation staged, when it
    /// waits and is still the one to install (see staged.rs); with
    /// `held_back` (the budget refused a new issuance) whenever it is usable.
    pub(super) async fn retry_staged_step(
        &mut self,
        reissue: bool,
        held_back: bool,
    ) -> Option<Result<(), RotateError>> {
        if reissue {
            return None;
        }
        let now = SystemTime::now();
        let st = self.usable_staged(now)?;
        if held_back || self.retry_staged_now(&st, now) {
            return Box::pin(self.hand_over_staged(&st)).await;
        }
        None
    }

    /// Issue generation `g` and validate it; recorded in the audit log.
    pub(super) async fn issue_step(&mut self, g: u64) -> Result<Next, RotateError> {
        let (material, info, shortened) = match self.request(g).await {
            Ok(x) => x,
            Err(e) => {
                self.audit.issue_failed(&self.cfg, &e);
                return Err(e);
            }
        };
        self.own.issuer_failures = 0;
        self.own.issued_at = Some(SystemTime::now());
        self.audit.issued(&self.cfg, g, &info.fingerprint);
        let mut current = Current::new(g, info, &self.targets(), &material);
        current.shortened = shortened;
        Ok(Next {
            current,
            material: Some(material),
        })
    }

    /// Encode the keystore and write the generation into the state dir.
    pub(super) fn stage_step(&mut self, next: &mut Next) -> Result<(), RotateError> {
        let g = next.current.generation;
        let Some(material) = next.material.as_mut() else {
            return Ok(());
        };
        if let Err(source) = self.encode(material) {
            self.journal.pending = None;
            self.save_and_prune();
            return Err(RotateError::Keystore {
                credential: self.cfg.name.clone(),
                source,
            });
        }
        // The keystore is part of what the targets must hold.
        next.current.expected = Expected::of(&self.targets(), material);
        self.set_pending(g, Step::Staging)?;
        failpoint!("stage.before");
        if let Err(e) = self.store.stage(g, material) {
            self.journal.pending = None;
            self.save_and_prune();
            return Err(self.store_err(e));
        }
        failpoint!("stage.after");
        // The new generation supersedes an older staged one (pruned once
        // this one is committed or staged in turn).
        self.journal.staged = None;
        Ok(())
    }

    /// The committed generation's material, read back before the new one is
    /// published, while the published files can still stand in for a lost
    /// state dir copy: it is what a failed publish or handoff restores, and
    /// its certificate is what `replaced` retires.
    pub(super) fn previous_step(&mut self) -> Option<Material> {
        let cur = self.own.current.as_ref()?;
        match self.committed_material(cur) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!(error = %e, "the committed generation cannot be read back; it cannot be restored if this handoff fails");
                None
            }
        }
    }

    /// Publish `next` (its material is dropped, and so zeroized, once
    /// published); on failure put `previous` back and keep `next` staged.
    pub(super) fn publish_step(
        &mut self,
        next: &mut Next,
        previous: &Option<Material>,
    ) -> Result<(), RotateError> {
        let g = next.current.generation;
        self.set_pending(g, Step::Publishing)?;
        failpoint!("publish.before");
        let result = match next.material.take() {
            Some(m) => store::publish(&self.targets(), self.cfg.swap, &m, &self.pins),
            None => Ok(()),
        };
        if let Err(e) = result {
            self.tampered_dir(&e);
            // Put the committed generation back in case some files had flipped.
            if let Some(prev) = previous {
                if let Err(e2) = store::publish(&self.targets(), self.cfg.swap, prev, &self.pins) {
                    tracing::error!(error = %e2, "cannot restore the committed generation after a failed publish");
                }
            }
            self.audit
                .publish_failed(&self.cfg, g, &next.current.info.fingerprint, &e);
            // Staged and validated: the retry publishes it again rather
            // than asking the issuer for another.
            self.keep_staged(&next.current);
            self.journal.pending = None;
            self.save_and_prune();
            return Err(self.store_err(e));
        }
        failpoint!("publish.after");
        self.audit
            .published(&self.cfg, g, &next.current.info.fingerprint);
        self.set_pending(g, Step::Handoff)
    }

    /// The app serves `next` (`Verified`), nothing can tell (`Unverified`),
    /// or it is the first generation and the app is not serving yet
    /// (`Unreachable`): commit it.
    pub(super) async fn commit_step(
        &mut self,
        next: Next,
        gen: &Generation,
        verdict: Verdict,
        previous: Option<Material>,
    ) {
        let next = next.current;
        if let Verdict::Unreachable(why) = verdict {
            self.own.handoff_reason.get_or_insert(why);
            self.handoff = Handoff::Pending;
            self.own.probe_at =
                Some(SystemTime::now() + super::MAX_PROBE_PAUSE.min(Duration::from_millis(100)));
            self.commit_next(next);
            // The app reads the files when it starts.
            self.report_trust();
            return;
        }
        let was_failed = self.handoff == Handoff::Failed || self.failures > 0;
        let previous_fp = self
            .own
            .current
            .as_ref()
            .map(|c| c.info.fingerprint.clone());
        let verified = verdict == Verdict::Verified;
        self.handoff = if verified {
            Handoff::Verified
        } else {
            Handoff::Unverified
        };
        self.own.served = verified.then(|| gen.fingerprint.clone());
        self.own.probe_at = None;
        self.commit_next(next);
        if was_failed {
            self.raise_recovered(gen);
        }
        // A retried handoff of the committed generation itself
        // (`on_failure = "keep"`) replaces nothing.
        let replaced = previous
            .map(|mut m| std::mem::take(&mut m.cert_pem))
            .filter(|_| previous_fp.as_ref() != Some(&gen.fingerprint));
        if let (true, Some(old)) = (verified, replaced) {
            // The issuer may retire it now (ACME revoke_replaced).
            failpoint!("revoke.before");
            if let Err(e) = self.issuer.replaced(&self.cfg.name, &old).await {
                tracing::warn!(error = %e, "could not retire the replaced certificate");
            }
        }
        failpoint!("revoke.after");
        self.report_trust();
        self.refresh_window().await;
    }

    /// Make `next` the committed generation.
    pub(super) fn commit_next(&mut self, next: Current) {
        failpoint!("commit.before");
        self.journal.commit(next.generation, fastrand::f64());
        self.journal.shortened_by_ca = next.shortened.clone();
        // Every committed generation carries a keystore that fits (encoded
        // at issuance, adoption or refresh).
        self.own.keystore_owed = false;
        self.save_and_prune();
        self.own.current = Some(next);
        self.own.rotate_to_repair = false;
        failpoint!("commit.after");
    }

    /// The pause after `e`: with a staged generation waiting, its handoff is
    /// retried quickly ([`schedule::handoff_backoff`]: the issuer is not
    /// asked); after an issuer error, by the issuer backoff that grows into
    /// hours for long lifetimes and honours `Retry-After`.
    pub(super) fn backoff_step(&mut self, e: &RotateError) -> Duration {
        let staged = self.journal.staged.as_ref().map(|s| s.attempts);
        match (e, staged) {
            (RotateError::Handoff { .. } | RotateError::Store { .. }, Some(attempts)) => {
                schedule::handoff_backoff(
                    attempts.saturating_sub(1),
                    self.lifetime(),
                    fastrand::f64(),
                )
            }
            _ => {
                let d = crate::engine::task::issuer_backoff(
                    self.own.issuer_failures,
                    self.lifetime(),
                    e,
                );
                self.own.issuer_failures += 1;
                d
            }
        }
    }
}
