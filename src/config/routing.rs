//! The vocabulary of alert routing that `[[alert]]` tables name: the events
//! a sink subscribes to (`events = [...]`) and its `match` on team and
//! labels. Defined here so config imports nothing of rekey's; `crate::alert`
//! re-exports both and adds what acts on them (severity, matching).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What happened; the `event` field of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Issuing a new generation failed (the old one is still in place).
    RenewalFailed,
    /// The application did not pick up the new generation.
    HandoffFailed,
    /// Less than 10% of the lifetime is left and no renewal succeeded.
    Expiring,
    /// The credential on disk has expired.
    Expired,
    /// A managed file was changed or removed behind rekey's back.
    Tampered,
    /// Everything is fine again after a failure event.
    Recovered,
    /// The credential was decommissioned (`rekey retire`).
    Retired,
    /// A watched file or endpoint could not be read or parsed.
    Unreadable,
    /// Its issuance budget is used up: no new certificate or key is asked
    /// for until it frees up (unless the current one would expire).
    BudgetExhausted,
}

impl Event {
    /// Every event, in the order shown to users.
    pub const ALL: [Event; 9] = [
        Event::RenewalFailed,
        Event::HandoffFailed,
        Event::Expiring,
        Event::Expired,
        Event::Tampered,
        Event::Recovered,
        Event::Retired,
        Event::Unreadable,
        Event::BudgetExhausted,
    ];

    /// The wire and config spelling, e.g. "handoff_failed".
    pub fn as_str(&self) -> &'static str {
        match self {
            Event::RenewalFailed => "renewal_failed",
            Event::HandoffFailed => "handoff_failed",
            Event::Expiring => "expiring",
            Event::Expired => "expired",
            Event::Tampered => "tampered",
            Event::Recovered => "recovered",
            Event::Retired => "retired",
            Event::Unreadable => "unreadable",
            Event::BudgetExhausted => "budget_exhausted",
        }
    }

    /// The event spelled `s`, if any.
    pub fn from_name(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sink's `match = { team = "...", labels = { k = "v" } }`: every given part must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertMatch {
    /// The alert's team must be this.
    pub team: Option<String>,
    /// The alert must carry each of these labels with this value.
    pub labels: BTreeMap<String, String>,
}
