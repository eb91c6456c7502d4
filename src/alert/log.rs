//! The `log` sink: every alert as one structured tracing event (always on).

use async_trait::async_trait;

use super::{Alert, AlertError, AlertSink, Severity};

/// Writes alerts to the daemon's log, at error/warn/info by severity.
#[derive(Debug)]
pub struct LogSink {
    name: String,
}

impl LogSink {
    /// A log sink called `name`.
    pub fn new(name: &str) -> LogSink {
        LogSink {
            name: name.to_string(),
        }
    }
}

/// One tracing event at a level chosen at run time (tracing wants a constant).
macro_rules! alert_event {
    ($level:expr, $a:expr) => {
        tracing::event!(
            target: "rekey::alert",
            $level,
            event = $a.event.as_str(),
            severity = $a.severity.as_str(),
            credential = %$a.credential,
            kind = %$a.kind,
            generation = $a.generation,
            fingerprint = $a.fingerprint.as_deref(),
            served_fingerprint = $a.served_fingerprint.as_deref(),
            not_after = $a.not_after.as_deref(),
            rolled_back = $a.rolled_back,
            "alert: {}",
            $a.message
        )
    };
}

#[async_trait]
impl AlertSink for LogSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, alert: &Alert) -> Result<(), AlertError> {
        match alert.severity {
            Severity::Critical => alert_event!(tracing::Level::ERROR, alert),
            Severity::Warning => alert_event!(tracing::Level::WARN, alert),
            Severity::Info => alert_event!(tracing::Level::INFO, alert),
        }
        Ok(())
    }
}
