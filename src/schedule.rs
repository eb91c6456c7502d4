//! When to renew and when to retry: pure functions of the certificate's dates,
//! the configured shares and a random draw, so they can be tested exhaustively
//! (and replayed by the fleet simulation) without clocks or I/O.

use std::time::{Duration, SystemTime};

use crate::config::Share;

/// The first step of a backoff is at least this long...
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// ...and, after an issuer error, at most this long (reached at lifetimes of
/// 34 hours and more).
pub const BACKOFF_BASE_MAX: Duration = Duration::from_secs(60);
/// Retries after issuer errors never wait longer than this (a CA's
/// `Retry-After` aside), whatever the lifetime: a tenth of a 90-day
/// certificate's lifetime would be 9 days.
pub const BACKOFF_MAX: Duration = Duration::from_secs(86_400);
/// Retry delays never go below this cap floor, so short-lived certificates
/// still back off meaningfully.
pub const BACKOFF_MIN_CAP: Duration = Duration::from_secs(5);
/// Retries of a failed handoff (reload and verify of a credential already
/// issued, no request to the issuer) wait at most this long, so an app that
/// is fixed takes the waiting credential within minutes.
pub const HANDOFF_BACKOFF_MAX: Duration = Duration::from_secs(300);
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

/// Delay before retry number `attempt` (0 = first retry) after an issuer
/// error. Exponential from a first step of a two-thousandth of the lifetime
/// (within [`BACKOFF_BASE`]..[`BACKOFF_BASE_MAX`]: 1 minute for 90-day
/// certificates, 43 s for 24 h, 1 s for minutes), capped at a tenth of the
/// lifetime (within [`BACKOFF_MIN_CAP`]..[`BACKOFF_MAX`]), with "equal
/// jitter": half fixed, half random, so clients that failed together do not
/// retry together. A 90-day certificate's retries grow into hours (1 min,
/// 2 min, ... 17 h, then daily); a 2-minute certificate's stay within 12 s,
/// so it still renews before it expires.
pub fn backoff(attempt: u32, lifetime: Duration, draw: f64) -> Duration {
    let base = (lifetime / 2000).clamp(BACKOFF_BASE, BACKOFF_BASE_MAX);
    let cap = (lifetime / 10).clamp(BACKOFF_MIN_CAP, BACKOFF_MAX);
    equal_jitter(base, attempt, cap, draw)
}

/// The retry delay after an issuer error, also honouring the issuer's
/// `Retry-After` (bounded by [`RETRY_AFTER_MAX`]).
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

/// Delay before handoff retry number `attempt` (0 = first retry): reload and
/// verify again with the credential already issued and staged, asking the
/// issuer nothing. Exponential from 1 s, capped at a tenth of the lifetime
/// (within [`BACKOFF_MIN_CAP`]..[`HANDOFF_BACKOFF_MAX`]), equal jitter.
pub fn handoff_backoff(attempt: u32, lifetime: Duration, draw: f64) -> Duration {
    let cap = (lifetime / 10).clamp(BACKOFF_MIN_CAP, HANDOFF_BACKOFF_MAX);
    equal_jitter(BACKOFF_BASE, attempt, cap, draw)
}

/// `base` doubled `attempt` times, capped at `cap`; half of it fixed and
/// half random by `draw`.
fn equal_jitter(base: Duration, attempt: u32, cap: Duration, draw: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(20));
    let full = exp.min(cap);
    full / 2 + (full / 2).mul_f64(draw.clamp(0.0, 1.0))
}

/// Whether the staged credential of a failed handoff (valid over
/// `staged = [not_before, not_after]`, issued at `staged_issued`) is still
/// the one to hand over at `now`, rather than asking the issuer again. It is,
/// until it is itself due for renewal, or until the credential in place
/// (`committed`, if any) enters the last tenth of its lifetime (moved
/// earlier by `draw` times the jitter share) while the staged one was issued
/// before that: then one fresh issuance is worth it (the app may refuse this
/// very credential), and it is staged in turn.
pub fn retry_staged(
    staged: (SystemTime, SystemTime),
    staged_issued: SystemTime,
    committed: Option<(SystemTime, SystemTime)>,
    renew_before: Share,
    jitter: Share,
    draw: f64,
    now: SystemTime,
) -> bool {
    let (nb, na) = staged;
    if now >= na || now >= renewal_point(nb, na, renew_before, jitter, draw) {
        return false;
    }
    match committed {
        Some((cnb, cna)) => {
            // Moved earlier by the jitter draw, like the renewal point, so a
            // fleet whose apps all broke does not reissue in lockstep.
            let lifetime = cna.duration_since(cnb).unwrap_or_default();
            let ahead = lifetime.mul_f64(crate::budget::EXPIRY_SHARE)
                + jitter.of(lifetime).mul_f64(draw.clamp(0.0, 1.0));
            let last_tenth = cna - ahead.min(lifetime);
            now < last_tenth || staged_issued >= last_tenth
        }
        None => true,
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
        let day = 24 * HOUR;
        // 24 h: first step 43.2 s, capped at 2.4 h.
        assert_eq!(backoff(0, day, 1.0), day / 2000);
        assert_eq!(backoff(3, day, 1.0), 8 * (day / 2000));
        assert_eq!(backoff(30, day, 1.0), day / 10);
        // 90 days: one minute, then doublings into hours, capped at a day.
        let d90 = 90 * day;
        assert_eq!(backoff(0, d90, 1.0), BACKOFF_BASE_MAX);
        assert_eq!(backoff(10, d90, 1.0), 1024 * BACKOFF_BASE_MAX);
        assert!(backoff(10, d90, 1.0) > 16 * HOUR);
        assert_eq!(backoff(11, d90, 1.0), BACKOFF_MAX);
        // Short lifetimes keep retries short.
        assert_eq!(backoff(0, Duration::from_secs(120), 1.0), BACKOFF_BASE);
        assert_eq!(
            backoff(30, Duration::from_secs(120), 1.0),
            Duration::from_secs(12)
        );
        assert_eq!(
            retry_delay(0, day, 0.0, Some(Duration::from_secs(90))),
            Duration::from_secs(90)
        );
        // A handoff retry asks no issuer: fast, and capped at 5 minutes.
        assert_eq!(handoff_backoff(0, d90, 1.0), BACKOFF_BASE);
        assert_eq!(handoff_backoff(30, d90, 1.0), HANDOFF_BACKOFF_MAX);
        assert_eq!(
            handoff_backoff(30, Duration::from_secs(120), 1.0),
            Duration::from_secs(12)
        );
    }

    #[test]
    fn a_staged_credential_is_retried_until_it_is_due_or_the_old_one_ends() {
        let day = 24 * HOUR;
        let rb = Share::Fraction(0.33);
        let j = Share::Fraction(0.0);
        let old = (t0(), t0() + 90 * day);
        let issued = t0() + 60 * day;
        let staged = (issued, issued + 90 * day);
        let at = |d: u32| t0() + d * day;
        assert!(retry_staged(staged, issued, Some(old), rb, j, 0.0, at(61)));
        assert!(retry_staged(staged, issued, Some(old), rb, j, 0.0, at(80)));
        // The old one is in its last tenth (day 81): one fresh issuance...
        assert!(!retry_staged(staged, issued, Some(old), rb, j, 0.0, at(82)));
        // ...whose staged credential is then retried in turn.
        let fresh = (at(82), at(82) + 90 * day);
        assert!(retry_staged(fresh, at(82), Some(old), rb, j, 0.0, at(85)));
        // Without an old one, until the staged one is itself due (day 120).
        assert!(retry_staged(staged, issued, None, rb, j, 0.0, at(119)));
        assert!(!retry_staged(staged, issued, None, rb, j, 0.0, at(121)));
        assert!(!retry_staged(staged, issued, None, rb, j, 0.0, at(151)));
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
            let h = handoff_backoff(attempt, life, draw);
            prop_assert!(h <= HANDOFF_BACKOFF_MAX && h <= (life / 10).max(BACKOFF_MIN_CAP));
            prop_assert!(handoff_backoff(attempt + 1, life, 1.0) >= handoff_backoff(attempt, life, 1.0));
        }

        /// Long-lived credentials back off into hours; short-lived ones get
        /// at least three retries between a 33% renewal point and expiry.
        #[test]
        fn backoff_fits_the_lifetime(lifetime_s in 60u64..400 * 86_400, draw in 0.0f64..=1.0) {
            let life = Duration::from_secs(lifetime_s);
            if life >= Duration::from_secs(30 * 86_400) {
                prop_assert!(backoff(12, life, 0.0) >= 12 * HOUR);
            }
            let mut spent = Duration::ZERO;
            for attempt in 0..3 {
                spent += backoff(attempt, life, draw);
            }
            prop_assert!(spent < life.mul_f64(0.33), "{spent:?} of {life:?}");
        }

        #[test]
        fn retry_after_is_honoured_up_to_a_day(
            attempt in 0u32..40,
            lifetime_s in 10u64..400 * 86_400,
            ra_s in 0u64..3 * 86_400,
            draw in 0.0f64..=1.0,
        ) {
            let life = Duration::from_secs(lifetime_s);
            let ra = Duration::from_secs(ra_s);
            let d = retry_delay(attempt, life, draw, Some(ra));
            prop_assert!(d >= ra.min(RETRY_AFTER_MAX));
            prop_assert!(d >= backoff(attempt, life, draw));
            prop_assert!(d <= RETRY_AFTER_MAX.max(BACKOFF_MAX));
        }

        #[test]
        fn a_staged_credential_is_never_retried_once_due(
            life_s in 10u64..400 * 86_400,
            at in 0.0f64..1.5,
            rb in 0.05f64..0.9,
            draw in 0.0f64..=1.0,
        ) {
            let life = Duration::from_secs(life_s);
            let staged = (t0(), t0() + life);
            let now = t0() + life.mul_f64(at);
            let due = renewal_point(staged.0, staged.1, Share::Fraction(rb), Share::Fraction(0.05), draw);
            let retry = retry_staged(staged, t0(), None, Share::Fraction(rb), Share::Fraction(0.05), draw, now);
            prop_assert_eq!(retry, now < due);
        }
    }
}
