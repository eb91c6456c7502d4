//! An API key's rotation steps: mint → stage → publish → hand over →
//! commit (revoking the old key after `overlap`), or roll back and revoke
//! the new key. The shared driver (`engine/task/`) runs them in order.
//!
//! Unlike a certificate, an API key whose handoff failed is not kept for a
//! retry of its handoff: it is revoked at once, because a live secret that
//! no app uses is exposure that nothing else bounds (a certificate stays
//! public and expires; a key is a bearer secret). So every retry of an API
//! key mints anew, and the issuance budget together with the issuer
//! backoff is what keeps a broken app from turning into a stream of keys.

use std::time::SystemTime;

use zeroize::Zeroizing;

use super::journal::{KeyRecord, KeyStep, PendingKey};
use super::upkeep::{at, short_hash, unix};
use super::KeyTask;
use crate::alert::{Alert, Event};
use crate::config::OnFailure;
use crate::engine::task::RotateError;
use crate::handoff::{self, Verdict};
use crate::metrics;
use crate::status::Handoff;

/// A minted key on its way through stage, publish and handoff.
pub(in crate::engine) struct KeyNext {
    pub(super) key: KeyRecord,
    /// The secret, until it moves into the handoff's generation.
    pub(super) secret: Option<Zeroizing<String>>,
}

impl KeyTask {
    pub(super) fn set_step(
        &mut self,
        g: u64,
        step: KeyStep,
        key: Option<KeyRecord>,
    ) -> Result<(), RotateError> {
        self.journal.pending = Some(PendingKey {
            generation: g,
            step,
            key,
        });
        self.save_strict()
    }

    /// Give up on an uncommitted key: owe its revocation now.
    pub(super) fn give_up(&mut self, key: &KeyRecord) {
        self.journal.owe(key, unix(SystemTime::now()));
        self.journal.pending = None;
        self.save();
    }

    /// Mint generation `g` and journal its id before anything is published:
    /// a crash from here on leaves a key the next start knows to revoke.
    pub(super) async fn mint(&mut self, g: u64) -> Result<KeyNext, RotateError> {
        let minted = self.issuer.mint(self.cfg.lifetime).await;
        self.metrics.issuer_request(
            self.issuer.name(),
            if minted.is_ok() {
                metrics::SUCCESS
            } else {
                metrics::FAILURE
            },
        );
        let minted = minted.map_err(|source| RotateError::Mint {
            credential: self.cfg.name.clone(),
            source,
        })?;
        let key = KeyRecord {
            generation: g,
            id: minted.id.clone(),
            lease: minted.lease.clone(),
            minted_at: unix(SystemTime::now()),
            expires_at: unix(minted.expires_at),
            hash: short_hash(&minted.secret),
        };
        if let Err(e) = self.set_step(g, KeyStep::Minted, Some(key.clone())) {
            // Cannot record it: do not use it; try to revoke it at once.
            let _ = self.issuer.revoke(&key.id, key.lease.as_deref()).await;
            return Err(e);
        }
        // The crash suite kills the daemon here: a minted key only the
        // journal knows about, which the next start must revoke.
        failpoint!("apikey.mint.after");
        Ok(KeyNext {
            key,
            secret: Some(minted.secret),
        })
    }

    /// Keep the secret in the state dir (0600), for restores.
    pub(super) fn stage_step(&mut self, next: &KeyNext) -> Result<(), RotateError> {
        let secret = next.secret.as_deref().map_or("", String::as_str);
        if let Err(e) = self.stage_secret(next.key.generation, secret) {
            self.give_up(&next.key);
            return Err(self.store_err(e));
        }
        Ok(())
    }

    /// Write the app's key file; on failure put the committed key back and
    /// revoke the new one.
    pub(super) async fn publish_step(&mut self, next: &KeyNext) -> Result<(), RotateError> {
        let secret = next.secret.as_deref().map_or("", String::as_str);
        if let Err(e) = self.write_key_file(&next.key, secret) {
            self.restore("failed publish").await;
            self.give_up(&next.key);
            return Err(self.store_err(e));
        }
        self.set_step(
            next.key.generation,
            KeyStep::Handoff,
            Some(next.key.clone()),
        )?;
        // The new key is in the app's file but not committed: the next
        // start must put the committed key back and revoke this one.
        failpoint!("apikey.publish.after");
        Ok(())
    }

    /// The app uses the new key (`Verified`), nothing can tell
    /// (`Unverified`), or it is the first and the app is not running yet.
    pub(super) fn commit_step(&mut self, key: KeyRecord, verdict: Verdict) {
        if matches!(verdict, Verdict::Unreachable(_)) {
            self.handoff = Handoff::Pending;
            self.commit_key(key, false);
            return;
        }
        let was_failed = self.handoff == Handoff::Failed;
        self.handoff = if verdict == Verdict::Verified {
            Handoff::Verified
        } else {
            Handoff::Unverified
        };
        let id = key.id.clone();
        self.commit_key(key, true);
        if was_failed {
            self.alerter.raise(Alert::new(
                Event::Recovered,
                &self.cfg.name,
                "api_key",
                format!("key {id} is published and in use"),
            ));
        }
    }

    /// Make `key` the committed one; the old key is owed a revocation after
    /// `overlap` once the handoff is done (verified, or unverified by
    /// choice), else at its expiry (after a failed handoff kept with
    /// `on_failure = "keep"` the app may still use it).
    pub(super) fn commit_key(&mut self, key: KeyRecord, handed_over: bool) {
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

    /// The app did not take `key`: put the committed key back and revoke the
    /// new one when `on_failure = "rollback"` and the committed key is still
    /// valid, else keep it; alert `handoff_failed`.
    pub(super) async fn fail_handoff(
        &mut self,
        key: KeyRecord,
        why: String,
    ) -> Result<(), RotateError> {
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
            self.give_up(&key);
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
            self.commit_key(key.clone(), false);
        }
        // Logged once, with the retry, by the shared driver.
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
        Err(RotateError::Handoff {
            credential: self.cfg.name.clone(),
            generation: key.generation,
            key: Some(key.id),
            why,
            rolled_back: can_roll_back,
        })
    }
}
