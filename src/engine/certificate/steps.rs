//! The certificate kind's answers to the shared driver ([`Steps`]): each
//! step names the certificate code that does it.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{Next, Task};
use crate::alert::Alert;
use crate::audit::{AuditEvent, AuditOutcome, Entry};
use crate::config::Share;
use crate::engine::journal::Step;
use crate::engine::retire::{Revocation, RevokeStep};
use crate::engine::task::{Moment, RotateError, Steps, Words};
use crate::handoff::{Generation, Verdict};
use crate::status::{CredentialStatus, Handoff};
use crate::store::{self, Material, StoreError};

/// How a certificate's messages name it.
static WORDS: Words = Words {
    current: "credential",
    rolled_back: "rolled back to the previous generation",
    kept: "the new generation stays published",
    retry: "retrying the handoff",
    in_place: "certificate",
    issue_anyway: "issuing",
    budget_freed: "the issuance budget allows issuance again",
    retired: "credential retired",
};

impl Steps for Task {
    type Issued = Next;
    type Previous = Option<Material>;

    async fn start(&mut self) {
        self.recover().await
    }

    fn due_at(&self, now: SystemTime) -> SystemTime {
        self.due(now)
    }

    fn wake_at(&self) -> Option<SystemTime> {
        let ari = self.journal.ari.as_ref().map(|a| a.recheck_at);
        [self.own.probe_at, self.next_date_alert(), ari]
            .into_iter()
            .flatten()
            .min()
    }

    async fn tick(&mut self, now: SystemTime) {
        self.date_alerts(now);
    }

    async fn on_wake(&mut self, now: SystemTime) {
        if self.own.probe_at.is_some_and(|t| t <= now) {
            Box::pin(self.probe_in_background()).await;
        }
        if self
            .journal
            .ari
            .as_ref()
            .is_some_and(|a| a.recheck_at <= now)
        {
            Box::pin(self.refresh_window()).await;
        }
    }

    async fn check_files(&mut self, why: &str) {
        self.repair_files(why).await
    }

    fn refresh_due(&self, now: SystemTime) -> bool {
        self.refresh_only(now)
    }

    async fn refresh(&mut self) -> Result<(), RotateError> {
        self.try_refresh().await
    }

    async fn retry_staged(
        &mut self,
        reissue: bool,
        held_back: bool,
    ) -> Option<Result<(), RotateError>> {
        self.retry_staged_step(reissue, held_back).await
    }

    fn begin(&mut self, g: u64) -> Result<(), RotateError> {
        let r = self.set_pending(g, Step::Issuing);
        if r.is_err() {
            self.journal.pending = None;
        }
        r
    }

    async fn issue(&mut self, g: u64) -> Result<Next, RotateError> {
        self.issue_step(g).await
    }

    fn abandon(&mut self, _g: u64) {
        self.journal.pending = None;
        self.save_and_prune();
    }

    fn stage(&mut self, next: &mut Next) -> Result<(), RotateError> {
        self.stage_step(next)
    }

    fn previous(&mut self) -> Option<Material> {
        self.previous_step()
    }

    async fn publish(
        &mut self,
        next: &mut Next,
        previous: &Option<Material>,
    ) -> Result<(), RotateError> {
        self.publish_step(next, previous)
    }

    fn generation(&self, next: &mut Next) -> Generation {
        self.generation_of(&next.current)
    }

    fn at(&mut self, moment: Moment<'_>, gen: &Generation) {
        match moment {
            Moment::BeforeReload => {
                self.own.handoff_reason = None;
                self.own.reload_owed = false;
                failpoint!("reload.before");
            }
            Moment::Told(told) => {
                let told = told.as_ref().map(|_| ()).map_err(|e| e.to_string());
                let _ = self.audit.reloaded(&self.cfg, gen, told);
            }
            Moment::ReloadMissed(e) => {
                // Not a failed handoff (the app may not run yet), but not
                // quiet either: a running app keeps serving what it had.
                tracing::warn!(generation = gen.generation, error = %e, event = "reload_failed", "the first generation is published but the app could not be told to reload; if it runs, it serves what it had until the reload works (retried when a probe finds it serving something else) or it restarts");
                self.own.handoff_reason = Some(e.to_string());
                self.own.reload_owed = true;
            }
            Moment::BeforeVerify => {
                failpoint!("reload.after");
                failpoint!("verify.before");
            }
            Moment::Judged(verdict) => {
                failpoint!("verify.after");
                self.audit.verdict(&self.cfg, gen, verdict);
            }
        }
    }

    async fn commit(
        &mut self,
        next: Next,
        gen: &Generation,
        verdict: Verdict,
        previous: Option<Material>,
    ) {
        self.commit_step(next, gen, verdict, previous).await
    }

    async fn roll_back(
        &mut self,
        next: Next,
        gen: Generation,
        why: String,
        served: Option<String>,
        previous: Option<Material>,
    ) -> Result<(), RotateError> {
        self.fail_handoff(next.current, gen, why, served, previous)
            .await
    }

    fn backoff(&mut self, e: &RotateError, _now: SystemTime) -> Duration {
        self.backoff_step(e)
    }

    fn staged_waits(&self) -> bool {
        self.journal.staged.is_some()
    }

    fn committed(&self) -> Option<(u64, String)> {
        let c = self.own.current.as_ref()?;
        Some((c.generation, c.info.fingerprint.clone()))
    }

    fn validity(&self, now: SystemTime) -> Option<(SystemTime, SystemTime)> {
        let c = self.own.current.as_ref()?;
        self.usable(&c.info, now)
            .then_some((c.info.not_before, c.info.not_after))
    }

    fn dates(&self) -> Option<(SystemTime, SystemTime)> {
        let c = self.own.current.as_ref()?;
        Some((c.info.not_before, c.info.not_after))
    }

    /// The certificate in place, else the configured lifetime.
    fn lifetime(&self) -> Duration {
        match &self.own.current {
            Some(c) => c.info.lifetime(),
            None => self.cfg.lifetime,
        }
    }

    fn renewal(&self) -> (Share, Share) {
        (self.cfg.renew_before, self.cfg.jitter)
    }

    fn describe(&self, a: &mut Alert) {
        if let Some(c) = &self.own.current {
            a.generation = Some(c.generation);
            a.fingerprint = Some(c.info.fingerprint.clone());
            a.not_after = Some(crate::timestamp::Timestamp::new(c.info.not_after));
        }
    }

    fn status_fields(&self, s: &mut CredentialStatus) {
        s.team = self.cfg.team.clone();
        s.labels = self.cfg.labels.clone();
        if let Some(c) = &self.own.current {
            s.serial = Some(c.info.serial.clone());
            // A reload that never reached the app is not "unverified".
            if self.probes.is_empty() && self.own.reload_owed {
                s.handoff = self.handoff;
            }
            if !matches!(s.handoff, Handoff::Verified | Handoff::Unverified) {
                s.handoff_reason = self.own.handoff_reason.clone();
            }
        }
        s.served_fingerprint = self.own.served.clone();
        s.shortened_by_ca = self.own.current.as_ref().and_then(|c| c.shortened.clone());
        s.staged = self.staged_status();
    }

    fn words(&self) -> &'static Words {
        &WORDS
    }

    async fn revoke_all(&mut self) -> RevokeStep {
        let Some(c) = &self.own.current else {
            return RevokeStep {
                revocation: Revocation::Nothing,
                detail: "not revoked: no certificate had been issued".to_string(),
            };
        };
        match self.committed_cert_pem(c) {
            Ok(pem) => RevokeStep::from_issuer(self.issuer.revoke(&self.cfg.name, &pem).await),
            // Said plainly: the certificate stays valid until it expires.
            Err(e) => RevokeStep {
                revocation: Revocation::Failed,
                detail: format!("NOT revoked: {e}"),
            },
        }
    }

    async fn revoke_rest(&mut self) -> String {
        String::new()
    }

    fn remove_files(&mut self) -> Result<Vec<PathBuf>, StoreError> {
        let removed = store::unpublish(&self.targets(), self.cfg.swap, &self.pins);
        if let Err(e) = &removed {
            self.tampered_dir(e);
        }
        removed
    }

    fn forget(&mut self) {}

    fn entry(&self, event: AuditEvent, outcome: AuditOutcome) -> Entry {
        let e = Entry::cert(&self.cfg, event, outcome);
        match &self.own.current {
            Some(c) => e.generation(c.generation, &c.info.fingerprint),
            None => e,
        }
    }
}
