//! The Alerter: a never-blocking front door, a dispatcher that de-duplicates
//! and fans out, and one worker per sink that retries with backoff.
//!
//! ```text
//! raise() ──try_send──► [queue] ──► dispatcher (Dedup) ──try_send──► [sink queue] ──► worker ──► sink.send()
//! ```
//!
//! Every hand-over is a `try_send` into a bounded channel: when a queue is
//! full the alert is dropped with a warning, because rotation must never
//! wait for a sink. Each sink has its own worker so a hanging receiver
//! delays only its own alerts, and alerts reach one sink in raise order
//! (Alertmanager must see a firing alert before its resolution).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Notify};

use super::dedup::{Dedup, Verdict, DEFAULT_BASE, DEFAULT_CAP};
use super::owner::Owners;
use super::AlertMatch;
use super::{Alert, AlertError, AlertSink, Event, Policy};

/// Called after each delivery outcome: (sink name, event, result). Meant
/// for `rekey_alerts_total{sink,event,result}`.
pub type ResultHook = Arc<dyn Fn(&str, Event, Delivery) + Send + Sync>;

/// How delivering one alert to one sink ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The sink took it.
    Sent,
    /// Every try failed.
    Failed,
    /// A queue was full (the alerter's or the sink's): never tried.
    Dropped,
}

impl Delivery {
    /// The word for it, e.g. "dropped".
    pub const fn as_str(self) -> &'static str {
        match self {
            Delivery::Sent => "sent",
            Delivery::Failed => "failed",
            Delivery::Dropped => "dropped",
        }
    }
}

/// One sink and the events it wants.
#[derive(Clone)]
pub struct Route {
    /// The sink.
    pub sink: Arc<dyn AlertSink>,
    /// Only these events go to the sink; `None` means all.
    pub events: Option<Vec<Event>>,
    /// Only alerts of this team / these labels go to the sink; `None` means all.
    pub matcher: Option<AlertMatch>,
}

impl Route {
    fn wants(&self, alert: &Alert) -> bool {
        self.events
            .as_ref()
            .is_none_or(|e| e.contains(&alert.event))
            && self.matcher.as_ref().is_none_or(|m| m.matches(alert))
    }
}

/// Settings of an Alerter.
#[derive(Clone)]
pub struct Options {
    /// Capacity of the front queue (alerts raised but not yet dispatched).
    pub queue: usize,
    /// Capacity of each sink's queue.
    pub sink_queue: usize,
    /// First re-send interval of a repeating event (see [`Dedup`]).
    pub dedup_base: Duration,
    /// Longest re-send interval of a repeating event.
    pub dedup_cap: Duration,
    /// Outcome callback for metrics.
    pub on_result: Option<ResultHook>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            queue: 1024,
            sink_queue: 256,
            dedup_base: DEFAULT_BASE,
            dedup_cap: DEFAULT_CAP,
            on_result: None,
        }
    }
}

/// One raised alert on its way to the dispatcher.
struct Raised {
    alert: Alert,
    min_interval: Option<Duration>,
}

/// State shared by the front door, the dispatcher and the workers.
struct Shared {
    /// Alerts queued or being delivered, counted per queue entry.
    pending: AtomicUsize,
    /// Woken whenever `pending` drops to zero.
    idle: Notify,
    on_result: Option<ResultHook>,
}

impl Shared {
    fn report(&self, sink: &str, event: Event, result: Delivery) {
        if let Some(hook) = &self.on_result {
            hook(sink, event, result);
        }
    }

    fn done(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// The engine's handle for raising alerts; cheap to clone.
///
/// Background tasks stop once every clone is dropped, after delivering what
/// is already queued.
#[derive(Clone)]
pub struct Alerter {
    tx: Option<mpsc::Sender<Raised>>,
    routes: Arc<Vec<(String, Option<Vec<Event>>)>>,
    shared: Arc<Shared>,
    owners: Owners,
}

impl std::fmt::Debug for Alerter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.routes.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Alerter").field("sinks", &names).finish()
    }
}

impl Alerter {
    /// Start the dispatcher and one worker per route. Needs a Tokio runtime.
    pub fn start(routes: Vec<Route>, options: Options) -> Result<Alerter, AlertError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| AlertError::NoRuntime)?;
        let shared = Arc::new(Shared {
            pending: AtomicUsize::new(0),
            idle: Notify::new(),
            on_result: options.on_result.clone(),
        });
        let mut outlets = Vec::with_capacity(routes.len());
        for route in &routes {
            let (tx, rx) = mpsc::channel(options.sink_queue.max(1));
            rt.spawn(work(route.sink.clone(), rx, shared.clone()));
            outlets.push((route.clone(), tx));
        }
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let dedup = Dedup::new(options.dedup_base, options.dedup_cap);
        rt.spawn(dispatch(rx, outlets, dedup, shared.clone()));
        let names = routes
            .iter()
            .map(|r| (r.sink.name().to_string(), r.events.clone()))
            .collect();
        Ok(Alerter {
            tx: Some(tx),
            routes: Arc::new(names),
            shared,
            owners: Owners::default(),
        })
    }

    /// An Alerter that sends nothing (for tests and tools that need one).
    pub fn noop() -> Alerter {
        Alerter {
            tx: None,
            routes: Arc::new(Vec::new()),
            shared: Arc::new(Shared {
                pending: AtomicUsize::new(0),
                idle: Notify::new(),
                on_result: None,
            }),
            owners: Owners::default(),
        }
    }

    /// Take each credential's team and labels from `certs` (at start and on reload).
    pub fn set_owners(&self, certs: &[std::sync::Arc<crate::config::CertificateConfig>]) {
        self.owners.set(certs);
    }

    /// Names of the sinks, in configuration order (the implicit log sink first).
    pub fn sink_names(&self) -> Vec<String> {
        self.routes.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Queue `alert` for delivery; never waits. Repeats are de-duplicated
    /// with the escalating interval.
    pub fn raise(&self, alert: Alert) {
        self.enqueue(alert, None);
    }

    /// Like [`raise`](Self::raise), but a repeat of the same (credential,
    /// event) is suppressed for `min_interval` (the engine's backoff step).
    pub fn raise_with_interval(&self, alert: Alert, min_interval: Duration) {
        self.enqueue(alert, Some(min_interval));
    }

    fn enqueue(&self, mut alert: Alert, min_interval: Option<Duration>) {
        self.owners.stamp(&mut alert);
        let Some(tx) = &self.tx else {
            tracing::debug!(event = %alert.event, credential = %alert.credential, "no alert sinks; alert not sent");
            return;
        };
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        let raised = Raised {
            alert,
            min_interval,
        };
        let (raised, why) = match tx.try_send(raised) {
            Ok(()) => return,
            Err(TrySendError::Full(r)) => (r, "the alert queue is full"),
            Err(TrySendError::Closed(r)) => (r, "the alerter has stopped"),
        };
        self.shared.done();
        let event = raised.alert.event;
        tracing::warn!(%event, credential = %raised.alert.credential, "alert dropped: {why}");
        for (name, events) in self.routes.iter() {
            if events.as_ref().is_none_or(|e| e.contains(&event)) {
                self.shared.report(name, event, Delivery::Dropped);
            }
        }
    }

    /// Wait until every queued alert was delivered or given up on, at most
    /// `timeout`; true when nothing is pending (for shutdown and tests).
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            // Register before reading the counter so a wake-up in between is not lost.
            idle.as_mut().enable();
            if self.shared.pending.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.shared.pending.load(Ordering::Acquire) == 0;
            }
        }
    }
}

/// De-duplicate each raised alert and hand it to the sinks that want it.
async fn dispatch(
    mut rx: mpsc::Receiver<Raised>,
    outlets: Vec<(Route, mpsc::Sender<Alert>)>,
    mut dedup: Dedup,
    shared: Arc<Shared>,
) {
    while let Some(Raised {
        alert,
        min_interval,
    }) = rx.recv().await
    {
        let event = alert.event;
        match dedup.check(&alert.credential, event, Instant::now(), min_interval) {
            Verdict::Send => {
                for (route, tx) in &outlets {
                    if !route.wants(&alert) {
                        continue;
                    }
                    shared.pending.fetch_add(1, Ordering::AcqRel);
                    if tx.try_send(alert.clone()).is_err() {
                        shared.done();
                        let sink = route.sink.name();
                        tracing::warn!(sink, %event, credential = %alert.credential, "alert dropped: the sink's queue is full (it is slow or down)");
                        shared.report(sink, event, Delivery::Dropped);
                    }
                }
            }
            Verdict::Repeat { next_in } => tracing::debug!(
                %event,
                credential = %alert.credential,
                next_in = %humantime::format_duration(next_in),
                "alert suppressed: sent recently"
            ),
            Verdict::NothingToRecover => tracing::debug!(
                credential = %alert.credential,
                "recovered not sent: no failure was alerted"
            ),
        }
        shared.done();
    }
}

/// Deliver alerts to one sink in order; run its periodic refresh between them.
async fn work(sink: Arc<dyn AlertSink>, mut rx: mpsc::Receiver<Alert>, shared: Arc<Shared>) {
    let policy = sink.policy();
    let mut refresh = sink.refresh_every().map(|every| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        tokio::select! {
            next = rx.recv() => {
                let Some(alert) = next else { return };
                let result = deliver(&*sink, &alert, policy).await;
                let event = alert.event;
                match result {
                    Ok(()) => {
                        tracing::debug!(sink = sink.name(), %event, credential = %alert.credential, "alert sent");
                        shared.report(sink.name(), event, Delivery::Sent);
                    }
                    Err(e) => {
                        tracing::warn!(sink = sink.name(), %event, credential = %alert.credential, attempts = policy.attempts, error = %e, "alert not delivered");
                        shared.report(sink.name(), event, Delivery::Failed);
                    }
                }
                shared.done();
            }
            () = tick(&mut refresh) => {
                let r = tokio::time::timeout(policy.timeout, sink.refresh()).await;
                let err = match r {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {}", humantime::format_duration(policy.timeout)),
                };
                tracing::warn!(sink = sink.name(), error = %err, "alert refresh failed; retrying at the next refresh");
            }
        }
    }
}

/// The next tick of an optional interval; never, without one.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// One alert to one sink: `policy.attempts` tries, each under
/// `policy.timeout`, with doubling pauses in between.
async fn deliver(sink: &dyn AlertSink, alert: &Alert, policy: Policy) -> Result<(), AlertError> {
    let mut pause = policy.backoff;
    let mut attempt = 1;
    loop {
        let err = match tokio::time::timeout(policy.timeout, sink.send(alert)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => AlertError::Timeout {
                sink: sink.name().to_string(),
                target: sink.target(),
                after: policy.timeout,
            },
        };
        if attempt >= policy.attempts.max(1) {
            return Err(err);
        }
        tracing::debug!(sink = sink.name(), event = %alert.event, attempt, error = %err, "alert try failed; retrying");
        tokio::time::sleep(pause).await;
        pause = pause.saturating_mul(2);
        attempt += 1;
    }
}
