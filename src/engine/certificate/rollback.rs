//! A failed handoff: roll back to the committed generation when allowed,
//! keep the new one staged for a retry of its handoff, alert
//! `handoff_failed` (the log line is note_failure's).

use std::time::{Duration, SystemTime};

use super::{Current, Task};
use crate::alert::{Alert, Event};
use crate::config::OnFailure;
use crate::engine::journal::Step;
use crate::engine::task::RotateError;
use crate::handoff::{self, Verdict};
use crate::status::Handoff;
use crate::store::Material;

impl Task {
    /// The app did not take the new generation: roll back to `previous` (the
    /// committed material) when allowed and possible, alert
    /// `handoff_failed`, and return the error.
    pub(in crate::engine) async fn fail_handoff(
        &mut self,
        next: Current,
        gen: handoff::Generation,
        why: String,
        served: Option<String>,
        previous: Option<Material>,
    ) -> Result<(), RotateError> {
        let message = match &served {
            Some(fp) => format!("app still serves {fp}, not {} ({why})", gen.fingerprint),
            None => why,
        };
        let now = SystemTime::now();
        // A retried handoff of the committed generation itself has nothing
        // else to go back to.
        let wants_roll_back = self.cfg.on_failure == OnFailure::Rollback
            && self
                .own
                .current
                .as_ref()
                .is_some_and(|c| c.info.not_after > now && c.generation != next.generation);
        // Without the old material (logged in hand_over) the new generation
        // stays: publishing anything unchecked would be worse.
        let previous = previous.filter(|_| wants_roll_back);
        let can_roll_back = previous.is_some();
        let old_was_verified = self.handoff == Handoff::Verified;
        self.handoff = Handoff::Failed;
        self.own.served = served.clone();
        let mut served_after = served.clone();
        // Kept staged for a retry of its handoff, journaled together with
        // the rollback step, so a crash from here on keeps it too.
        self.keep_staged(&next);
        if let Some(prev) = previous {
            self.set_pending(next.generation, Step::RollingBack)?;
            failpoint!("rollback.before");
            self.republish(&prev, "handoff failed").await;
            drop(prev); // zeroizes the old key before the verify wait
            failpoint!("rollback.after");
            // Only a generation the app was seen serving can be checked again.
            if let Some(cur) = self.own.current.as_ref().filter(|_| old_was_verified) {
                let old = self.generation_of(cur);
                // Check the old generation is served again (best effort).
                match handoff::await_generation(
                    &self.probes,
                    &old,
                    self.cfg.verify.timeout,
                    self.cfg.verify.settle,
                    false,
                )
                .await
                {
                    Verdict::Verified => served_after = Some(old.fingerprint.clone()),
                    Verdict::Failed { served, detail } => {
                        tracing::error!(detail = %detail, "after rollback the app does not serve the previous generation either");
                        served_after = served;
                    }
                    _ => {}
                }
            }
            self.own.served = served_after.clone();
            self.journal.pending = None;
            self.save_and_prune(); // the failed generation stays staged
        } else {
            // Nothing valid to go back to, or on_failure = "keep": the new
            // generation stays; keep probing so it can still turn verified,
            // and retry its reload with backoff (staged is the committed one).
            let staged = self.journal.staged.take();
            self.commit_next(next);
            self.journal.staged = staged;
            self.save_and_prune();
            self.own.probe_at = Some(SystemTime::now() + Duration::from_secs(1));
        }
        // Logged once, with the retry, by the caller (note_failure).
        let mut a = Alert::new(
            Event::HandoffFailed,
            &self.cfg.name,
            "certificate",
            message.clone(),
        );
        a.generation = Some(gen.generation);
        a.fingerprint = Some(gen.fingerprint.clone());
        a.served_fingerprint = served_after;
        a.not_after = Some(gen.not_after);
        a.rolled_back = Some(can_roll_back);
        self.alerter.raise(a);
        self.audit
            .rolled_back(&self.cfg, &gen, can_roll_back, &message);
        Err(RotateError::Handoff {
            credential: self.cfg.name.clone(),
            generation: gen.generation,
            key: None,
            why: message,
            rolled_back: can_roll_back,
        })
    }
}
