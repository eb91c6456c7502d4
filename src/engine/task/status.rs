//! A task's entry in `/status`: the shared fields here, the kind's own
//! ([`Steps::status_fields`]) on top.

use std::time::SystemTime;

use super::{Journaled, Kind, Steps, Task};
use crate::engine::budget;
use crate::status::{CredentialStatus, Handoff, State};
use crate::timestamp::Timestamp;

impl<K: Kind> Task<K>
where
    Task<K>: Steps,
{
    /// Put this credential's current state into the status snapshot.
    pub(in crate::engine) fn publish_status(&self) {
        let now = SystemTime::now();
        let mut s = CredentialStatus::starting(self.name(), K::LABEL, K::issuer_name(&self.cfg));
        let dates = self.dates();
        s.state = match dates {
            _ if self.renewing => State::Renewing,
            None => State::Missing,
            Some((_, not_after)) if not_after <= now => State::Expired,
            Some(_) if self.failures > 0 => State::Backoff,
            Some(_) => State::Valid,
        };
        if let (Some((not_before, not_after)), Some((generation, fingerprint))) =
            (dates, self.committed())
        {
            s.generation = Some(generation);
            s.fingerprint = Some(fingerprint);
            s.not_before = Some(Timestamp::new(not_before));
            s.not_after = Some(Timestamp::new(not_after));
            // Without probes the app is only ever "told": unverified, unless
            // telling it failed.
            s.handoff = if self.probes.is_empty() && self.handoff != Handoff::Failed {
                Handoff::Unverified
            } else {
                self.handoff
            };
        }
        s.next_renewal = Some(Timestamp::new(self.due_at(now)));
        s.last_rotation = self.last_rotation.as_deref().cloned();
        s.last_error = self.last_error.clone();
        s.consecutive_failures = self.failures;
        s.issuance_budget = Some(Box::new(self.budgets().status(
            self.journal.issuances(),
            self.budget_blocked.as_deref(),
            budget::unix(now),
        )));
        self.status_fields(&mut s);
        let failures = self.failures;
        self.status_tx
            .send_modify(|snap| match snap.get_mut(self.name()) {
                // In place: no new allocation for every status change.
                Some(entry) => {
                    s.failing_since = crate::status::failing_since(Some(entry), failures, now);
                    **entry = s;
                }
                None => {
                    s.failing_since = crate::status::failing_since(None, failures, now);
                    snap.insert(self.name().to_string(), Box::new(s));
                }
            });
    }
}
