//! The one credential task, for every kind of credential.
//!
//! A certificate and an API key go through the same life: recover what a
//! crash interrupted, rotate when due (issue → stage → publish → hand over
//! → commit, or roll back), repair drift, answer `rekey rotate` and
//! `rekey retire`, keep `/status` current. [`Task`] runs that life once,
//! generic over the [`Kind`]; each kind implements the [`Steps`] on its own
//! task (`certificate/` and `apikey/`), with its own journal format, so a
//! state dir written before both kinds shared this task loads as it is.
//!
//! Shared here: the task loop, the rotation's bookkeeping (the rotation
//! slot, outcome, metrics, failure count, backoff, the one log line and the
//! alert), the handoff's reload and verify, issuance budgets
//! (`engine/budget.rs`), retirement (`engine/retire.rs`) and the status
//! entry (`status.rs`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

use super::budget::{Blocked, IssuerLedger};
use super::group::{Member, Purpose};
use super::mailbox::Receiver;
use super::Command;
use crate::alert::{Alert, Alerter};
use crate::audit::Audit;
use crate::config::IssuanceBudgets;
use crate::handoff::{self, Generation, HandoffError, Probe, Reload, Verdict};
use crate::issuer::TrustBundle;
use crate::metrics::Metrics;
use crate::schedule;
use crate::status::{Handoff, LastRotation, Snapshot};
use crate::store::{CredentialStore, Pins, StoreError};

mod error;
mod kind;
mod rotation;
mod status;

pub use error::RotateError;
pub(in crate::engine) use kind::{Journaled, Kind, Moment, Steps, Words};
pub(in crate::engine) use rotation::issuer_backoff;

/// A credential's task: the state every kind shares, the kind's config,
/// issuer and journal, and its own state (`own`).
pub(in crate::engine) struct Task<K: Kind> {
    /// Its configuration (a certificate's is shared with the loaded config).
    pub(in crate::engine) cfg: K::Config,
    pub(in crate::engine) issuer: Arc<K::Issuer>,
    pub(in crate::engine) journal: K::Journal,
    pub(in crate::engine) own: K::Own,
    pub(in crate::engine) reload: Arc<dyn Reload>,
    /// How the handoff is proven; empty = unverified.
    pub(in crate::engine) probes: Vec<Arc<dyn Probe>>,
    pub(in crate::engine) alerter: Alerter,
    pub(in crate::engine) audit: Audit,
    pub(in crate::engine) metrics: Metrics,
    pub(in crate::engine) store: CredentialStore,
    pub(in crate::engine) status_tx: watch::Sender<Snapshot>,
    pub(in crate::engine) permits: Arc<Semaphore>,
    /// Failed rotations in a row, and when the next attempt is due.
    pub(in crate::engine) failures: u32,
    pub(in crate::engine) retry_at: Option<SystemTime>,
    /// Boxed: none until this process rotates it.
    pub(in crate::engine) last_rotation: Option<Box<LastRotation>>,
    pub(in crate::engine) last_error: Option<String>,
    pub(in crate::engine) renewing: bool,
    pub(in crate::engine) handoff: Handoff,
    /// Publish → verdict of the last handoff.
    pub(in crate::engine) last_handoff: Option<Duration>,
    /// The directories of its files, pinned when the task starts: writes go
    /// only into these (see [`crate::store::Pins`]).
    pub(in crate::engine) pins: Pins,
    /// Its issuer's issuance budgets, and the issuer's shared ledger when
    /// `max_issuances_total` is limited.
    pub(in crate::engine) budget: IssuanceBudgets,
    pub(in crate::engine) issuer_ledger: Option<Arc<IssuerLedger>>,
    /// What holds issuance back, while the budget does (boxed: rare).
    pub(in crate::engine) budget_blocked: Option<Box<Blocked>>,
    /// When the budget of the last `budget_exhausted` alert frees up; the
    /// `recovered` alert goes out then.
    pub(in crate::engine) budget_alerted: Option<SystemTime>,
    /// Its place in the handoff group it shares its reload with, if any.
    /// Boxed: most credentials share their reload with nobody.
    pub(in crate::engine) group: Option<Box<Member>>,
    /// The rotation slot (`max_concurrent_rotations`) held while rotating;
    /// given up while waiting for a group's reload.
    pub(in crate::engine) permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// A trust bundle whose change wakes the task (a certificate that
    /// publishes its issuer's rolled-over CA; see certificate/refresh.rs).
    pub(in crate::engine) trust: Option<watch::Receiver<Arc<TrustBundle>>>,
}

/// What every task is built from, whatever its kind.
pub(in crate::engine) struct Parts<K: Kind> {
    pub cfg: K::Config,
    pub issuer: Arc<K::Issuer>,
    pub own: K::Own,
    pub reload: Arc<dyn Reload>,
    pub probes: Vec<Arc<dyn Probe>>,
    pub audit: Audit,
    pub budget: IssuanceBudgets,
}

/// The engine's shared pieces every task gets.
#[derive(Clone)]
pub(in crate::engine) struct Shared {
    pub store: Arc<crate::store::Store>,
    pub status_tx: watch::Sender<Snapshot>,
    pub permits: Arc<Semaphore>,
    pub alerter: Alerter,
    pub metrics: Metrics,
}

impl<K: Kind> Task<K> {
    /// A task that has not started: nothing loaded yet.
    pub(in crate::engine) fn new(
        p: Parts<K>,
        shared: &Shared,
        issuer_ledger: Option<Arc<IssuerLedger>>,
        group: Option<Member>,
    ) -> Task<K> {
        Task {
            store: shared.store.credential(K::name(&p.cfg)),
            cfg: p.cfg,
            issuer: p.issuer,
            journal: K::Journal::default(),
            own: p.own,
            reload: p.reload,
            probes: p.probes,
            alerter: shared.alerter.clone(),
            audit: p.audit,
            metrics: shared.metrics.clone(),
            status_tx: shared.status_tx.clone(),
            permits: shared.permits.clone(),
            failures: 0,
            retry_at: None,
            last_rotation: None,
            last_error: None,
            renewing: false,
            handoff: Handoff::Pending,
            last_handoff: None,
            pins: Pins::default(),
            budget: p.budget,
            issuer_ledger,
            budget_blocked: None,
            budget_alerted: None,
            group: group.map(Box::new),
            permit: None,
            trust: None,
        }
    }

    /// The credential's name.
    pub(in crate::engine) fn name(&self) -> &str {
        K::name(&self.cfg)
    }

    /// Load the journal at start; an unreadable one is logged and replaced
    /// by an empty one (`what`: what the task does then).
    pub(in crate::engine) fn load_journal(&mut self, what: &str) {
        self.journal = match self.store.load_journal::<K::Journal>() {
            Ok(Some(j)) => j,
            Ok(None) => K::Journal::default(),
            Err(e) => {
                tracing::error!(error = %e, "journal unreadable; {what}");
                K::Journal::default()
            }
        };
    }

    /// Save the journal; a failure is logged (the caller goes on).
    pub(in crate::engine) fn save(&self) {
        if let Err(e) = self.store.save_journal(&self.journal) {
            tracing::error!(error = %e, "cannot save the journal");
        }
    }

    /// Save the journal, or fail the step that needed it saved.
    pub(in crate::engine) fn save_strict(&self) -> Result<(), RotateError> {
        self.store
            .save_journal(&self.journal)
            .map_err(|e| self.store_err(e))
    }

    /// A disk error of this credential's rotation.
    pub(in crate::engine) fn store_err(&self, source: StoreError) -> RotateError {
        RotateError::Store {
            credential: self.name().to_string(),
            source,
        }
    }

    /// Tell the app that the files of `g` are published: through the
    /// credential's handoff group when it shares its reload (one reload for
    /// every member whose handoff falls together), else at once.
    pub(in crate::engine) async fn tell_app(
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

    /// An alert about this credential, described by its kind.
    pub(in crate::engine) fn alert(&self, event: crate::alert::Event, message: String) -> Alert
    where
        Self: Steps,
    {
        let mut a = Alert::new(event, self.name(), K::LABEL, message);
        self.describe(&mut a);
        a
    }
}

impl<K: Kind> Task<K>
where
    Task<K>: Steps,
{
    /// The span every line of this task is logged in, carrying its name
    /// and kind. Made for each burst of work, not held while the task
    /// sleeps: an idle task keeps no span (10,000 credentials: about 3 MiB).
    pub(crate) fn span(&self) -> tracing::Span {
        crate::logfmt::task_span(self.name(), K::LABEL)
    }

    /// The task's loop. `self` comes boxed: an async fn keeps its arguments
    /// and its locals apart, so a by-value task sat in the spawned future
    /// twice (2.4 KB a credential; 1 KB boxed).
    pub(crate) async fn run(mut self: Box<Self>, rx: Receiver) {
        // The steps are boxed: a task's future is as large as its largest
        // await point, and an idle task should hold only its timers and
        // channels, not room for a whole rotation (10,000 credentials: 27 MB).
        let span = self.span();
        Box::pin(self.start().instrument(span)).await;
        self.span().in_scope(|| self.publish_status());
        loop {
            // A stop takes effect here, after the current step and before
            // anything queued.
            if rx.stopped() {
                break;
            }
            let now = SystemTime::now();
            let span = self.span();
            Box::pin(self.tick(now).instrument(span)).await;
            self.span().in_scope(|| self.budget_freed(now));
            // Seen now (due_at reads it); a change from here on wakes the loop.
            let mut trust = self.trust.clone();
            if let Some(t) = trust.as_mut() {
                t.borrow_and_update();
            }
            let due = self.due_at(now);
            if due <= now {
                let span = self.span();
                if self.refresh_due(now) {
                    // Not joined by rotate requests: they ask for a new
                    // credential, which a refresh does not issue.
                    let _ = Box::pin(self.rotation(Attempt::Refresh, &rx).instrument(span)).await;
                } else {
                    // Requests that come meanwhile join this rotation.
                    rx.begin_rotation();
                    let outcome = Box::pin(self.rotation(Attempt::Due, &rx).instrument(span)).await;
                    rx.finish_rotation(&outcome, self.staged_waits());
                }
                continue;
            }
            // No per-task backstop timer: the engine's one backstop task
            // sends Command::Backstop to each credential in turn (mod.rs).
            let wake = [self.wake_at(), self.budget_alerted]
                .into_iter()
                .flatten()
                .fold(due, SystemTime::min);
            let woken = tokio::select! {
                _ = trust_changed(trust.as_mut()) => Woken::Trust,
                _ = tokio::time::sleep(schedule::until(wake, now)) => Woken::Timer,
                cmd = rx.recv() => Woken::Command(cmd),
            };
            let span = self.span();
            match woken {
                Woken::Trust => {}
                Woken::Timer => Box::pin(self.on_wake(SystemTime::now()).instrument(span)).await,
                Woken::Command(Some(Command::Rotate { reissue })) => {
                    let attempt = Attempt::Asked { reissue };
                    let outcome = Box::pin(self.rotation(attempt, &rx).instrument(span)).await;
                    rx.finish_rotation(&outcome, self.staged_waits());
                }
                Woken::Command(Some(Command::FilesChanged)) => {
                    Box::pin(self.check_files("file event").instrument(span)).await
                }
                Woken::Command(Some(Command::Backstop)) => {
                    Box::pin(self.check_files("backstop re-check").instrument(span)).await
                }
                Woken::Command(Some(Command::Retire(reply))) => {
                    return Box::pin(self.retire(reply).instrument(span)).await
                }
                // Stopped.
                Woken::Command(None) => break,
            }
        }
        self.span().in_scope(|| tracing::debug!("stopped"));
    }

    /// Publish the new generation, reload, verify; commit, or roll back
    /// per `on_failure`. The same handoff for every kind; the kind's steps
    /// say what publishing, committing and rolling back mean for it.
    pub(in crate::engine) async fn hand_over(
        &mut self,
        mut next: <Self as Steps>::Issued,
    ) -> Result<(), RotateError> {
        let previous = self.previous();
        let published = std::time::Instant::now();
        self.publish(&mut next, &previous).await?;
        let gen = self.generation(&mut next);
        // Bootstrap: with no earlier generation the app may not run yet (a
        // native sidecar starts first); a missing app is not a failure.
        let bootstrap = self.committed().is_none();
        let verdict = self.reload_and_verify(&gen, bootstrap).await;
        self.last_handoff = Some(published.elapsed());
        self.at(Moment::Judged(&verdict), &gen);
        match verdict {
            Verdict::Verified | Verdict::Unverified => {
                self.commit(next, &gen, verdict, previous).await;
                Ok(())
            }
            Verdict::Unreachable(why) if bootstrap => {
                tracing::info!(generation = gen.generation, reason = %why, "the app is not serving yet; the handoff stays pending");
                self.commit(next, &gen, Verdict::Unreachable(why), previous)
                    .await;
                Ok(())
            }
            Verdict::Unreachable(why) => self.roll_back(next, gen, why, None, previous).await,
            Verdict::Failed { served, detail } => {
                self.roll_back(next, gen, detail, served, previous).await
            }
        }
    }

    /// Tell the app about `gen` and wait for the probes' verdict.
    async fn reload_and_verify(&mut self, gen: &Generation, bootstrap: bool) -> Verdict {
        self.at(Moment::BeforeReload, gen);
        let told = self.tell_app(gen, Purpose::Handoff).await;
        self.at(Moment::Told(&told), gen);
        match told {
            Err(e) if bootstrap => {
                self.at(Moment::ReloadMissed(&e), gen);
                Verdict::Unreachable(e.to_string())
            }
            Err(e) => Verdict::Failed {
                served: None,
                detail: e.to_string(),
            },
            Ok(()) => {
                self.at(Moment::BeforeVerify, gen);
                let verify = K::verify(&self.cfg);
                handoff::await_generation(
                    &self.probes,
                    gen,
                    verify.timeout,
                    verify.settle,
                    bootstrap,
                )
                .await
            }
        }
    }
}

/// What woke a sleeping task.
enum Woken {
    /// The trust bundle changed.
    Trust,
    /// One of its timers fired.
    Timer,
    /// A request, or `None`: stopped.
    Command(Option<Command>),
}

/// What started a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::engine) enum Attempt {
    /// It was due.
    Due,
    /// `rekey rotate` asked (with `--reissue`: issue anew even when a
    /// staged generation waits); an exhausted budget refuses it.
    Asked { reissue: bool },
    /// Only a republish of the committed generation is due.
    Refresh,
}

/// Resolves when the trust bundle changes; never without one (or once its
/// issuer is gone).
async fn trust_changed(rx: Option<&mut watch::Receiver<Arc<TrustBundle>>>) {
    if let Some(rx) = rx {
        if rx.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}
