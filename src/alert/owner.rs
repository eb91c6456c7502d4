//! Ownership in alerts: each alert carries its credential's `team` and
//! `labels`, and a sink with `match = { ... }` receives only matching alerts.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::{Alert, AlertMatch};
use crate::config::CertificateConfig;

impl AlertMatch {
    /// Whether `alert` is for this sink.
    pub fn matches(&self, alert: &Alert) -> bool {
        if self
            .team
            .as_ref()
            .is_some_and(|t| alert.team.as_ref() != Some(t))
        {
            return false;
        }
        self.labels
            .iter()
            .all(|(k, v)| alert.labels.get(k) == Some(v))
    }
}

/// A credential's team and labels.
#[derive(Debug, Clone, Default)]
struct Owner {
    team: Option<String>,
    labels: BTreeMap<String, String>,
}

/// Team and labels by credential name; replaced on every (re)load so the
/// engine raises alerts by name only.
#[derive(Debug, Clone, Default)]
pub struct Owners(Arc<RwLock<BTreeMap<String, Owner>>>);

impl Owners {
    /// Take the team and labels of `certs`, replacing what was there.
    pub fn set(&self, certs: &[std::sync::Arc<CertificateConfig>]) {
        // Only credentials that have an owner: the rest stamp nothing
        // anyway, and 10,000 entries of nothing cost 0.7 MiB.
        let map = certs
            .iter()
            .filter(|c| c.team.is_some() || !c.labels.is_empty())
            .map(|c| {
                let o = Owner {
                    team: c.team.clone(),
                    labels: c.labels.clone(),
                };
                (c.name.clone(), o)
            })
            .collect();
        // A poisoned lock only means a panic elsewhere; the map is replaced whole.
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// Fill `alert`'s team and labels from its credential, unless already set.
    pub fn stamp(&self, alert: &mut Alert) {
        if alert.team.is_some() || !alert.labels.is_empty() {
            return;
        }
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = map.get(&alert.credential) {
            alert.team = o.team.clone();
            alert.labels = o.labels.clone();
        }
    }
}
