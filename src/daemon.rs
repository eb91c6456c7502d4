//! `rekey run`: the one place where the config is wired to concrete backends,
//! then the engine, the watcher and the HTTP endpoint run until a signal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, IssuerConfig};
use crate::engine::{Credential, Engine, Settings};
use crate::issuer::acme::Acme;
use crate::issuer::local_ca::LocalCa;
use crate::issuer::{Issuer, IssuerError};
use crate::server::{self, ServerError};
use crate::store::{Store, StoreError};

/// How long a shutdown waits for rotations in progress before giving up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the daemon could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state dir could not be opened.
    #[error("daemon.state_dir: {0}")]
    Store(#[from] StoreError),
    /// An issuer could not be set up.
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    /// The endpoint could not be bound.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

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
        };
        out.insert(name.clone(), issuer);
    }
    Ok(out)
}

/// Run the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let store = Arc::new(Store::open(&config.daemon.state_dir)?);
    let issuers = build_issuers(&config, &store)?;
    let credentials: Vec<Credential> = config
        .certificates
        .iter()
        .filter_map(|c| {
            // Config validation guarantees every issuer name resolves.
            issuers.get(&c.issuer).map(|i| Credential {
                config: c.clone(),
                issuer: i.clone(),
            })
        })
        .collect();
    let listener = match config.daemon.listen {
        Some(addr) => Some(server::bind(addr).await?),
        None => None,
    };
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

    let engine = Engine::start(
        store.clone(),
        credentials,
        Settings {
            max_concurrent_rotations: config.daemon.max_concurrent_rotations,
            backstop: config.daemon.backstop,
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some((listener, addr)) = listener {
        tracing::info!(%addr, "endpoint listening");
        tokio::spawn(server::serve(listener, engine.handle(), stop_rx));
    }
    let _watcher = match crate::watch::spawn(engine.watched_dirs().clone(), engine.handle()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "file watching is off");
            None
        }
    };
    tracing::info!(
        config = %config.path.display(),
        credentials = config.certificates.len(),
        "rekey running"
    );
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: stopping after the current step"),
        _ = sigint.recv() => tracing::info!("SIGINT: stopping after the current step"),
    }
    let _ = stop_tx.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, engine.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("rotations still running after {SHUTDOWN_GRACE:?}; exiting anyway (the journal finishes them at next start)");
    }
    Ok(())
}
