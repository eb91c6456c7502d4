//! An API key's own work: its staged secret and key file, recovery of an
//! interrupted rotation (revoke the uncommitted key), drift repair, and
//! owed revocations worked off with backoff.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use super::journal::KeyRecord;
use super::KeyTask;
use crate::alert::{Alert, Event};
use crate::config::{KeyFormat, Share};
use crate::engine::group::Purpose;
use crate::fs::safefile;
use crate::handoff::{self, Generation, Secret, Verdict};
use crate::status::Handoff;
use crate::store;
use crate::{cert, schedule};

/// Revocation retries back off up to this.
const MAX_REVOKE_PAUSE: u64 = 300;
/// Renewal jitter: up to 5% of the lifetime.
pub(super) const JITTER: Share = Share::Fraction(0.05);

pub(super) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(super) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// `sha256:` and the first 12 hex digits of the secret: enough to tell keys apart.
pub(super) fn short_hash(secret: &str) -> String {
    let fp = cert::fingerprint(secret.as_bytes());
    fp.chars().take("sha256:".len() + 12).collect()
}

/// A key file rekey wrote (the staged copy or the app's file): bounded, never
/// blocking, and a symlink is not followed (rekey writes none there, and one
/// found is replaced by the next write, never written through).
fn read_key_file(path: &std::path::Path) -> Result<Zeroizing<Vec<u8>>, safefile::ReadError> {
    let opts = safefile::Options {
        follow: false,
        max: safefile::MAX_SECRET,
    };
    safefile::read_with(path, opts).map(|(bytes, _)| bytes)
}

impl KeyTask {
    pub(super) fn secret_path(&self, generation: u64) -> std::path::PathBuf {
        self.store.dir().join(format!("key-{generation}.secret"))
    }

    pub(super) fn stage_secret(
        &self,
        generation: u64,
        secret: &str,
    ) -> Result<(), store::StoreError> {
        store::write_secret_file(
            &self.secret_path(generation),
            secret.as_bytes(),
            0o600,
            None,
            None,
        )
    }

    pub(super) fn load_secret(&self, generation: u64) -> Option<Zeroizing<String>> {
        let path = self.secret_path(generation);
        let bytes = read_key_file(&path).ok()?;
        safefile::text(&path, bytes).ok()
    }

    pub(super) fn unstage(&self, generation: u64) {
        let _ = std::fs::remove_file(self.secret_path(generation));
    }

    /// What the app's key file holds for `key`.
    pub(super) fn render(&self, key: &KeyRecord, secret: &str) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self.cfg.format {
            KeyFormat::Raw => secret.as_bytes().to_vec(),
            KeyFormat::Env => format!("{}={secret}\n", self.cfg.env_var).into_bytes(),
            KeyFormat::Json => {
                let v = serde_json::json!({
                    "secret": secret,
                    "id": key.id,
                    "expires_at": crate::timestamp::rfc3339(at(key.expires_at)),
                });
                let mut s = v.to_string().into_bytes();
                s.push(b'\n');
                s
            }
        })
    }

    pub(super) fn write_key_file(
        &self,
        key: &KeyRecord,
        secret: &str,
    ) -> Result<(), store::StoreError> {
        let bytes = self.render(key, secret);
        let result = store::publish_file(
            &self.cfg.file,
            &bytes,
            self.cfg.key_mode,
            self.cfg.uid,
            self.cfg.gid,
            &self.pins,
        );
        if let Err(e) = &result {
            self.tampered_dir(e);
        }
        result
    }

    /// A write refused because the key file's directory was replaced behind
    /// rekey's back: say so as `tampered` (WARN, alert, audit record).
    pub(super) fn tampered_dir(&self, e: &store::StoreError) {
        if !e.is_tamper() {
            return;
        }
        tracing::warn!(event = "tampered", error = %e, "refusing to write: the key file's directory was replaced behind rekey's back");
        let a = Alert::new(Event::Tampered, &self.cfg.name, "api_key", e.to_string());
        self.alerter.raise(a);
        let entry = crate::audit::Entry::key(
            &self.cfg,
            crate::audit::AuditEvent::Tampered,
            crate::audit::AuditOutcome::Refused,
            None,
        )
        .reason(e.to_string());
        self.audit.record(entry);
    }

    pub(super) fn generation_of(
        &self,
        key: &KeyRecord,
        secret: Option<Zeroizing<String>>,
    ) -> Generation {
        Generation {
            credential: self.cfg.name.clone(),
            generation: key.generation,
            fingerprint: key.hash.clone(),
            serial: key.id.clone(),
            not_after: crate::timestamp::Timestamp::new(at(key.expires_at)),
            key_id: Some(key.id.clone()),
            secret: secret.map(|s| Secret(Arc::new(s))),
            ..Generation::default()
        }
    }

    /// Recover an interrupted rotation: its key was never committed, so put
    /// the committed key back and revoke the new one (or, with nothing
    /// committed yet, finish it: the app has no other key).
    pub(super) async fn recover(&mut self) {
        // Before anything is written: the key file goes into this directory.
        self.pins.pin_file(&self.cfg.file);
        self.load_journal("minting a new key");
        if let Some(p) = self.journal.pending.clone() {
            match (p.key, &self.journal.committed) {
                (None, _) => {
                    tracing::warn!(generation = p.generation, "a mint was interrupted before its answer was recorded; if the issuer minted a key it expires on its own");
                }
                (Some(k), None) if self.load_secret(k.generation).is_some() => {
                    tracing::info!(id = %k.id, event = "recovered", "keeping the key of an interrupted first rotation");
                    self.journal.committed = Some(k);
                }
                (Some(k), _) => {
                    tracing::info!(id = %k.id, event = "recovered", "revoking the key of an interrupted rotation and putting the committed key back");
                    self.journal.owe(&k, unix(SystemTime::now()));
                    self.restore("interrupted rotation").await;
                }
            }
            self.journal.pending = None;
            self.save();
        }
        if let Some(k) = &self.journal.committed {
            if self.load_secret(k.generation).is_none() {
                tracing::error!(
                    generation = k.generation,
                    "the committed key's staged copy is gone; minting a new key"
                );
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
    pub(super) async fn check_file(&mut self) {
        let Some(k) = self.journal.committed.clone() else {
            return;
        };
        let Some(secret) = self.load_secret(k.generation) else {
            return;
        };
        let want = self.render(&k, &secret);
        let have = read_key_file(&self.cfg.file).ok();
        if have.as_deref().map(|h| h.as_slice()) != Some(want.as_slice()) {
            self.restore("the key file differs from the committed key")
                .await;
        }
    }

    /// Publish the committed key again and reload.
    pub(super) async fn restore(&mut self, why: &str) {
        let Some(k) = self.journal.committed.clone() else {
            return;
        };
        let Some(secret) = self.load_secret(k.generation) else {
            return;
        };
        match self.write_key_file(&k, &secret) {
            Ok(()) => {
                tracing::info!(id = %k.id, event = "restored", reason = why, "restored the committed key");
                let g = self.generation_of(&k, None);
                if let Err(e) = self.tell_app(&g, Purpose::Restore).await {
                    tracing::warn!(error = %e, "reload after restore failed");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot restore the committed key")
            }
        }
    }

    pub(super) fn due(&self, now: SystemTime) -> SystemTime {
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
    pub(super) async fn revoke_due(&mut self, now: SystemTime) {
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
                    tracing::info!(id = %r.id, "no revoke configured; the key is left to expire");
                    done.push(i);
                }
                Ok(()) => {
                    tracing::info!(id = %r.id, event = "revoked", "revoked the key");
                    done.push(i);
                }
                Err(e) if at(r.expires_at) <= now => {
                    tracing::info!(id = %r.id, error = %e, "revocation failed, but the key has expired anyway");
                    done.push(i);
                }
                Err(e) => {
                    let attempts = r.attempts + 1;
                    let pause = (1u64 << attempts.min(9)).min(MAX_REVOKE_PAUSE);
                    tracing::warn!(id = %r.id, error = %e, retry_in_s = pause, attempts, event = "revoke_failed", "cannot revoke the key; retrying");
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn short_hash_is_12_hex_digits_and_not_the_secret() {
        let h = short_hash("s.supersecret");
        assert!(h.starts_with("sha256:"), "{h}");
        assert_eq!(h.len(), "sha256:".len() + 12);
        assert!(h["sha256:".len()..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(h, short_hash("s.supersecreT"));
    }
}
