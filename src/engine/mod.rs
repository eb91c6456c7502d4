//! The engine: one task per credential, driven by timers and events (never
//! by polling), owning the rotation state machine and the journal. It knows
//! the [`Issuer`] trait, never a concrete backend.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;

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
mod rotate;

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
}

/// A cheap, cloneable way to talk to the running engine.
#[derive(Clone)]
pub struct Handle {
    senders: Arc<BTreeMap<String, mpsc::Sender<Command>>>,
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

    /// Rotate `name` now; resolves when the rotation has finished.
    pub async fn rotate(&self, name: &str) -> Result<RotateOutcome, EngineError> {
        let tx = self
            .senders
            .get(name)
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
            if let Some(tx) = self.senders.get(name) {
                // A full queue already holds a pending re-check; dropping is fine.
                let _ = tx.try_send(Command::FilesChanged);
            }
        }
    }
}

/// The running engine.
pub struct Engine {
    tasks: JoinSet<()>,
    handle: Handle,
    shutdown: watch::Sender<bool>,
    watched: BTreeMap<PathBuf, Vec<String>>,
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
        let initial: Snapshot = credentials
            .iter()
            .map(|c| {
                let s = CredentialStatus::starting(&c.config.name, "certificate", &c.config.issuer);
                (c.config.name.clone(), s)
            })
            .collect();
        let (status_tx, status_rx) = watch::channel(initial);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(settings.max_concurrent_rotations.max(1)));
        let mut senders = BTreeMap::new();
        let mut watched: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        let mut tasks = JoinSet::new();
        for c in credentials {
            let (tx, rx) = mpsc::channel(8);
            let name = c.config.name.clone();
            for t in targets(&c.config) {
                if let Some(dir) = t.path.parent() {
                    let names = watched.entry(dir.to_path_buf()).or_default();
                    if !names.contains(&name) {
                        names.push(name.clone());
                    }
                }
            }
            senders.insert(name, tx);
            let task = credential::Task::new(
                c,
                store.clone(),
                status_tx.clone(),
                permits.clone(),
                settings.backstop,
                alerter.clone(),
                metrics.clone(),
            );
            tasks.spawn(task.run(rx, shutdown_rx.clone()));
        }
        Engine {
            tasks,
            handle: Handle {
                senders: Arc::new(senders),
                status: status_rx,
            },
            shutdown,
            watched,
        }
    }

    /// A handle for the server, the watcher and signal handlers.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Directories holding managed files, and whose files they are.
    pub fn watched_dirs(&self) -> &BTreeMap<PathBuf, Vec<String>> {
        &self.watched
    }

    /// Ask every task to stop after its current step, and wait for them.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
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
