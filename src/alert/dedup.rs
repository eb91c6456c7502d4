//! De-duplication: an event that keeps happening is not re-sent on every retry.
//!
//! Rule, per (credential, event):
//! - the first occurrence is sent;
//! - a repeat is sent only once at least the current interval has passed
//!   since the last send; the interval starts at `base` and doubles after
//!   each send (1×, 2×, 4×… of `base`), capped at `cap`. The engine may pass
//!   its own interval instead (its current backoff step), still capped;
//! - `recovered` is sent only if a failure event was sent for that
//!   credential since its last recovery, and it resets every interval of
//!   that credential, so the next failure is sent at once.
//!
//! Time is passed in, so the struct is pure and tested without sleeping.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::Event;

/// Default first re-send interval.
pub const DEFAULT_BASE: Duration = Duration::from_secs(300);
/// Longest interval between two sends of the same ongoing problem.
pub const DEFAULT_CAP: Duration = Duration::from_secs(3600);

/// What to do with one raised alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it.
    Send,
    /// The same event was sent recently; the next one may go out in this long.
    Repeat {
        /// Time left until a repeat is sent.
        next_in: Duration,
    },
    /// `recovered` without a failure sent before: nothing to recover from.
    NothingToRecover,
}

/// When a (credential, event) was last sent and how often.
#[derive(Debug, Clone, Copy)]
struct Sent {
    last: Instant,
    count: u32,
}

/// The de-duplication table.
#[derive(Debug)]
pub struct Dedup {
    base: Duration,
    cap: Duration,
    sent: BTreeMap<String, HashMap<Event, Sent>>,
}

impl Default for Dedup {
    fn default() -> Self {
        Dedup::new(DEFAULT_BASE, DEFAULT_CAP)
    }
}

impl Dedup {
    /// A table whose re-send interval starts at `base` and is capped at `cap`.
    pub fn new(base: Duration, cap: Duration) -> Dedup {
        Dedup {
            base,
            cap: cap.max(base),
            sent: BTreeMap::new(),
        }
    }

    /// Decide on `event` for `credential` at `now`, and record a send.
    ///
    /// `min_interval`, when given, replaces the escalating interval (the
    /// engine's current backoff step).
    pub fn check(
        &mut self,
        credential: &str,
        event: Event,
        now: Instant,
        min_interval: Option<Duration>,
    ) -> Verdict {
        if event == Event::Recovered {
            return match self.sent.remove(credential) {
                Some(events) if !events.is_empty() => Verdict::Send,
                _ => Verdict::NothingToRecover,
            };
        }
        let events = self.sent.entry(credential.to_string()).or_default();
        let Some(prev) = events.get_mut(&event) else {
            events.insert(
                event,
                Sent {
                    last: now,
                    count: 1,
                },
            );
            return Verdict::Send;
        };
        let interval = min_interval
            .unwrap_or_else(|| escalate(self.base, prev.count))
            .min(self.cap);
        let elapsed = now.saturating_duration_since(prev.last);
        if elapsed >= interval {
            prev.last = now;
            prev.count = prev.count.saturating_add(1);
            Verdict::Send
        } else {
            Verdict::Repeat {
                next_in: interval - elapsed,
            }
        }
    }

    /// Whether a failure event was sent for `credential` since its last recovery.
    pub fn is_failing(&self, credential: &str) -> bool {
        self.sent.get(credential).is_some_and(|e| !e.is_empty())
    }
}

/// `base` × 2^(sends − 1), saturating.
fn escalate(base: Duration, sends: u32) -> Duration {
    let factor = 1u32 << sends.saturating_sub(1).min(20);
    base.saturating_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn first_failure_is_sent_and_an_immediate_repeat_is_suppressed() {
        let mut d = Dedup::new(60 * S, 3600 * S);
        let t0 = Instant::now();
        assert_eq!(
            d.check("web", Event::HandoffFailed, t0, None),
            Verdict::Send
        );
        assert_eq!(
            d.check("web", Event::HandoffFailed, t0 + S, None),
            Verdict::Repeat { next_in: 59 * S }
        );
        // Other credentials and other events are independent.
        assert_eq!(
            d.check("api", Event::HandoffFailed, t0 + S, None),
            Verdict::Send
        );
        assert_eq!(
            d.check("web", Event::RenewalFailed, t0 + S, None),
            Verdict::Send
        );
    }

    #[test]
    fn interval_escalates_and_is_capped() {
        let mut d = Dedup::new(60 * S, 300 * S);
        let t0 = Instant::now();
        // (seconds since start, expected verdict is Send)
        let table = [
            (0, true),
            (59, false),
            (60, true), // 1× base after the first send
            (179, false),
            (180, true), // then 2×: 60 + 120
            (419, false),
            (420, true), // then 4×: 180 + 240
            (719, false),
            (720, true),  // 8× = 480 capped at 300
            (1020, true), // stays at the cap
            (1319, false),
        ];
        for (at, send) in table {
            let v = d.check("web", Event::RenewalFailed, t0 + at * S, None);
            assert_eq!(v == Verdict::Send, send, "at {at}s: {v:?}");
        }
    }

    #[test]
    fn engine_interval_replaces_escalation_but_not_the_cap() {
        let mut d = Dedup::new(60 * S, 600 * S);
        let t0 = Instant::now();
        let step = Some(5 * S);
        assert_eq!(
            d.check("web", Event::RenewalFailed, t0, step),
            Verdict::Send
        );
        assert_eq!(
            d.check("web", Event::RenewalFailed, t0 + 4 * S, step),
            Verdict::Repeat { next_in: S }
        );
        assert_eq!(
            d.check("web", Event::RenewalFailed, t0 + 5 * S, step),
            Verdict::Send
        );
        let huge = Some(86400 * S);
        assert_eq!(
            d.check("web", Event::RenewalFailed, t0 + 605 * S, huge),
            Verdict::Send
        );
    }

    #[test]
    fn recovered_only_after_a_sent_failure_and_it_resets() {
        let mut d = Dedup::new(60 * S, 3600 * S);
        let t0 = Instant::now();
        // No recovered spam at start.
        assert_eq!(
            d.check("web", Event::Recovered, t0, None),
            Verdict::NothingToRecover
        );
        assert_eq!(d.check("web", Event::Expiring, t0, None), Verdict::Send);
        assert!(d.is_failing("web"));
        assert!(!d.is_failing("api"));
        assert_eq!(
            d.check("api", Event::Recovered, t0, None),
            Verdict::NothingToRecover
        );
        assert_eq!(
            d.check("web", Event::Recovered, t0 + S, None),
            Verdict::Send
        );
        assert!(!d.is_failing("web"));
        // Sent once per recovery.
        assert_eq!(
            d.check("web", Event::Recovered, t0 + 2 * S, None),
            Verdict::NothingToRecover
        );
        // After recovery, the same failure is news again.
        assert_eq!(
            d.check("web", Event::Expiring, t0 + 3 * S, None),
            Verdict::Send
        );
    }

    #[test]
    fn recovered_is_never_suppressed_by_its_own_interval() {
        let mut d = Dedup::new(3600 * S, 3600 * S);
        let t0 = Instant::now();
        for i in 0..5 {
            let at = t0 + i * S;
            assert_eq!(
                d.check("web", Event::HandoffFailed, at, None),
                Verdict::Send
            );
            assert_eq!(d.check("web", Event::Recovered, at, None), Verdict::Send);
        }
    }

    #[test]
    fn escalation_saturates_instead_of_overflowing() {
        assert_eq!(escalate(S, 1), S);
        assert_eq!(escalate(S, 3), 4 * S);
        assert!(escalate(Duration::MAX, u32::MAX) == Duration::MAX);
    }
}
