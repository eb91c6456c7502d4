//! A credential's own alerts: `expiring` and `expired` from the
//! certificate's dates, and `recovered` after a failure.

use std::time::SystemTime;

use super::{Task, EXPIRING_SHARE};
use crate::alert::{Alert, Event};
use crate::handoff::Generation;
use crate::timestamp;

impl Task {
    pub(in crate::engine) fn raise_recovered(&self, g: &Generation) {
        let mut a = Alert::new(
            Event::Recovered,
            &self.cfg.name,
            "certificate",
            format!("generation {} is published and in use", g.generation),
        );
        a.generation = Some(g.generation);
        a.fingerprint = Some(g.fingerprint.clone());
        a.not_after = Some(g.not_after);
        self.alerter.raise(a);
    }

    /// The next moment an `expiring` or `expired` alert is due, if any.
    pub(super) fn next_date_alert(&self) -> Option<SystemTime> {
        let c = self.own.current.as_ref()?;
        let expiring = c.info.not_after - c.info.lifetime().mul_f64(EXPIRING_SHARE);
        if self.own.alerted_expiring != Some(c.generation) {
            Some(expiring)
        } else if self.own.alerted_expired != Some(c.generation) {
            Some(c.info.not_after)
        } else {
            None
        }
    }

    /// `expiring` (under 10% of lifetime left and no successful renewal) and
    /// `expired`, driven by the certificate's own dates, once per generation.
    pub(super) fn date_alerts(&mut self, now: SystemTime) {
        let Some(c) = &self.own.current else { return };
        let (g, na) = (c.generation, c.info.not_after);
        let expiring = na - c.info.lifetime().mul_f64(EXPIRING_SHARE);
        let make = |event, msg: String| {
            let mut a = Alert::new(event, &self.cfg.name, "certificate", msg);
            a.generation = Some(g);
            a.fingerprint = Some(c.info.fingerprint.clone());
            a.not_after = Some(timestamp::Timestamp::new(na));
            a
        };
        if now >= na && self.own.alerted_expired != Some(g) {
            self.alerter.raise(make(
                Event::Expired,
                format!("the certificate expired at {}", timestamp::rfc3339(na)),
            ));
            self.own.alerted_expired = Some(g);
            self.own.alerted_expiring = Some(g);
        } else if now >= expiring && now < na && self.own.alerted_expiring != Some(g) {
            self.alerter.raise(make(
                Event::Expiring,
                format!(
                    "less than 10% of the lifetime left (expires {}) and no successful renewal",
                    timestamp::rfc3339(na)
                ),
            ));
            self.own.alerted_expiring = Some(g);
        }
    }
}
