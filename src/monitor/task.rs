//! One task per watch: read the file (on a file event, and at every
//! re-check) or probe the endpoint (on a jittered interval), judge what it
//! found, publish it, and alert. It sleeps on one timer set to the next
//! re-check or the next instant its verdict changes by itself (a certificate
//! entering its `alert_before` window, or expiring); nothing polls. It never
//! writes a file.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};

use super::{eval, View, WatchError};
use crate::alert::{Alert, Alerter, Event};
use crate::certview::{self, Seen};
use crate::config::{WatchConfig, WatchSource};
use crate::status::{CredentialStatus, Handoff, State, WatchStatus, KIND_WATCH};
use crate::timestamp::Timestamp;

/// First retry after a failed endpoint probe; doubles up to the interval.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest sleep between two verdicts.
const MAX_NAP: Duration = Duration::from_secs(86400);
/// A read that fails right after a file event is tried once more this much
/// later before it counts: a pipeline that writes the file in place (not
/// by rename) is caught half-way by the event.
const EVENT_GRACE: Duration = Duration::from_secs(1);

/// The state of one watch.
pub(super) struct Task {
    pub cfg: Arc<WatchConfig>,
    pub view: watch::Sender<View>,
    pub alerter: Alerter,
    /// How often a file is re-read without a file event (daemon.backstop).
    pub recheck: Duration,
    /// Accepts any server certificate: what is served is what is judged.
    pub tls: Arc<rustls::ClientConfig>,
    /// The certificates of the last successful read or probe.
    found: Option<Vec<Seen>>,
    /// Why the last read or probe failed.
    error: Option<String>,
    failures: u32,
    failing_since: Option<SystemTime>,
    last_checked: Option<SystemTime>,
    next_check: SystemTime,
    /// Whether the last published state was a problem (for `recovered`).
    troubled: bool,
}

impl Task {
    /// A task for `cfg` that checks at once when run.
    pub fn new(
        cfg: Arc<WatchConfig>,
        view: watch::Sender<View>,
        alerter: Alerter,
        recheck: Duration,
        tls: Arc<rustls::ClientConfig>,
    ) -> Task {
        Task {
            cfg,
            view,
            alerter,
            recheck,
            tls,
            found: None,
            error: None,
            failures: 0,
            failing_since: None,
            last_checked: None,
            next_check: SystemTime::now(),
            troubled: false,
        }
    }

    /// Run until `stop` turns true (or its sender is gone). `wake` is poked
    /// by file events in the watched file's directory.
    pub async fn run(mut self, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        let is_file = matches!(self.cfg.source, WatchSource::File(_));
        let mut poked = false;
        loop {
            if *stop.borrow() {
                return;
            }
            if poked || SystemTime::now() >= self.next_check {
                self.check(poked).await;
                poked = false;
            }
            let now = SystemTime::now();
            let verdict = self.publish(now);
            let until = verdict
                .and_then(|v| v.next_change)
                .map_or(self.next_check, |t| t.min(self.next_check));
            // At most a day: the verdict is judged on the wall clock, and a
            // long sleep on the monotonic one would drift from it (suspend,
            // clock steps); it also keeps any configured interval safe for
            // the timer.
            let nap = until.duration_since(now).unwrap_or_default().min(MAX_NAP);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = wake.notified(), if is_file => poked = true,
                r = stop.changed() => if r.is_err() { return },
            }
        }
    }

    /// One check and its verdict, published (for one-shot callers).
    pub async fn check_and_publish(&mut self) {
        self.check(false).await;
        self.publish(SystemTime::now());
    }

    /// Read the file or probe the endpoint once, and plan the next check.
    /// `after_event`: the read follows a file event (see [`EVENT_GRACE`]).
    async fn check(&mut self, after_event: bool) {
        let result = match &self.cfg.source {
            WatchSource::File(path) => read_file(&self.cfg.name, path).await,
            WatchSource::Endpoint {
                connect,
                server_name,
                starttls,
            } => {
                probe(
                    &self.cfg.name,
                    connect,
                    server_name,
                    *starttls,
                    self.tls.clone(),
                    self.cfg.timeout,
                )
                .await
            }
        };
        let now = SystemTime::now();
        self.last_checked = Some(now);
        match result {
            Ok(found) => {
                self.found = Some(found);
                self.error = None;
                self.failures = 0;
                self.failing_since = None;
            }
            Err(e) if after_event && self.failures == 0 && self.found.is_some() => {
                tracing::debug!(error = %e, "unreadable right after a file event; reading again in {EVENT_GRACE:?}");
                self.next_check = now + EVENT_GRACE;
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "watch unreadable");
                self.found = None;
                self.error = Some(e.to_string());
                self.failures = self.failures.saturating_add(1);
                self.failing_since.get_or_insert(now);
            }
        }
        self.next_check = now + self.pause();
    }

    /// Time until the next check: the re-check period for files; for
    /// endpoints the interval moved earlier by up to 10% (so a fleet does not
    /// probe in step), or a retry doubling from 5 s after a failure.
    fn pause(&self) -> Duration {
        match self.cfg.source {
            WatchSource::File(_) => self.recheck,
            WatchSource::Endpoint { .. } if self.failures > 0 => {
                let exp = self.failures.saturating_sub(1).min(16);
                (FIRST_RETRY * 2u32.pow(exp)).min(self.cfg.interval)
            }
            WatchSource::Endpoint { .. } => self.cfg.interval.mul_f64(1.0 - 0.1 * fastrand::f64()),
        }
    }

    /// Judge what was found at `now`, publish it, and alert.
    fn publish(&mut self, now: SystemTime) -> Option<eval::Verdict> {
        let verdict = self
            .found
            .as_deref()
            .and_then(|f| eval::evaluate(f, &self.cfg, now));
        let mut s = CredentialStatus::starting(&self.cfg.name, KIND_WATCH, "");
        s.handoff = Handoff::Unmanaged;
        s.team = self.cfg.team.clone();
        s.labels = self.cfg.labels.clone();
        s.last_error = self.error.clone();
        s.consecutive_failures = self.failures;
        s.failing_since = self.failing_since.map(Timestamp::new);
        let (path, endpoint, server_name, starttls) = match &self.cfg.source {
            WatchSource::File(p) => (Some(p.display().to_string()), None, None, None),
            WatchSource::Endpoint {
                connect,
                server_name,
                starttls,
            } => (
                None,
                Some(connect.clone()),
                Some(server_name.clone()),
                starttls.map(|p| p.as_str().to_string()),
            ),
        };
        let mut w = WatchStatus {
            source: self.cfg.source.kind().to_string(),
            path,
            endpoint,
            server_name,
            starttls,
            alert_before: self.cfg.alert_before_text(),
            alert_at: None,
            last_checked: self.last_checked.map(Timestamp::new),
            next_check: Some(Timestamp::new(self.next_check)),
            certificates: Vec::new(),
        };
        match (&verdict, &self.found) {
            (Some(v), Some(found)) => {
                let c = &found[v.soonest].cert;
                s.state = v.state;
                s.issuer = c.issuer_cn.clone().unwrap_or_else(|| c.issuer.clone());
                s.fingerprint = Some(c.fingerprint.clone());
                s.serial = Some(c.serial.clone());
                s.not_before = Some(c.not_before);
                s.not_after = Some(c.not_after);
                w.alert_at = Some(Timestamp::new(v.alert_at));
                w.certificates = found.iter().map(|f| f.cert.clone()).collect();
            }
            _ if self.error.is_some() => s.state = State::Unreadable,
            _ => {}
        }
        s.watch = Some(Box::new(w));
        self.alert(&s, verdict.as_ref());
        let name = self.cfg.name.clone();
        self.view.send_modify(|v| {
            v.watches.insert(name, s);
        });
        verdict
    }

    /// Raise the event of the state `s` is in. Repeats are left to the
    /// alerter's de-duplication (an ongoing problem is re-sent at
    /// 5, 10, 20, 40 min, then hourly); `recovered` goes out only after a
    /// failure event was sent.
    fn alert(&mut self, s: &CredentialStatus, verdict: Option<&eval::Verdict>) {
        let what = self.what(verdict);
        let was_troubled = std::mem::replace(
            &mut self.troubled,
            matches!(
                s.state,
                State::Expiring | State::Expired | State::Unreadable
            ),
        );
        let not_after = s
            .not_after
            .map_or_else(|| "-".to_string(), |t| t.to_string());
        let (event, message) = match s.state {
            State::Valid if !was_troubled => return,
            State::Valid => (
                Event::Recovered,
                format!("{what} is valid again (expires {not_after})"),
            ),
            State::Expiring => (
                Event::Expiring,
                format!(
                    "{what} expires {not_after} (alert_before {}); rekey does not renew it: renew it where it is issued",
                    self.cfg.alert_before_text()
                ),
            ),
            State::Expired => (
                Event::Expired,
                format!(
                    "{what} expired at {not_after}; rekey does not renew it: renew it where it is issued"
                ),
            ),
            State::Unreadable => (
                Event::Unreadable,
                s.last_error.clone().unwrap_or_else(|| "unreadable".into()),
            ),
            _ => return,
        };
        let mut a = Alert::new(event, &self.cfg.name, KIND_WATCH, message);
        a.fingerprint = s.fingerprint.clone();
        a.not_after = s.not_after;
        a.team = self.cfg.team.clone();
        a.labels = self.cfg.labels.clone();
        self.alerter.raise(a);
    }

    /// "watched certificate CN=... in FILE" for messages.
    fn what(&self, verdict: Option<&eval::Verdict>) -> String {
        let subject = match (verdict, &self.found) {
            (Some(v), Some(found)) => {
                let c = &found[v.soonest].cert;
                format!(
                    " {}",
                    c.subject_cn
                        .as_deref()
                        .map_or_else(|| c.subject.clone(), |cn| format!("CN={cn}"))
                )
            }
            _ => String::new(),
        };
        let place = match &self.cfg.source {
            WatchSource::File(p) => format!("in {}", p.display()),
            WatchSource::Endpoint { .. } => {
                format!("served by {}", self.cfg.source.describe())
            }
        };
        format!("watched certificate{subject} {place}")
    }
}

/// Read a watched file (bounded, non-blocking open, regular files only) off
/// the async workers, and describe every certificate in it.
async fn read_file(watch: &str, path: &std::path::Path) -> Result<Vec<Seen>, WatchError> {
    let p = path.to_path_buf();
    let bytes = tokio::task::spawn_blocking(move || crate::fs::safefile::read(&p))
        .await
        .map_err(|e| WatchError::Read {
            watch: watch.to_string(),
            source: crate::fs::safefile::ReadError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            },
        })?
        .map_err(|source| WatchError::Read {
            watch: watch.to_string(),
            source,
        })?;
    certview::certificates(&bytes).map_err(|source| WatchError::Parse {
        watch: watch.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

/// The chain `connect` serves for `server_name`, described.
pub(super) async fn probe(
    watch: &str,
    connect: &str,
    server_name: &str,
    starttls: Option<crate::config::StartTls>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Vec<Seen>, WatchError> {
    let endpoint = || format!("{connect} (SNI {server_name})");
    let ders = crate::handoff::probe::served_chain(connect, server_name, starttls, tls, timeout)
        .await
        .map_err(|source| WatchError::Probe {
            watch: watch.to_string(),
            endpoint: endpoint(),
            source,
        })?;
    certview::chain(&ders).map_err(|source| WatchError::Chain {
        watch: watch.to_string(),
        endpoint: endpoint(),
        source,
    })
}
