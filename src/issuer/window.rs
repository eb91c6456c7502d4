//! ARI (RFC 9773) renewal windows and the pure choice of a moment inside one.

use std::time::{Duration, SystemTime};

/// A renewal window suggested by the CA for one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Renew no earlier than this.
    pub start: SystemTime,
    /// Renew before this.
    pub end: SystemTime,
    /// When the CA wants to be asked again (its `Retry-After`), if it said.
    pub retry_after: Option<Duration>,
}

/// The moment to renew inside `window`: `start + draw × (end − start)`, or
/// `now` when that moment (or the whole window) has passed. `None` for an
/// invalid window (`end <= start`), which RFC 9773 says to ignore; the
/// caller then keeps its own `renew_before` schedule. `draw` is clamped to
/// 0..=1 so a stored draw replays to the same moment.
pub fn pick_in_window(window: &RenewalWindow, draw: f64, now: SystemTime) -> Option<SystemTime> {
    let span = window.end.duration_since(window.start).ok()?;
    if span.is_zero() {
        return None;
    }
    let draw = if draw.is_nan() {
        0.0
    } else {
        draw.clamp(0.0, 1.0)
    };
    let at = window.start + span.mul_f64(draw);
    Some(at.max(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: Duration = Duration::from_secs(3600);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    fn w(start: SystemTime, end: SystemTime) -> RenewalWindow {
        RenewalWindow {
            start,
            end,
            retry_after: None,
        }
    }

    #[test]
    fn future_window_picks_by_draw() {
        let win = w(t0() + 10 * H, t0() + 20 * H);
        assert_eq!(pick_in_window(&win, 0.0, t0()), Some(t0() + 10 * H));
        assert_eq!(pick_in_window(&win, 0.5, t0()), Some(t0() + 15 * H));
        assert_eq!(pick_in_window(&win, 1.0, t0()), Some(t0() + 20 * H));
    }

    #[test]
    fn passed_window_means_now() {
        let win = w(t0() - 20 * H, t0() - 10 * H);
        assert_eq!(pick_in_window(&win, 0.7, t0()), Some(t0()));
    }

    #[test]
    fn started_window_never_picks_the_past() {
        let win = w(t0() - H, t0() + H);
        assert_eq!(pick_in_window(&win, 0.25, t0()), Some(t0()));
        assert_eq!(pick_in_window(&win, 0.75, t0()), Some(t0() + H / 2));
    }

    #[test]
    fn invalid_window_is_ignored() {
        assert_eq!(pick_in_window(&w(t0() + H, t0()), 0.5, t0()), None);
        assert_eq!(pick_in_window(&w(t0(), t0()), 0.5, t0()), None);
    }

    proptest! {
        #[test]
        fn pick_is_inside_the_window_or_now(
            start in 0u64..1_000_000, len in 1u64..1_000_000, now in 0u64..3_000_000, draw in proptest::num::f64::ANY
        ) {
            let base = SystemTime::UNIX_EPOCH;
            let win = w(base + Duration::from_secs(start), base + Duration::from_secs(start + len));
            let now = base + Duration::from_secs(now);
            let at = pick_in_window(&win, draw, now).unwrap();
            prop_assert!(at >= now);
            prop_assert!(at == now || (at >= win.start && at <= win.end));
        }
    }
}
