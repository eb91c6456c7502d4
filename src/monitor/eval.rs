//! The verdict on what a watch found, at a given instant (pure): valid,
//! expiring or expired, which certificate matters, and when the verdict
//! changes next so the task can sleep until exactly then.

use std::time::SystemTime;

use crate::certview::Seen;
use crate::config::WatchConfig;
use crate::status::State;

/// The verdict on a non-empty set of certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `Valid`, `Expiring` or `Expired`.
    pub state: State,
    /// Index of the certificate that expires first (the one that bites).
    pub soonest: usize,
    /// Index of the certificate that enters its `alert_before` window first.
    pub first_alert: usize,
    /// When the first certificate enters its `alert_before` window.
    pub alert_at: SystemTime,
    /// The next instant the verdict changes by itself (`None`: every
    /// certificate has expired already).
    pub next_change: Option<SystemTime>,
}

/// Judge `certs` (at least one) at `now`: expired when any has expired,
/// expiring when any is inside its `alert_before` window (each certificate's
/// own lifetime decides a share), valid otherwise.
pub fn evaluate(certs: &[Seen], cfg: &WatchConfig, now: SystemTime) -> Option<Verdict> {
    let alert_at = |s: &Seen| s.not_after - cfg.alert_before_for(s.lifetime());
    let soonest = (0..certs.len()).min_by_key(|&i| certs[i].not_after)?;
    let first_alert = (0..certs.len()).min_by_key(|&i| alert_at(&certs[i]))?;
    let state = if certs[soonest].not_after <= now {
        State::Expired
    } else if alert_at(&certs[first_alert]) <= now {
        State::Expiring
    } else {
        State::Valid
    };
    let next_change = certs
        .iter()
        .flat_map(|s| [alert_at(s), s.not_after])
        .filter(|t| *t > now)
        .min();
    Some(Verdict {
        state,
        soonest,
        first_alert,
        alert_at: alert_at(&certs[first_alert]),
        next_change,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Share, WatchSource};
    use crate::status::{Timestamp, WatchedCert};
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86400);

    fn seen(not_before: SystemTime, not_after: SystemTime) -> Seen {
        Seen {
            cert: WatchedCert {
                subject: String::new(),
                subject_cn: None,
                issuer: String::new(),
                issuer_cn: None,
                serial: String::new(),
                fingerprint: String::new(),
                not_before: Timestamp::new(std::time::UNIX_EPOCH),
                not_after: Timestamp::new(std::time::UNIX_EPOCH),
                is_ca: false,
            },
            not_before,
            not_after,
            public_key: Vec::new(),
            key_type: String::new(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
        }
    }

    fn cfg(alert_before: Option<Share>) -> WatchConfig {
        WatchConfig {
            name: "w".into(),
            source: WatchSource::File("/x".into()),
            alert_before,
            interval: DAY,
            timeout: DAY,
            team: None,
            labels: Default::default(),
        }
    }

    #[test]
    fn states_and_the_next_change_follow_the_dates() {
        let t0 = SystemTime::UNIX_EPOCH + DAY * 20000;
        // 100 days of life: default alert_before = 20 days.
        let c = [seen(t0, t0 + DAY * 100)];
        let w = cfg(None);
        let v = evaluate(&c, &w, t0 + DAY).unwrap();
        assert_eq!(v.state, State::Valid);
        assert_eq!(v.alert_at, t0 + DAY * 80);
        assert_eq!(v.next_change, Some(t0 + DAY * 80));
        let v = evaluate(&c, &w, t0 + DAY * 80).unwrap();
        assert_eq!(v.state, State::Expiring);
        assert_eq!(v.next_change, Some(t0 + DAY * 100));
        let v = evaluate(&c, &w, t0 + DAY * 100).unwrap();
        assert_eq!(v.state, State::Expired);
        assert_eq!(v.next_change, None);
        assert!(evaluate(&[], &w, t0).is_none());
    }

    #[test]
    fn the_worst_certificate_of_a_bundle_decides() {
        let t0 = SystemTime::UNIX_EPOCH + DAY * 20000;
        let w = cfg(Some(Share::Duration(DAY * 10)));
        // A long-lived root and a leaf that expires first.
        let bundle = [seen(t0, t0 + DAY * 3650), seen(t0, t0 + DAY * 30)];
        let v = evaluate(&bundle, &w, t0 + DAY * 25).unwrap();
        assert_eq!((v.state, v.soonest, v.first_alert), (State::Expiring, 1, 1));
        assert_eq!(v.next_change, Some(t0 + DAY * 30));
        // One expired certificate makes the whole watch expired.
        let v = evaluate(&bundle, &w, t0 + DAY * 31).unwrap();
        assert_eq!(v.state, State::Expired);
        assert_eq!(v.next_change, Some(t0 + DAY * 3640));
        // Share-based windows use each certificate's own lifetime: the root
        // (10 years, 20% capped at 30 days) alerts later than the leaf.
        let d = cfg(None);
        let v = evaluate(&bundle, &d, t0).unwrap();
        assert_eq!(v.first_alert, 1);
        assert_eq!(v.alert_at, t0 + DAY * 24);
    }
}
