//! Background probing of a pending or failed handoff: it turns verified
//! when the app starts serving the committed generation, and an app that
//! may never have been told is told again.

use std::time::{Duration, SystemTime};

use super::{Task, MAX_PROBE_PAUSE};
use crate::engine::group::Purpose;
use crate::handoff::{self, Generation, Verdict};
use crate::status::Handoff;

impl Task {
    /// One round of probing for a pending or failed handoff; it turns
    /// verified when the app starts serving the committed generation. When
    /// the app was maybe never told (`reload_owed`) and answers with another
    /// certificate, it is reloaded again.
    pub(super) async fn probe_in_background(&mut self) {
        let Some(cur) = &self.own.current else {
            self.own.probe_at = None;
            return;
        };
        let g = self.generation_of(cur);
        let budget = self.cfg.verify.settle + Duration::from_millis(500);
        match handoff::await_generation(&self.probes, &g, budget, self.cfg.verify.settle, true)
            .await
        {
            Verdict::Verified => {
                tracing::info!(generation = g.generation, fingerprint = %g.fingerprint, event = "verified", "the app now serves the committed generation");
                let was_failed = self.handoff == Handoff::Failed;
                self.handoff = Handoff::Verified;
                self.own.served = Some(g.fingerprint.clone());
                self.own.probe_at = None;
                self.own.probe_pause = Duration::from_millis(50);
                self.own.handoff_reason = None;
                self.own.reload_owed = false;
                if was_failed {
                    self.raise_recovered(&g);
                }
                self.report_trust();
            }
            other => {
                let mut pause = (self.own.probe_pause * 2).min(MAX_PROBE_PAUSE);
                if let Verdict::Failed { served, detail } = &other {
                    self.own.served = served.clone();
                    if self.own.reload_owed {
                        self.own.reload_owed = false;
                        if self.reload_again(&g, detail).await {
                            // Look again soon: the app is reloading.
                            pause = Duration::from_millis(50);
                        }
                    } else if self.handoff == Handoff::Pending {
                        self.own.handoff_reason = Some(detail.clone());
                    }
                }
                self.own.probe_pause = pause;
                self.own.probe_at = Some(SystemTime::now() + self.own.probe_pause);
            }
        }
        self.publish_status();
    }

    /// Tell an app that answers with `served_detail` (not the committed
    /// generation) to reload; true when the reload was delivered. A failure
    /// stays owed, so the next probe round tries again, and is logged as a
    /// warning when its cause changed.
    async fn reload_again(&mut self, g: &Generation, served_detail: &str) -> bool {
        let told = self.tell_app(g, Purpose::Handoff).await;
        let result = self.audit.reloaded(&self.cfg, g, told);
        match result {
            Ok(()) => {
                tracing::info!(generation = g.generation, seen = %served_detail, event = "reloaded", "the app served another certificate; told it to reload");
                self.own.handoff_reason = None;
                true
            }
            Err(e) => {
                let why = e.to_string();
                if self.own.handoff_reason.as_deref() != Some(why.as_str()) {
                    tracing::warn!(generation = g.generation, error = %why, event = "reload_failed", "the app serves another certificate and cannot be told to reload; it keeps serving what it has");
                }
                self.own.handoff_reason = Some(why);
                self.own.reload_owed = true;
                false
            }
        }
    }
}
