//! Leaf details of the managed certificates for the compatibility metrics:
//! x509-certificate-exporter labels series with the subject's and issuer's
//! common names, which the engine's status does not carry. This task
//! follows the engine's status and re-reads a credential's published leaf
//! only when its fingerprint changes (a rotation), never on a scrape.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::{ManagedLeaf, View};
use crate::config::CertificateConfig;
use crate::status::Snapshot;

/// Credential name → the file holding its leaf.
type Paths = Arc<RwLock<BTreeMap<String, PathBuf>>>;

/// The running follower.
pub(super) struct Tracker {
    paths: Paths,
    join: tokio::task::JoinHandle<()>,
}

impl Tracker {
    /// Follow `engine` and publish leaves into `view`.
    pub fn start(
        engine: watch::Receiver<Snapshot>,
        certs: &[Arc<CertificateConfig>],
        view: watch::Sender<View>,
    ) -> Tracker {
        let paths: Paths = Arc::default();
        let t = Tracker {
            paths: paths.clone(),
            join: tokio::spawn(run(engine, paths, view)),
        };
        t.set(certs);
        t
    }

    /// Take the leaf files of `certs` (at start and on reload).
    pub fn set(&self, certs: &[Arc<CertificateConfig>]) {
        let map = certs
            .iter()
            .filter_map(|c| {
                let f = &c.files;
                let leaf = f
                    .cert
                    .as_ref()
                    .or(f.fullchain.as_ref())
                    .or(f.bundle.as_ref())?;
                Some((c.name.clone(), leaf.clone()))
            })
            .collect();
        // A poisoned lock only means a panic elsewhere; the map is replaced whole.
        *self.paths.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// Stop following.
    pub fn stop(&self) {
        self.join.abort();
    }
}

async fn run(mut engine: watch::Receiver<Snapshot>, paths: Paths, view: watch::Sender<View>) {
    // Credential → the fingerprint its published leaf was last read for.
    let mut read_for: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let wanted: Vec<(String, String, PathBuf)> = {
            let snap = engine.borrow_and_update();
            let paths = paths.read().unwrap_or_else(|e| e.into_inner());
            snap.values()
                .filter(|c| c.kind == "certificate")
                .filter_map(|c| {
                    let fp = c.fingerprint.clone()?;
                    let path = paths.get(&c.name)?.clone();
                    Some((c.name.clone(), fp, path))
                })
                .collect()
        };
        read_for.retain(|name, _| wanted.iter().any(|(n, ..)| n == name));
        let mut leaves = Vec::new();
        for (name, fp, path) in wanted.iter().cloned() {
            if read_for.get(&name) == Some(&fp) {
                continue;
            }
            let p = path.clone();
            let read = tokio::task::spawn_blocking(move || crate::fs::safefile::read(&p)).await;
            let found = match read {
                Ok(Ok(bytes)) => crate::certview::certificates(&bytes).ok(),
                _ => None,
            };
            // The file may be mid-rotation: the leaf the status names, else retry on the next change.
            let Some(leaf) =
                found.and_then(|certs| certs.into_iter().find(|s| s.cert.fingerprint == fp))
            else {
                tracing::debug!(credential = %name, path = %path.display(), "published leaf not readable yet for the compatibility metrics");
                continue;
            };
            read_for.insert(name.clone(), fp);
            leaves.push((
                name,
                ManagedLeaf {
                    path,
                    cert: leaf.cert,
                },
            ));
        }
        view.send_if_modified(|v| {
            let before = v.managed.len();
            v.managed
                .retain(|name, _| wanted.iter().any(|(n, ..)| n == name));
            let changed = before != v.managed.len() || !leaves.is_empty();
            v.managed.extend(leaves);
            changed
        });
        if engine.changed().await.is_err() {
            return;
        }
    }
}
