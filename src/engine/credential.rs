//! One credential's task: recover at start, adopt or restore what is on disk,
//! rotate when due, repair drift, probe a pending handoff, raise date alerts.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Semaphore};

mod adopt;
mod alerts;
mod ari;
mod encode;
mod issue;
mod probe;
mod refresh;
mod repair;
mod rollback;
mod staged;

use super::budget::{Blocked, IssuerLedger};
use super::disk;
use super::group::Purpose;
use super::journal::{recovery, Journal, Recovery};
use super::{Command, Credential};
use crate::alert::Alerter;
use crate::cert::{self, CertInfo, Names};
use crate::config::{CertificateConfig, IssuanceBudgets};
use crate::handoff::{Generation, HandoffError, Probe, Reload};
use crate::issuer::Issuer;
use crate::issuer::{pick_in_window, RenewalWindow};
use crate::metrics::Metrics;
use crate::schedule;
use crate::status::{CredentialStatus, Handoff, LastRotation, Snapshot, State};
use crate::store::{CredentialStore, Expected, Material, Pins, Store, Target};
use crate::timestamp::Timestamp;

/// Background probing of a pending or failed handoff backs off up to this.
pub(super) const MAX_PROBE_PAUSE: Duration = Duration::from_secs(30);
/// `expiring` fires when less than this share of the lifetime is left.
const EXPIRING_SHARE: f64 = 0.10;

/// The committed generation, in memory: no PEM and no key, only what drift
/// detection and scheduling need (repair.rs loads the rest on demand).
pub(super) struct Current {
    pub(super) generation: u64,
    /// Digests of what each target must hold.
    pub(super) expected: Expected,
    pub(super) info: CertInfo,
    /// Why the issuer made the certificate shorter than asked, if it said.
    pub(super) shortened: Option<String>,
}

impl Current {
    pub(super) fn new(generation: u64, info: CertInfo, targets: &[Target], m: &Material) -> Self {
        Current {
            generation,
            expected: Expected::of(targets, m),
            info,
            shortened: None,
        }
    }
}

/// A credential's task state.
pub(super) struct Task {
    /// Shared with the engine's record of the running task (one copy each).
    pub(super) cfg: Arc<CertificateConfig>,
    pub(super) issuer: Arc<dyn Issuer>,
    pub(super) reload: Arc<dyn Reload>,
    pub(super) probes: Vec<Arc<dyn Probe>>,
    pub(super) alerter: Alerter,
    pub(super) audit: crate::audit::Audit,
    pub(super) metrics: Metrics,
    pub(super) store: CredentialStore,
    pub(super) journal: Journal,
    pub(super) current: Option<Current>,
    pub(super) status_tx: watch::Sender<Snapshot>,
    pub(super) permits: Arc<Semaphore>,
    pub(super) failures: u32,
    pub(super) retry_at: Option<SystemTime>,
    pub(super) last_rotation: Option<LastRotation>,
    pub(super) last_error: Option<String>,
    pub(super) renewing: bool,
    pub(super) handoff: Handoff,
    pub(super) served: Option<String>,
    /// Next background probe of a pending/failed handoff, and the pause after it.
    pub(super) probe_at: Option<SystemTime>,
    pub(super) probe_pause: Duration,
    /// Why the handoff is not verified, when a reload or probe said so.
    pub(super) handoff_reason: Option<String>,
    /// The app may not have been told about the committed generation (a
    /// bootstrap reload failed, or a restart cannot know): background
    /// probing reloads it when it finds the app serving something else.
    pub(super) reload_owed: bool,
    /// Date alerts already raised for the committed generation.
    pub(super) alerted_expiring: Option<u64>,
    pub(super) alerted_expired: Option<u64>,
    /// Publish → verdict of the last handoff.
    pub(super) last_handoff: Option<Duration>,
    /// The files drifted and the committed generation could not be read
    /// back to restore them: rotate now (cleared on commit).
    pub(super) rotate_to_repair: bool,
    /// The directories of the files, pinned when the task starts: writes go
    /// only into these (see [`crate::store::Pins`]).
    pub(super) pins: Pins,
    /// The committed generation's keystore is missing (a `pkcs12` file was
    /// added) or does not open with the password configured now: a new
    /// generation with the same certificate is due (refresh.rs).
    pub(super) keystore_owed: bool,
    /// The issuer's trust bundle, when it rolls one over and this
    /// credential publishes it (a `ca` file); see refresh.rs.
    pub(super) trust: Option<tokio::sync::watch::Receiver<Arc<crate::issuer::TrustBundle>>>,
    /// Its issuer's issuance budgets, and the issuer's shared ledger when
    /// `max_issuances_total` is limited.
    pub(super) budget: IssuanceBudgets,
    pub(super) issuer_ledger: Option<Arc<IssuerLedger>>,
    /// What holds issuance back, while the budget does (boxed: rare).
    pub(super) budget_blocked: Option<Box<Blocked>>,
    /// When the budget of the last `budget_exhausted` alert frees up; the
    /// `recovered` alert goes out then.
    pub(super) budget_alerted: Option<SystemTime>,
    /// Issuer errors in a row (the handoff retries have their own count in
    /// the staged record), for the issuer backoff.
    pub(super) issuer_failures: u32,
    /// When the generation being handed over was issued (this process).
    pub(super) issued_at: Option<SystemTime>,
    /// Its place in the handoff group it shares its reload with, if any.
    pub(super) group: Option<super::group::Member>,
    /// The rotation slot (`max_concurrent_rotations`) held while rotating;
    /// given up while waiting for a group's reload.
    pub(super) permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Task {
    /// The names to request and validate. Derived from the config when a
    /// step needs them, like [`Task::targets`]: an idle credential keeps no
    /// copy (about 400 bytes each, 4 MB at 10,000 credentials).
    pub(super) fn names(&self) -> Names {
        disk::names_of(&self.cfg)
    }

    /// The files to publish, from the config.
    pub(super) fn targets(&self) -> Vec<Target> {
        super::targets(&self.cfg)
    }

    pub(super) fn new(
        c: Credential,
        issuer_ledger: Option<Arc<IssuerLedger>>,
        store: Arc<Store>,
        status_tx: watch::Sender<Snapshot>,
        permits: Arc<Semaphore>,
        alerter: Alerter,
        metrics: Metrics,
    ) -> Task {
        let trust = c.config.files.ca.as_ref().and_then(|_| c.issuer.trust());
        Task {
            trust,
            keystore_owed: false,
            store: store.credential(&c.config.name),
            cfg: c.config,
            issuer: c.issuer,
            reload: c.reload,
            probes: c.probes,
            alerter,
            audit: c.audit,
            metrics,
            journal: Journal::default(),
            current: None,
            status_tx,
            permits,
            failures: 0,
            retry_at: None,
            last_rotation: None,
            last_error: None,
            renewing: false,
            handoff: Handoff::Pending,
            served: None,
            probe_at: None,
            probe_pause: Duration::from_millis(50),
            handoff_reason: None,
            reload_owed: false,
            alerted_expiring: None,
            alerted_expired: None,
            last_handoff: None,
            rotate_to_repair: false,
            pins: Pins::default(),
            budget: c.budget,
            issuer_ledger,
            budget_blocked: None,
            budget_alerted: None,
            issuer_failures: 0,
            issued_at: None,
            group: None,
            permit: None,
        }
    }

    /// The task's loop. `self` comes boxed: an async fn keeps its arguments
    /// and its locals apart, so a by-value `Task` sat in the spawned future
    /// twice (2.4 KB a credential; 1 KB boxed).
    pub(super) async fn run(mut self: Box<Self>, rx: super::mailbox::Receiver) {
        // The steps are boxed: a task's future is as large as its largest
        // await point, and an idle task should hold only its timers and
        // channels, not room for a whole rotation (10,000 credentials: 27 MB).
        Box::pin(self.start()).await;
        self.publish_status();
        loop {
            // A stop takes effect here, after the current step and before
            // anything queued.
            if rx.stopped() {
                break;
            }
            let now = SystemTime::now();
            self.date_alerts(now);
            self.budget_freed(now);
            // Seen now (due_at reads it); a change from here on wakes the loop.
            let mut trust = self.trust.clone();
            if let Some(t) = trust.as_mut() {
                t.borrow_and_update();
            }
            let due = self.due_at(now);
            if due <= now {
                if self.refresh_only(now) {
                    // Not joined by rotate requests: they ask for a new
                    // certificate, which a refresh does not issue.
                    let _ = Box::pin(self.rotate_refresh()).await;
                } else {
                    // Requests that come meanwhile join this rotation.
                    rx.begin_rotation();
                    let outcome = Box::pin(self.rotate(false, false)).await;
                    rx.finish_rotation(&outcome, self.journal.staged.is_some());
                }
                continue;
            }
            // No per-task backstop timer: the engine's one backstop task
            // sends Command::Backstop to each credential in turn (mod.rs).
            let mut wake = due;
            let ari_at = self.journal.ari.map(|a| a.recheck_at);
            for t in [
                self.probe_at,
                self.next_date_alert(),
                ari_at,
                self.budget_alerted,
            ]
            .into_iter()
            .flatten()
            {
                wake = wake.min(t);
            }
            tokio::select! {
                _ = trust_changed(trust.as_mut()) => {}
                _ = tokio::time::sleep(schedule::until(wake, now)) => {
                    let now = SystemTime::now();
                    if self.probe_at.is_some_and(|t| t <= now) {
                        Box::pin(self.probe_in_background()).await;
                    }
                    if ari_at.is_some_and(|t| t <= now) {
                        Box::pin(self.refresh_window()).await;
                    }
                }
                cmd = rx.recv() => match cmd {
                    Some(Command::Rotate { reissue }) => {
                        let outcome = Box::pin(self.rotate(reissue, true)).await;
                        rx.finish_rotation(&outcome, self.journal.staged.is_some());
                    }
                    Some(Command::FilesChanged) => Box::pin(self.check_files("file event")).await,
                    Some(Command::Backstop) => Box::pin(self.check_files("backstop re-check")).await,
                    Some(Command::Retire(reply)) => return self.retire(reply).await,
                    // Stopped.
                    None => break,
                },
            }
        }
        tracing::debug!("stopped");
    }

    /// Recover an interrupted rotation, then load the committed generation or
    /// adopt a valid pair found on disk, then repair drift.
    async fn start(&mut self) {
        // Before anything is written: the directories as they are at load
        // are the ones this credential's files go into.
        self.pins.pin(&self.targets());
        self.journal = match self.store.load_journal::<Journal>() {
            Ok(Some(j)) => j,
            Ok(None) => Journal::default(),
            Err(e) => {
                tracing::error!(error = %e, "journal unreadable; starting from what is on disk");
                Journal::default()
            }
        };
        // The committed certificate, kept only until the ARI check below.
        let mut cert_pem = None;
        if let Some(g) = self.journal.committed {
            match self.load_current(g) {
                // The rest of the material (the key) is dropped here: only
                // digests stay resident.
                Ok((mut c, material)) => {
                    c.shortened = self.journal.shortened_by_ca.clone();
                    self.current = Some(c);
                    self.keystore_owed = !self.keystore_fits(&material);
                    let Material { cert_pem: pem, .. } = material;
                    cert_pem = Some((g, pem));
                }
                Err(e) => {
                    tracing::error!(generation = g, error = %e, "committed generation unreadable; checking the published files");
                }
            }
        }
        let staged = self
            .journal
            .pending
            .is_some_and(|p| self.store.has_generation(p.generation));
        match recovery(&self.journal, staged) {
            Recovery::Nothing => {}
            Recovery::Discard(g) => {
                tracing::info!(
                    generation = g,
                    "discarding a rotation interrupted before publish"
                );
                self.journal.pending = None;
                self.save_and_prune();
            }
            Recovery::RollForward(g) => match self.load_current(g) {
                Ok((next, material)) => {
                    tracing::info!(
                        generation = g,
                        event = "recovered",
                        "finishing a rotation interrupted during publish or handoff"
                    );
                    if let Err(e) = self.hand_over(next, material).await {
                        self.note_failure(&e); // logs it
                    }
                }
                Err(e) => {
                    tracing::error!(generation = g, error = %e, "staged generation unreadable; discarding it");
                    self.journal.pending = None;
                    self.save_and_prune();
                }
            },
            Recovery::RollBack(g) => {
                tracing::info!(
                    generation = g,
                    "finishing a rollback interrupted by a restart"
                );
                self.restore_committed("interrupted rollback").await;
                self.journal.pending = None;
                self.save_and_prune();
            }
        }
        if self.current.is_none() {
            self.adopt();
        }
        self.check_files("start").await;
        self.resume_staged();
        if self.journal.ari.is_none() {
            self.refresh_window_with(cert_pem).await;
        }
        if self.current.is_some() && !self.probes.is_empty() && self.handoff != Handoff::Verified {
            // Learn at once whether the app serves what is committed. The
            // last process may have died before its reload, or its reload
            // never reached the app: if the app serves something else, tell
            // it once more.
            self.probe_at = Some(SystemTime::now());
            self.reload_owed = true;
        }
    }

    /// Load staged generation `g`: its in-memory record, and its material
    /// for a caller that must publish it (others drop it at once).
    pub(super) fn load_current(&self, g: u64) -> Result<(Current, Material), String> {
        let material = self.store.load_generation(g).map_err(|e| e.to_string())?;
        let ders = cert::pem_certs(material.cert_pem.as_bytes(), "staged certificate")
            .map_err(|e| e.to_string())?;
        let der = ders.first().ok_or("staged certificate is empty")?;
        let info = cert::parse_der(der).map_err(|e| e.to_string())?;
        let current = Current::new(g, info, &self.targets(), &material);
        Ok((current, material))
    }

    /// When the next rotation is due: now when there is no usable committed
    /// credential, else its jittered renewal point; a pending retry wins,
    /// and a trust bundle the `ca` file lacks, or a keystore that no longer
    /// fits, is due at once.
    pub(super) fn due_at(&self, now: SystemTime) -> SystemTime {
        let natural = self.natural_due(now);
        match self.retry_at {
            Some(r) if self.failures > 0 => r,
            _ if self.rotate_to_repair => now,
            _ if self.trust_owed() || self.keystore_owed => now.min(natural),
            _ => natural,
        }
    }

    /// When the certificate itself is due: now when there is no usable
    /// committed one, else its jittered renewal point (or the CA's ARI window).
    pub(super) fn natural_due(&self, now: SystemTime) -> SystemTime {
        match &self.current {
            Some(c) if self.usable(&c.info, now) => {
                let own = schedule::renewal_point(
                    c.info.not_before,
                    c.info.not_after,
                    self.cfg.renew_before,
                    self.cfg.jitter,
                    self.journal.jitter_draw,
                );
                // A CA's ARI window takes precedence over renew_before.
                let ari = self
                    .journal
                    .ari
                    .and_then(|a| a.window)
                    .and_then(|(start, end)| {
                        let w = RenewalWindow {
                            start,
                            end,
                            retry_after: None,
                        };
                        pick_in_window(&w, self.journal.jitter_draw, now)
                    });
                ari.map_or(own, |t| t.min(c.info.not_after))
            }
            _ => now,
        }
    }

    fn usable(&self, info: &CertInfo, now: SystemTime) -> bool {
        info.not_after > now
            && cert::missing_names(info, &self.names()).is_empty()
            && cert::key_type_matches(info, self.cfg.key_type)
    }

    /// The generation details handed to reload and probes.
    pub(super) fn generation_of(&self, c: &Current) -> Generation {
        Generation {
            credential: self.cfg.name.clone(),
            generation: c.generation,
            fingerprint: c.info.fingerprint.clone(),
            serial: c.info.serial.clone(),
            not_after: crate::timestamp::rfc3339(c.info.not_after),
            files: self
                .targets()
                .into_iter()
                .map(|t| (t.kind, t.path))
                .collect(),
            ..Generation::default()
        }
    }

    pub(super) fn save_and_prune(&mut self) {
        if let Err(e) = self.store.save_journal(&self.journal) {
            tracing::error!(error = %e, "cannot save the journal");
            return;
        }
        if let Err(e) = self.store.prune(&self.journal.keep()) {
            tracing::warn!(error = %e, "cannot remove old generations");
        }
    }

    /// Tell the app that the files of `g` are published: through the
    /// credential's handoff group when it shares its reload (one reload for
    /// every member whose handoff falls together), else at once.
    pub(super) async fn tell_app(
        &mut self,
        g: &Generation,
        purpose: Purpose,
    ) -> Result<(), HandoffError> {
        match &self.group {
            Some(m) if !m.alone() => {
                // The files are published: give the rotation slot to the next
                // credential while waiting, so a batch can hold more members
                // than max_concurrent_rotations.
                self.permit = None;
                m.reload(&self.reload, g, purpose).await
            }
            _ => self.reload.reload(g).await,
        }
    }

    pub(super) fn publish_status(&self) {
        let now = SystemTime::now();
        let mut s = CredentialStatus::starting(&self.cfg.name, "certificate", &self.cfg.issuer)
            .owned_by(&self.cfg);
        s.state = match &self.current {
            _ if self.renewing => State::Renewing,
            None => State::Missing,
            Some(c) if c.info.not_after <= now => State::Expired,
            Some(_) if self.failures > 0 => State::Backoff,
            Some(_) => State::Valid,
        };
        if let Some(c) = &self.current {
            s.generation = Some(c.generation);
            s.fingerprint = Some(c.info.fingerprint.clone());
            s.serial = Some(c.info.serial.clone());
            s.not_before = Some(Timestamp::new(c.info.not_before));
            s.not_after = Some(Timestamp::new(c.info.not_after));
            // Without probes the app is only ever "told": unverified, unless
            // telling it failed.
            s.handoff =
                if self.probes.is_empty() && self.handoff != Handoff::Failed && !self.reload_owed {
                    Handoff::Unverified
                } else {
                    self.handoff
                };
        }
        s.served_fingerprint = self.served.clone();
        s.shortened_by_ca = self.current.as_ref().and_then(|c| c.shortened.clone());
        s.next_renewal = Some(Timestamp::new(self.due_at(now)));
        s.last_rotation = self.last_rotation.clone();
        s.last_error = self.last_error.clone();
        if self.current.is_some() && !matches!(s.handoff, Handoff::Verified | Handoff::Unverified) {
            s.handoff_reason = self.handoff_reason.clone();
        }
        s.consecutive_failures = self.failures;
        s.issuance_budget = Some(Box::new(self.budgets().status(
            &self.journal.issuances,
            self.budget_blocked.as_deref(),
            super::budget::unix(now),
        )));
        s.staged = self.staged_status();
        let name = self.cfg.name.clone();
        self.status_tx.send_modify(|snap| {
            s.failing_since = crate::status::failing_since(snap.get(&name), self.failures, now);
            snap.insert(name, s);
        });
    }
}

/// Resolves when the trust bundle changes; never without one (or once its
/// issuer is gone).
async fn trust_changed(
    rx: Option<&mut tokio::sync::watch::Receiver<Arc<crate::issuer::TrustBundle>>>,
) {
    if let Some(rx) = rx {
        if rx.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}
