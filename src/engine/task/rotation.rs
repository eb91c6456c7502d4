//! A rotation, for every kind: take the rotation slot, issue (or hand over
//! again what is staged) within the issuance budget, stage, hand over;
//! then record the outcome, count a failure and pace the retry.

use std::time::{Duration, Instant, SystemTime};

use super::{Attempt, Journaled, Kind, RotateError, Steps, Task};
use crate::alert::Event;
use crate::engine::budget;
use crate::engine::mailbox::Receiver;
use crate::status::{LastRotation, RotateOutcome, RotateResult};
use crate::timestamp::Timestamp;

impl<K: Kind> Task<K>
where
    Task<K>: Steps,
{
    /// Rotate now (bounded concurrency), record the outcome, update status.
    /// An attempt `rekey rotate` asked for is refused by an exhausted
    /// budget, leaving the credential's state as it was.
    /// `rx` learns when the outcome is decided, so no caller that comes
    /// after the status shows it joins this rotation.
    pub(in crate::engine) async fn rotation(
        &mut self,
        attempt: Attempt,
        rx: &Receiver,
    ) -> RotateOutcome {
        self.permit = self.permits.clone().acquire_owned().await.ok();
        self.renewing = true;
        self.publish_status();
        let started = Instant::now();
        self.last_handoff = None;
        let result = match attempt {
            Attempt::Refresh => self.refresh().await,
            Attempt::Due => self.try_rotate(false).await,
            Attempt::Asked { reissue } => self.try_rotate(reissue).await,
        };
        if let (Attempt::Asked { .. }, Err(e @ RotateError::Budget { frees_at, .. })) =
            (attempt, &result)
        {
            // Refused: nothing was tried, so nothing counts as a failure.
            self.renewing = false;
            rx.seal_rotation();
            self.publish_status();
            self.permit = None;
            let mut o = self.outcome(RotateResult::Refused, Some(e.to_string()));
            o.retry_at = Some(Timestamp::new(budget::at(*frees_at)));
            return o;
        }
        let handoff_ms = self.last_handoff.map(|d| d.as_millis() as u64);
        self.renewing = false;
        let duration_ms = started.elapsed().as_millis() as u64;
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
                self.name(),
                K::LABEL,
                kind.as_str(),
                self.last_handoff.unwrap_or_default(),
            );
        }
        let error = match &result {
            Ok(()) => {
                self.failures = 0;
                self.retry_at = None;
                self.last_error = None;
                let c = self.committed();
                tracing::info!(generation = c.as_ref().map(|c| c.0), fingerprint = c.as_ref().map(|c| c.1.as_str()), issuer = %K::issuer_name(&self.cfg), duration_ms, handoff_ms, handoff = ?self.handoff, event = "rotated", "rotated");
                None
            }
            Err(e) => {
                self.note_failure(e);
                Some(e.to_string())
            }
        };
        self.last_rotation = Some(Box::new(LastRotation {
            at: Timestamp::now(),
            result: kind,
            duration_ms,
            handoff_ms,
        }));
        let outcome = self.outcome(kind, error);
        rx.seal_rotation();
        self.publish_status();
        // The slot is given back only once the status no longer says
        // `renewing`, so no snapshot shows more rotations than the limit.
        self.permit = None;
        outcome
    }

    fn outcome(&self, result: RotateResult, error: Option<String>) -> RotateOutcome {
        let c = self.committed();
        RotateOutcome {
            credential: self.name().to_string(),
            result,
            generation: c.as_ref().map(|c| c.0),
            fingerprint: c.map(|c| c.1),
            error,
            retry_at: None,
        }
    }

    /// Hand over again what is staged while it is fresh enough (unless
    /// `reissue`); otherwise issue within the budget, stage, hand over.
    /// When the budget holds the issuance back, what is staged and still
    /// valid is handed over instead.
    async fn try_rotate(&mut self, reissue: bool) -> Result<(), RotateError> {
        if let Some(r) = self.retry_staged(reissue, false).await {
            return r;
        }
        let counted = match self.take_budget(SystemTime::now()) {
            Ok(at) => at,
            Err(e) => {
                if let Some(r) = self.retry_staged(reissue, true).await {
                    return r;
                }
                return Err(e);
            }
        };
        let g = self.journal.allocate();
        if let Err(e) = self.begin(g) {
            self.give_back_budget(counted);
            return Err(e);
        }
        let mut next = match self.issue(g).await {
            Ok(next) => next,
            Err(e) => {
                if e.issued_nothing() {
                    self.give_back_budget(counted);
                }
                // Saves the journal, with the budget's count given back.
                self.abandon(g);
                return Err(e);
            }
        };
        self.stage(&mut next)?;
        self.hand_over(next).await
    }

    /// Count a failure, schedule the retry, log it once, and alert
    /// `renewal_failed` (handoff failures alert where they happen, with
    /// their details; an exhausted budget alerts `budget_exhausted`).
    /// A held-back issuance is retried when the budget frees up or gives
    /// way; other failures are paced by the kind ([`Steps::backoff`]).
    pub(in crate::engine) fn note_failure(&mut self, e: &RotateError) {
        let now = SystemTime::now();
        let delay = match e {
            RotateError::Budget { until, .. } => crate::schedule::until(budget::at(*until), now),
            _ => self.backoff(e, now),
        };
        self.failures += 1;
        self.retry_at = Some(now + delay);
        let msg = e.to_string();
        let retry_in_ms = delay.as_millis() as u64;
        let words = self.words();
        match e {
            // One line for a failed handoff: what the app did, whether the
            // previous generation is back, and when the handoff is retried.
            RotateError::Handoff {
                generation,
                key,
                why,
                rolled_back,
                ..
            } => {
                let outcome = if *rolled_back {
                    words.rolled_back
                } else {
                    words.kept
                };
                tracing::warn!(generation, id = key.as_deref(), rolled_back, reason = %why, retry_in_ms, consecutive_failures = self.failures, event = "handoff_failed", "handoff failed; {outcome}; {}", words.retry);
            }
            _ => {
                tracing::warn!(issuer = %K::issuer_name(&self.cfg), error = %msg, retry_in_ms, consecutive_failures = self.failures, event = "rotation_failed", "rotation failed; the current {} stays in place", words.current);
            }
        }
        if !matches!(e, RotateError::Handoff { .. } | RotateError::Budget { .. }) {
            let a = self.alert(Event::RenewalFailed, msg.clone());
            self.alerter.raise(a);
        }
        self.last_error = Some(msg);
    }
}

/// The retry delay after issuer errors in a row, for a credential of
/// `lifetime` (see [`crate::schedule::retry_delay`]).
pub(in crate::engine) fn issuer_backoff(
    failures: u32,
    lifetime: Duration,
    e: &RotateError,
) -> Duration {
    crate::schedule::retry_delay(failures, lifetime, fastrand::f64(), e.retry_after())
}
