//! When to renew and when to retry: pure functions of the certificate's dates,
//! the configured shares and a random draw, so they can be tested exhaustively
//! (and replayed by the fleet simulation) without clocks or I/O.

use std::time::{Duration, SystemTime};

use crate::config::Share;

/// First retry delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Retry delays never go beyond this, whatever the lifetime.
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);
/// Retry delays never go below this cap floor, so short-lived certificates
/// still back off meaningfully.
pub const BACKOFF_MIN_CAP: Duration = Duration::from_secs(5);
/// A CA's `Retry-After` is honoured up to this long.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(86_400);

/// The moment a credential valid over `[not_before, not_after]` should be
/// renewed: `renew_before` ahead of expiry, moved earlier by `draw` (0..1)
/// times the jitter share so a fleet spreads out. Never before `not_before`.
pub fn renewal_point(
    not_before: SystemTime,
    not_after: SystemTime,
    renew_before: Share,
    jitter: Share,
    draw: f64,
) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let ahead = renew_before.of(lifetime);
    let spread = jitter.of(lifetime).mul_f64(draw.clamp(0.0, 1.0));
    let total = (ahead + spread).min(lifetime);
    not_after - total
}

/// Delay before retry number `attempt` (0 = first retry) after a failure.
/// Exponential from [`BACKOFF_BASE`], capped at a tenth of the lifetime
/// (within [`BACKOFF_MIN_CAP`]..[`BACKOFF_MAX`]), with "equal jitter": half
/// fixed, half random, so clients that failed together do not retry together.
pub fn backoff(attempt: u32, lifetime: Duration, draw: f64) -> Duration {
    let cap = (lifetime / 10).clamp(BACKOFF_MIN_CAP, BACKOFF_MAX);
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempt.min(20));
    let full = exp.min(cap);
    full / 2 + (full / 2).mul_f64(draw.clamp(0.0, 1.0))
}

/// The retry delay, also honouring an issuer's `Retry-After` (bounded).
pub fn retry_delay(
    attempt: u32,
    lifetime: Duration,
    draw: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let own = backoff(attempt, lifetime, draw);
    match retry_after {
        Some(ra) => own.max(ra.min(RETRY_AFTER_MAX)),
        None => own,
    }
}

/// Share of an ARI re-check interval added at random (see [`ari_recheck`]).
pub const ARI_RECHECK_SPREAD: f64 = 0.25;

/// Delay before asking the CA for a renewal window again: `base` (its
/// `Retry-After`, or rekey's default) plus up to a quarter more by `draw`.
/// Only ever later than `base`, since RFC 9773 asks clients not to poll
/// before `Retry-After`; the spread keeps a fleet started together from
/// re-checking, and so renewing when a CA moves its window, in lockstep.
pub fn ari_recheck(base: Duration, draw: f64) -> Duration {
    base + base.mul_f64(ARI_RECHECK_SPREAD * draw.clamp(0.0, 1.0))
}

/// Time until `at`, zero if it has passed.
pub fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ari_recheck_is_never_early_and_spreads_a_quarter() {
        let h6 = Duration::from_secs(6 * 3600);
        assert_eq!(ari_recheck(h6, 0.0), h6);
        assert_eq!(ari_recheck(h6, 1.0), h6 + h6 / 4);
        assert_eq!(ari_recheck(h6, 2.0), h6 + h6 / 4, "draw is clamped");
        assert_eq!(ari_recheck(h6, -1.0), h6);
        assert!(ari_recheck(h6, 0.5) > h6 && ari_recheck(h6, 0.5) < h6 + h6 / 4);
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn default_renews_at_two_thirds() {
        let nb = t0();
        let na = nb + 24 * HOUR;
        let at = renewal_point(nb, na, Share::Fraction(0.33), Share::Fraction(0.05), 0.0);
        assert_eq!(na.duration_since(at).unwrap(), (24 * HOUR).mul_f64(0.33));
        let early = renewal_point(nb, na, Share::Fraction(0.33), Share::Fraction(0.05), 1.0);
        assert_eq!(at.duration_since(early).unwrap(), (24 * HOUR).mul_f64(0.05));
        let fixed = renewal_point(nb, na, Share::Duration(8 * HOUR), Share::Fraction(0.0), 0.7);
        assert_eq!(fixed, na - 8 * HOUR);
    }

    #[test]
    fn backoff_grows_then_caps() {
        let life = 24 * HOUR;
        assert_eq!(backoff(0, life, 1.0), BACKOFF_BASE);
        assert_eq!(backoff(3, life, 1.0), 8 * BACKOFF_BASE);
        assert_eq!(backoff(30, life, 1.0), BACKOFF_MAX);
        // Short lifetimes keep retries short.
        assert_eq!(
            backoff(30, Duration::from_secs(120), 1.0),
            Duration::from_secs(12)
        );
        assert_eq!(
            retry_delay(0, life, 0.0, Some(Duration::from_secs(90))),
            Duration::from_secs(90)
        );
    }

    proptest! {
        #[test]
        fn renewal_point_stays_inside_validity_and_jitter_only_moves_it_earlier(
            lifetime_s in 10u64..400 * 86_400,
            frac in 0.01f64..0.95,
            jit in 0.0f64..0.04,
            fixed_s in 1u64..10 * 86_400,
            use_fixed in any::<bool>(),
            draw in 0.0f64..=1.0,
        ) {
            let nb = t0();
            let na = nb + Duration::from_secs(lifetime_s);
            let rb = if use_fixed { Share::Duration(Duration::from_secs(fixed_s)) } else { Share::Fraction(frac) };
            let at = renewal_point(nb, na, rb, Share::Fraction(jit), draw);
            prop_assert!(at >= nb && at <= na);
            let nominal = renewal_point(nb, na, rb, Share::Fraction(jit), 0.0);
            prop_assert!(at <= nominal);
            let spread = Duration::from_secs(lifetime_s).mul_f64(jit);
            prop_assert!(nominal.duration_since(at).unwrap() <= spread + Duration::from_nanos(1));
        }

        #[test]
        fn backoff_is_bounded_monotone_and_half_random(
            attempt in 0u32..64,
            lifetime_s in 10u64..400 * 86_400,
            draw in 0.0f64..=1.0,
        ) {
            let life = Duration::from_secs(lifetime_s);
            let d = backoff(attempt, life, draw);
            let full = backoff(attempt, life, 1.0);
            prop_assert!(d <= full && d >= full / 2);
            prop_assert!(full <= BACKOFF_MAX);
            prop_assert!(backoff(attempt + 1, life, 1.0) >= full);
        }
    }
}
