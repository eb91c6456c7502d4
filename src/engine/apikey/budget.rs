//! An API key's issuance budget: every mint counts, like a certificate's
//! issuance (a key service is a CA of sorts), in the key's journal and in
//! its issuer's shared ledger.
//!
//! Unlike a certificate, an API key whose handoff failed is not kept for a
//! retry of its handoff: it is revoked at once, because a live secret that
//! no app uses is exposure that nothing else bounds (a certificate stays
//! public and expires; a key is a bearer secret). So every retry of an API
//! key mints anew, and the budget together with the issuer backoff is what
//! keeps a broken app from turning into a stream of keys.

use std::time::SystemTime;

use super::task::{at, KeyTask};
use crate::alert::{Alert, Event};
use crate::engine::budget::{self, Budgets, Taken};
use crate::timestamp;

impl KeyTask {
    /// This key's budgets, for one check; the default per-key budget
    /// follows the committed key's lifetime, else the configured one.
    pub(super) fn budgets(&self) -> Budgets<'_> {
        let lifetime = match &self.journal.committed {
            Some(k) => at(k.expires_at)
                .duration_since(at(k.minted_at))
                .unwrap_or(self.cfg.lifetime),
            None => self.cfg.lifetime,
        };
        Budgets {
            credential: &self.cfg.name,
            kind: "api_key",
            issuer: &self.cfg.issuer,
            limits: self.budget,
            lifetime,
            renew_before: self.cfg.renew_before,
            jitter: super::task::JITTER,
            issuer_ledger: self.issuer_ledger.as_deref(),
        }
    }

    /// Count a mint at `now`, or return why not (after raising
    /// `budget_exhausted` once per episode).
    pub(super) fn take_budget(&mut self, now: SystemTime) -> Result<u64, String> {
        let current = self
            .journal
            .committed
            .as_ref()
            .filter(|k| at(k.expires_at) > now)
            .map(|k| (k.minted_at, k.expires_at));
        let mut ledger = std::mem::take(&mut self.journal.issuances);
        let taken = self.budgets().take(&mut ledger, current, budget::unix(now));
        self.journal.issuances = ledger;
        match taken {
            Taken::Counted { at, overridden } => {
                if let Some(which) = overridden {
                    tracing::warn!(budget = %which, event = "budget_override", "the issuance budget is used up, but the key in place is in the last tenth of its lifetime (or there is none): minting anyway");
                }
                self.budget_blocked = None;
                Ok(at)
            }
            Taken::Blocked(b) => {
                let frees = budget::at(b.frees_at);
                tracing::warn!(budget = %b.budget, frees_at = %timestamp::rfc3339(frees), event = "budget_exhausted", "{}", b.message);
                if self.budget_alerted.is_none() {
                    self.alerter.raise(Alert::new(
                        Event::BudgetExhausted,
                        &self.cfg.name,
                        "api_key",
                        b.message.clone(),
                    ));
                }
                self.budget_alerted = Some(self.budget_alerted.map_or(frees, |t| t.max(frees)));
                let message = b.message.clone();
                self.budget_blocked = Some(Box::new(b));
                Err(message)
            }
        }
    }

    /// The issuer minted nothing for the mint counted at `at`.
    pub(super) fn give_back_budget(&mut self, at: u64) {
        let mut ledger = std::mem::take(&mut self.journal.issuances);
        self.budgets().give_back(&mut ledger, at);
        self.journal.issuances = ledger;
    }

    /// Once the budget of the last `budget_exhausted` alert has freed up,
    /// say so (`recovered`).
    pub(super) fn budget_freed(&mut self, now: SystemTime) {
        if self.budget_alerted.is_none_or(|t| t > now) {
            return;
        }
        self.budget_alerted = None;
        self.budget_blocked = None;
        self.alerter.raise(Alert::new(
            Event::Recovered,
            &self.cfg.name,
            "api_key",
            "the issuance budget allows minting again",
        ));
        self.publish_status();
    }
}
