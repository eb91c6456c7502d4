//! The API key kind's answers to the shared driver ([`Steps`]).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::rotate::KeyNext;
use super::upkeep::{at, JITTER};
use super::KeyTask;
use crate::alert::Alert;
use crate::audit::{AuditEvent, AuditOutcome, Entry};
use crate::config::Share;
use crate::engine::retire::RevokeStep;
use crate::engine::task::{issuer_backoff, Moment, RotateError, Steps, Words};
use crate::handoff::{Generation, Verdict};
use crate::status::CredentialStatus;
use crate::store::StoreError;

/// How an API key's messages name it.
static WORDS: Words = Words {
    current: "key",
    rolled_back: "rolled back to the previous key",
    kept: "the new key stays published",
    retry: "retrying with a new key",
    in_place: "key",
    issue_anyway: "minting",
    budget_freed: "the issuance budget allows minting again",
    retired: "api key retired",
};

impl Steps for KeyTask {
    type Issued = KeyNext;
    /// Nothing is read ahead: a rollback reads the committed key's staged
    /// secret when it needs it.
    type Previous = ();

    async fn start(&mut self) {
        self.recover().await
    }

    fn due_at(&self, now: SystemTime) -> SystemTime {
        self.due(now)
    }

    fn wake_at(&self) -> Option<SystemTime> {
        self.journal.revokes.iter().map(|r| at(r.at)).min()
    }

    async fn tick(&mut self, now: SystemTime) {
        self.revoke_due(now).await;
    }

    /// The owed revocations are worked off by [`Steps::tick`], next time round.
    async fn on_wake(&mut self, _now: SystemTime) {}

    async fn check_files(&mut self, _why: &str) {
        self.check_file().await
    }

    fn refresh_due(&self, _now: SystemTime) -> bool {
        false
    }

    async fn refresh(&mut self) -> Result<(), RotateError> {
        Ok(())
    }

    /// An API key keeps nothing staged to hand over again: every rotation
    /// mints (see rotate.rs), so `reissue` changes nothing.
    async fn retry_staged(
        &mut self,
        _reissue: bool,
        _held_back: bool,
    ) -> Option<Result<(), RotateError>> {
        None
    }

    fn begin(&mut self, g: u64) -> Result<(), RotateError> {
        let r = self.set_step(g, super::journal::KeyStep::Minting, None);
        if r.is_err() {
            self.journal.pending = None;
        }
        r
    }

    async fn issue(&mut self, g: u64) -> Result<KeyNext, RotateError> {
        self.mint(g).await
    }

    fn abandon(&mut self, _g: u64) {
        self.journal.pending = None;
        self.save();
    }

    fn stage(&mut self, next: &mut KeyNext) -> Result<(), RotateError> {
        self.stage_step(next)
    }

    fn previous(&mut self) {}

    async fn publish(&mut self, next: &mut KeyNext, _previous: &()) -> Result<(), RotateError> {
        self.publish_step(next).await
    }

    fn generation(&self, next: &mut KeyNext) -> Generation {
        self.generation_of(&next.key, next.secret.take())
    }

    fn at(&mut self, _moment: Moment<'_>, _gen: &Generation) {}

    async fn commit(&mut self, next: KeyNext, _gen: &Generation, verdict: Verdict, _previous: ()) {
        self.commit_step(next.key, verdict)
    }

    async fn roll_back(
        &mut self,
        next: KeyNext,
        _gen: Generation,
        why: String,
        _served: Option<String>,
        _previous: (),
    ) -> Result<(), RotateError> {
        self.fail_handoff(next.key, why).await
    }

    /// Every retry mints, so every failure backs off like an issuer error:
    /// into hours for long lifetimes.
    fn backoff(&mut self, e: &RotateError, _now: SystemTime) -> Duration {
        issuer_backoff(self.failures, self.cfg.lifetime, e)
    }

    fn staged_waits(&self) -> bool {
        false
    }

    fn committed(&self) -> Option<(u64, String)> {
        let k = self.journal.committed.as_ref()?;
        Some((k.generation, k.hash.clone()))
    }

    fn validity(&self, now: SystemTime) -> Option<(SystemTime, SystemTime)> {
        self.dates().filter(|(_, expires)| *expires > now)
    }

    fn dates(&self) -> Option<(SystemTime, SystemTime)> {
        let k = self.journal.committed.as_ref()?;
        Some((at(k.minted_at), at(k.expires_at)))
    }

    /// The committed key's, else the configured lifetime.
    fn lifetime(&self) -> Duration {
        match self.dates() {
            Some((minted, expires)) => expires.duration_since(minted).unwrap_or(self.cfg.lifetime),
            None => self.cfg.lifetime,
        }
    }

    fn renewal(&self) -> (Share, Share) {
        (self.cfg.renew_before, JITTER)
    }

    /// An API key's alerts name the key in their message only.
    fn describe(&self, _a: &mut Alert) {}

    fn status_fields(&self, s: &mut CredentialStatus) {
        s.serial = self.journal.committed.as_ref().map(|k| k.id.clone());
    }

    fn words(&self) -> &'static Words {
        &WORDS
    }

    async fn revoke_all(&mut self) -> RevokeStep {
        self.revoke_committed().await
    }

    async fn revoke_rest(&mut self) -> String {
        self.revoke_owed().await
    }

    fn remove_files(&mut self) -> Result<Vec<PathBuf>, StoreError> {
        let removed = match crate::store::remove_file(&self.cfg.file, &self.pins) {
            Ok(true) => Ok(vec![self.cfg.file.clone()]),
            Ok(false) => Ok(Vec::new()),
            Err(e) => {
                self.tampered_dir(&e);
                Err(e)
            }
        };
        if let Some(k) = &self.journal.committed {
            // The staged copy of a decommissioned secret is no use to anyone.
            self.unstage(k.generation);
        }
        removed
    }

    fn forget(&mut self) {
        if self.journal.committed.take().is_some() {
            self.save();
        }
    }

    fn entry(&self, event: AuditEvent, outcome: AuditOutcome) -> Entry {
        let k = self.journal.committed.as_ref();
        let mut e = Entry::key(&self.cfg, event, outcome, k.map(|k| k.id.as_str()));
        e.fingerprint = k.map(|k| k.hash.clone());
        e.generation = k.map(|k| k.generation);
        e
    }
}
