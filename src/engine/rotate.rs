//! The rotation itself: issue → validate → stage → publish → reload →
//! verify → commit, or roll back. Each step is journaled before it starts.

use std::time::{Duration, Instant, SystemTime};

use super::credential::{Current, Task};
use super::group::Purpose;
use super::journal::{Pending, Step};
use crate::alert::{Alert, Event};
use crate::cert;
use crate::handoff::{self, Verdict};
use crate::schedule;
use crate::status::{Handoff, LastRotation, RotateOutcome, RotateResult};
use crate::store::{self, Material};
use crate::timestamp::Timestamp;

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
    #[error("{credential}: handoff of generation {generation} failed: {why}{}", if *rolled_back { "; rolled back to the previous generation" } else { "" })]
    Handoff {
        /// Credential name.
        credential: String,
        /// The generation that was handed over.
        generation: u64,
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
    fn retry_after(&self) -> Option<Duration> {
        match self {
            RotateError::Issuer(e) => e.retry_after(),
            _ => None,
        }
    }

    /// Whether the issuer issued nothing, so the issuance counted against
    /// the budget is given back: it refused or failed (a failed order), or
    /// was never asked. An answer that fails validation was issued and
    /// stays counted.
    fn issued_nothing(&self) -> bool {
        matches!(self, RotateError::Issuer(_) | RotateError::Cert { .. })
    }
}

impl Task {
    pub(super) fn store_err(&self, source: store::StoreError) -> RotateError {
        RotateError::Store {
            credential: self.cfg.name.clone(),
            source,
        }
    }

    /// Rotate now (bounded concurrency), record the outcome, update status.
    /// `reissue`: issue anew even when a staged generation waits for its
    /// handoff; `operator`: asked for (`rekey rotate`), so an exhausted
    /// budget refuses it and leaves the credential's state as it was.
    pub(super) async fn rotate(&mut self, reissue: bool, operator: bool) -> RotateOutcome {
        self.run_rotation(false, reissue, operator).await
    }

    /// Republish the committed certificate with a new trust bundle or
    /// keystore (refresh.rs), recorded like a rotation.
    pub(super) async fn rotate_refresh(&mut self) -> RotateOutcome {
        self.run_rotation(true, false, false).await
    }

    async fn run_rotation(
        &mut self,
        refresh_only: bool,
        reissue: bool,
        operator: bool,
    ) -> RotateOutcome {
        self.permit = self.permits.clone().acquire_owned().await.ok();
        self.renewing = true;
        self.publish_status();
        let started = Instant::now();
        self.last_handoff = None;
        let result = if refresh_only {
            self.try_refresh().await
        } else {
            self.try_rotate(reissue).await
        };
        if let (true, Err(e @ RotateError::Budget { frees_at, .. })) = (operator, &result) {
            // Refused: nothing was tried, so nothing counts as a failure.
            self.renewing = false;
            self.publish_status();
            self.permit = None;
            let mut o = self.outcome(RotateResult::Refused, Some(e.to_string()));
            o.retry_at = Some(Timestamp::new(super::budget::at(*frees_at)));
            return o;
        }
        let handoff_ms = self.last_handoff.map(|d| d.as_millis() as u64);
        self.renewing = false;
        let duration_ms = started.elapsed().as_millis() as u64;
        let at = Timestamp::now();
        let kind = match &result {
            Ok(()) => RotateResult::Success,
            Err(RotateError::Handoff {
                rolled_back: true, ..
            }) => RotateResult::RolledBack,
            Err(_) => RotateResult::Failed,
        };
        // The histogram covers publish through verify (or rollback). A
        // renewal held back by the budget is no attempt: its gauges say it.
        if !matches!(result, Err(RotateError::Budget { .. })) {
            self.metrics.rotation(
                &self.cfg.name,
                "certificate",
                kind.as_str(),
                self.last_handoff.unwrap_or_default(),
            );
        }
        let outcome = match &result {
            Ok(()) => {
                self.failures = 0;
                self.retry_at = None;
                self.last_error = None;
                self.last_rotation = Some(LastRotation {
                    at,
                    result: kind,
                    duration_ms,
                    handoff_ms,
                });
                let cur = self.current.as_ref();
                tracing::info!(generation = cur.map(|c| c.generation), fingerprint = cur.map(|c| c.info.fingerprint.as_str()), issuer = %self.cfg.issuer, duration_ms, handoff_ms, handoff = ?self.handoff, event = "rotated", "rotated");
                self.outcome(kind, None)
            }
            Err(e) => {
                self.note_failure(e);
                self.last_rotation = Some(LastRotation {
                    at,
                    result: kind,
                    duration_ms,
                    handoff_ms,
                });
                self.outcome(kind, Some(e.to_string()))
            }
        };
        self.publish_status();
        // The slot is given back only once the status no longer says
        // `renewing`, so no snapshot shows more rotations than the limit.
        self.permit = None;
        outcome
    }

    fn outcome(&self, result: RotateResult, error: Option<String>) -> RotateOutcome {
        RotateOutcome {
            credential: self.cfg.name.clone(),
            result,
            generation: self.current.as_ref().map(|c| c.generation),
            fingerprint: self.current.as_ref().map(|c| c.info.fingerprint.clone()),
            error,
            retry_at: None,
        }
    }

    /// Count a failure, schedule the retry, alert `renewal_failed` (handoff
    /// failures alert where they happen, with their details; an exhausted
    /// budget alerts `budget_exhausted`).
    ///
    /// The retry is paced by what failed: with a staged generation waiting,
    /// its handoff is retried quickly ([`schedule::handoff_backoff`]: the
    /// issuer is not asked); after an issuer error, by the issuer backoff
    /// that grows into hours for long lifetimes and honours `Retry-After`;
    /// a held-back issuance, when the budget frees up or gives way.
    pub(super) fn note_failure(&mut self, e: &RotateError) {
        let now = SystemTime::now();
        let draw = fastrand::f64();
        let staged = self.journal.staged.as_ref().map(|s| s.attempts);
        let delay = match (e, staged) {
            (RotateError::Budget { until, .. }, _) => {
                schedule::until(super::budget::at(*until), now)
            }
            (RotateError::Handoff { .. } | RotateError::Store { .. }, Some(attempts)) => {
                schedule::handoff_backoff(attempts.saturating_sub(1), self.lifetime(), draw)
            }
            _ => {
                let d = schedule::retry_delay(
                    self.issuer_failures,
                    self.lifetime(),
                    draw,
                    e.retry_after(),
                );
                self.issuer_failures += 1;
                d
            }
        };
        self.failures += 1;
        self.retry_at = Some(now + delay);
        let msg = e.to_string();
        let retry_in_ms = delay.as_millis() as u64;
        match e {
            // One line for a failed handoff: what the app did, whether the
            // previous generation is back, and when the handoff is retried.
            RotateError::Handoff {
                generation,
                why,
                rolled_back,
                ..
            } => {
                let outcome = if *rolled_back {
                    "rolled back to the previous generation"
                } else {
                    "the new generation stays published"
                };
                tracing::warn!(generation, rolled_back, reason = %why, retry_in_ms, consecutive_failures = self.failures, event = "handoff_failed", "handoff failed; {outcome}; retrying the handoff");
            }
            _ => {
                tracing::warn!(issuer = %self.cfg.issuer, error = %msg, retry_in_ms, consecutive_failures = self.failures, event = "rotation_failed", "rotation failed; the current credential stays in place");
            }
        }
        if !matches!(e, RotateError::Handoff { .. } | RotateError::Budget { .. }) {
            let mut a = Alert::new(
                Event::RenewalFailed,
                &self.cfg.name,
                "certificate",
                msg.clone(),
            );
            if let Some(c) = &self.current {
                a.generation = Some(c.generation);
                a.fingerprint = Some(c.info.fingerprint.clone());
                a.not_after = Some(Timestamp::new(c.info.not_after));
            }
            self.alerter.raise(a);
        }
        self.last_error = Some(msg);
    }

    /// Hand over the staged generation again while it is fresh enough
    /// (unless `reissue`); otherwise issue (within the budget), validate,
    /// stage, then hand over. When the budget holds the issuance back, a
    /// staged generation that is still valid is handed over instead.
    async fn try_rotate(&mut self, reissue: bool) -> Result<(), RotateError> {
        let now = SystemTime::now();
        let staged = self.usable_staged(now);
        if let Some(st) = staged.as_ref().filter(|_| !reissue) {
            if self.retry_staged_now(st, now) {
                if let Some(r) = Box::pin(self.hand_over_staged(st)).await {
                    return r;
                }
            }
        }
        let counted = match self.take_budget(now) {
            Ok(at) => at,
            Err(e) => {
                if let Some(st) = staged.as_ref().filter(|_| !reissue) {
                    if let Some(r) = Box::pin(self.hand_over_staged(st)).await {
                        return r;
                    }
                }
                return Err(e);
            }
        };
        let g = self.journal.allocate();
        if let Err(e) = self.set_pending(g, Step::Issuing) {
            self.give_back_budget(counted);
            self.journal.pending = None;
            return Err(e);
        }
        let (mut material, info, shortened) = match self.issue(g).await {
            Ok(x) => x,
            Err(e) => {
                self.audit.issue_failed(&self.cfg, &e);
                if e.issued_nothing() {
                    self.give_back_budget(counted);
                }
                self.journal.pending = None;
                self.save_and_prune();
                return Err(e);
            }
        };
        self.issuer_failures = 0;
        self.issued_at = Some(now);
        self.audit.issued(&self.cfg, g, &info.fingerprint);
        if let Err(source) = self.encode(&mut material) {
            self.journal.pending = None;
            self.save_and_prune();
            return Err(RotateError::Keystore {
                credential: self.cfg.name.clone(),
                source,
            });
        }
        self.set_pending(g, Step::Staging)?;
        failpoint!("stage.before");
        if let Err(e) = self.store.stage(g, &material) {
            self.journal.pending = None;
            self.save_and_prune();
            return Err(self.store_err(e));
        }
        failpoint!("stage.after");
        // The new generation supersedes an older staged one (pruned once
        // this one is committed or staged in turn).
        self.journal.staged = None;
        let mut next = Current::new(g, info, &self.targets(), &material);
        next.shortened = shortened;
        self.hand_over(next, material).await
    }

    pub(super) fn set_pending(&mut self, generation: u64, step: Step) -> Result<(), RotateError> {
        self.journal.pending = Some(Pending { generation, step });
        self.store
            .save_journal(&self.journal)
            .map_err(|e| self.store_err(e))
    }

    /// Publish `next` (whose `material` is dropped once published), reload,
    /// verify; commit, or roll back per `on_failure`.
    pub(super) async fn hand_over(
        &mut self,
        next: Current,
        material: Material,
    ) -> Result<(), RotateError> {
        let g = next.generation;
        // The committed generation's material is read back before the new one
        // is published, while the published files can still stand in for a
        // lost state dir copy: it is what a failed publish or handoff
        // restores, and its certificate is what `replaced` retires.
        let previous = match &self.current {
            Some(cur) => match self.committed_material(cur) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::error!(error = %e, "the committed generation cannot be read back; it cannot be restored if this handoff fails");
                    None
                }
            },
            None => None,
        };
        let previous_fp = self.current.as_ref().map(|c| c.info.fingerprint.clone());
        let published = Instant::now();
        self.set_pending(g, Step::Publishing)?;
        failpoint!("publish.before");
        let result = store::publish(&self.targets(), self.cfg.swap, &material, &self.pins);
        drop(material); // zeroizes the new key: the state dir holds it
        if let Err(e) = result {
            self.tampered_dir(&e);
            // Put the committed generation back in case some files had flipped.
            if let Some(prev) = &previous {
                if let Err(e2) = store::publish(&self.targets(), self.cfg.swap, prev, &self.pins) {
                    tracing::error!(error = %e2, "cannot restore the committed generation after a failed publish");
                }
            }
            self.audit
                .publish_failed(&self.cfg, g, &next.info.fingerprint, &e);
            // Staged and validated: the retry publishes it again rather
            // than asking the issuer for another.
            self.keep_staged(&next);
            self.journal.pending = None;
            self.save_and_prune();
            return Err(self.store_err(e));
        }
        failpoint!("publish.after");
        self.audit.published(&self.cfg, g, &next.info.fingerprint);
        self.set_pending(g, Step::Handoff)?;
        let gen = self.generation_of(&next);
        // Bootstrap: with no earlier generation the app may not run yet (a
        // native sidecar starts first); a missing app is not a failure.
        let bootstrap = self.current.is_none();
        self.handoff_reason = None;
        self.reload_owed = false;
        failpoint!("reload.before");
        let told = self.tell_app(&gen, Purpose::Handoff).await;
        let verdict = match self.audit.reloaded(&self.cfg, &gen, told) {
            Err(e) if bootstrap => {
                // Not a failed handoff (the app may not run yet), but not
                // quiet either: a running app keeps serving what it had.
                tracing::warn!(generation = g, error = %e, event = "reload_failed", "the first generation is published but the app could not be told to reload; if it runs, it serves what it had until the reload works (retried when a probe finds it serving something else) or it restarts");
                self.handoff_reason = Some(e.to_string());
                self.reload_owed = true;
                Verdict::Unreachable(e.to_string())
            }
            Err(e) => Verdict::Failed {
                served: None,
                detail: e.to_string(),
            },
            Ok(()) => {
                failpoint!("reload.after");
                failpoint!("verify.before");
                handoff::await_generation(
                    &self.probes,
                    &gen,
                    self.cfg.verify.timeout,
                    self.cfg.verify.settle,
                    bootstrap,
                )
                .await
            }
        };
        self.last_handoff = Some(published.elapsed());
        failpoint!("verify.after");
        self.audit.verdict(&self.cfg, &gen, &verdict);
        match verdict {
            Verdict::Verified | Verdict::Unverified => {
                let was_failed = self.handoff == Handoff::Failed || self.failures > 0;
                let replaced = previous.map(|mut m| std::mem::take(&mut m.cert_pem));
                self.handoff = if verdict == Verdict::Verified {
                    Handoff::Verified
                } else {
                    Handoff::Unverified
                };
                self.served = (verdict == Verdict::Verified).then(|| gen.fingerprint.clone());
                self.probe_at = None;
                self.commit(next);
                if was_failed {
                    self.raise_recovered(&gen);
                }
                // A retried handoff of the committed generation itself
                // (`on_failure = "keep"`) replaces nothing.
                let replaced = replaced.filter(|_| previous_fp.as_ref() != Some(&gen.fingerprint));
                if let (Verdict::Verified, Some(old)) = (&verdict, replaced) {
                    // The issuer may retire it now (ACME revoke_replaced).
                    failpoint!("revoke.before");
                    if let Err(e) = self.issuer.replaced(&self.cfg.name, &old).await {
                        tracing::warn!(error = %e, "could not retire the replaced certificate");
                    }
                }
                failpoint!("revoke.after");
                self.report_trust();
                self.refresh_window().await;
                Ok(())
            }
            Verdict::Unreachable(why) if bootstrap => {
                tracing::info!(generation = g, reason = %why, "the app is not serving yet; the handoff stays pending");
                self.handoff_reason.get_or_insert(why);
                self.handoff = Handoff::Pending;
                self.probe_at = Some(
                    SystemTime::now()
                        + super::credential::MAX_PROBE_PAUSE.min(Duration::from_millis(100)),
                );
                self.commit(next);
                // The app reads the files when it starts.
                self.report_trust();
                Ok(())
            }
            Verdict::Unreachable(why) => self.fail_handoff(next, gen, why, None, previous).await,
            Verdict::Failed { served, detail } => {
                self.fail_handoff(next, gen, detail, served, previous).await
            }
        }
    }

    pub(super) fn commit(&mut self, next: Current) {
        failpoint!("commit.before");
        self.journal.commit(next.generation, fastrand::f64());
        self.journal.shortened_by_ca = next.shortened.clone();
        // Every committed generation carries a keystore that fits (encoded
        // at issuance, adoption or refresh).
        self.keystore_owed = false;
        self.save_and_prune();
        self.current = Some(next);
        self.rotate_to_repair = false;
        failpoint!("commit.after");
    }
}
