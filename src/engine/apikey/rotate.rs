//! An API key's rotation: mint → stage → publish → reload → verify →
//! commit (revoking the old key after `overlap`), or roll back and revoke
//! the new key.

use super::journal::{KeyRecord, KeyStep, PendingKey};
use crate::alert::{Alert, Event};
use crate::config::OnFailure;
use crate::engine::group::Purpose;
use crate::handoff::{self, Verdict};
use crate::metrics::{self};
use crate::schedule;
use crate::status::{Handoff, LastRotation, RotateOutcome, RotateResult};
use crate::timestamp::Timestamp;
use std::time::{Duration, Instant, SystemTime};

use super::task::*;

impl KeyTask {
    /// Rotate now; `operator`: asked for, so an exhausted budget refuses it
    /// and leaves the key's state as it was.
    pub(super) async fn rotate(&mut self, operator: bool) -> RotateOutcome {
        self.permit = self.permits.clone().acquire_owned().await.ok();
        self.renewing = true;
        self.publish_status();
        let started = Instant::now();
        let mut handoff_time = None;
        let result = self.try_rotate(&mut handoff_time).await;
        self.renewing = false;
        // The slot (self.permit) is given back only after the status no
        // longer says `renewing`, so no snapshot shows more rotations than
        // the limit.
        if let Err(KeyRotateError::Budget { message }) = &result {
            let until = self.budget_blocked.as_ref().map(|b| (b.until, b.frees_at));
            if operator {
                self.publish_status();
                self.permit = None;
                let k = self.journal.committed.as_ref();
                return RotateOutcome {
                    credential: self.cfg.name.clone(),
                    result: RotateResult::Refused,
                    generation: k.map(|k| k.generation),
                    fingerprint: k.map(|k| k.hash.clone()),
                    error: Some(message.clone()),
                    retry_at: until.map(|(_, f)| Timestamp::new(at(f))),
                };
            }
            // Held back: try again when the budget frees up or gives way.
            self.failures += 1;
            self.retry_at = until.map(|(u, _)| at(u));
            self.last_error = Some(message.clone());
            self.publish_status();
            self.permit = None;
            let k = self.journal.committed.as_ref();
            return RotateOutcome {
                credential: self.cfg.name.clone(),
                result: RotateResult::Failed,
                generation: k.map(|k| k.generation),
                fingerprint: k.map(|k| k.hash.clone()),
                error: Some(message.clone()),
                retry_at: None,
            };
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        let kind = match &result {
            Ok(()) => RotateResult::Success,
            Err(KeyRotateError::Handoff {
                rolled_back: true, ..
            }) => RotateResult::RolledBack,
            Err(_) => RotateResult::Failed,
        };
        self.metrics.rotation(
            &self.cfg.name,
            "api_key",
            kind.as_str(),
            handoff_time.unwrap_or_default(),
        );
        let when = Timestamp::now();
        let handoff_ms = handoff_time.map(|d| d.as_millis() as u64);
        let error = match &result {
            Ok(()) => {
                self.failures = 0;
                self.retry_at = None;
                self.last_error = None;
                None
            }
            Err(e) => {
                // Every retry mints (see budget.rs), so every failure backs
                // off like an issuer error: into hours for long lifetimes.
                let delay =
                    schedule::retry_delay(self.failures, self.cfg.lifetime, fastrand::f64(), None);
                self.failures += 1;
                self.retry_at = Some(SystemTime::now() + delay);
                let msg = e.to_string();
                let retry_in_ms = delay.as_millis() as u64;
                if let KeyRotateError::Handoff {
                    generation,
                    id,
                    why,
                    rolled_back,
                    ..
                } = e
                {
                    // One line: what the app did, what was put back, when it is retried.
                    let outcome = if *rolled_back {
                        "rolled back to the previous key"
                    } else {
                        "the new key stays published"
                    };
                    tracing::warn!(generation, id = %id, rolled_back, reason = %why, retry_in_ms, event = "handoff_failed", "handoff failed; {outcome}; retrying with a new key");
                } else {
                    tracing::warn!(error = %msg, retry_in_ms, event = "rotation_failed", "rotation failed; the current key stays in place");
                }
                if !matches!(e, KeyRotateError::Handoff { .. }) {
                    self.alerter.raise(Alert::new(
                        Event::RenewalFailed,
                        &self.cfg.name,
                        "api_key",
                        msg.clone(),
                    ));
                }
                self.last_error = Some(msg.clone());
                Some(msg)
            }
        };
        self.last_rotation = Some(LastRotation {
            at: when,
            result: kind,
            duration_ms,
            handoff_ms,
        });
        self.publish_status();
        self.permit = None;
        let k = self.journal.committed.as_ref();
        RotateOutcome {
            credential: self.cfg.name.clone(),
            result: kind,
            generation: k.map(|k| k.generation),
            fingerprint: k.map(|k| k.hash.clone()),
            error,
            retry_at: None,
        }
    }

    pub(super) fn set_step(
        &mut self,
        g: u64,
        step: KeyStep,
        key: Option<KeyRecord>,
    ) -> Result<(), KeyRotateError> {
        self.journal.pending = Some(PendingKey {
            generation: g,
            step,
            key,
        });
        self.save_strict()
    }

    /// Give up on an uncommitted key: owe its revocation now.
    pub(super) fn abandon(&mut self, key: &KeyRecord) {
        self.journal.owe(key, unix(SystemTime::now()));
        self.journal.pending = None;
        self.save();
    }

    pub(super) async fn try_rotate(
        &mut self,
        handoff_time: &mut Option<Duration>,
    ) -> Result<(), KeyRotateError> {
        let name = self.cfg.name.clone();
        let counted = self
            .take_budget(SystemTime::now())
            .map_err(|message| KeyRotateError::Budget { message })?;
        let g = self.journal.allocate();
        if let Err(e) = self.set_step(g, KeyStep::Minting, None) {
            self.give_back_budget(counted);
            self.journal.pending = None;
            return Err(e);
        }
        let minted = self.issuer.mint(self.cfg.lifetime).await;
        self.metrics.issuer_request(
            self.issuer.name(),
            if minted.is_ok() {
                metrics::SUCCESS
            } else {
                metrics::FAILURE
            },
        );
        let minted = match minted {
            Ok(m) => m,
            Err(source) => {
                // Nothing minted: the mint does not count.
                self.give_back_budget(counted);
                self.journal.pending = None;
                self.save();
                return Err(KeyRotateError::Issuer {
                    credential: name,
                    source,
                });
            }
        };
        let key = KeyRecord {
            generation: g,
            id: minted.id.clone(),
            lease: minted.lease.clone(),
            minted_at: unix(SystemTime::now()),
            expires_at: unix(minted.expires_at),
            hash: short_hash(&minted.secret),
        };
        // Journal the id before anything is published: a crash from here on
        // leaves a key the next start knows to revoke.
        if let Err(e) = self.set_step(g, KeyStep::Minted, Some(key.clone())) {
            // Cannot record it: do not use it; try to revoke it at once.
            let _ = self.issuer.revoke(&key.id, key.lease.as_deref()).await;
            return Err(e);
        }
        // The crash suite kills the daemon here: a minted key only the
        // journal knows about, which the next start must revoke.
        failpoint!("apikey.mint.after");
        let store_err = |source| KeyRotateError::Store {
            credential: name.clone(),
            source,
        };
        if let Err(e) = self.stage(g, &minted.secret) {
            self.abandon(&key);
            return Err(store_err(e));
        }
        let published = Instant::now();
        if let Err(e) = self.publish(&key, &minted.secret) {
            self.restore("failed publish").await;
            self.abandon(&key);
            return Err(store_err(e));
        }
        self.set_step(g, KeyStep::Handoff, Some(key.clone()))?;
        // The new key is in the app's file but not committed: the next
        // start must put the committed key back and revoke this one.
        failpoint!("apikey.publish.after");
        let gen = self.generation_of(&key, Some(minted.secret.clone()));
        drop(minted);
        let bootstrap = self.journal.committed.is_none();
        let verdict = match self.tell_app(&gen, Purpose::Handoff).await {
            Err(e) if bootstrap => Verdict::Unreachable(e.to_string()),
            Err(e) => Verdict::Failed {
                served: None,
                detail: e.to_string(),
            },
            Ok(()) => {
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
        drop(gen);
        *handoff_time = Some(published.elapsed());
        match verdict {
            Verdict::Verified | Verdict::Unverified => {
                let verified = verdict == Verdict::Verified;
                let was_failed = self.handoff == Handoff::Failed;
                self.handoff = if verified {
                    Handoff::Verified
                } else {
                    Handoff::Unverified
                };
                self.commit(key.clone(), true);
                tracing::info!(generation = g, id = %key.id, key_hash = %key.hash, handoff = ?self.handoff, event = "rotated", "rotated");
                if was_failed {
                    self.alerter.raise(Alert::new(
                        Event::Recovered,
                        &name,
                        "api_key",
                        format!("key {} is published and in use", key.id),
                    ));
                }
                Ok(())
            }
            Verdict::Unreachable(why) if bootstrap => {
                tracing::info!(generation = g, reason = %why, "the app is not running yet; the handoff stays pending");
                self.handoff = Handoff::Pending;
                self.commit(key, false);
                Ok(())
            }
            Verdict::Unreachable(why) | Verdict::Failed { detail: why, .. } => {
                self.fail_handoff(key, why).await
            }
        }
    }

    /// Make `key` the committed one; the old key is owed a revocation after
    /// `overlap` once the handoff is done (verified, or unverified by
    /// choice), else at its expiry (after a failed handoff kept with
    /// `on_failure = "keep"` the app may still use it).
    pub(super) fn commit(&mut self, key: KeyRecord, handed_over: bool) {
        let now = unix(SystemTime::now());
        if let Some(old) = self.journal.committed.take() {
            let when = if handed_over {
                now + self.cfg.overlap.as_secs()
            } else {
                old.expires_at.max(now + self.cfg.overlap.as_secs())
            };
            self.journal.owe(&old, when);
        }
        self.journal.committed = Some(key);
        self.journal.pending = None;
        self.journal.jitter_draw = fastrand::f64();
        self.save();
    }

    pub(super) async fn fail_handoff(
        &mut self,
        key: KeyRecord,
        why: String,
    ) -> Result<(), KeyRotateError> {
        let now = SystemTime::now();
        let can_roll_back = self.cfg.on_failure == OnFailure::Rollback
            && self
                .journal
                .committed
                .as_ref()
                .is_some_and(|k| at(k.expires_at) > now);
        let old_was_verified = self.handoff == Handoff::Verified;
        self.handoff = Handoff::Failed;
        if can_roll_back {
            self.set_step(key.generation, KeyStep::RollingBack, Some(key.clone()))?;
            self.restore("handoff failed").await;
            // The new key was never used: revoke it now.
            self.abandon(&key);
            self.revoke_due(SystemTime::now()).await;
            // Only a key the app was seen using can be checked again.
            if let Some(old) = self.journal.committed.clone().filter(|_| old_was_verified) {
                let g = self.generation_of(&old, self.load_secret(old.generation));
                let v = handoff::await_generation(
                    &self.probes,
                    &g,
                    self.cfg.verify.timeout,
                    self.cfg.verify.settle,
                    false,
                )
                .await;
                if let Verdict::Failed { detail, .. } = v {
                    tracing::error!(detail = %detail, "after rollback the app does not use the previous key either");
                }
            }
        } else {
            self.commit(key.clone(), false);
        }
        // Logged once, with the retry, by rotate().
        let mut a = Alert::new(
            Event::HandoffFailed,
            &self.cfg.name,
            "api_key",
            format!("the app did not take key {}: {why}", key.id),
        );
        a.generation = Some(key.generation);
        a.fingerprint = Some(key.hash.clone());
        a.rolled_back = Some(can_roll_back);
        self.alerter.raise(a);
        Err(KeyRotateError::Handoff {
            credential: self.cfg.name.clone(),
            generation: key.generation,
            id: key.id,
            why,
            rolled_back: can_roll_back,
        })
    }
}
