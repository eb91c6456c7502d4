//! The engine: one task per credential, driven by timers and events (never
//! by polling), owning the rotation state machine and the journal. It knows
//! the [`Issuer`] trait, never a concrete backend.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{oneshot, watch, Semaphore};

use crate::alert::Alerter;
use crate::config::{CertificateConfig, OnRemove};
use crate::handoff::{Probe, Reload};
use crate::issuer::Issuer;
use crate::metrics::Metrics;
use crate::status::{CredentialStatus, RotateOutcome, Snapshot};
use crate::store::{Store, Target};

pub mod apikey;
mod backstop;
mod budget;
mod certificate;
pub mod disk;
mod group;
pub mod journal;
mod mailbox;
mod retire;
mod running;
mod task;

pub use backstop::{backstop_pace, BACKSTOP_MIN_TICK};
pub use retire::{RetireOutcome, RetireResult, Revocation};
use running::{Spec, Wanted};
pub use task::RotateError;

/// Errors a caller of the engine can see.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No credential has that name.
    #[error("no credential named {0:?}; `rekey status` lists them")]
    UnknownCredential(String),
    /// The credential's task is gone (the daemon is shutting down).
    #[error("credential {0:?} is not running (the daemon is shutting down)")]
    Stopped(String),
    /// Too many rotate/retire requests are already waiting for it.
    #[error("credential {0:?} already has {waiters} rotate callers or {max} retire requests waiting; try again when they have finished", waiters = mailbox::MAX_WAITERS, max = mailbox::MAX_REQUESTS)]
    Busy(String),
}

impl EngineError {
    /// The error for a request `name`'s mailbox refused.
    fn refused(name: &str, e: mailbox::SendError) -> EngineError {
        match e {
            mailbox::Closed => EngineError::Stopped(name.to_string()),
            mailbox::Full => EngineError::Busy(name.to_string()),
        }
    }
}

/// A credential to keep fresh, wired to its issuer.
pub struct Credential {
    /// Its configuration, shared with the loaded `Config`.
    pub config: Arc<CertificateConfig>,
    /// The issuer named by `config.issuer`.
    pub issuer: Arc<dyn Issuer>,
    /// How the app is told (from `config.reload`).
    pub reload: Arc<dyn Reload>,
    /// How the handoff is proven (from `config.verify`); empty = unverified.
    pub probes: Vec<Arc<dyn Probe>>,
    /// Where its events are recorded (a no-op when `daemon.audit_log` is unset).
    pub audit: crate::audit::Audit,
    /// Its issuer's issuance budgets (`max_issuances`, `max_issuances_total`).
    pub budget: crate::config::IssuanceBudgets,
}

/// Engine-wide settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// At most this many rotations run at once.
    pub max_concurrent_rotations: usize,
    /// Slow safety re-check of the published files, in case a file event was
    /// missed: every credential is re-checked once per period, by one engine
    /// task that walks them in turn (see [`backstop_pace`]), not by a timer
    /// per credential.
    pub backstop: Duration,
}

/// What a credential task can be asked to do (see [`mailbox`] for how
/// each kind is queued).
#[derive(Debug)]
pub(crate) enum Command {
    /// Rotate now (the callers waiting for the outcome are kept in the
    /// mailbox): retry a staged handoff, or issue anew; `reissue` asks for a
    /// new issuance even when a staged credential waits.
    Rotate {
        /// Issue anew, even when a staged credential waits for its handoff.
        reissue: bool,
    },
    /// Something changed in a directory holding our files.
    FilesChanged,
    /// The periodic re-check of the published files came round to this credential.
    Backstop,
    /// Remove the files, record and alert `retired`, then stop.
    Retire(oneshot::Sender<retire::RetireOutcome>),
}

/// Mailboxes of the running credential tasks, by name; changed by a config reload.
type Senders = Arc<RwLock<BTreeMap<String, mailbox::Mailbox>>>;

/// A cheap, cloneable way to talk to the running engine.
#[derive(Clone)]
pub struct Handle {
    senders: Senders,
    status: watch::Receiver<Snapshot>,
}

impl Handle {
    /// The current status of every credential (a copy: prefer
    /// [`Handle::with_snapshot`] to read it, which copies nothing).
    pub fn snapshot(&self) -> Snapshot {
        self.status.borrow().clone()
    }

    /// Run `f` on the current status without copying it. Keep `f` short and
    /// synchronous: credential tasks wait to publish while it runs.
    pub fn with_snapshot<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> T {
        f(&self.status.borrow())
    }

    /// A receiver that sees every status change.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.status.clone()
    }

    fn sender(&self, name: &str) -> Option<mailbox::Mailbox> {
        // A poisoned lock only means a panic elsewhere; the map is still usable.
        let map = self.senders.read().unwrap_or_else(|e| e.into_inner());
        map.get(name).cloned()
    }

    /// Rotate `name` now; resolves when the rotation has finished. A staged
    /// credential waiting for its handoff is handed over again (no new
    /// issuance); otherwise a new one is issued, within the issuance budget.
    /// Concurrent requests share one rotation.
    pub async fn rotate(&self, name: &str) -> Result<RotateOutcome, EngineError> {
        self.rotate_with(name, false).await
    }

    /// [`Handle::rotate`], or with `reissue` a new issuance even when a
    /// staged credential waits (`rekey rotate NAME --reissue`); refused with
    /// result `refused` when the issuance budget is used up, unless it is
    /// the renewal that keeps the credential from expiring.
    pub async fn rotate_with(
        &self,
        name: &str,
        reissue: bool,
    ) -> Result<RotateOutcome, EngineError> {
        let tx = self
            .sender(name)
            .ok_or_else(|| EngineError::UnknownCredential(name.to_string()))?;
        let (reply, rx) = oneshot::channel();
        tx.rotate(reply, reissue)
            .map_err(|e| EngineError::refused(name, e))?;
        rx.await.map_err(|_| EngineError::Stopped(name.to_string()))
    }

    /// Tell the credentials named that their files may have changed.
    pub fn files_changed<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        for name in names {
            if let Some(tx) = self.sender(name) {
                // Coalesces with a re-check already pending.
                tx.poke(mailbox::Poke::FilesChanged);
            }
        }
    }
}

/// One running credential task, of either kind.
struct Running {
    /// What it was started from: a reload that changes it restarts the task.
    spec: Spec,
    /// Kept here too: the sender map loses it first when the task is stopped.
    mailbox: mailbox::Mailbox,
    join: tokio::task::JoinHandle<()>,
}

/// What a config reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Credentials started.
    pub added: Vec<String>,
    /// Credentials stopped (their files are left alone).
    pub removed: Vec<String>,
    /// Credentials dropped with `on_remove = "revoke"`: retired (revoked
    /// where the issuer can, files removed), as by `rekey retire`.
    pub retired: Vec<String>,
    /// Credentials restarted with a changed config.
    pub changed: Vec<String>,
}

/// The running engine.
pub struct Engine {
    tasks: BTreeMap<String, Running>,
    /// The one backstop task, walking every credential once per period.
    backstop: Option<tokio::task::JoinHandle<()>>,
    handle: Handle,
    status_tx: watch::Sender<Snapshot>,
    store: Arc<Store>,
    permits: Arc<Semaphore>,
    alerter: Alerter,
    metrics: Metrics,
    /// The per-issuer issuance ledgers, shared by the tasks of each issuer.
    budgets: budget::BudgetBook,
    /// The handoff groups of the running credentials.
    groups: group::Groups,
}

/// The files of a certificate credential, with modes and ownership.
pub fn targets(cfg: &CertificateConfig) -> Vec<Target> {
    cfg.files
        .entries()
        .into_iter()
        .map(|(kind, path)| Target {
            kind,
            path: path.to_path_buf(),
            mode: if kind.holds_key() {
                cfg.key_mode
            } else {
                cfg.cert_mode
            },
            uid: cfg.uid,
            gid: cfg.gid,
        })
        .collect()
}

impl Engine {
    /// Start one task per credential.
    pub fn start(
        store: Arc<Store>,
        credentials: Vec<Credential>,
        settings: Settings,
        alerter: Alerter,
        metrics: Metrics,
    ) -> Engine {
        let (status_tx, status_rx) = watch::channel(Snapshot::new());
        let senders: Senders = Arc::new(RwLock::new(BTreeMap::new()));
        let mut engine = Engine {
            tasks: BTreeMap::new(),
            backstop: None,
            handle: Handle {
                senders,
                status: status_rx,
            },
            status_tx,
            store,
            permits: Arc::new(Semaphore::new(settings.max_concurrent_rotations.max(1))),
            alerter,
            metrics,
            budgets: budget::BudgetBook::default(),
            groups: group::Groups::default(),
        };
        // Before any task can issue: an issuer that rolls its CA over must
        // know every credential it waits for.
        announce_trust_consumers(credentials.iter().map(|c| (&c.config, &c.issuer)));
        for c in credentials {
            engine.spawn(Wanted::Certificate(c));
        }
        // Started after the credentials, so its first pace counts them.
        let senders = engine.handle.senders.clone();
        engine.backstop = Some(tokio::spawn(backstop::backstop_loop(
            senders,
            settings.backstop,
        )));
        engine
    }

    /// Start the task of `w`.
    fn spawn(&mut self, w: Wanted) {
        let spec = w.spec();
        let shared = task::Shared {
            store: self.store.clone(),
            status_tx: self.status_tx.clone(),
            permits: self.permits.clone(),
            alerter: self.alerter.clone(),
            metrics: self.metrics.clone(),
        };
        let (name, starting, issuer, budget, group) = match &w {
            Wanted::Certificate(c) => (
                &c.config.name,
                CredentialStatus::starting(&c.config.name, "certificate", &c.config.issuer)
                    .owned_by(&c.config),
                &c.config.issuer,
                c.budget,
                c.config.reload_group.as_ref(),
            ),
            Wanted::ApiKey(k) => (
                &k.config.name,
                CredentialStatus::starting(&k.config.name, "api_key", &k.config.issuer),
                &k.config.issuer,
                k.budget,
                k.config.reload_group.as_ref(),
            ),
        };
        let name = name.clone();
        self.status_tx.send_modify(|s| {
            s.insert(name.clone(), Box::new(starting));
        });
        let ledger = self.budgets.ledger(&self.store, issuer, budget.total);
        let group = group.map(|g| self.groups.member(g));
        let (mailbox, rx) = mailbox::mailbox();
        // Every line the task logs, from its journal recovery on, names it
        // (the task makes its span for each burst of work: see Task::span).
        let join = match w {
            Wanted::Certificate(c) => {
                let t = certificate::task(c, &shared, ledger, group);
                tokio::spawn(Box::new(t).run(rx))
            }
            Wanted::ApiKey(k) => {
                let t = apikey::task(*k, &shared, ledger, group);
                tokio::spawn(Box::new(t).run(rx))
            }
        };
        self.handle
            .senders
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), mailbox.clone());
        self.tasks.insert(
            name,
            Running {
                spec,
                mailbox,
                join,
            },
        );
    }

    /// Start one task per API key.
    pub fn start_keys(&mut self, keys: Vec<apikey::KeyCredential>) {
        for k in keys {
            self.spawn(Wanted::ApiKey(Box::new(k)));
        }
    }

    /// Stop one task after its current step; its files stay as they are.
    async fn stop(&mut self, name: &str) {
        self.handle
            .senders
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(r) = self.tasks.remove(name) {
            r.mailbox.stop();
            let _ = r.join.await;
        }
        self.status_tx.send_modify(|s| {
            s.remove(name);
        });
    }

    /// Retire a credential the new config dropped while its old config said
    /// `on_remove = "revoke"`: the same steps as `rekey retire NAME`. The
    /// caller then stops (joins) the task, whose loop has ended.
    async fn retire_dropped(&self, name: &str) {
        match self.handle.retire(name).await {
            Ok(o) if o.result == RetireResult::Retired && o.revocation != Revocation::Failed => {
                tracing::info!(credential = %name, revocation = %o.revocation, detail = %o.detail, "removed from the config with on_remove = \"revoke\": retired");
            }
            Ok(o) => {
                tracing::error!(credential = %name, result = %o.result, revocation = %o.revocation, detail = %o.detail, "removed from the config with on_remove = \"revoke\", but retiring it did not fully succeed; finish by hand");
            }
            Err(e) => {
                tracing::error!(credential = %name, error = %e, "removed from the config with on_remove = \"revoke\", but it could not be retired; revoke it and remove its files by hand");
            }
        }
    }

    /// Apply a reloaded config: start added credentials, stop removed ones
    /// (leaving their files alone, or retiring those whose old config says
    /// `on_remove = "revoke"`), restart changed ones. A restarted task
    /// keeps its journal and committed generation: a certificate rotates at
    /// once when its names or key type no longer match, otherwise at its
    /// next renewal; an API key keeps its key and its owed revocations.
    pub async fn reconcile(
        &mut self,
        credentials: Vec<Credential>,
        keys: Vec<apikey::KeyCredential>,
    ) -> Reconciled {
        let mut out = Reconciled::default();
        let wanted: BTreeMap<String, Wanted> = credentials
            .into_iter()
            .map(|c| (c.config.name.clone(), Wanted::Certificate(c)))
            .chain(
                keys.into_iter()
                    .map(|k| (k.config.name.clone(), Wanted::ApiKey(Box::new(k)))),
            )
            .collect();
        let gone: Vec<String> = self
            .tasks
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            let revoke = self
                .tasks
                .get(&name)
                .is_some_and(|r| r.spec.on_remove() == OnRemove::Revoke);
            if revoke {
                self.retire_dropped(&name).await;
                out.retired.push(name.clone());
            } else {
                out.removed.push(name.clone());
            }
            self.stop(&name).await;
        }
        for (name, w) in wanted {
            match self.tasks.get(&name) {
                Some(r) if r.spec.same(&w.spec()) => continue,
                Some(_) => {
                    self.stop(&name).await;
                    out.changed.push(name);
                }
                None => out.added.push(name),
            }
            self.spawn(w);
        }
        announce_trust_consumers(self.certificates());
        out
    }

    /// The running certificate tasks' configs and issuers.
    fn certificates(
        &self,
    ) -> impl Iterator<Item = (&Arc<CertificateConfig>, &Arc<dyn Issuer>)> + '_ {
        self.tasks.values().filter_map(|r| match &r.spec {
            Spec::Certificate { config, issuer, .. } => Some((config, issuer)),
            Spec::ApiKey { .. } => None,
        })
    }

    /// The config a running certificate task was started with.
    pub fn running_config(&self, name: &str) -> Option<Arc<CertificateConfig>> {
        match &self.tasks.get(name)?.spec {
            Spec::Certificate { config, .. } => Some(config.clone()),
            Spec::ApiKey { .. } => None,
        }
    }

    /// A handle for the server, the watcher and signal handlers.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Directories holding managed files, and whose files they are.
    pub fn watched_dirs(&self) -> BTreeMap<PathBuf, Vec<String>> {
        let mut watched: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for (name, config) in self.tasks.iter().filter_map(|(n, r)| match &r.spec {
            Spec::Certificate { config, .. } => Some((n, config)),
            Spec::ApiKey { .. } => None,
        }) {
            for t in targets(config) {
                if let Some(dir) = t.path.parent() {
                    // Most directories hold one credential's files: no
                    // room for four names each (10,000 credentials: 0.7 MiB).
                    let names = watched
                        .entry(dir.to_path_buf())
                        .or_insert_with(|| Vec::with_capacity(1));
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
            }
        }
        watched
    }

    /// Ask every task to stop after its current step, and wait for them.
    pub async fn shutdown(mut self) {
        if let Some(b) = self.backstop.take() {
            b.abort();
        }
        for r in self.tasks.values() {
            r.mailbox.stop();
        }
        for (_, r) in std::mem::take(&mut self.tasks) {
            let _ = r.join.await;
        }
    }

    /// Wait until every credential has left the `starting` state (initial
    /// recovery and adoption done), or `timeout` passes.
    pub async fn wait_started(&self, timeout: Duration) -> bool {
        let mut rx = self.handle.subscribe();
        let all_started = |s: &Snapshot| {
            s.values()
                .all(|c| c.state != crate::status::State::Starting)
        };
        tokio::time::timeout(timeout, rx.wait_for(all_started))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(b) = self.backstop.take() {
            b.abort();
        }
    }
}

/// Tell each issuer which of its credentials publish its trust bundle (a
/// `ca` file): see [`Issuer::trust_consumers`].
fn announce_trust_consumers<'a>(
    credentials: impl Iterator<Item = (&'a Arc<CertificateConfig>, &'a Arc<dyn Issuer>)>,
) {
    let mut by_issuer: BTreeMap<&str, (&Arc<dyn Issuer>, Vec<String>)> = BTreeMap::new();
    for (cfg, issuer) in credentials {
        let entry = by_issuer
            .entry(cfg.issuer.as_str())
            .or_insert_with(|| (issuer, Vec::new()));
        if cfg.files.ca.is_some() {
            entry.1.push(cfg.name.clone());
        }
    }
    for (issuer, names) in by_issuer.into_values() {
        issuer.trust_consumers(names);
    }
}

/// Whether `path` lies in one of the watched directories (used by the watcher
/// to map an event to credentials).
pub fn owners_of<'a>(watched: &'a BTreeMap<PathBuf, Vec<String>>, path: &Path) -> &'a [String] {
    path.parent()
        .and_then(|dir| watched.get(dir))
        .map(Vec::as_slice)
        .unwrap_or(&[])
}
