//! What each running task was started from, so a config reload can tell
//! which credentials it added, dropped or changed, whatever their kind.

use std::sync::Arc;

use super::{apikey, Credential};
use crate::config::{CertificateConfig, OnRemove};
use crate::issuer::Issuer;

/// What a credential task was started from, by kind.
pub(super) enum Spec {
    Certificate {
        config: Arc<CertificateConfig>,
        /// Its issuer, to tell it which credentials publish its trust bundle.
        issuer: Arc<dyn Issuer>,
        budget: crate::config::IssuanceBudgets,
    },
    ApiKey {
        config: Box<crate::config::ApiKeyConfig>,
        budget: crate::config::IssuanceBudgets,
    },
}

impl Spec {
    pub(super) fn of_certificate(c: &Credential) -> Spec {
        Spec::Certificate {
            config: c.config.clone(),
            issuer: c.issuer.clone(),
            budget: c.budget,
        }
    }

    pub(super) fn of_key(k: &apikey::KeyCredential) -> Spec {
        Spec::ApiKey {
            config: Box::new(k.config.clone()),
            budget: k.budget,
        }
    }

    /// Whether a reload changed nothing the task was started from.
    pub(super) fn same(&self, other: &Spec) -> bool {
        match (self, other) {
            (
                Spec::Certificate { config, budget, .. },
                Spec::Certificate {
                    config: c,
                    budget: b,
                    ..
                },
            ) => config == c && budget == b,
            (
                Spec::ApiKey { config, budget },
                Spec::ApiKey {
                    config: c,
                    budget: b,
                },
            ) => config == c && budget == b,
            _ => false,
        }
    }

    pub(super) fn on_remove(&self) -> OnRemove {
        match self {
            Spec::Certificate { config, .. } => config.on_remove,
            Spec::ApiKey { config, .. } => config.on_remove,
        }
    }
}

/// A credential the config asks for, of either kind.
pub(super) enum Wanted {
    Certificate(Credential),
    /// Boxed: an API key's config is several times a certificate's handle.
    ApiKey(Box<apikey::KeyCredential>),
}

impl Wanted {
    pub(super) fn spec(&self) -> Spec {
        match self {
            Wanted::Certificate(c) => Spec::of_certificate(c),
            Wanted::ApiKey(k) => Spec::of_key(k),
        }
    }
}
