//! The `alertmanager` sink: POST to Alertmanager's `/api/v2/alerts`.
//!
//! Each failure event of a credential becomes one Alertmanager alert,
//! identified by its labels `alertname` (e.g. `RekeyHandoffFailed`),
//! `credential`, `kind`, `severity` and `instance` (the host). The sink
//! remembers which alerts fire for which credential:
//!
//! - a firing alert is posted with `endsAt` = now + [`HOLD`] and re-posted
//!   every [`REFRESH`] while it fires (as Prometheus does), because
//!   Alertmanager resolves an alert it stops hearing about, and the
//!   Alerter's de-duplication deliberately stops repeating it;
//! - `recovered` re-posts every firing alert of that credential with
//!   `endsAt` = now, which resolves it. A resolution that cannot be
//!   delivered is kept and retried at each refresh, never forgotten.
//!
//! If rekey stops, its alerts resolve by themselves after at most `HOLD`:
//! "rekey is down" is for the metrics endpoint's scraper to notice.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::Serialize;

use super::http::HttpClient;
use super::{Alert, AlertError, AlertSink, Event, Policy};
use crate::config::HttpConfig;
use crate::timestamp::Timestamp;

/// How often firing alerts are re-posted.
pub const REFRESH: Duration = Duration::from_secs(60);
/// How far in the future a firing alert's `endsAt` is set.
pub const HOLD: Duration = Duration::from_secs(300);

/// One alert in Alertmanager's v2 API shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct AmAlert {
    pub labels: BTreeMap<&'static str, String>,
    pub annotations: BTreeMap<&'static str, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: Timestamp,
    #[serde(rename = "endsAt")]
    pub ends_at: Timestamp,
}

/// A remembered alert: firing, or resolved but not yet delivered as such.
#[derive(Debug, Clone)]
struct Tracked {
    alert: AmAlert,
    resolved: bool,
}

/// Posts alerts to one Alertmanager.
pub struct AlertmanagerSink {
    name: String,
    client: HttpClient,
    /// credential → event → alert. Only the sink's worker touches it, one
    /// call at a time; the mutex is never held across an await.
    tracked: Mutex<BTreeMap<String, BTreeMap<Event, Tracked>>>,
}

impl AlertmanagerSink {
    /// Set up the sink; `/api/v2/alerts` is appended to the URL's path.
    pub fn new(name: &str, cfg: &HttpConfig) -> Result<AlertmanagerSink, AlertError> {
        Ok(AlertmanagerSink {
            name: name.to_string(),
            client: HttpClient::new(name, cfg, Some("/api/v2/alerts"))?,
            tracked: Mutex::new(BTreeMap::new()),
        })
    }

    fn with_tracked<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, BTreeMap<Event, Tracked>>) -> T,
    ) -> T {
        // A panic while holding the lock cannot leave the map half-updated
        // in a way that matters more than losing alerts: keep going.
        let mut guard = self.tracked.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    async fn post(&self, alerts: &[AmAlert]) -> Result<(), AlertError> {
        let body = serde_json::to_vec(alerts).unwrap_or_default();
        self.client.post_json(body).await
    }

    /// Drop resolutions that were delivered.
    fn forget_resolved(&self, credential: Option<&str>) {
        self.with_tracked(|t| {
            t.retain(|cred, events| {
                if credential.is_none_or(|c| c == cred) {
                    events.retain(|_, tr| !tr.resolved);
                }
                !events.is_empty()
            })
        });
    }
}

#[async_trait]
impl AlertSink for AlertmanagerSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn target(&self) -> String {
        self.client.shown().to_string()
    }

    fn policy(&self) -> Policy {
        self.client.policy()
    }

    fn refresh_every(&self) -> Option<Duration> {
        Some(REFRESH)
    }

    async fn send(&self, alert: &Alert) -> Result<(), AlertError> {
        let now = SystemTime::now();
        // A retired credential's alerts resolve like a recovery, and the
        // retirement itself is posted already resolved so it never re-fires.
        let resolves = matches!(alert.event, Event::Recovered | Event::Retired);
        let batch = if resolves {
            let ends = Timestamp::new(now);
            let mut batch = self.with_tracked(|t| {
                let Some(events) = t.get_mut(&alert.credential) else {
                    return Vec::new();
                };
                events
                    .values_mut()
                    .map(|tr| {
                        tr.resolved = true;
                        tr.alert.ends_at = ends;
                        tr.alert.clone()
                    })
                    .collect()
            });
            if alert.event == Event::Retired {
                batch.push(to_am(alert, ends));
            }
            batch
        } else {
            let mut am = to_am(alert, Timestamp::new(now + HOLD));
            // Remember before posting: if the post fails, the refresh delivers it.
            self.with_tracked(|t| {
                let events = t.entry(alert.credential.clone()).or_default();
                if let Some(prev) = events.get(&alert.event).filter(|p| !p.resolved) {
                    am.starts_at = prev.alert.starts_at;
                }
                events.insert(
                    alert.event,
                    Tracked {
                        alert: am.clone(),
                        resolved: false,
                    },
                );
            });
            vec![am]
        };
        if batch.is_empty() {
            return Ok(());
        }
        self.post(&batch).await?;
        if resolves {
            self.forget_resolved(Some(&alert.credential));
        }
        Ok(())
    }

    async fn refresh(&self) -> Result<(), AlertError> {
        let ends = Timestamp::new(SystemTime::now() + HOLD);
        let batch: Vec<AmAlert> = self.with_tracked(|t| {
            t.values_mut()
                .flat_map(|events| events.values_mut())
                .map(|tr| {
                    if !tr.resolved {
                        tr.alert.ends_at = ends;
                    }
                    tr.alert.clone()
                })
                .collect()
        });
        if batch.is_empty() {
            return Ok(());
        }
        self.post(&batch).await?;
        self.forget_resolved(None);
        Ok(())
    }
}

/// `HandoffFailed` → `RekeyHandoffFailed`.
pub(super) fn alertname(event: Event) -> String {
    let mut out = String::from("Rekey");
    for word in event.as_str().split('_') {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// The Alertmanager alert for a failure event, ending at `ends_at`.
pub(super) fn to_am(a: &Alert, ends_at: Timestamp) -> AmAlert {
    let mut labels = BTreeMap::from([
        ("alertname", alertname(a.event)),
        ("credential", a.credential.clone()),
        ("kind", a.kind.clone()),
        ("severity", a.severity.as_str().to_string()),
        ("instance", a.host.clone()),
    ]);
    // Alertmanager routes on labels: `team` lets its own routes split by owner.
    if let Some(team) = &a.team {
        labels.insert("team", team.clone());
    }
    let mut annotations = BTreeMap::from([
        (
            "summary",
            format!(
                "rekey: {} {} on {}: {}",
                a.kind, a.credential, a.host, a.event
            ),
        ),
        ("description", a.message.clone()),
    ]);
    if let Some(g) = a.generation {
        annotations.insert("generation", g.to_string());
    }
    if let Some(f) = &a.fingerprint {
        annotations.insert("fingerprint", f.clone());
    }
    if let Some(f) = &a.served_fingerprint {
        annotations.insert("served_fingerprint", f.clone());
    }
    if let Some(t) = a.not_after {
        annotations.insert("not_after", t.to_string());
    }
    if let Some(r) = a.rolled_back {
        annotations.insert("rolled_back", r.to_string());
    }
    AmAlert {
        labels,
        annotations,
        starts_at: a.time,
        ends_at,
    }
}
