//! Watches: certificates rekey does not issue but a host depends on (a
//! certificate another pipeline drops in place, a CA bundle, a client
//! certificate baked into an image, the chain an endpoint serves). One task
//! per `[[watch]]` reads the file on change and at every re-check, or probes
//! the endpoint on a jittered interval, publishes what it found in a
//! [`View`] (served in `/status` and `/metrics`) and raises `expiring`,
//! `expired`, `unreadable` and `recovered` through the alert sinks. It never
//! writes a file, and watches never count for readiness.
//!
//! With `daemon.compat_metrics`, a second task keeps the leaf details of the
//! managed certificates (subject and issuer names) that the engine's status
//! does not carry, read from their published files when they change.

mod eval;
mod managed;
mod task;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tracing::Instrument;

use crate::alert::Alerter;
use crate::certview::ViewError;
use crate::config::{CertificateConfig, WatchConfig, WatchSource};
use crate::engine::Reconciled;
use crate::fs::safefile::ReadError;
use crate::handoff::probe::ChainError;
use crate::status::{CredentialStatus, Snapshot, KIND_WATCH};

pub use crate::watched::{ManagedLeaf, View};
pub use eval::evaluate;

/// Why a watch could not see its certificates (shown as `last_error` and
/// in the `unreadable` alert).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The file could not be read (missing, not a regular file, too large).
    #[error("watch {watch}: {source}; rekey only reads this file, it never writes it")]
    Read {
        /// The watch.
        watch: String,
        /// Why.
        source: ReadError,
    },
    /// The file holds no usable certificate.
    #[error("watch {watch}: {}: {source}; a watched file holds PEM or DER certificates", path.display())]
    Parse {
        /// The watch.
        watch: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: ViewError,
    },
    /// The endpoint did not complete a TLS handshake.
    #[error(
        "watch {watch}: endpoint {endpoint}: {source}; is it up and reachable from this host?"
    )]
    Probe {
        /// The watch.
        watch: String,
        /// `host:port (SNI name)`.
        endpoint: String,
        /// Why.
        source: ChainError,
    },
    /// The endpoint's chain does not parse.
    #[error("watch {watch}: endpoint {endpoint} serves a chain that does not parse: {source}")]
    Chain {
        /// The watch.
        watch: String,
        /// `host:port (SNI name)`.
        endpoint: String,
        /// Why.
        source: ViewError,
    },
    /// The probe's TLS client could not be set up.
    #[error("cannot set up the TLS client for endpoint watches: {0}")]
    Setup(String),
}

/// Monitor settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// A watched file is re-read this often even without a file event
    /// (`daemon.backstop`): a missed event, or a directory that did not
    /// exist yet, cannot hide a change for longer.
    pub recheck: Duration,
}

/// The wake-up bells of the running watches, by name (for file events).
type Bells = Arc<RwLock<BTreeMap<String, Arc<Notify>>>>;

/// A cheap handle that tells watches their directory changed.
#[derive(Clone, Default)]
pub struct Handle {
    bells: Bells,
}

impl Handle {
    /// Re-read the watches named (unknown names are ignored).
    pub fn files_changed<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        // A poisoned lock only means a panic elsewhere; the map is still usable.
        let bells = self.bells.read().unwrap_or_else(|e| e.into_inner());
        for name in names {
            if let Some(b) = bells.get(name) {
                // Stores a permit when the task is busy: the event is not lost.
                b.notify_one();
            }
        }
    }
}

struct Running {
    config: Arc<WatchConfig>,
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

/// The running watches.
pub struct Monitor {
    tasks: BTreeMap<String, Running>,
    handle: Handle,
    tx: watch::Sender<View>,
    alerter: Alerter,
    settings: Settings,
    tls: Arc<rustls::ClientConfig>,
    managed: Option<managed::Tracker>,
}

impl Monitor {
    /// Start one task per watch.
    pub fn start(
        watches: &[WatchConfig],
        settings: Settings,
        alerter: Alerter,
    ) -> Result<Monitor, WatchError> {
        let tls = crate::net::tls::probe_config(None)
            .map(Arc::new)
            .map_err(WatchError::Setup)?;
        let (tx, _) = watch::channel(View::default());
        let mut m = Monitor {
            tasks: BTreeMap::new(),
            handle: Handle::default(),
            tx,
            alerter,
            settings,
            tls,
            managed: None,
        };
        for w in watches {
            m.spawn(Arc::new(w.clone()));
        }
        Ok(m)
    }

    fn spawn(&mut self, cfg: Arc<WatchConfig>) {
        let name = cfg.name.clone();
        let mut starting = CredentialStatus::starting(&name, KIND_WATCH, "");
        starting.handoff = crate::status::Handoff::Unmanaged;
        starting.team = cfg.team.clone();
        starting.labels = cfg.labels.clone();
        self.tx.send_modify(|v| {
            v.watches.insert(name.clone(), starting);
        });
        let bell = Arc::new(Notify::new());
        let (stop, stop_rx) = watch::channel(false);
        let t = task::Task::new(
            cfg.clone(),
            self.tx.clone(),
            self.alerter.clone(),
            self.settings.recheck,
            self.tls.clone(),
        );
        let span = crate::logfmt::task_span(&name, KIND_WATCH);
        let join = tokio::spawn(t.run(bell.clone(), stop_rx).instrument(span));
        self.handle
            .bells
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), bell);
        self.tasks.insert(
            name,
            Running {
                config: cfg,
                stop,
                join,
            },
        );
    }

    async fn stop(&mut self, name: &str) {
        self.handle
            .bells
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(r) = self.tasks.remove(name) {
            let _ = r.stop.send(true);
            let _ = r.join.await;
        }
        self.tx.send_modify(|v| {
            v.watches.remove(name);
        });
    }

    /// Apply a reloaded config: start added watches, stop removed ones,
    /// restart changed ones (which read or probe again at once).
    pub async fn reconcile(&mut self, watches: &[WatchConfig]) -> Reconciled {
        let mut out = Reconciled::default();
        let gone: Vec<String> = self
            .tasks
            .keys()
            .filter(|n| !watches.iter().any(|w| &w.name == *n))
            .cloned()
            .collect();
        for name in gone {
            self.stop(&name).await;
            out.removed.push(name);
        }
        for w in watches {
            match self.tasks.get(&w.name) {
                Some(r) if *r.config == *w => continue,
                Some(_) => {
                    self.stop(&w.name).await;
                    out.changed.push(w.name.clone());
                }
                None => out.added.push(w.name.clone()),
            }
            self.spawn(Arc::new(w.clone()));
        }
        out
    }

    /// Follow the engine's status and keep the leaf details of the managed
    /// certificates in the view (for `daemon.compat_metrics`).
    pub fn track_managed(
        &mut self,
        engine: watch::Receiver<Snapshot>,
        certs: &[Arc<CertificateConfig>],
    ) {
        match &self.managed {
            Some(t) => t.set(certs),
            None => self.managed = Some(managed::Tracker::start(engine, certs, self.tx.clone())),
        }
    }

    /// Take the managed certificates' file paths from a reloaded config.
    pub fn set_managed(&self, certs: &[Arc<CertificateConfig>]) {
        if let Some(t) = &self.managed {
            t.set(certs);
        }
    }

    /// A receiver of every change of the view.
    pub fn view(&self) -> watch::Receiver<View> {
        self.tx.subscribe()
    }

    /// A handle for the file watcher.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Directories to watch for file events, and the watches in each: the
    /// file's directory, and the directory of what a symlink at the path
    /// points to (a change there would not show up in the link's directory).
    pub fn watched_dirs(&self) -> BTreeMap<PathBuf, Vec<String>> {
        let mut out: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for (name, r) in &self.tasks {
            let WatchSource::File(path) = &r.config.source else {
                continue;
            };
            let real = std::fs::canonicalize(path).ok();
            for dir in [Some(path.as_path()), real.as_deref()]
                .into_iter()
                .flatten()
                .filter_map(|p| p.parent())
            {
                let names = out.entry(dir.to_path_buf()).or_default();
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        out
    }

    /// Stop every task.
    pub async fn shutdown(mut self) {
        if let Some(t) = self.managed.take() {
            t.stop();
        }
        let names: Vec<String> = self.tasks.keys().cloned().collect();
        for name in names {
            self.stop(&name).await;
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(t) = self.managed.take() {
            t.stop();
        }
        for r in self.tasks.values() {
            let _ = r.stop.send(true);
        }
    }
}

/// Read or probe one watch now, without a daemon (`rekey report`, `rekey
/// check`): its status object as `/status` would show it after a first check.
pub async fn check_once(cfg: &WatchConfig) -> Result<CredentialStatus, WatchError> {
    let tls = crate::net::tls::probe_config(None)
        .map(Arc::new)
        .map_err(WatchError::Setup)?;
    let (tx, rx) = watch::channel(View::default());
    let mut t = task::Task::new(
        Arc::new(cfg.clone()),
        tx,
        Alerter::noop(),
        Duration::from_secs(3600),
        tls,
    );
    t.check_and_publish().await;
    let status = rx.borrow().watches.get(&cfg.name).cloned();
    status.ok_or_else(|| WatchError::Setup("no status was published".into()))
}

/// One line for `rekey check`: a watched file's certificates as they are
/// now (read here, bounded), or how an endpoint will be probed (`check`
/// makes no connections).
pub fn describe(cfg: &WatchConfig, now: std::time::SystemTime) -> String {
    let what = match &cfg.source {
        WatchSource::File(path) => {
            let found = crate::fs::safefile::read(path)
                .map_err(|e| e.to_string())
                .and_then(|b| crate::certview::certificates(&b).map_err(|e| e.to_string()));
            match found {
                Err(e) => format!("file, unreadable: {e}"),
                Ok(certs) => match evaluate(&certs, cfg, now) {
                    Some(v) => {
                        let c = &certs[v.soonest].cert;
                        format!(
                            "file {}, {} certificate(s): {}, first to expire {} ({}), turns expiring at {}",
                            path.display(),
                            certs.len(),
                            v.state.as_str(),
                            c.subject_cn.as_deref().unwrap_or(&c.subject),
                            c.not_after,
                            crate::timestamp::rfc3339(v.alert_at)
                        )
                    }
                    None => "file, no certificate".to_string(),
                },
            }
        }
        WatchSource::Endpoint { .. } => format!(
            "endpoint {}, probed by the daemon every {} (`rekey check` makes no connections)",
            cfg.source.describe(),
            humantime::format_duration(cfg.interval)
        ),
    };
    format!("  {:<16} watch: {what}", cfg.name)
}
