//! Retrying the handoff, not the issuance: a generation whose handoff
//! failed stays staged (journaled, kept on disk) and is handed over again
//! with backoff, asking the issuer nothing, for as long as it is fresh
//! enough to install ([`schedule::retry_staged`]). A restart, even after
//! `kill -9`, resumes the same staged generation.

use std::time::SystemTime;

use super::{Current, Task};
use crate::engine::journal::Staged;
use crate::engine::task::RotateError;
use crate::schedule;
use crate::status::StagedStatus;
use crate::timestamp::Timestamp;

impl Task {
    /// Keep `next`, whose handoff (or publish) just failed, staged for a
    /// retry: one more failed attempt when it was the staged one already.
    /// The journal is saved by the caller.
    pub(in crate::engine) fn keep_staged(&mut self, next: &Current) {
        let now = SystemTime::now();
        let (issued_at, attempts) = match self.journal.staged.as_deref() {
            Some(s) if s.generation == next.generation => (s.issued_at, s.attempts + 1),
            _ => (self.own.issued_at.unwrap_or(now), 1),
        };
        self.journal.staged = Some(Box::new(Staged {
            generation: next.generation,
            fingerprint: next.info.fingerprint.clone(),
            not_before: next.info.not_before,
            not_after: next.info.not_after,
            issued_at,
            attempts,
        }));
    }

    /// At start: a staged generation that waits for its handoff is retried
    /// at once (unless recovery already scheduled a retry), and one whose
    /// files are gone is forgotten.
    pub(in crate::engine) fn resume_staged(&mut self) {
        let Some(st) = self.journal.staged.as_deref() else {
            return;
        };
        if !self.store.has_generation(st.generation) {
            tracing::warn!(
                generation = st.generation,
                "the staged generation is gone from the state dir; the next rotation issues anew"
            );
            self.journal.staged = None;
            self.save_and_prune();
            return;
        }
        tracing::info!(generation = st.generation, fingerprint = %st.fingerprint, attempts = st.attempts, event = "handoff_pending", "a staged generation waits for its handoff; retrying it");
        if self.failures == 0 {
            self.failures = st.attempts.max(1);
            self.retry_at = Some(SystemTime::now());
        }
    }

    /// The staged generation, if it can still be installed for the current
    /// config (not expired, the names and key type asked for); an unusable
    /// one is forgotten.
    pub(in crate::engine) fn usable_staged(&mut self, now: SystemTime) -> Option<Staged> {
        let st = self.journal.staged.as_deref()?.clone();
        let committed = self.journal.committed == Some(st.generation);
        // Reading it back is left to the retry; here only its dates, names
        // and key type, from the committed record when it is the same one.
        let fits = match self.own.current.as_ref().filter(|_| committed) {
            Some(c) => self.usable(&c.info, now),
            None => match self.load_current(st.generation) {
                Ok((c, _)) => self.usable(&c.info, now),
                Err(_) => false,
            },
        };
        if fits {
            return Some(st);
        }
        tracing::info!(generation = st.generation, "the staged generation no longer fits (expired, or the names or key type changed); issuing anew");
        self.journal.staged = None;
        self.save_and_prune();
        None
    }

    /// Whether `st` is still the one to hand over at `now` rather than
    /// asking the issuer again.
    pub(in crate::engine) fn retry_staged_now(&self, st: &Staged, now: SystemTime) -> bool {
        let committed = self
            .own
            .current
            .as_ref()
            .filter(|c| c.generation != st.generation)
            .map(|c| (c.info.not_before, c.info.not_after));
        schedule::retry_staged(
            (st.not_before, st.not_after),
            st.issued_at,
            committed,
            self.cfg.renew_before,
            self.cfg.jitter,
            self.journal.jitter_draw,
            now,
        )
    }

    /// Hand the staged generation `st` over again: publish, reload, verify,
    /// commit or roll back, with no request to the issuer. `None` when it
    /// cannot be read back (it is then forgotten, and the caller issues).
    pub(in crate::engine) async fn hand_over_staged(
        &mut self,
        st: &Staged,
    ) -> Option<Result<(), RotateError>> {
        match self.load_current(st.generation) {
            Ok((next, material)) => {
                tracing::info!(generation = st.generation, fingerprint = %st.fingerprint, attempt = st.attempts + 1, event = "handoff_retry", "handing the staged generation over again; nothing is asked of the issuer");
                Some(
                    self.hand_over(super::Next {
                        current: next,
                        material: Some(material),
                    })
                    .await,
                )
            }
            Err(e) => {
                tracing::error!(generation = st.generation, error = %e, "the staged generation cannot be read back; issuing anew");
                self.journal.staged = None;
                self.save_and_prune();
                None
            }
        }
    }

    /// The staged generation for `/status`.
    pub(in crate::engine) fn staged_status(&self) -> Option<Box<StagedStatus>> {
        let st = self.journal.staged.as_deref()?;
        Some(Box::new(StagedStatus {
            generation: st.generation,
            fingerprint: st.fingerprint.clone(),
            not_after: Timestamp::new(st.not_after),
            attempts: st.attempts,
        }))
    }
}
