//! The engine: one task per credential, driven by timers and events (never
//! by polling), owning the rotation state machine and the journal. It knows
//! the [`Issuer`] trait, never a concrete backend.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::alert::Alerter;
use crate::config::{CertificateConfig, FileKind};
use crate::handoff::{Probe, Reload};
use crate::issuer::Issuer;
use crate::metrics::Metrics;
use crate::status::{CredentialStatus, RotateOutcome, Snapshot};
use crate::store::{Store, Target};

mod credential;
pub mod disk;
pub mod journal;
mod retire;
mod rotate;

pub use retire::RetireOutcome;
pub use rotate::RotateError;

/// Errors a caller of the engine can see.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No credential has that name.
    #[error("no credential named {0:?}; `rekey status` lists them")]
    UnknownCredential(String),
    /// The credential's task is gone (the daemon is shutting down).
    #[error("credential {0:?} is not running (the daemon is shutting down)")]
    Stopped(String),
}

/// A credential to keep fresh, wired to its issuer.
pub struct Credential {
    /// Its configuration.
    pub config: CertificateConfig,
    /// The issuer named by `config.issuer`.
    pub issuer: Arc<dyn Issuer>,
    /// How the app is told (from `config.reload`).
    pub reload: Arc<dyn Reload>,
    /// How the handoff is proven (from `config.verify`); empty = unverified.
    pub probes: Vec<Arc<dyn Probe>>,
    /// Where its events are recorded (a no-op when `daemon.audit_log` is unset).
    pub audit: crate::audit::Audit,
}

/// Engine-wide settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// At most this many rotations run at once.
    pub max_concurrent_rotations: usize,
    /// Slow safety re-check of the published files, in case a file event was missed.
    pub backstop: Duration,
}

/// What a credential task can be asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Rotate now and report the outcome.
    Rotate(oneshot::Sender<RotateOutcome>),
    /// Something changed in a directory holding our files.
    FilesChanged,
    /// Remove the files, record and alert `retired`, then stop.
    Retire(oneshot::Sender<retire::RetireOutcome>),
}

/// Senders to the running credential tasks, by name; changed by a config reload.
type Senders = Arc<RwLock<BTreeMap<String, mpsc::Sender<Command>>>>;

/// A cheap, cloneable way to talk to the running engine.
#[derive(Clone)]
pub struct Handle {
    senders: Senders,
    status: watch::Receiver<Snapshot>,
}

impl Handle {
    /// The current status of every credential.
    pub fn snapshot(&self) -> Snapshot {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.status.clone()
    }

    fn sender(&self, name: &str) -> Option<mpsc::Sender<Command>> {
        // A poisoned lock only means a panic elsewhere; the map is still usable.
        let map = self.senders.read().unwrap_or_else(|e| e.into_inner());
        map.get(name).cloned()
    }

    /// Rotate `name` now; resolves when the rotation has finished.
    pub async fn rotate(&self, name: &str) -> Result<RotateOutcome, EngineError> {
        let tx = self
            .sender(name)
            .ok_or_else(|| EngineError::UnknownCredential(name.to_string()))?;
        let (reply, rx) = oneshot::channel();
        tx.send(Command::Rotate(reply))
            .await
            .map_err(|_| EngineError::Stopped(name.to_string()))?;
        rx.await.map_err(|_| EngineError::Stopped(name.to_string()))
    }

    /// Tell the credentials named that their files may have changed.
    pub fn files_changed<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        for name in names {
            if let Some(tx) = self.sender(name) {
                // A full queue already holds a pending re-check; dropping is fine.
                let _ = tx.try_send(Command::FilesChanged);
            }
        }
    }
}

/// One running credential task.
struct Running {
    config: CertificateConfig,
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

/// What a config reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Credentials started.
    pub added: Vec<String>,
    /// Credentials stopped (their files are left alone).
    pub removed: Vec<String>,
    /// Credentials restarted with a changed config.
    pub changed: Vec<String>,
}

/// The running engine.
pub struct Engine {
    tasks: BTreeMap<String, Running>,
    handle: Handle,
    status_tx: watch::Sender<Snapshot>,
    store: Arc<Store>,
    permits: Arc<Semaphore>,
    settings: Settings,
    alerter: Alerter,
    metrics: Metrics,
}

/// The files of a certificate credential, with modes and ownership.
pub fn targets(cfg: &CertificateConfig) -> Vec<Target> {
    cfg.files
        .entries()
        .into_iter()
        .map(|(kind, path)| Target {
            kind,
            path: path.to_path_buf(),
            mode: match kind {
                FileKind::Key | FileKind::Bundle => cfg.key_mode,
                _ => cfg.cert_mode,
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
        let mut engine = Engine {
            tasks: BTreeMap::new(),
            handle: Handle {
                senders: Arc::new(RwLock::new(BTreeMap::new())),
                status: status_rx,
            },
            status_tx,
            store,
            permits: Arc::new(Semaphore::new(settings.max_concurrent_rotations.max(1))),
            settings,
            alerter,
            metrics,
        };
        for c in credentials {
            engine.spawn(c);
        }
        engine
    }

    fn spawn(&mut self, c: Credential) {
        let name = c.config.name.clone();
        let config = c.config.clone();
        let starting =
            CredentialStatus::starting(&name, "certificate", &c.config.issuer).owned_by(&c.config);
        self.status_tx.send_modify(|s| {
            s.insert(name.clone(), starting);
        });
        let (tx, rx) = mpsc::channel(8);
        let (stop, stop_rx) = watch::channel(false);
        let task = credential::Task::new(
            c,
            self.store.clone(),
            self.status_tx.clone(),
            self.permits.clone(),
            self.settings.backstop,
            self.alerter.clone(),
            self.metrics.clone(),
        );
        let join = tokio::spawn(task.run(rx, stop_rx));
        self.handle
            .senders
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), tx);
        self.tasks.insert(name, Running { config, stop, join });
    }

    /// Stop one task after its current step; its files stay as they are.
    async fn stop(&mut self, name: &str) {
        self.handle
            .senders
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(r) = self.tasks.remove(name) {
            let _ = r.stop.send(true);
            let _ = r.join.await;
        }
        self.status_tx.send_modify(|s| {
            s.remove(name);
        });
    }

    /// Apply a reloaded config: start added credentials, stop removed ones
    /// (leaving their files alone), restart changed ones. A restarted task
    /// keeps its journal and committed generation; it rotates at once when
    /// its names or key type no longer match, otherwise at its next renewal.
    pub async fn reconcile(&mut self, credentials: Vec<Credential>) -> Reconciled {
        let mut out = Reconciled::default();
        let wanted: BTreeMap<String, Credential> = credentials
            .into_iter()
            .map(|c| (c.config.name.clone(), c))
            .collect();
        let gone: Vec<String> = self
            .tasks
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            self.stop(&name).await;
            out.removed.push(name);
        }
        for (name, c) in wanted {
            match self.tasks.get(&name) {
                Some(r) if r.config == c.config => continue,
                Some(_) => {
                    self.stop(&name).await;
                    out.changed.push(name);
                }
                None => out.added.push(name),
            }
            self.spawn(c);
        }
        out
    }

    /// A handle for the server, the watcher and signal handlers.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Directories holding managed files, and whose files they are.
    pub fn watched_dirs(&self) -> BTreeMap<PathBuf, Vec<String>> {
        let mut watched: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for (name, r) in &self.tasks {
            for t in targets(&r.config) {
                if let Some(dir) = t.path.parent() {
                    let names = watched.entry(dir.to_path_buf()).or_default();
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
        for r in self.tasks.values() {
            let _ = r.stop.send(true);
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

/// Whether `path` lies in one of the watched directories (used by the watcher
/// to map an event to credentials).
pub fn owners_of<'a>(watched: &'a BTreeMap<PathBuf, Vec<String>>, path: &Path) -> &'a [String] {
    path.parent()
        .and_then(|dir| watched.get(dir))
        .map(Vec::as_slice)
        .unwrap_or(&[])
}
