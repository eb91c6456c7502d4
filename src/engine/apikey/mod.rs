//! The API key kind: a two-phase handoff (mint → publish → reload → verify
//! → commit → revoke the previous key after `overlap`), driven by the
//! shared task (`engine/task/`).

use std::sync::Arc;

use super::budget::IssuerLedger;
use super::group::Member;
use super::task::{self, Kind, Parts, Shared};
use crate::config::{ApiKeyConfig, VerifyConfig};
use crate::handoff::{Probe, Reload};
use crate::issuer::keys::KeyIssuer;

pub mod journal;
mod retire;
mod rotate;
mod steps;
mod upkeep;

use journal::KeyJournal;

/// An API key to keep fresh, wired to its backends.
pub struct KeyCredential {
    /// Its configuration.
    pub config: ApiKeyConfig,
    /// Mints and revokes its keys.
    pub issuer: Arc<dyn KeyIssuer>,
    /// How the app is told.
    pub reload: Arc<dyn Reload>,
    /// How the handoff is proven; empty = unverified.
    pub probes: Vec<Arc<dyn Probe>>,
    /// Where its decommissioning is recorded (a no-op when `daemon.audit_log` is unset).
    pub audit: crate::audit::Audit,
    /// Its issuer's issuance budgets: every mint counts, like a certificate.
    pub budget: crate::config::IssuanceBudgets,
}

/// The API key kind of credential (see [`Kind`]).
pub(in crate::engine) struct Key;

impl Kind for Key {
    const LABEL: &'static str = "api_key";
    type Config = ApiKeyConfig;
    type Issuer = dyn KeyIssuer;
    type Journal = KeyJournal;
    /// Everything an API key's task keeps is in the shared state and its journal.
    type Own = ();

    fn name(cfg: &Self::Config) -> &str {
        &cfg.name
    }
    fn issuer_name(cfg: &Self::Config) -> &str {
        &cfg.issuer
    }
    fn verify(cfg: &Self::Config) -> &VerifyConfig {
        &cfg.verify
    }
}

/// An API key's task: the shared task over [`Key`].
pub(in crate::engine) type KeyTask = task::Task<Key>;

/// An API key's task, not started yet.
pub(super) fn task(
    k: KeyCredential,
    shared: &Shared,
    issuer_ledger: Option<Arc<IssuerLedger>>,
    group: Option<Member>,
) -> KeyTask {
    let parts = Parts {
        cfg: k.config,
        issuer: k.issuer,
        own: (),
        reload: k.reload,
        probes: k.probes,
        audit: k.audit,
        budget: k.budget,
    };
    task::Task::new(parts, shared, issuer_ledger, group)
}

/// One line for `rekey check`: the committed key (id, expiry) and when it
/// renews, read from the journal without changing anything.
pub fn describe(
    cfg: &ApiKeyConfig,
    store: &crate::store::Store,
    now: std::time::SystemTime,
) -> String {
    let journal = store
        .credential(&cfg.name)
        .load_journal::<journal::KeyJournal>()
        .ok()
        .flatten();
    let key = journal
        .as_ref()
        .and_then(|j| j.committed.clone().map(|k| (k, j.jitter_draw)));
    let state = match key {
        Some((k, draw)) => {
            let at = |s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
            if at(k.expires_at) <= now {
                format!(
                    "key {} expired at {} (will be minted at start)",
                    k.id,
                    crate::timestamp::rfc3339(at(k.expires_at))
                )
            } else {
                let renew = crate::schedule::renewal_point(
                    at(k.minted_at),
                    at(k.expires_at),
                    cfg.renew_before,
                    upkeep::JITTER,
                    draw,
                );
                format!(
                    "key {} valid until {} (renews at {})",
                    k.id,
                    crate::timestamp::rfc3339(at(k.expires_at)),
                    crate::timestamp::rfc3339(renew)
                )
            }
        }
        None => "no key yet (will be minted at start)".to_string(),
    };
    format!(
        "  {:<16} issuer={:<10} api_key {} -> {}",
        cfg.name,
        cfg.issuer,
        state,
        cfg.file.display()
    )
}
