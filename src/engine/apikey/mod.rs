//! API key credentials: a second task kind next to certificates, with a
//! two-phase handoff (mint → publish → reload → verify → commit → revoke
//! the previous key after `overlap`).

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::Instrument;

use super::Engine;
use crate::config::ApiKeyConfig;
use crate::handoff::{Probe, Reload};
use crate::issuer::keys::KeyIssuer;
use crate::status::CredentialStatus;

mod budget;
pub mod journal;
mod retire;
mod rotate;
mod task;

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
                    task::JITTER,
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

/// One running API key task.
struct KeyRunning {
    config: ApiKeyConfig,
    budget: crate::config::IssuanceBudgets,
    /// Kept here too: the sender map loses it first when the task is stopped.
    mailbox: super::mailbox::Mailbox,
    join: tokio::task::JoinHandle<()>,
}

/// The running API key tasks, by name.
#[derive(Default)]
pub struct KeyTasks {
    tasks: BTreeMap<String, KeyRunning>,
}

impl KeyTasks {
    /// Stop every task after its current step, and wait for them.
    pub async fn shutdown(&mut self) {
        for r in self.tasks.values() {
            r.mailbox.stop();
        }
        for (_, r) in std::mem::take(&mut self.tasks) {
            let _ = r.join.await;
        }
    }
}

impl Engine {
    /// Start one task per API key.
    pub fn start_keys(&mut self, keys: Vec<KeyCredential>) {
        for k in keys {
            self.spawn_key(k);
        }
    }

    fn spawn_key(&mut self, k: KeyCredential) {
        let name = k.config.name.clone();
        let config = k.config.clone();
        let budget = k.budget;
        let starting = CredentialStatus::starting(&name, "api_key", &k.config.issuer);
        self.status_tx.send_modify(|s| {
            s.insert(name.clone(), starting);
        });
        let (mailbox, rx) = super::mailbox::mailbox();
        let ledger = self
            .budgets
            .ledger(&self.store, &k.config.issuer, k.budget.total);
        let span = crate::logfmt::task_span(&name, "api_key");
        let mut t = span.in_scope(|| {
            task::KeyTask::new(
                k,
                ledger,
                &self.store,
                self.status_tx.clone(),
                self.permits.clone(),
                self.alerter.clone(),
                self.metrics.clone(),
            )
        });
        t.group = t.cfg.reload_group.as_ref().map(|g| self.groups.member(g));
        let join = tokio::spawn(Box::new(t).run(rx).instrument(span));
        self.handle
            .senders
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), mailbox.clone());
        self.keys.tasks.insert(
            name,
            KeyRunning {
                config,
                budget,
                mailbox,
                join,
            },
        );
    }

    async fn stop_key(&mut self, name: &str) {
        self.handle
            .senders
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(r) = self.keys.tasks.remove(name) {
            r.mailbox.stop();
            let _ = r.join.await;
        }
        self.status_tx.send_modify(|s| {
            s.remove(name);
        });
    }

    /// Apply a reloaded config to the API keys: start added ones, stop
    /// removed ones (their files and owed revocations stay in the journal;
    /// with `on_remove = "revoke"` they are retired instead), restart
    /// changed ones.
    pub async fn reconcile_keys(&mut self, keys: Vec<KeyCredential>) -> super::Reconciled {
        let mut out = super::Reconciled::default();
        let wanted: BTreeMap<String, KeyCredential> = keys
            .into_iter()
            .map(|k| (k.config.name.clone(), k))
            .collect();
        let gone: Vec<String> = self
            .keys
            .tasks
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            let revoke = self
                .keys
                .tasks
                .get(&name)
                .is_some_and(|r| r.config.on_remove == crate::config::OnRemove::Revoke);
            if revoke {
                self.retire_dropped(&name).await;
                out.retired.push(name.clone());
            } else {
                out.removed.push(name.clone());
            }
            self.stop_key(&name).await;
        }
        for (name, k) in wanted {
            match self.keys.tasks.get(&name) {
                Some(r) if r.config == k.config && r.budget == k.budget => continue,
                Some(_) => {
                    self.stop_key(&name).await;
                    out.changed.push(name);
                }
                None => out.added.push(name),
            }
            self.spawn_key(k);
        }
        out
    }
}
