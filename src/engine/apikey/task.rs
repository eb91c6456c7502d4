//! One API key's task: recover (revoke an uncommitted key), rotate when due
//! with the two-phase handoff, and work off owed revocations with backoff.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch, Semaphore};
use zeroize::Zeroizing;

use super::journal::{KeyJournal, KeyRecord, KeyStep, PendingKey};
use super::KeyCredential;
use crate::alert::{Alert, Alerter, Event};
use crate::config::{ApiKeyConfig, KeyFormat, OnFailure, Share};
use crate::engine::Command;
use crate::handoff::{self, Generation, Probe, Reload, Secret, Verdict};
use crate::issuer::keys::KeyIssuer;
use crate::metrics::{self, Metrics};
use crate::status::{CredentialStatus, Handoff, LastRotation, RotateOutcome, Snapshot, State};
use crate::store::{self, CredentialStore, Store};
use crate::{cert, schedule};

/// Revocation retries back off up to this.
const MAX_REVOKE_PAUSE: u64 = 300;
/// Renewal jitter: up to 5% of the lifetime.
pub(super) const JITTER: Share = Share::Fraction(0.05);

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// `sha256:` and the first 12 hex digits of the secret: enough to tell keys apart.
fn short_hash(secret: &str) -> String {
    let fp = cert::fingerprint(secret.as_bytes());
    fp.chars().take("sha256:".len() + 12).collect()
}

/// Why a rotation failed; never holds the secret.
#[derive(Debug, thiserror::Error)]
enum KeyRotateError {
    #[error("{credential}: {source}")]
    Issuer {
        credential: String,
        source: crate::issuer::keys::KeyError,
    },
    #[error("{credential}: {source}")]
    Store {
        credential: String,
        source: store::StoreError,
    },
    #[error("{credential}: handoff of key {id} (generation {generation}) failed: {why}{}", if *rolled_back { "; the previous key was put back and the new one revoked" } else { "" })]
    Handoff {
        credential: String,
        generation: u64,
        id: String,
        why: String,
        rolled_back: bool,
    },
}

pub(super) struct KeyTask {
    cfg: ApiKeyConfig,
    issuer: Arc<dyn KeyIssuer>,
    reload: Arc<dyn Reload>,
    probes: Vec<Arc<dyn Probe>>,
    alerter: Alerter,
    metrics: Metrics,
    store: CredentialStore,
    journal: KeyJournal,
    status_tx: watch::Sender<Snapshot>,
    permits: Arc<Semaphore>,
    failures: u32,
    retry_at: Option<SystemTime>,
    last_rotation: Option<LastRotation>,
    last_error: Option<String>,
    renewing: bool,
    handoff: Handoff,
}

impl KeyTask {
    pub(super) fn new(
        k: KeyCredential,
        store: &Arc<Store>,
        status_tx: watch::Sender<Snapshot>,
        permits: Arc<Semaphore>,
        alerter: Alerter,
        metrics: Metrics,
    ) -> KeyTask {
        KeyTask {
            store: store.credential(&k.config.name),
            cfg: k.config,
            issuer: k.issuer,
            reload: k.reload,
            probes: k.probes,
            alerter,
            metrics,
            journal: KeyJournal::default(),
            status_tx,
            permits,
            failures: 0,
            retry_at: None,
            last_rotation: None,
            last_error: None,
            renewing: false,
            handoff: Handoff::Pending,
        }
    }

    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.start().await;
        self.publish_status();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = SystemTime::now();
            self.revoke_due(now).await;
            let due = self.due_at(now);
            if due <= now {
                let _ = self.rotate().await;
                continue;
            }
            let mut wake = due;
            if let Some(r) = self.journal.revokes.iter().map(|r| at(r.at)).min() {
                wake = wake.min(r);
            }
            // The engine's one backstop task sends Backstop; no timer here.
            tokio::select! {
                _ = tokio::time::sleep(schedule::until(wake, now)) => {}
                cmd = rx.recv() => match cmd {
                    Some(Command::Rotate(reply)) => {
                        let outcome = self.rotate().await;
                        let _ = reply.send(outcome);
                    }
                    Some(Command::FilesChanged | Command::Backstop) => self.check_file().await,
                    Some(Command::Retire(reply)) => {
                        // Retiring API keys (revoke, remove the file) is not built yet: say so, change nothing.
                        let _ = reply.send(crate::engine::RetireOutcome {
                            credential: self.cfg.name.clone(),
                            result: "failed".into(),
                            removed: Vec::new(),
                            revoked: false,
                            detail: "retire is not supported for api_key credentials yet; remove it from the config and revoke the key at the issuer".into(),
                        });
                    }
                    None => break,
                },
                _ = shutdown.changed() => break,
            }
        }
        tracing::debug!(credential = %self.cfg.name, "stopped");
    }

    fn secret_path(&self, generation: u64) -> std::path::PathBuf {
        self.store.dir().join(format!("key-{generation}.secret"))
    }

    fn stage(&self, generation: u64, secret: &str) -> Result<(), store::StoreError> {
        store::write_secret_file(
            &self.secret_path(generation),
            secret.as_bytes(),
            0o600,
            None,
            None,
        )
    }

    fn load_secret(&self, generation: u64) -> Option<Zeroizing<String>> {
        let bytes = Zeroizing::new(std::fs::read(self.secret_path(generation)).ok()?);
        std::str::from_utf8(&bytes)
            .ok()
            .map(|s| Zeroizing::new(s.to_string()))
    }

    fn unstage(&self, generation: u64) {
        let _ = std::fs::remove_file(self.secret_path(generation));
    }

    fn save(&self) {
        if let Err(e) = self.store.save_journal(&self.journal) {
            tracing::error!(credential = %self.cfg.name, error = %e, "cannot save the journal");
        }
    }

    fn save_strict(&self) -> Result<(), KeyRotateError> {
        self.store
            .save_journal(&self.journal)
            .map_err(|source| KeyRotateError::Store {
                credential: self.cfg.name.clone(),
                source,
            })
    }

    /// What the app's key file holds for `key`.
    fn render(&self, key: &KeyRecord, secret: &str) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self.cfg.format {
            KeyFormat::Raw => secret.as_bytes().to_vec(),
            KeyFormat::Env => format!("{}={secret}\n", self.cfg.env_var).into_bytes(),
            KeyFormat::Json => {
                let v = serde_json::json!({
                    "secret": secret,
                    "id": key.id,
                    "expires_at": cert::rfc3339(at(key.expires_at)),
                });
                let mut s = v.to_string().into_bytes();
                s.push(b'\n');
                s
            }
        })
    }

    fn publish(&self, key: &KeyRecord, secret: &str) -> Result<(), store::StoreError> {
        let bytes = self.render(key, secret);
        store::write_secret_file(
            &self.cfg.file,
            &bytes,
            self.cfg.key_mode,
            self.cfg.uid,
            self.cfg.gid,
        )
    }

    fn generation_of(&self, key: &KeyRecord, secret: Option<Zeroizing<String>>) -> Generation {
        Generation {
            credential: self.cfg.name.clone(),
            generation: key.generation,
            fingerprint: key.hash.clone(),
            serial: key.id.clone(),
            not_after: cert::rfc3339(at(key.expires_at)),
            key_id: Some(key.id.clone()),
            secret: secret.map(|s| Secret(Arc::new(s))),
            ..Generation::default()
        }
    }

    /// Recover an interrupted rotation: its key was never committed, so put
    /// the committed key back and revoke the new one (or, with nothing
    /// committed yet, finish it: the app has no other key).
    async fn start(&mut self) {
        let name = self.cfg.name.clone();
        self.journal = match self.store.load_journal::<KeyJournal>() {
            Ok(Some(j)) => j,
            Ok(None) => KeyJournal::default(),
            Err(e) => {
                tracing::error!(credential = %name, error = %e, "journal unreadable; minting a new key");
                KeyJournal::default()
            }
        };
        if let Some(p) = self.journal.pending.clone() {
            match (p.key, &self.journal.committed) {
                (None, _) => {
                    tracing::warn!(credential = %name, generation = p.generation, "a mint was interrupted before its answer was recorded; if the issuer minted a key it expires on its own");
                }
                (Some(k), None) if self.load_secret(k.generation).is_some() => {
                    tracing::info!(credential = %name, id = %k.id, event = "recovered", "keeping the key of an interrupted first rotation");
                    self.journal.committed = Some(k);
                }
                (Some(k), _) => {
                    tracing::info!(credential = %name, id = %k.id, event = "recovered", "revoking the key of an interrupted rotation and putting the committed key back");
                    self.journal.owe(&k, unix(SystemTime::now()));
                    self.restore("interrupted rotation").await;
                }
            }
            self.journal.pending = None;
            self.save();
        }
        if let Some(k) = &self.journal.committed {
            if self.load_secret(k.generation).is_none() {
                tracing::error!(credential = %name, generation = k.generation, "the committed key's staged copy is gone; minting a new key");
                let k = k.clone();
                self.journal.owe(&k, unix(SystemTime::now()));
                self.journal.committed = None;
                self.save();
            }
        }
        self.check_file().await;
        // Learn at once whether the app uses the committed key.
        if let Some(k) = self
            .journal
            .committed
            .clone()
            .filter(|_| !self.probes.is_empty())
        {
            let g = self.generation_of(&k, self.load_secret(k.generation));
            let budget = self.cfg.verify.settle + Duration::from_millis(500);
            let v =
                handoff::await_generation(&self.probes, &g, budget, self.cfg.verify.settle, true)
                    .await;
            if v == Verdict::Verified {
                self.handoff = Handoff::Verified;
            }
        }
    }

    /// Put the committed key back into the app's file if it differs.
    async fn check_file(&mut self) {
        let Some(k) = self.journal.committed.clone() else {
            return;
        };
        let Some(secret) = self.load_secret(k.generation) else {
            return;
        };
        let want = self.render(&k, &secret);
        let have = std::fs::read(&self.cfg.file).map(Zeroizing::new).ok();
        if have.as_deref().map(|h| h.as_slice()) != Some(want.as_slice()) {
            self.restore("the key file differs from the committed key")
                .await;
        }
    }

    /// Publish the committed key again and reload.
    async fn restore(&mut self, why: &str) {
        let Some(k) = self.journal.committed.clone() else {
            return;
        };
        let Some(secret) = self.load_secret(k.generation) else {
            return;
        };
        match self.publish(&k, &secret) {
            Ok(()) => {
                tracing::info!(credential = %self.cfg.name, id = %k.id, event = "restored", reason = why, "restored the committed key");
                let g = self.generation_of(&k, None);
                if let Err(e) = self.reload.reload(&g).await {
                    tracing::warn!(credential = %self.cfg.name, error = %e, "reload after restore failed");
                }
            }
            Err(e) => {
                tracing::error!(credential = %self.cfg.name, error = %e, "cannot restore the committed key")
            }
        }
    }

    fn due_at(&self, now: SystemTime) -> SystemTime {
        let natural = match &self.journal.committed {
            Some(k) if at(k.expires_at) > now => schedule::renewal_point(
                at(k.minted_at),
                at(k.expires_at),
                self.cfg.renew_before,
                JITTER,
                self.journal.jitter_draw,
            ),
            _ => now,
        };
        match self.retry_at {
            Some(r) if self.failures > 0 => r,
            _ => natural,
        }
    }

    /// Revoke every owed key whose time has come; failures back off and
    /// alert, and stay owed until they succeed or the key has expired.
    async fn revoke_due(&mut self, now: SystemTime) {
        let due: Vec<usize> = (0..self.journal.revokes.len())
            .filter(|&i| at(self.journal.revokes[i].at) <= now)
            .collect();
        if due.is_empty() {
            return;
        }
        let mut done = Vec::new();
        for i in due {
            let r = self.journal.revokes[i].clone();
            match self.issuer.revoke(&r.id, r.lease.as_deref()).await {
                Ok(()) if self.cfg.revoke.is_none() => {
                    tracing::info!(credential = %self.cfg.name, id = %r.id, "no revoke configured; the key is left to expire");
                    done.push(i);
                }
                Ok(()) => {
                    tracing::info!(credential = %self.cfg.name, id = %r.id, event = "revoked", "revoked the key");
                    done.push(i);
                }
                Err(e) if at(r.expires_at) <= now => {
                    tracing::info!(credential = %self.cfg.name, id = %r.id, error = %e, "revocation failed, but the key has expired anyway");
                    done.push(i);
                }
                Err(e) => {
                    let attempts = r.attempts + 1;
                    let pause = (1u64 << attempts.min(9)).min(MAX_REVOKE_PAUSE);
                    tracing::warn!(credential = %self.cfg.name, id = %r.id, error = %e, retry_in_s = pause, attempts, event = "revoke_failed", "cannot revoke the key; retrying");
                    if attempts == 1 || attempts % 10 == 0 {
                        let a = Alert::new(
                            Event::RenewalFailed,
                            &self.cfg.name,
                            "api_key",
                            format!("cannot revoke key {} (attempt {attempts}, retrying in {pause}s): {e}", r.id),
                        );
                        self.alerter.raise(a);
                    }
                    let slot = &mut self.journal.revokes[i];
                    slot.attempts = attempts;
                    slot.at = unix(now) + pause;
                }
            }
        }
        for i in done.into_iter().rev() {
            let r = self.journal.revokes.remove(i);
            if self.journal.committed.as_ref().map(|k| k.generation) != Some(r.generation) {
                self.unstage(r.generation);
            }
        }
        self.save();
    }

    async fn rotate(&mut self) -> RotateOutcome {
        let _permit = self.permits.clone().acquire_owned().await;
        self.renewing = true;
        self.publish_status();
        let started = Instant::now();
        let mut handoff_time = None;
        let result = self.try_rotate(&mut handoff_time).await;
        self.renewing = false;
        let duration_ms = started.elapsed().as_millis() as u64;
        let kind = match &result {
            Ok(()) => metrics::ROTATION_SUCCESS,
            Err(KeyRotateError::Handoff {
                rolled_back: true, ..
            }) => metrics::ROTATION_ROLLED_BACK,
            Err(_) => metrics::ROTATION_FAILED,
        };
        self.metrics.rotation(
            &self.cfg.name,
            "api_key",
            kind,
            handoff_time.unwrap_or_default(),
        );
        let when = cert::rfc3339(SystemTime::now());
        let handoff_ms = handoff_time.map(|d| d.as_millis() as u64);
        let (result_s, error) = match &result {
            Ok(()) => {
                self.failures = 0;
                self.retry_at = None;
                self.last_error = None;
                ("success", None)
            }
            Err(e) => {
                let delay =
                    schedule::retry_delay(self.failures, self.cfg.lifetime, fastrand::f64(), None);
                self.failures += 1;
                self.retry_at = Some(SystemTime::now() + delay);
                let msg = e.to_string();
                tracing::warn!(credential = %self.cfg.name, error = %msg, retry_in_ms = delay.as_millis() as u64, event = "rotation_failed", "rotation failed; the current key stays in place");
                if !matches!(e, KeyRotateError::Handoff { .. }) {
                    self.alerter.raise(Alert::new(
                        Event::RenewalFailed,
                        &self.cfg.name,
                        "api_key",
                        msg.clone(),
                    ));
                }
                self.last_error = Some(msg.clone());
                let r = if matches!(
                    e,
                    KeyRotateError::Handoff {
                        rolled_back: true,
                        ..
                    }
                ) {
                    "rolled_back"
                } else {
                    "failed"
                };
                (r, Some(msg))
            }
        };
        self.last_rotation = Some(LastRotation {
            at: when,
            result: result_s.into(),
            duration_ms,
            handoff_ms,
        });
        self.publish_status();
        let k = self.journal.committed.as_ref();
        RotateOutcome {
            credential: self.cfg.name.clone(),
            result: result_s.into(),
            generation: k.map(|k| k.generation),
            fingerprint: k.map(|k| k.hash.clone()),
            error,
        }
    }

    fn set_step(
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
    fn abandon(&mut self, key: &KeyRecord) {
        self.journal.owe(key, unix(SystemTime::now()));
        self.journal.pending = None;
        self.save();
    }

    async fn try_rotate(
        &mut self,
        handoff_time: &mut Option<Duration>,
    ) -> Result<(), KeyRotateError> {
        let name = self.cfg.name.clone();
        let g = self.journal.allocate();
        self.set_step(g, KeyStep::Minting, None)?;
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
        // Test hook: die like kill -9 right after the id is journaled.
        if std::env::var_os("REKEY_TEST_CRASH_AFTER_MINT").is_some() {
            std::process::abort();
        }
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
        let gen = self.generation_of(&key, Some(minted.secret.clone()));
        drop(minted);
        let bootstrap = self.journal.committed.is_none();
        let verdict = match self.reload.reload(&gen).await {
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
                tracing::info!(credential = %name, generation = g, id = %key.id, key_hash = %key.hash, handoff = ?self.handoff, event = "rotated", "rotated");
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
                tracing::info!(credential = %name, generation = g, reason = %why, "the app is not running yet; the handoff stays pending");
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
    fn commit(&mut self, key: KeyRecord, handed_over: bool) {
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

    async fn fail_handoff(&mut self, key: KeyRecord, why: String) -> Result<(), KeyRotateError> {
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
                    tracing::error!(credential = %self.cfg.name, detail = %detail, "after rollback the app does not use the previous key either");
                }
            }
        } else {
            self.commit(key.clone(), false);
        }
        tracing::warn!(credential = %self.cfg.name, generation = key.generation, id = %key.id, rolled_back = can_roll_back, reason = %why, event = "handoff_failed", "handoff failed");
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

    fn publish_status(&self) {
        let now = SystemTime::now();
        let mut s = CredentialStatus::starting(&self.cfg.name, "api_key", &self.cfg.issuer);
        let k = self.journal.committed.as_ref();
        s.state = match k {
            _ if self.renewing => State::Renewing,
            None => State::Missing,
            Some(k) if at(k.expires_at) <= now => State::Expired,
            Some(_) if self.failures > 0 => State::Backoff,
            Some(_) => State::Valid,
        };
        if let Some(k) = k {
            s.generation = Some(k.generation);
            s.fingerprint = Some(k.hash.clone());
            s.serial = Some(k.id.clone());
            s.not_before = Some(cert::rfc3339(at(k.minted_at)));
            s.not_after = Some(cert::rfc3339(at(k.expires_at)));
            s.handoff = if self.probes.is_empty() && self.handoff != Handoff::Failed {
                Handoff::Unverified
            } else {
                self.handoff
            };
        }
        s.next_renewal = Some(cert::rfc3339(self.due_at(now)));
        s.last_rotation = self.last_rotation.clone();
        s.last_error = self.last_error.clone();
        s.consecutive_failures = self.failures;
        let name = self.cfg.name.clone();
        self.status_tx.send_modify(|snap| {
            snap.insert(name, s);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hash_is_12_hex_digits_and_not_the_secret() {
        let h = short_hash("s.supersecret");
        assert!(h.starts_with("sha256:"), "{h}");
        assert_eq!(h.len(), "sha256:".len() + 12);
        assert!(h["sha256:".len()..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(h, short_hash("s.supersecreT"));
    }
}
