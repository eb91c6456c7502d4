//! Alerts: telling people when a credential cannot be renewed, when a
//! handoff failed, when something is about to expire or was tampered with,
//! and when it recovered.
//!
//! The engine builds an [`Alert`] and calls [`Alerter::raise`], which never
//! waits: the alert goes into a bounded queue, is de-duplicated
//! ([`Dedup`]) and fanned out to every configured sink, each with its own
//! queue, timeout and retries. Sinks (`log`, `webhook`, `alertmanager`,
//! `exec`) implement [`AlertSink`]; [`build`] turns `[[alert]]` tables into
//! a running [`Alerter`].

mod alerter;
mod alertmanager;
mod dedup;
mod error;
mod exec;
mod http;
mod log;
mod owner;
#[cfg(test)]
mod tests;
mod webhook;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::config::{AlertConfig, SinkConfig};
use crate::timestamp::Timestamp;

pub use crate::config::{AlertMatch, Event};
pub use alerter::{Alerter, Delivery, Options, ResultHook, Route};
pub use alertmanager::AlertmanagerSink;
pub use dedup::{Dedup, Verdict};
pub use error::AlertError;
pub use exec::ExecSink;
pub use log::LogSink;
pub use owner::Owners;
pub use webhook::WebhookSink;

impl Event {
    /// How bad this event is.
    pub fn severity(&self) -> Severity {
        match self {
            Event::HandoffFailed | Event::Expired => Severity::Critical,
            Event::RenewalFailed
            | Event::Tampered
            | Event::Expiring
            | Event::Unreadable
            | Event::BudgetExhausted => Severity::Warning,
            Event::Recovered | Event::Retired => Severity::Info,
        }
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Someone should act now: the app may serve a bad or expired credential.
    Critical,
    /// Something is wrong but the current credential still works.
    Warning,
    /// Good news.
    Info,
}

impl Severity {
    /// The wire spelling, e.g. "critical".
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One alert; serialises to exactly the documented alert JSON (optional fields omitted when None).
///
/// It holds no secret by construction: only names, fingerprints, dates and
/// a message written by rekey.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// What happened.
    pub event: Event,
    /// Derived from the event by [`Alert::new`].
    pub severity: Severity,
    /// The credential's name.
    pub credential: String,
    /// `certificate` or `api_key`.
    pub kind: String,
    /// One line for humans.
    pub message: String,
    /// The generation concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// `sha256:…` of the generation concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// `sha256:…` of what the application was seen serving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_fingerprint: Option<String>,
    /// Expiry of the credential in place (RFC 3339 UTC on the wire).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Timestamp>,
    /// Whether the previous generation was put back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<bool>,
    /// The credential's owning team (`team` in its config).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The credential's labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// This machine's hostname.
    pub host: String,
    /// When the alert was made (RFC 3339 UTC to the second on the wire).
    pub time: Timestamp,
}

impl Alert {
    /// An alert for `event` now, with severity, host and time filled in.
    pub fn new(
        event: Event,
        credential: impl Into<String>,
        kind: impl Into<String>,
        message: impl Into<String>,
    ) -> Alert {
        Alert {
            event,
            severity: event.severity(),
            credential: credential.into(),
            kind: kind.into(),
            message: message.into(),
            generation: None,
            fingerprint: None,
            served_fingerprint: None,
            not_after: None,
            rolled_back: None,
            team: None,
            labels: BTreeMap::new(),
            host: hostname().to_string(),
            time: Timestamp::now(),
        }
    }

    /// Set `generation`.
    pub fn with_generation(mut self, generation: u64) -> Alert {
        self.generation = Some(generation);
        self
    }

    /// Set `fingerprint`.
    pub fn with_fingerprint(mut self, fingerprint: impl Into<String>) -> Alert {
        self.fingerprint = Some(fingerprint.into());
        self
    }

    /// Set `served_fingerprint`.
    pub fn with_served_fingerprint(mut self, fingerprint: impl Into<String>) -> Alert {
        self.served_fingerprint = Some(fingerprint.into());
        self
    }

    /// Set `not_after`.
    pub fn with_not_after(mut self, not_after: Timestamp) -> Alert {
        self.not_after = Some(not_after);
        self
    }

    /// Set `rolled_back`.
    pub fn with_rolled_back(mut self, rolled_back: bool) -> Alert {
        self.rolled_back = Some(rolled_back);
        self
    }

    /// The alert as its JSON object.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising strings, integers, bools and timestamps (written as
        // text) cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// This machine's hostname, looked up once ("unknown" if it cannot be read).
pub fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".to_string())
    })
}

/// How the Alerter delivers to one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Tries per alert (>= 1).
    pub attempts: u32,
    /// Deadline of one try.
    pub timeout: Duration,
    /// Pause after the first failed try; doubles after each further one.
    pub backoff: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            attempts: 1,
            timeout: Duration::from_secs(10),
            backoff: Duration::from_secs(1),
        }
    }
}

/// A place alerts go to.
#[async_trait]
pub trait AlertSink: Send + Sync {
    /// The sink's name, as in logs and metrics.
    fn name(&self) -> &str;
    /// Deliver one alert (one try; the Alerter retries per [`policy`](Self::policy)).
    async fn send(&self, alert: &Alert) -> Result<(), AlertError>;
    /// Where alerts go (URL or command, redacted), for error messages.
    fn target(&self) -> String {
        self.name().to_string()
    }
    /// Tries, timeout and backoff the Alerter applies to `send`.
    fn policy(&self) -> Policy {
        Policy::default()
    }
    /// How often [`refresh`](Self::refresh) should run, if at all.
    fn refresh_every(&self) -> Option<Duration> {
        None
    }
    /// Periodic upkeep run between sends (Alertmanager re-posts firing alerts).
    async fn refresh(&self) -> Result<(), AlertError> {
        Ok(())
    }
}

/// Build the sinks of `config` and start an Alerter with default options.
///
/// A `log` sink is always present: when no `[[alert]]` has `type = "log"`,
/// one receiving every event is added. Must be called inside a Tokio runtime.
pub fn build(config: &[AlertConfig]) -> Result<Alerter, AlertError> {
    build_with(config, Options::default())
}

/// Like [`build`], with explicit options (metrics hook, queue size, de-dup base).
pub fn build_with(config: &[AlertConfig], options: Options) -> Result<Alerter, AlertError> {
    Alerter::start(routes(config)?, options)
}

/// The sinks of `config` (plus the implicit log sink), not yet started.
pub fn routes(config: &[AlertConfig]) -> Result<Vec<Route>, AlertError> {
    let mut out = Vec::with_capacity(config.len() + 1);
    if !config.iter().any(|c| matches!(c.sink, SinkConfig::Log)) {
        // Another sink may already be called "log"; metrics need distinct names.
        let name = if config.iter().any(|c| c.name == "log") {
            "rekey-log"
        } else {
            "log"
        };
        out.push(Route {
            sink: Arc::new(LogSink::new(name)),
            events: None,
            matcher: None,
        });
    }
    for c in config {
        let sink: Arc<dyn AlertSink> = match &c.sink {
            SinkConfig::Log => Arc::new(LogSink::new(&c.name)),
            SinkConfig::Webhook(w) => Arc::new(WebhookSink::new(&c.name, w)?),
            SinkConfig::Alertmanager(a) => Arc::new(AlertmanagerSink::new(&c.name, a)?),
            SinkConfig::Exec(e) => Arc::new(ExecSink::new(&c.name, e)),
        };
        out.push(Route {
            sink,
            events: c.events.clone(),
            matcher: c.matcher.clone(),
        });
    }
    Ok(out)
}
