//! `rekey run`: the one place where the config is wired to concrete backends,
//! then the engine, the watcher and the HTTP endpoint run until a signal.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::alert::Alerter;
use crate::audit::{Audit, AuditEvent, AuditOutcome, Entry};
use crate::config::{
    CertificateConfig, Config, IssuerConfig, PidSource, ProbeConfig, ReloadConfig,
};
use crate::engine::apikey::KeyCredential;
use crate::engine::{Credential, Engine, Reconciled, Settings};
use crate::handoff::probe::{ExecProbe, HttpProbe, TlsProbe};
use crate::handoff::reload::{ExecReload, HttpReload, NoReload, SignalReload, Target};
use crate::handoff::{Probe, Reload};
use crate::issuer::acme::Acme;
use crate::issuer::keys::{ExecKeys, HttpKeys, KeyIssuer, VaultKeys};
use crate::issuer::local_ca::LocalCa;
use crate::issuer::vault::{VaultClient, VaultIssuer};
use crate::issuer::{Issuer, IssuerError};
use crate::metrics::Metrics;
use crate::monitor::Monitor;

use crate::server::{self, Endpoint};
use crate::store::Store;
use crate::token::AdminToken;

mod error;
pub mod sdnotify;
mod watchers;
pub use error::DaemonError;
use watchers::{watch_files, watch_watches};

/// How long a shutdown waits for rotations in progress before giving up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long a shutdown waits for queued alerts to be delivered.
const ALERT_FLUSH: Duration = Duration::from_secs(5);
/// How long start-up waits for every credential's initial state (journal
/// recovery and adoption, no issuing) before telling systemd READY anyway.
const STARTUP_WAIT: Duration = Duration::from_secs(60);

/// Build one issuer object per `[issuer.NAME]`.
pub fn build_issuers(
    config: &Config,
    store: &Store,
) -> Result<BTreeMap<String, Arc<dyn Issuer>>, DaemonError> {
    let mut out: BTreeMap<String, Arc<dyn Issuer>> = BTreeMap::new();
    for (name, ic) in &config.issuers {
        let issuer: Arc<dyn Issuer> = match ic {
            IssuerConfig::LocalCa(c) => {
                let dir = store.ca_dir()?.join(name);
                Arc::new(LocalCa::open(name, &dir, c)?)
            }
            IssuerConfig::Acme(c) => Arc::new(Acme::open(name, store.root(), c)?),
            IssuerConfig::Vault(c) => Arc::new(VaultIssuer::new(name, c)?),
            // API key issuers: built per key in `key_credentials`.
            IssuerConfig::HttpKeys(_) | IssuerConfig::ExecKeys(_) => continue,
        };
        out.insert(name.clone(), issuer);
    }
    Ok(out)
}

/// A certificate's reload backend and probes.
pub type HandoffParts = (Arc<dyn Reload>, Vec<Arc<dyn Probe>>);

/// Build the reload backend and the probes of one certificate.
pub fn build_handoff(c: &CertificateConfig) -> Result<HandoffParts, DaemonError> {
    build_handoff_parts(&c.name, &c.reload, &c.verify)
}

/// Build a reload backend and probes (certificates and API keys).
pub fn build_handoff_parts(
    name: &str,
    reload: &ReloadConfig,
    verify: &crate::config::VerifyConfig,
) -> Result<HandoffParts, DaemonError> {
    let fail = |why: String| DaemonError::Handoff {
        credential: name.to_string(),
        why,
    };
    // The app on this host: never through a proxy, any certificate (the
    // fingerprint is what the handoff checks).
    let local = || crate::net::httpc::Client::local().map_err(|e| fail(e.to_string()));
    let reload: Arc<dyn Reload> = match reload {
        ReloadConfig::None => Arc::new(NoReload),
        ReloadConfig::Signal { signal, target } => {
            let target = match target {
                PidSource::Pid(p) => Target::Pid(*p),
                PidSource::File(f) => Target::PidFile(f.clone()),
            };
            Arc::new(SignalReload::new(signal, target).map_err(fail)?)
        }
        ReloadConfig::Exec {
            command,
            timeout,
            env,
        } => Arc::new(ExecReload {
            command: command.clone(),
            timeout: *timeout,
            env: env.clone(),
        }),
        ReloadConfig::Http {
            url,
            method,
            headers,
            timeout,
        } => Arc::new(HttpReload {
            url: url.clone(),
            method: method.clone(),
            headers: headers.clone(),
            timeout: *timeout,
            http: local()?,
        }),
    };
    let mut probes: Vec<Arc<dyn Probe>> = Vec::new();
    for p in &verify.probes {
        probes.push(match p {
            ProbeConfig::Tls {
                connect,
                server_name,
                starttls,
                client_cert,
                client_key,
            } => {
                let client = client_cert.as_deref().zip(client_key.as_deref());
                let tls = crate::net::tls::probe_config(client)
                    .map(Arc::new)
                    .map_err(fail)?;
                Arc::new(TlsProbe {
                    connect: connect.clone(),
                    server_name: server_name.clone(),
                    starttls: *starttls,
                    tls,
                })
            }
            ProbeConfig::Http {
                url,
                expect_status,
                expect_body,
                headers,
            } => Arc::new(HttpProbe {
                url: url.clone(),
                expect_status: *expect_status,
                expect_body: expect_body.clone(),
                headers: headers.clone(),
                http: local()?,
            }),
            ProbeConfig::Exec { command, env } => Arc::new(ExecProbe {
                command: command.clone(),
                env: env.clone(),
            }),
        });
    }
    Ok((reload, probes))
}

/// A started daemon: engine, watcher and endpoint.
pub struct Running {
    engine: Engine,
    store: Arc<Store>,
    alerter: Alerter,
    audit: Audit,
    metrics: Metrics,
    stop: tokio::sync::watch::Sender<bool>,
    watcher: Option<crate::watch::Watcher>,
    monitor: Monitor,
    /// File events for watched certificates (best effort: missing
    /// directories are skipped and caught by the re-read at every backstop).
    monitor_watcher: Option<crate::watch::Watcher>,
    /// The endpoint's bound address (port 0 resolved), if it listens.
    pub addr: Option<std::net::SocketAddr>,
    /// The admin socket (`STATE_DIR/rekey.sock`), removed at shutdown.
    pub admin_socket: PathBuf,
}

impl Running {
    /// A handle to the engine.
    pub fn handle(&self) -> crate::engine::Handle {
        self.engine.handle()
    }

    /// Apply a reloaded config: credentials added, removed or changed.
    pub async fn reload(&mut self, config: &Config) -> Result<Reconciled, DaemonError> {
        let issuers = build_issuers(config, &self.store)?;
        let credentials = credentials(config, &issuers, &self.audit)?;
        self.alerter.set_owners(&config.certificates);
        self.metrics.set_teams(&config.certificates);
        let keys = key_credentials(config, &self.audit)?;
        let mut changes = self.engine.reconcile(credentials, keys).await;
        self.watcher = watch_files(&self.engine);
        let w = self.monitor.reconcile(&config.watches).await;
        changes.added.extend(w.added);
        changes.removed.extend(w.removed);
        changes.changed.extend(w.changed);
        self.monitor.set_managed(&config.certificates);
        self.monitor_watcher = watch_watches(&self.monitor);
        Ok(changes)
    }

    /// Point `config`'s unchanged credentials at the copies their running
    /// tasks hold, so a reload does not leave two of each (the daemon keeps
    /// `config` for the next reload).
    pub fn share_configs(&self, config: &mut Config) {
        for c in config.certificates.iter_mut() {
            if let Some(running) = self.engine.running_config(&c.name) {
                if running == *c {
                    *c = running;
                }
            }
        }
    }

    /// Wait until every credential finished its start-up (recovery, adoption).
    pub async fn wait_started(&self, timeout: Duration) -> bool {
        self.engine.wait_started(timeout).await
    }

    /// Stop the endpoint and the engine, letting steps in progress finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(SHUTDOWN_GRACE, self.engine.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("rotations still running after {SHUTDOWN_GRACE:?}; exiting anyway (the journal finishes them at next start)");
        }
        self.monitor.shutdown().await;
        // Alerts raised during the last steps still go out.
        if !self.alerter.flush(ALERT_FLUSH).await {
            tracing::warn!("some alerts were not delivered before exit");
        }
        // Still under the state dir's lock: no newer daemon owns it yet.
        if let Err(e) = std::fs::remove_file(&self.admin_socket) {
            tracing::debug!(error = %e, path = %self.admin_socket.display(), "cannot remove the admin socket");
        }
    }
}

/// One engine credential per `[[certificate]]`, wired to its backends.
fn credentials(
    config: &Config,
    issuers: &BTreeMap<String, Arc<dyn Issuer>>,
    audit: &Audit,
) -> Result<Vec<Credential>, DaemonError> {
    let mut out = Vec::new();
    for c in &config.certificates {
        // Config validation guarantees every issuer name resolves.
        let Some(issuer) = issuers.get(&c.issuer) else {
            continue;
        };
        let (reload, probes) = build_handoff(c)?;
        out.push(Credential {
            config: c.clone(),
            issuer: issuer.clone(),
            reload,
            probes,
            audit: audit.clone(),
            budget: config.budget(&c.issuer),
        });
    }
    Ok(out)
}

/// One engine task per `[[api_key]]`; each vault issuer's client is shared
/// by its keys (one login, one token).
fn key_credentials(config: &Config, audit: &Audit) -> Result<Vec<KeyCredential>, DaemonError> {
    let mut clients: BTreeMap<String, VaultClient> = BTreeMap::new();
    let mut out = Vec::new();
    for k in &config.api_keys {
        let setup = |e: crate::issuer::keys::KeyError| IssuerError::Setup {
            issuer: k.issuer.clone(),
            message: e.to_string(),
        };
        // Config validation guarantees a key issuer.
        let issuer: Arc<dyn KeyIssuer> = match config.issuers.get(&k.issuer) {
            Some(IssuerConfig::Vault(vc)) => {
                let client = match clients.get(&k.issuer) {
                    Some(c) => c.clone(),
                    None => {
                        let c =
                            VaultClient::new(&k.issuer, vc).map_err(|e| IssuerError::Setup {
                                issuer: k.issuer.clone(),
                                message: e.to_string(),
                            })?;
                        clients.insert(k.issuer.clone(), c.clone());
                        c
                    }
                };
                Arc::new(VaultKeys {
                    client,
                    mint: k.mint.clone(),
                    revoke: k.revoke.clone(),
                })
            }
            Some(IssuerConfig::HttpKeys(hc)) => {
                Arc::new(HttpKeys::new(&k.issuer, hc, &k.mint, k.revoke.as_ref()).map_err(setup)?)
            }
            Some(IssuerConfig::ExecKeys(ec)) => Arc::new(ExecKeys {
                name: k.issuer.clone(),
                cfg: ec.clone(),
                mint: k.mint.clone(),
                revoke: k.revoke.clone(),
                credential: k.name.clone(),
            }),
            _ => continue,
        };
        let (reload, probes) = build_handoff_parts(&k.name, &k.reload, &k.verify)?;
        out.push(KeyCredential {
            config: k.clone(),
            issuer,
            reload,
            probes,
            audit: audit.clone(),
            budget: config.budget(&k.issuer),
        });
    }
    Ok(out)
}

/// Wire the config to backends and start everything. `metrics` is shared
/// with the endpoint.
pub async fn start(
    config: &Config,
    alerter: Alerter,
    metrics: Metrics,
) -> Result<Running, DaemonError> {
    // Read before anything starts, so a bad token file stops start-up.
    let token = match &config.daemon.admin_token_file {
        Some(path) => Some(AdminToken::read(path)?),
        None => None,
    };
    let store = Arc::new(Store::open(&config.daemon.state_dir)?);
    let audit = match &config.daemon.audit_log {
        Some(path) => Audit::open(path, config.daemon.audit_max_size)?,
        None => Audit::none(),
    };
    // Before the engine starts, so a run's first record names the config it runs.
    audit.record(config_entry(
        AuditEvent::ConfigLoaded,
        config,
        AuditOutcome::Success,
        None,
    ));
    let issuers = build_issuers(config, &store)?;
    let credentials = credentials(config, &issuers, &audit)?;
    alerter.set_owners(&config.certificates);
    metrics.set_teams(&config.certificates);
    let listener = match config.daemon.listen {
        Some(addr) => Some(server::bind(addr).await?),
        None => None,
    };
    // After Store::open: the state dir's lock is held, so a socket file
    // left there belongs to a dead daemon.
    let (admin, admin_socket) = server::bind_admin(&config.daemon.state_dir)?;
    // Built before any task starts: building key issuers takes time (their
    // HTTP clients load the platform's roots), and a certificate that shares
    // a reload with an API key must find the key already in its handoff
    // group, or its first handoff goes alone and the key's waits for it.
    let keys = key_credentials(config, &audit)?;
    let engine = Engine::start(
        store.clone(),
        credentials,
        Settings {
            max_concurrent_rotations: config.daemon.max_concurrent_rotations,
            backstop: config.daemon.backstop,
        },
        alerter.clone(),
        metrics.clone(),
    );
    let mut engine = engine;
    engine.start_keys(keys);
    let settings = crate::monitor::Settings {
        recheck: config.daemon.backstop,
    };
    let mut monitor = Monitor::start(&config.watches, settings, alerter.clone())?;
    if !config.daemon.compat_metrics.is_empty() {
        monitor.track_managed(engine.handle().subscribe(), &config.certificates);
    }
    metrics.set_watch_view(monitor.view());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let endpoint = Endpoint::new(engine.handle(), metrics.clone(), token.clone())
        .with_admin_socket(admin_socket.clone())
        .with_watches(monitor.view());
    let addr = listener.as_ref().map(|(_, bound)| *bound);
    tracing::info!(addr = ?addr, admin_socket = %admin_socket.display(), admin_token = token.is_some(), "endpoint listening");
    server::spawn(listener.map(|(l, _)| l), admin, endpoint, stop_rx.clone())?;
    tokio::spawn(sdnotify::status_task(engine.handle(), stop_rx.clone()));
    if let Some(period) = sdnotify::watchdog_period() {
        tracing::debug!(period_ms = period.as_millis() as u64, "systemd watchdog on");
        tokio::spawn(sdnotify::watchdog_task(engine.handle(), period, stop_rx));
    }
    let watcher = watch_files(&engine);
    let monitor_watcher = watch_watches(&monitor);
    // A watched file the engine wrote (a managed certificate's CA, say)
    // between the monitor's first read and its directory watch raised no
    // event it could see: read every watched file once more now.
    if monitor_watcher.is_some() {
        let names: Vec<String> = monitor.watched_dirs().into_values().flatten().collect();
        monitor.handle().files_changed(names.iter());
    }
    tracing::info!(
        config = %config.path.display(),
        credentials = config.certificates.len() + config.api_keys.len(),
        watches = config.watches.len(),
        "rekey running"
    );
    Ok(Running {
        engine,
        store,
        alerter,
        audit,
        metrics,
        stop,
        watcher,
        monitor,
        monitor_watcher,
        addr,
        admin_socket,
    })
}

/// The alert sinks of the config, counting deliveries in `metrics`.
pub fn build_alerter(config: &Config, metrics: &Metrics) -> Result<Alerter, DaemonError> {
    let m = metrics.clone();
    let hook: crate::alert::ResultHook = Arc::new(move |sink: &str, event, result| {
        let result = match result {
            crate::alert::Delivery::Sent => crate::metrics::SUCCESS,
            crate::alert::Delivery::Failed | crate::alert::Delivery::Dropped => {
                crate::metrics::FAILURE
            }
        };
        m.alert(sink, event.as_str(), result);
    });
    let options = crate::alert::Options {
        on_result: Some(hook),
        ..crate::alert::Options::default()
    };
    let alerter = crate::alert::build_with(&config.alerts, options)?;
    for sink in alerter.sink_names() {
        metrics.alert_sink(&sink);
    }
    Ok(alerter)
}

/// Run the daemon until SIGTERM or SIGINT; systemd is notified through
/// [`sdnotify`] (call `sdnotify::init` first).
pub async fn run(config: Config, metrics: Metrics) -> Result<(), DaemonError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let alerter = build_alerter(&config, &metrics)?;
    let mut running = start(&config, alerter, metrics).await?;
    let mut config = config;
    let mut started = false;
    let signal = loop {
        tokio::select! {
            ok = running.wait_started(STARTUP_WAIT), if !started => {
                if !ok {
                    tracing::warn!("some credentials are still starting after {STARTUP_WAIT:?}; telling systemd we are ready anyway (see /readyz)");
                }
                // The endpoint is already listening (bound in start).
                sdnotify::ready();
                started = true;
                crate::heap::release_free_memory();
                crate::heap::page_out_program();
            }
            _ = sighup.recv() => {
                sdnotify::reloading();
                reload(&mut running, &mut config).await;
                sdnotify::ready();
                crate::heap::release_free_memory();
                crate::heap::page_out_program();
            }
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };
    tracing::info!("{signal}: stopping after the current step");
    sdnotify::stopping();
    running.shutdown().await;
    Ok(())
}

/// SIGHUP: re-read the config file; an invalid one is rejected and the
/// running config stays.
async fn reload(running: &mut Running, config: &mut Config) {
    // logrotate's postrotate may send SIGHUP: let go of a rotated audit file.
    running.audit.reopen();
    let new = match Config::load(&config.path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, event = "config_rejected", "SIGHUP: the new config is invalid; keeping the running one");
            running.audit.record(config_entry(
                AuditEvent::ConfigReloaded,
                config,
                AuditOutcome::Rejected,
                Some(e.to_string()),
            ));
            return;
        }
    };
    let violations = crate::config::evaluate_policy(&new);
    if !violations.is_empty() {
        let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
        tracing::error!(violations = %list.join("; "), event = "config_rejected", "SIGHUP: the new config violates [policy]; keeping the running one");
        running.audit.record(config_entry(
            AuditEvent::ConfigReloaded,
            config,
            AuditOutcome::Rejected,
            Some(format!("policy: {}", list.join("; "))),
        ));
        return;
    }
    if new.daemon != config.daemon {
        tracing::warn!("SIGHUP: [daemon] settings changed; they take effect at the next restart");
    }
    // Compared by value: the Debug text hides inline header values, so it
    // missed a changed token.
    if new.alerts != config.alerts {
        tracing::warn!("SIGHUP: [[alert]] sinks changed; they take effect at the next restart");
    }
    let mut new = new;
    match running.reload(&new).await {
        Ok(changes) => {
            running.share_configs(&mut new);
            tracing::info!(added = ?changes.added, removed = ?changes.removed, retired = ?changes.retired, changed = ?changes.changed, event = "config_reloaded", "SIGHUP: config reloaded");
            let what = format!(
                "added {:?}, removed {:?}, retired {:?}, changed {:?}",
                changes.added, changes.removed, changes.retired, changes.changed
            );
            running.audit.record(config_entry(
                AuditEvent::ConfigReloaded,
                &new,
                AuditOutcome::Success,
                Some(what),
            ));
            *config = new;
        }
        Err(e) => {
            tracing::error!(error = %e, event = "config_rejected", "SIGHUP: cannot apply the new config; keeping the running one");
            running.audit.record(config_entry(
                AuditEvent::ConfigReloaded,
                config,
                AuditOutcome::Rejected,
                Some(e.to_string()),
            ));
        }
    }
}

/// A config event naming the file (the reason says what changed or why not).
fn config_entry(
    event: AuditEvent,
    config: &Config,
    outcome: AuditOutcome,
    reason: Option<String>,
) -> Entry {
    let reason = reason.unwrap_or_else(|| format!("{} credentials", config.certificates.len()));
    Entry::daemon(
        event,
        outcome,
        Some(format!("{}: {reason}", config.path.display())),
    )
}
