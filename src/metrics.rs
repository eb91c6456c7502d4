//! Prometheus metrics (the families docs/monitoring.md lists), in the Prometheus text format.
//!
//! Two sources feed them:
//! - **counters and the histogram** are pushed by the code that sees the
//!   event: [`Metrics::rotation`] (engine, after each rotation attempt),
//!   [`Metrics::issuer_request`] (engine, after each issuer call) and
//!   [`Metrics::alert`] (alert sinks, after each delivery attempt);
//! - **gauges** are derived from the engine's status snapshot at scrape
//!   time ([`Metrics::render`]), so they can never disagree with `/status`
//!   and credentials that disappear also disappear from the gauges.
//!
//! Timestamps are absolute Unix seconds, never "seconds left": an absolute
//! value stays right when a scrape is late, and alert rules compare it with
//! `time()`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::status::{Handoff, RotateResult, Snapshot, Timestamp};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `result` of a rotation: published and committed (and verified when a probe is configured).
pub const ROTATION_SUCCESS: &str = RotateResult::Success.as_str();
/// `result` of a rotation: the app did not pick it up, the previous generation was restored.
pub const ROTATION_ROLLED_BACK: &str = RotateResult::RolledBack.as_str();
/// `result` of a rotation: it failed before anything reached the application.
pub const ROTATION_FAILED: &str = RotateResult::Failed.as_str();
/// `result` of an issuer request or an alert delivery that worked.
pub const SUCCESS: &str = "success";
/// `result` of an issuer request or an alert delivery that failed.
pub const FAILURE: &str = "failure";

/// The alert events, used to pre-create series per sink.
pub const ALERT_EVENTS: [&str; 9] = [
    "renewal_failed",
    "handoff_failed",
    "expiring",
    "expired",
    "tampered",
    "recovered",
    "retired",
    "unreadable",
    "budget_exhausted",
];

/// Upper bounds of the rotation duration buckets, in seconds: a local CA
/// takes milliseconds, an ACME order with a slow verify minutes.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Errors rendering the metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The text encoder failed (it only fails when its writer does).
    #[error("cannot encode the metrics: {0}")]
    Encode(#[from] std::fmt::Error),
}

/// `{credential, kind[, team]}`: `team` only when configured, so credentials
/// without one keep the label set they always had.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct CredentialLabels {
    credential: String,
    kind: String,
    team: Option<String>,
}

impl EncodeLabelSet for CredentialLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("credential", self.credential.as_str()).encode(encoder.encode_label())?;
        ("kind", self.kind.as_str()).encode(encoder.encode_label())?;
        if let Some(team) = &self.team {
            ("team", team.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// `{credential, kind, result[, team]}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct RotationLabels {
    credential: String,
    kind: String,
    result: String,
    team: Option<String>,
}

impl EncodeLabelSet for RotationLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("credential", self.credential.as_str()).encode(encoder.encode_label())?;
        ("kind", self.kind.as_str()).encode(encoder.encode_label())?;
        ("result", self.result.as_str()).encode(encoder.encode_label())?;
        if let Some(team) = &self.team {
            ("team", team.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    issuer: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    sink: String,
    event: String,
    result: String,
}

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;

#[path = "metrics_watch.rs"]
mod watch_families;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric family rekey exports. Cheap to clone (one `Arc`); clones
/// share the same counters.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    not_after: Family<CredentialLabels, F64Gauge>,
    not_before: Family<CredentialLabels, F64Gauge>,
    failing_since: Family<CredentialLabels, F64Gauge>,
    handoff_failed: Family<CredentialLabels, Gauge>,
    next_renewal: Family<CredentialLabels, F64Gauge>,
    last_success: Family<CredentialLabels, F64Gauge>,
    consecutive_failures: Family<CredentialLabels, Gauge>,
    handoff_verified: Family<CredentialLabels, Gauge>,
    budget_exhausted: Family<CredentialLabels, Gauge>,
    budget_remaining: Family<CredentialLabels, Gauge>,
    rotations: Family<RotationLabels, Counter>,
    rotation_duration: HistogramFamily<CredentialLabels>,
    issuer_requests: Family<IssuerLabels, Counter>,
    alerts: Family<AlertLabels, Counter>,
    /// Serializes scrapes: each one clears and refills the gauges.
    scrape: Mutex<()>,
    /// Each credential's team (for the counters, which the engine bumps by name).
    teams: RwLock<BTreeMap<String, String>>,
    /// Watches and (with compatibility metrics) managed leaves.
    watches: watch_families::WatchFamilies,
    /// The monitor's view, once the daemon has one.
    view: RwLock<Option<tokio::sync::watch::Receiver<crate::watched::View>>>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Metrics {
    /// Register every family; `version` goes into `rekey_build_info`.
    pub fn new(version: &str) -> Metrics {
        Metrics::with_compat(version, &[])
    }

    /// Like [`Metrics::new`], plus the families of `compat`
    /// (`daemon.compat_metrics`).
    pub fn with_compat(version: &str, compat: &[crate::config::CompatMetrics]) -> Metrics {
        let mut registry = Registry::default();
        let not_after = Family::<CredentialLabels, F64Gauge>::default();
        let not_before = Family::<CredentialLabels, F64Gauge>::default();
        let failing_since = Family::<CredentialLabels, F64Gauge>::default();
        let handoff_failed = Family::<CredentialLabels, Gauge>::default();
        let next_renewal = Family::<CredentialLabels, F64Gauge>::default();
        let last_success = Family::<CredentialLabels, F64Gauge>::default();
        let consecutive_failures = Family::<CredentialLabels, Gauge>::default();
        let handoff_verified = Family::<CredentialLabels, Gauge>::default();
        let budget_exhausted = Family::<CredentialLabels, Gauge>::default();
        let budget_remaining = Family::<CredentialLabels, Gauge>::default();
        let rotations = Family::<RotationLabels, Counter>::default();
        let rotation_duration: HistogramFamily<CredentialLabels> =
            Family::new_with_constructor(duration_histogram);
        let issuer_requests = Family::<IssuerLabels, Counter>::default();
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register(
            "rekey_credential_not_after_timestamp_seconds",
            "When the current certificate expires (Unix seconds)",
            not_after.clone(),
        );
        registry.register(
            "rekey_credential_not_before_timestamp_seconds",
            "When the current certificate became valid (Unix seconds; with not_after, its lifetime)",
            not_before.clone(),
        );
        registry.register(
            "rekey_credential_failing_since_timestamp_seconds",
            "When the current run of rotation failures began (Unix seconds; absent while none)",
            failing_since.clone(),
        );
        registry.register(
            "rekey_credential_next_renewal_timestamp_seconds",
            "When the next renewal attempt is due (Unix seconds; the retry time in backoff)",
            next_renewal.clone(),
        );
        registry.register(
            "rekey_credential_last_success_timestamp_seconds",
            "When the last rotation attempt succeeded (Unix seconds; absent until one succeeds in this process)",
            last_success.clone(),
        );
        registry.register(
            "rekey_credential_consecutive_failures",
            "Rotation failures since the last success",
            consecutive_failures.clone(),
        );
        registry.register(
            "rekey_handoff_verified",
            "1 when the last probe saw the application use the current generation",
            handoff_verified.clone(),
        );
        registry.register(
            "rekey_handoff_failed",
            "1 while the handoff of the current generation is failed (the application did not pick it up)",
            handoff_failed.clone(),
        );
        registry.register(
            "rekey_issuance_budget_exhausted",
            "1 while an exhausted issuance budget holds the credential's issuance back",
            budget_exhausted.clone(),
        );
        registry.register(
            "rekey_issuance_budget_remaining",
            "Issuances the credential's own budget still allows in its window (absent when unlimited)",
            budget_remaining.clone(),
        );
        // The encoder appends `_total` to counters.
        registry.register(
            "rekey_rotations",
            "Rotation attempts by result (success, rolled_back, failed)",
            rotations.clone(),
        );
        registry.register(
            "rekey_rotation_duration_seconds",
            "Duration of rotations, from publish through verify",
            rotation_duration.clone(),
        );
        registry.register(
            "rekey_issuer_requests",
            "Requests to issuers by result (success, failure)",
            issuer_requests.clone(),
        );
        registry.register(
            "rekey_alerts",
            "Alert deliveries by sink, event and result (success, failure)",
            alerts.clone(),
        );
        // The encoder appends `_info`.
        registry.register(
            "rekey_build",
            "rekey build information",
            Info::new(vec![("version".to_string(), version.to_string())]),
        );
        let watches = watch_families::WatchFamilies::register(
            &mut registry,
            compat.contains(&crate::config::CompatMetrics::X509Exporter),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                not_after,
                not_before,
                failing_since,
                handoff_failed,
                next_renewal,
                last_success,
                consecutive_failures,
                handoff_verified,
                budget_exhausted,
                budget_remaining,
                rotations,
                rotation_duration,
                issuer_requests,
                alerts,
                scrape: Mutex::new(()),
                teams: RwLock::new(BTreeMap::new()),
                watches,
                view: RwLock::new(None),
            }),
        }
    }

    /// Count one rotation attempt of `credential` (`kind`: "certificate" or
    /// "api_key") with `result` one of [`ROTATION_SUCCESS`],
    /// [`ROTATION_ROLLED_BACK`], [`ROTATION_FAILED`]; `duration` runs from
    /// the start of publish through verify (and rollback).
    ///
    /// Only attempts that reached the application (success, rolled_back)
    /// go into the histogram: a `failed` attempt stopped before publish,
    /// and its issuer time would blur the handoff's distribution.
    pub fn rotation(&self, credential: &str, kind: &str, result: &str, duration: Duration) {
        let team = self.team(credential);
        self.inner
            .rotations
            .get_or_create(&RotationLabels {
                credential: credential.to_string(),
                kind: kind.to_string(),
                result: result.to_string(),
                team: team.clone(),
            })
            .inc();
        if result == ROTATION_FAILED {
            return;
        }
        self.inner
            .rotation_duration
            .get_or_create(&CredentialLabels {
                credential: credential.to_string(),
                kind: kind.to_string(),
                team,
            })
            .observe(duration.as_secs_f64());
    }

    /// Take each credential's `team` from the config (at start and on reload).
    pub fn set_teams(&self, certs: &[std::sync::Arc<crate::config::CertificateConfig>]) {
        let map = certs
            .iter()
            .filter_map(|c| c.team.clone().map(|t| (c.name.clone(), t)))
            .collect();
        // A poisoned lock only means a panic elsewhere; the map is replaced whole.
        *self.inner.teams.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// Export the watches (and compatibility families) of the monitor's view.
    pub fn set_watch_view(&self, view: tokio::sync::watch::Receiver<crate::watched::View>) {
        *self.inner.view.write().unwrap_or_else(|e| e.into_inner()) = Some(view);
    }

    fn team(&self, credential: &str) -> Option<String> {
        let teams = self.inner.teams.read().unwrap_or_else(|e| e.into_inner());
        teams.get(credential).cloned()
    }

    /// Count one request to `issuer`; `result` is [`SUCCESS`] or [`FAILURE`].
    pub fn issuer_request(&self, issuer: &str, result: &str) {
        self.inner
            .issuer_requests
            .get_or_create(&IssuerLabels {
                issuer: issuer.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Count one delivery of alert `event` through `sink`; `result` is
    /// [`SUCCESS`] or [`FAILURE`].
    pub fn alert(&self, sink: &str, event: &str, result: &str) {
        self.inner
            .alerts
            .get_or_create(&AlertLabels {
                sink: sink.to_string(),
                event: event.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Create the series of alert `sink` at 0 for every event and result, so
    /// the first delivery shows up in `increase()`; call it once per
    /// configured sink at start. (Without sinks the family is absent.)
    pub fn alert_sink(&self, sink: &str) {
        for event in ALERT_EVENTS {
            for result in [SUCCESS, FAILURE] {
                let _ = self.inner.alerts.get_or_create(&AlertLabels {
                    sink: sink.to_string(),
                    event: event.to_string(),
                    result: result.to_string(),
                });
            }
        }
    }

    /// The whole exposition, with the gauges taken from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> Result<String, MetricsError> {
        // A poisoned lock only means an earlier scrape panicked; the gauges
        // are rebuilt from scratch below anyway.
        let _guard = self
            .inner
            .scrape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.refresh(snapshot);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)?;
        Ok(out)
    }

    /// Rebuild the gauges from the snapshot, and create the known counter
    /// series at 0 so `rate()` and `increase()` see the first event.
    fn refresh(&self, snapshot: &Snapshot) {
        let m = &self.inner;
        for family in [
            &m.not_after,
            &m.not_before,
            &m.failing_since,
            &m.next_renewal,
            &m.last_success,
        ] {
            family.clear();
        }
        m.consecutive_failures.clear();
        m.handoff_verified.clear();
        m.handoff_failed.clear();
        m.budget_exhausted.clear();
        m.budget_remaining.clear();
        for c in snapshot.values() {
            let labels = CredentialLabels {
                credential: c.name.clone(),
                kind: c.kind.to_string(),
                team: c.team.clone(),
            };
            let set = |family: &Family<CredentialLabels, F64Gauge>, t: Option<Timestamp>| {
                if let Some(secs) = t.map(Timestamp::time).and_then(unix_seconds) {
                    family.get_or_create(&labels).set(secs);
                }
            };
            set(&m.not_after, c.not_after);
            set(&m.not_before, c.not_before);
            set(&m.failing_since, c.failing_since);
            set(&m.next_renewal, c.next_renewal);
            let last_success = c
                .last_rotation
                .as_ref()
                .filter(|r| r.result == RotateResult::Success)
                .map(|r| r.at);
            set(&m.last_success, last_success);
            m.consecutive_failures
                .get_or_create(&labels)
                .set(i64::from(c.consecutive_failures));
            m.handoff_verified
                .get_or_create(&labels)
                .set(i64::from(c.handoff == Handoff::Verified));
            m.handoff_failed
                .get_or_create(&labels)
                .set(i64::from(c.handoff == Handoff::Failed));
            if let Some(b) = &c.issuance_budget {
                m.budget_exhausted
                    .get_or_create(&labels)
                    .set(i64::from(b.exhausted.is_some()));
                if let Some(left) = b.remaining {
                    m.budget_remaining
                        .get_or_create(&labels)
                        .set(i64::from(left));
                }
            }
            for result in [ROTATION_SUCCESS, ROTATION_ROLLED_BACK, ROTATION_FAILED] {
                let _ = m.rotations.get_or_create(&RotationLabels {
                    credential: c.name.clone(),
                    kind: c.kind.to_string(),
                    result: result.to_string(),
                    team: c.team.clone(),
                });
            }
            let _ = m.rotation_duration.get_or_create(&labels);
            for result in [SUCCESS, FAILURE] {
                let _ = m.issuer_requests.get_or_create(&IssuerLabels {
                    issuer: c.issuer.clone(),
                    result: result.to_string(),
                });
            }
        }
        let view = m.view.read().unwrap_or_else(|e| e.into_inner());
        let empty = crate::watched::View::default();
        match view.as_ref() {
            Some(rx) => m.watches.refresh(&rx.borrow(), SystemTime::now()),
            None => m.watches.refresh(&empty, SystemTime::now()),
        }
    }
}

/// Seconds since the Unix epoch, with sub-second precision.
fn unix_seconds(t: SystemTime) -> Option<f64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs_f64())
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
