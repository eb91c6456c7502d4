//! The metric families of watches, and the opt-in families in other
//! exporters' names (`daemon.compat_metrics`), both rebuilt from the
//! monitor's [`View`] at each scrape like the credential gauges.
//!
//! Cardinality: one series per watch in each `rekey_watch_*` family
//! (`{watch, source[, team]}`; the certificate that expires first speaks for
//! a bundle). The x509-certificate-exporter families have one series per
//! certificate, as that exporter does: each managed certificate's leaf, and
//! every certificate of each watch, capped at
//! [`crate::certview::MAX_CERTIFICATES`] per watch. Nothing a scrape or a
//! peer sends can add series: only the config can.

use std::time::SystemTime;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{unix_seconds, F64Gauge};
use crate::certview::serial_decimal;
use crate::status::{State, Timestamp, WatchedCert};
use crate::watched::View;

/// `{watch, source[, team]}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct WatchLabels {
    watch: String,
    source: String,
    team: Option<String>,
}

impl EncodeLabelSet for WatchLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("watch", self.watch.as_str()).encode(encoder.encode_label())?;
        ("source", self.source.as_str()).encode(encoder.encode_label())?;
        if let Some(team) = &self.team {
            ("team", team.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// x509-certificate-exporter's per-certificate labels. `filename` is
/// absent for endpoint watches (there is no file: `filepath` is `host:port`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct X509Labels {
    filename: Option<String>,
    filepath: String,
    serial_number: String,
    subject_cn: Option<String>,
    issuer_cn: Option<String>,
}

impl EncodeLabelSet for X509Labels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        if let Some(f) = &self.filename {
            ("filename", f.as_str()).encode(encoder.encode_label())?;
        }
        ("filepath", self.filepath.as_str()).encode(encoder.encode_label())?;
        ("serial_number", self.serial_number.as_str()).encode(encoder.encode_label())?;
        // That exporter leaves a label out when the name has no CN.
        if let Some(cn) = &self.subject_cn {
            ("subject_CN", cn.as_str()).encode(encoder.encode_label())?;
        }
        if let Some(cn) = &self.issuer_cn {
            ("issuer_CN", cn.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// The families, registered once.
pub(super) struct WatchFamilies {
    not_after: Family<WatchLabels, F64Gauge>,
    alert_at: Family<WatchLabels, F64Gauge>,
    readable: Family<WatchLabels, Gauge>,
    certificates: Family<WatchLabels, Gauge>,
    x509: Option<X509Families>,
}

struct X509Families {
    not_after: Family<X509Labels, F64Gauge>,
    not_before: Family<X509Labels, F64Gauge>,
    expired: Family<X509Labels, Gauge>,
    read_errors: Gauge,
}

impl WatchFamilies {
    /// Register the watch families, and the x509 ones when `x509` is set.
    pub fn register(registry: &mut Registry, x509: bool) -> WatchFamilies {
        let f = WatchFamilies {
            not_after: Family::default(),
            alert_at: Family::default(),
            readable: Family::default(),
            certificates: Family::default(),
            x509: x509.then(|| X509Families {
                not_after: Family::default(),
                not_before: Family::default(),
                expired: Family::default(),
                read_errors: Gauge::default(),
            }),
        };
        registry.register(
            "rekey_watch_not_after_timestamp_seconds",
            "When the first certificate of a watched file or endpoint expires (Unix seconds; absent while unreadable)",
            f.not_after.clone(),
        );
        registry.register(
            "rekey_watch_alert_at_timestamp_seconds",
            "When the first certificate of a watch enters its alert_before window (Unix seconds)",
            f.alert_at.clone(),
        );
        registry.register(
            "rekey_watch_readable",
            "1 when the last read or probe of a watch found certificates, 0 when it failed",
            f.readable.clone(),
        );
        registry.register(
            "rekey_watch_certificates",
            "Certificates found in a watched file, or in the chain an endpoint serves",
            f.certificates.clone(),
        );
        if let Some(x) = &f.x509 {
            // Names, help and types as x509-certificate-exporter has them.
            registry.register(
                "x509_cert_not_after",
                "Indicates the certificate's not after timestamp",
                x.not_after.clone(),
            );
            registry.register(
                "x509_cert_not_before",
                "Indicates the certificate's not before timestamp",
                x.not_before.clone(),
            );
            registry.register(
                "x509_cert_expired",
                "Indicates if the certificate is expired",
                x.expired.clone(),
            );
            registry.register(
                "x509_read_errors",
                "Indicates the number of read failure(s)",
                x.read_errors.clone(),
            );
        }
        f
    }

    /// Rebuild every series from `view` (called under the scrape lock).
    pub fn refresh(&self, view: &View, now: SystemTime) {
        self.not_after.clear();
        self.alert_at.clear();
        self.readable.clear();
        self.certificates.clear();
        for w in view.watches.values() {
            let Some(detail) = &w.watch else { continue };
            let labels = WatchLabels {
                watch: w.name.clone(),
                source: detail.source.clone(),
                team: w.team.clone(),
            };
            let set = |family: &Family<WatchLabels, F64Gauge>, t: Option<Timestamp>| {
                if let Some(secs) = t.map(Timestamp::time).and_then(unix_seconds) {
                    family.get_or_create(&labels).set(secs);
                }
            };
            set(&self.not_after, w.not_after);
            set(&self.alert_at, detail.alert_at);
            match w.state {
                State::Starting => {}
                State::Unreadable => {
                    self.readable.get_or_create(&labels).set(0);
                }
                _ => {
                    self.readable.get_or_create(&labels).set(1);
                    self.certificates
                        .get_or_create(&labels)
                        .set(detail.certificates.len() as i64);
                }
            }
        }
        if let Some(x) = &self.x509 {
            x.refresh(view, now);
        }
    }
}

impl X509Families {
    fn refresh(&self, view: &View, now: SystemTime) {
        self.not_after.clear();
        self.not_before.clear();
        self.expired.clear();
        let mut errors = 0;
        for leaf in view.managed.values() {
            let path = leaf.path.display().to_string();
            self.set(&leaf.cert, path, file_name(&leaf.path), now);
        }
        for w in view.watches.values() {
            let Some(detail) = &w.watch else { continue };
            if w.state == State::Unreadable {
                errors += 1;
            }
            let (filepath, filename) = match (&detail.path, &detail.endpoint) {
                (Some(p), _) => (p.clone(), file_name(std::path::Path::new(p))),
                (None, Some(e)) => (e.clone(), None),
                (None, None) => continue,
            };
            for c in &detail.certificates {
                self.set(c, filepath.clone(), filename.clone(), now);
            }
        }
        self.read_errors.set(errors);
    }

    fn set(&self, c: &WatchedCert, filepath: String, filename: Option<String>, now: SystemTime) {
        let labels = X509Labels {
            filename,
            filepath,
            serial_number: serial_decimal(&c.serial).unwrap_or_else(|| c.serial.clone()),
            subject_cn: c.subject_cn.clone(),
            issuer_cn: c.issuer_cn.clone(),
        };
        let not_after = c.not_after.time();
        if let Some(t) = unix_seconds(not_after) {
            self.not_after.get_or_create(&labels).set(t);
        }
        if let Some(t) = unix_seconds(c.not_before.time()) {
            self.not_before.get_or_create(&labels).set(t);
        }
        self.expired
            .get_or_create(&labels)
            .set(i64::from(not_after <= now));
    }
}

fn file_name(p: &std::path::Path) -> Option<String> {
    p.file_name().map(|n| n.to_string_lossy().into_owned())
}
