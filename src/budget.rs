//! Issuance budgets: how many certificates (or API keys) one credential may
//! be issued, and one issuer may issue across its credentials, in a sliding
//! window, so a failing app or CA never turns into a stream of new
//! certificates. Pure functions of a ledger of issuance times (Unix
//! seconds), property-tested and replayed by the fleet simulation
//! (`benches/fleet.rs`); the engine keeps the ledgers in the state dir.
//!
//! The default per credential fits Let's Encrypt's "5 certificates per exact
//! set of names per 7 days": at most [`DEFAULT_COUNT`] issuances in any 7
//! days, or in any one lifetime of a shorter-lived certificate, and more
//! only when `renew_before` itself asks for more renewals than that.
//! Whatever the budget, an issuance that keeps the current credential from
//! expiring is never held back ([`gate`]).

use std::time::Duration;

pub use crate::config::budget::{parse, short_duration, Budget, Limit, MAX_WINDOW};
use crate::config::Share;

/// Issuances a default budget allows per window.
pub const DEFAULT_COUNT: u32 = 5;
/// The default window: Let's Encrypt's duplicate-certificate window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(7 * 86_400);
/// An exhausted budget gives way in the last tenth of the current
/// credential's lifetime (where `expiring` alerts fire too): waiting longer
/// would let it expire.
pub const EXPIRY_SHARE: f64 = 0.10;

/// The default per-credential budget for certificates of `lifetime` renewed
/// `renew_before` ahead (moved earlier by up to `jitter`): at most
/// [`DEFAULT_COUNT`] issuances in any 7 days, or in any one lifetime when
/// that is shorter, plus room for three more than the normal renewals when
/// `renew_before` asks for more than two renewals in that window.
pub fn default_budget(lifetime: Duration, renew_before: Share, jitter: Share) -> Budget {
    let window = lifetime.clamp(Duration::from_secs(1), DEFAULT_WINDOW);
    let ahead = renew_before.of(lifetime) + jitter.of(lifetime);
    let interval = lifetime
        .saturating_sub(ahead)
        .max(Duration::from_secs(1))
        .as_secs_f64();
    let normal = (window.as_secs_f64() / interval).ceil();
    let count = (normal + 3.0).max(f64::from(DEFAULT_COUNT)).min(1e6) as u32;
    Budget {
        count,
        window_s: window.as_secs() as u32,
    }
}

/// How many issuances of `ledger` fall in the window ending at `now`.
/// Entries later than `now` (the clock went back) count too.
pub fn used(ledger: &[u64], budget: Budget, now: u64) -> u32 {
    let from = now.saturating_sub(u64::from(budget.window_s));
    ledger.iter().filter(|&&t| t > from).count() as u32
}

/// When `ledger` next allows an issuance under `budget`: `None` when it
/// allows one now, else the moment enough of the counted issuances have
/// left the window.
pub fn frees_at(ledger: &[u64], budget: Budget, now: u64) -> Option<u64> {
    let from = now.saturating_sub(u64::from(budget.window_s));
    let mut inside: Vec<u64> = ledger.iter().copied().filter(|&t| t > from).collect();
    if inside.len() < budget.count as usize {
        return None;
    }
    inside.sort_unstable();
    // One more issuance is allowed once `len - count + 1` of them have left.
    let leaving = inside[inside.len() - budget.count as usize];
    Some(leaving.saturating_add(u64::from(budget.window_s)))
}

/// Record an issuance at `now` and forget those older than `keep`.
pub fn record(ledger: &mut Vec<u64>, now: u64, keep: Duration) {
    prune(ledger, now, keep);
    ledger.push(now);
}

/// Forget the issuances older than `keep` before `now`.
pub fn prune(ledger: &mut Vec<u64>, now: u64, keep: Duration) {
    let from = now.saturating_sub(keep.as_secs());
    ledger.retain(|&t| t > from);
}

/// Take back the issuance recorded at `at` (the issuer issued nothing).
pub fn unrecord(ledger: &mut Vec<u64>, at: u64) {
    if let Some(i) = ledger.iter().rposition(|&t| t == at) {
        ledger.remove(i);
    }
}

/// Whether an issuance may go ahead now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Every budget allows it.
    Open,
    /// A budget is exhausted, but the issuance goes ahead: there is no usable
    /// credential, or the current one is in the last [`EXPIRY_SHARE`] of its
    /// lifetime and waiting would let it expire.
    Override,
    /// Held back: try again at `until`, which is when the budget frees up or,
    /// if that is later, when the current credential enters the last tenth
    /// of its lifetime (and the budget gives way).
    Closed {
        /// When to try again (always before the current credential expires).
        until: u64,
        /// When the budget itself frees up.
        frees_at: u64,
    },
}

/// The gate for an issuance at `now`: `frees_at` is the latest
/// [`frees_at`] of the budgets that apply (`None`: none is exhausted), and
/// `current` the validity (`not_before`, `not_after`) of the usable
/// credential in place, if any.
pub fn gate(frees_at: Option<u64>, current: Option<(u64, u64)>, now: u64) -> Gate {
    let Some(frees_at) = frees_at.filter(|&f| f > now) else {
        return Gate::Open;
    };
    let Some((not_before, not_after)) = current.filter(|&(_, na)| na > now) else {
        return Gate::Override;
    };
    let deadline = give_way_at(not_before, not_after);
    if now >= deadline {
        Gate::Override
    } else {
        Gate::Closed {
            until: frees_at.min(deadline),
            frees_at,
        }
    }
}

/// When an exhausted budget gives way for a credential valid over
/// `[not_before, not_after]`: the start of the last [`EXPIRY_SHARE`] of its
/// lifetime.
pub fn give_way_at(not_before: u64, not_after: u64) -> u64 {
    let lifetime = not_after.saturating_sub(not_before);
    not_after.saturating_sub((lifetime as f64 * EXPIRY_SHARE) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: u64 = 86_400;

    fn b(count: u32, window_s: u32) -> Budget {
        Budget { count, window_s }
    }

    #[test]
    fn parses_and_prints_the_config_spelling() {
        assert_eq!(parse("5/7d"), Ok(Limit::Max(b(5, 7 * DAY as u32))));
        assert_eq!(parse(" 300 / 3h "), Ok(Limit::Max(b(300, 3 * 3600))));
        assert_eq!(parse("unlimited"), Ok(Limit::Unlimited));
        assert_eq!(b(5, 7 * DAY as u32).to_string(), "5/7d");
        assert_eq!(b(300, 3 * 3600).to_string(), "300/3h");
        assert_eq!(b(2, 90).to_string(), "2/90s");
        for bad in [
            "", "5", "five/7d", "5/soon", "-1/7d", "5/0s", "5/400d", "/7d",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("5/7d") || e.contains("between"), "{bad}: {e}");
        }
        assert!(parse("0/7d").unwrap_err().contains("no issuance"));
    }

    #[test]
    fn the_default_is_five_a_week_for_long_lived_and_five_a_lifetime_for_short() {
        let rb = Share::Fraction(0.33);
        let j = Share::Fraction(0.05);
        let d90 = default_budget(Duration::from_secs(90 * DAY), rb, j);
        assert_eq!(d90.to_string(), "5/7d");
        let d1 = default_budget(Duration::from_secs(DAY), rb, j);
        assert_eq!(d1.to_string(), "5/1d");
        let m2 = default_budget(Duration::from_secs(120), rb, j);
        assert_eq!(m2.to_string(), "5/2m");
        // renew_before 90%: ten renewals a lifetime are normal, room for 3 more.
        let eager = default_budget(Duration::from_secs(DAY), Share::Fraction(0.9), j);
        assert_eq!(eager.count, 23);
    }

    #[test]
    fn frees_when_the_oldest_counted_issuance_leaves_the_window() {
        let week = b(5, 7 * DAY as u32);
        let now = 100 * DAY;
        let ledger: Vec<u64> = (0..5).map(|i| now - 6 * DAY + i * 3600).collect();
        assert_eq!(used(&ledger, week, now), 5);
        assert_eq!(frees_at(&ledger, week, now), Some(now + DAY));
        assert_eq!(frees_at(&ledger[1..], week, now), None);
        let mut l = ledger.clone();
        unrecord(&mut l, now - 6 * DAY + 4 * 3600);
        assert_eq!(frees_at(&l, week, now), None);
        // Pruning keeps what the window still counts.
        let mut l = ledger;
        record(&mut l, now, week.window());
        prune(&mut l, now + DAY + 1, week.window());
        assert_eq!(l.len(), 5);
    }

    #[test]
    fn an_exhausted_budget_gives_way_before_expiry() {
        let nb = 1000 * DAY;
        let na = nb + 90 * DAY;
        let now = nb + 60 * DAY;
        assert_eq!(gate(None, Some((nb, na)), now), Gate::Open);
        assert_eq!(gate(Some(now), Some((nb, na)), now), Gate::Open);
        assert_eq!(
            gate(Some(now + DAY), Some((nb, na)), now),
            Gate::Closed {
                until: now + DAY,
                frees_at: now + DAY
            }
        );
        // Nothing usable in place: never held back.
        assert_eq!(gate(Some(now + DAY), None, now), Gate::Override);
        assert_eq!(gate(Some(now + DAY), Some((nb, now)), now), Gate::Override);
        // Freeing after the last tenth begins: retried when it begins, then let through.
        let deadline = na - 9 * DAY;
        assert_eq!(
            gate(Some(na), Some((nb, na)), now),
            Gate::Closed {
                until: deadline,
                frees_at: na
            }
        );
        assert_eq!(gate(Some(na), Some((nb, na)), deadline), Gate::Override);
    }

    proptest! {
        /// Never more than `count` issuances in any window when every one
        /// asks the gate first, and a blocked issuance is always retried
        /// before the current credential expires.
        #[test]
        fn the_ledger_never_exceeds_the_budget_and_closed_is_before_expiry(
            count in 1u32..10,
            window_s in 60u32..(30 * DAY as u32),
            asks in proptest::collection::vec(1u64..(5 * DAY), 1..60),
        ) {
            let budget = b(count, window_s);
            let mut ledger: Vec<u64> = Vec::new();
            let mut now = 10_000 * DAY;
            let nb = now;
            // Far away (60 steps of at most 30 days): the gate never gives way.
            let na = now + 40_000 * DAY;
            for step in asks {
                now += step % (u64::from(window_s) + 1);
                match gate(frees_at(&ledger, budget, now), Some((nb, na)), now) {
                    Gate::Open => record(&mut ledger, now, budget.window()),
                    Gate::Closed { until, frees_at } => {
                        prop_assert!(until > now && until <= frees_at);
                        prop_assert!(until < na);
                    }
                    Gate::Override => prop_assert!(false, "overrode at {now}"),
                }
                prop_assert!(used(&ledger, budget, now) <= count);
            }
        }

        #[test]
        fn closed_only_while_the_current_credential_is_out_of_its_last_tenth(
            nb in 0u64..(1000 * DAY),
            life in 10u64..(400 * DAY),
            at in 0.0f64..1.2,
            wait in 1u64..(30 * DAY),
        ) {
            let na = nb + life;
            let now = nb + (life as f64 * at) as u64;
            match gate(Some(now + wait), Some((nb, na)), now) {
                Gate::Closed { until, .. } => {
                    prop_assert!(now < give_way_at(nb, na));
                    prop_assert!(until <= give_way_at(nb, na) && until > now);
                }
                Gate::Override => prop_assert!(now >= give_way_at(nb, na) || now >= na),
                Gate::Open => prop_assert!(false),
            }
        }

        #[test]
        fn the_default_never_blocks_normal_renewals(
            life_s in 10u64..(400 * DAY),
            rb in 0.05f64..0.95,
            jit in 0.0f64..0.05,
        ) {
            let life = Duration::from_secs(life_s);
            let d = default_budget(life, Share::Fraction(rb), Share::Fraction(jit));
            prop_assert!(d.count >= DEFAULT_COUNT);
            prop_assert!(d.window() <= DEFAULT_WINDOW);
            // Renewals every (1 - rb - jit) of the lifetime: how many fit a window.
            let interval = (life_s as f64 * (1.0 - rb - jit)).max(1.0);
            let normal = (f64::from(d.window_s) / interval).ceil() as u32 + 1;
            prop_assert!(normal <= d.count, "{normal} normal renewals, budget {d}");
        }
    }
}
