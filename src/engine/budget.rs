//! The engine's side of issuance budgets ([`crate::budget`] has the rules):
//! the check a credential task makes before it asks its issuer, the
//! per-issuer ledgers shared by the credentials of one issuer, and what
//! `/status` shows. Every ledger lives in the state dir, so a restart loop
//! cannot reset a budget: a credential's in its journal, an issuer's in
//! `<state_dir>/issuers/NAME/journal.json`.
//!
//! An issuance is counted when the issuer is asked, in the same journal
//! write that records the step, so a crash after the issuer answered still
//! counts it. When the issuer answers with an error (a failed order: no
//! certificate was issued) the count is taken back; retries of failed
//! orders are paced by the backoff instead, which honours the CA's
//! `Retry-After`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::task::{Journaled, Kind, RotateError, Steps, Task};
use crate::alert::Event;
use crate::budget::{self, Budget, Gate, Limit};
use crate::config::{IssuanceBudgets, Share};
use crate::status::{BudgetExhausted, BudgetStatus};
use crate::store::{CredentialStore, Store};
use crate::timestamp;
use crate::timestamp::Timestamp;

/// Unix seconds.
pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The time at Unix seconds `s`.
pub(crate) fn at(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(s)
}

/// What is persisted per issuer.
#[derive(Debug, Default, Serialize, Deserialize)]
struct IssuerJournal {
    /// Issuances of all its credentials (Unix seconds) within the window.
    #[serde(default)]
    issuances: Vec<u64>,
}

/// One issuer's `max_issuances_total` ledger, shared by its credentials.
pub(crate) struct IssuerLedger {
    issuer: String,
    state: Mutex<(Limit, Vec<u64>)>,
    store: CredentialStore,
}

impl IssuerLedger {
    fn lock(&self) -> MutexGuard<'_, (Limit, Vec<u64>)> {
        // A poisoned lock only means a panic elsewhere; each change is a
        // push or a retain, so the ledger is whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, issuances: &[u64]) {
        let j = IssuerJournal {
            issuances: issuances.to_vec(),
        };
        if let Err(e) = self.store.save_journal(&j) {
            tracing::error!(issuer = %self.issuer, error = %e, "cannot save the issuer's issuance ledger; its max_issuances_total counts from memory until this works");
        }
    }
}

/// The per-issuer ledgers of the running engine, by issuer name, kept across
/// config reloads so two tasks of one issuer never count in two copies.
#[derive(Clone, Default)]
pub(crate) struct BudgetBook {
    ledgers: Arc<Mutex<BTreeMap<String, Arc<IssuerLedger>>>>,
}

impl BudgetBook {
    /// The shared ledger of `issuer` with its `total` budget (loaded from the
    /// state dir the first time), or `None` when the total is unlimited.
    pub(crate) fn ledger(
        &self,
        store: &Store,
        issuer: &str,
        total: Limit,
    ) -> Option<Arc<IssuerLedger>> {
        if !matches!(total, Limit::Max(_)) {
            return None;
        }
        let mut map = self.ledgers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = map.get(issuer) {
            // A reload may have changed the budget; the ledger stays.
            l.lock().0 = total;
            return Some(l.clone());
        }
        let area = store.issuer(issuer);
        let issuances = match area.load_journal::<IssuerJournal>() {
            Ok(j) => j.unwrap_or_default().issuances,
            Err(e) => {
                tracing::error!(issuer = %issuer, error = %e, "the issuer's issuance ledger is unreadable; its max_issuances_total counts from zero");
                Vec::new()
            }
        };
        let l = Arc::new(IssuerLedger {
            issuer: issuer.to_string(),
            state: Mutex::new((total, issuances)),
            store: area,
        });
        map.insert(issuer.to_string(), l.clone());
        Some(l)
    }
}

/// A credential's budgets, resolved for one check.
pub(crate) struct Budgets<'a> {
    /// Credential name, kind and issuer, for messages.
    pub credential: &'a str,
    pub kind: &'a str,
    pub issuer: &'a str,
    /// The issuer's settings.
    pub limits: IssuanceBudgets,
    /// Lifetime, renew_before and jitter, for the default per-credential budget.
    pub lifetime: Duration,
    pub renew_before: Share,
    pub jitter: Share,
    /// The shared issuer ledger, when its total is limited.
    pub issuer_ledger: Option<&'a IssuerLedger>,
}

/// An issuance the budget holds back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blocked {
    /// When to try again.
    pub until: u64,
    /// When the budget frees up.
    pub frees_at: u64,
    /// Which budget, as configured.
    pub budget: String,
    /// The whole story for logs, alerts, `last_error` and the refused request.
    pub message: String,
}

/// The outcome of [`Budgets::take`].
#[derive(Debug)]
pub(crate) enum Taken {
    /// Counted at `at` in both ledgers; `overridden` says which exhausted
    /// budget gave way (the current credential would otherwise expire).
    Counted { at: u64, overridden: Option<String> },
    /// Nothing counted.
    Blocked(Blocked),
}

impl Budgets<'_> {
    /// The per-credential budget in effect (`None`: unlimited).
    pub(crate) fn own(&self) -> Option<Budget> {
        match self.limits.per_credential {
            Limit::Max(b) => Some(b),
            Limit::Unlimited => None,
            Limit::Default => Some(budget::default_budget(
                self.lifetime,
                self.renew_before,
                self.jitter,
            )),
        }
    }

    fn own_name(&self, b: Budget) -> String {
        match self.limits.per_credential {
            Limit::Default => format!(
                "the default budget {b}; set max_issuances on issuer.{} to change it",
                self.issuer
            ),
            _ => format!("max_issuances = \"{b}\" of issuer.{}", self.issuer),
        }
    }

    /// Check the budgets for an issuance at `now` and, when it may go ahead,
    /// count it in `ledger` (the credential's; the caller saves it) and in
    /// the issuer's ledger (saved here). `current` is the validity of the
    /// usable credential in place, if any.
    pub(crate) fn take(
        &self,
        ledger: &mut Vec<u64>,
        current: Option<(u64, u64)>,
        now: u64,
    ) -> Taken {
        let own = self.own();
        // The issuer's lock is held from the check to the count, so two
        // credentials cannot both take its last issuance.
        let mut shared = self.issuer_ledger.map(|l| (l, l.lock()));
        let mut exhausted: Vec<(u64, String, u32, Budget)> = Vec::new();
        if let Some(b) = own {
            if let Some(f) = budget::frees_at(ledger, b, now) {
                exhausted.push((f, self.own_name(b), budget::used(ledger, b, now), b));
            }
        }
        if let Some((l, guard)) = &shared {
            if let Limit::Max(b) = guard.0 {
                if let Some(f) = budget::frees_at(&guard.1, b, now) {
                    let name = format!(
                        "max_issuances_total = \"{b}\" of issuer.{}, across its credentials",
                        l.issuer
                    );
                    exhausted.push((f, name, budget::used(&guard.1, b, now), b));
                }
            }
        }
        // Every exhausted budget must have freed up: the latest decides.
        let worst = exhausted.into_iter().max_by_key(|e| e.0);
        let overridden = match &worst {
            None => None,
            Some((frees_at, name, used, b)) => match budget::gate(Some(*frees_at), current, now) {
                Gate::Closed { until, frees_at } => {
                    return Taken::Blocked(self.blocked(until, frees_at, name, *used, *b));
                }
                Gate::Override => Some(name.clone()),
                Gate::Open => None,
            },
        };
        let keep = own
            .map_or(budget::DEFAULT_WINDOW, |b| b.window())
            .max(budget::DEFAULT_WINDOW);
        budget::record(ledger, now, keep);
        if let Some((l, guard)) = &mut shared {
            let keep = match guard.0 {
                Limit::Max(b) => b.window(),
                _ => budget::DEFAULT_WINDOW,
            };
            budget::record(&mut guard.1, now, keep);
            l.save(&guard.1);
        }
        Taken::Counted {
            at: now,
            overridden,
        }
    }

    fn blocked(&self, until: u64, frees_at: u64, name: &str, used: u32, b: Budget) -> Blocked {
        let what = self.kind.replace('_', " ");
        let mut message = format!(
            "{}: issuance budget exhausted: {used} of {} issuances in the last {} used ({name}); nothing is asked of issuer {} before {}",
            self.credential,
            b.count,
            budget::short_duration(b.window()),
            self.issuer,
            timestamp::rfc3339(at(frees_at)),
        );
        if until < frees_at {
            message.push_str(&format!(
                ", except at {} when the {what} in place enters the last tenth of its lifetime",
                timestamp::rfc3339(at(until)),
            ));
        }
        message.push_str(&format!("; the current {what} stays in place"));
        Blocked {
            until,
            frees_at,
            budget: name.to_string(),
            message,
        }
    }

    /// Take back the issuance counted at `at`: the issuer issued nothing.
    pub(crate) fn give_back(&self, ledger: &mut Vec<u64>, at: u64) {
        budget::unrecord(ledger, at);
        if let Some(l) = self.issuer_ledger {
            let mut guard = l.lock();
            budget::unrecord(&mut guard.1, at);
            l.save(&guard.1);
        }
    }

    /// What `/status` shows: the credential's own budget and its use, and
    /// what holds issuance back, if anything.
    pub(crate) fn status(
        &self,
        ledger: &[u64],
        blocked: Option<&Blocked>,
        now: u64,
    ) -> BudgetStatus {
        let own = self.own();
        // An unlimited budget still shows its use over the default window.
        let window = own.map_or(budget::DEFAULT_WINDOW, |b| b.window());
        let from = now.saturating_sub(window.as_secs());
        let used = ledger.iter().filter(|&&t| t > from).count() as u32;
        BudgetStatus {
            limit: own.map_or_else(|| "unlimited".to_string(), |b| b.to_string()),
            used,
            remaining: own.map(|b| b.count.saturating_sub(used)),
            exhausted: blocked.map(|b| BudgetExhausted {
                budget: b.budget.clone(),
                frees_at: Timestamp::new(at(b.frees_at)),
                retry_at: Timestamp::new(at(b.until)),
            }),
        }
    }
}

impl<K: Kind> Task<K>
where
    Task<K>: Steps,
{
    /// This credential's budgets, for one check. The default per-credential
    /// budget follows the lifetime of what is in place (an ACME CA may
    /// grant 90 days whatever was asked), else the configured one.
    pub(crate) fn budgets(&self) -> Budgets<'_> {
        let (renew_before, jitter) = self.renewal();
        Budgets {
            credential: self.name(),
            kind: K::LABEL,
            issuer: K::issuer_name(&self.cfg),
            limits: self.budget,
            lifetime: self.lifetime(),
            renew_before,
            jitter,
            issuer_ledger: self.issuer_ledger.as_deref(),
        }
    }

    /// Count an issuance at `now` against the budgets, or say why not. The
    /// count reaches the disk with the next journal save (the step that
    /// asks the issuer); a refusal raises `budget_exhausted` once per
    /// episode.
    pub(crate) fn take_budget(&mut self, now: SystemTime) -> Result<u64, RotateError> {
        let current = self.validity(now).map(|(nb, na)| (unix(nb), unix(na)));
        let mut ledger = std::mem::take(self.journal.issuances_mut());
        let taken = self.budgets().take(&mut ledger, current, unix(now));
        *self.journal.issuances_mut() = ledger;
        match taken {
            Taken::Counted { at, overridden } => {
                if let Some(which) = overridden {
                    let w = self.words();
                    tracing::warn!(budget = %which, event = "budget_override", "the issuance budget is used up, but the {} in place is in the last tenth of its lifetime (or there is none): {} anyway", w.in_place, w.issue_anyway);
                }
                self.budget_blocked = None;
                Ok(at)
            }
            Taken::Blocked(b) => {
                let frees = at(b.frees_at);
                tracing::warn!(budget = %b.budget, frees_at = %crate::timestamp::rfc3339(frees), event = "budget_exhausted", "{}", b.message);
                if self.budget_alerted.is_none() {
                    let a = self.alert(Event::BudgetExhausted, b.message.clone());
                    self.alerter.raise(a);
                }
                self.budget_alerted = Some(self.budget_alerted.map_or(frees, |t| t.max(frees)));
                let err = RotateError::Budget {
                    message: b.message.clone(),
                    until: b.until,
                    frees_at: b.frees_at,
                };
                self.budget_blocked = Some(Box::new(b));
                Err(err)
            }
        }
    }

    /// The issuer issued nothing for the issuance counted at `at`.
    pub(crate) fn give_back_budget(&mut self, at: u64) {
        let mut ledger = std::mem::take(self.journal.issuances_mut());
        self.budgets().give_back(&mut ledger, at);
        *self.journal.issuances_mut() = ledger;
    }

    /// Once the budget of the last `budget_exhausted` alert has freed up:
    /// say so (`recovered`), so the alert does not stay open.
    pub(crate) fn budget_freed(&mut self, now: SystemTime) {
        if self.budget_alerted.is_none_or(|t| t > now) {
            return;
        }
        self.budget_alerted = None;
        self.budget_blocked = None;
        self.alerter.raise(crate::alert::Alert::new(
            Event::Recovered,
            self.name(),
            K::LABEL,
            self.words().budget_freed,
        ));
        self.publish_status();
    }
}
