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
/// `not_after` goes in as text (`$not_after`, an `Option<&str>`) so the field
/// is recorded as a string, quoted in text logs as it always was.
macro_rules! alert_event {
    ($level:expr, $a:expr, $not_after:expr) => {
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
            not_after = $not_after,
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
        let not_after = alert.not_after.map(|t| t.to_string());
        let not_after = not_after.as_deref();
        match alert.severity {
            Severity::Critical => alert_event!(tracing::Level::ERROR, alert, not_after),
            Severity::Warning => alert_event!(tracing::Level::WARN, alert, not_after),
            Severity::Info => alert_event!(tracing::Level::INFO, alert, not_after),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::alert::Event;

    /// A tracing writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_one_structured_event_at_the_severity_level() {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let sink = LogSink::new("log");
            let failed = Alert::new(Event::HandoffFailed, "web", "certificate", "not served")
                .with_generation(3)
                .with_rolled_back(true);
            rt.block_on(sink.send(&failed)).unwrap();
            let ok = Alert::new(Event::Recovered, "web", "certificate", "fine");
            rt.block_on(sink.send(&ok)).unwrap();
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "ERROR");
        assert_eq!(lines[0]["target"], "rekey::alert");
        let f = &lines[0]["fields"];
        assert_eq!(f["message"], "alert: not served");
        assert_eq!(f["event"], "handoff_failed");
        assert_eq!(f["severity"], "critical");
        assert_eq!(f["credential"], "web");
        assert_eq!(f["generation"], 3);
        assert_eq!(f["rolled_back"], true);
        assert!(
            f.get("fingerprint").is_none(),
            "None fields are left out: {f}"
        );
        assert_eq!(lines[1]["level"], "INFO");
        assert_eq!(lines[1]["fields"]["event"], "recovered");
    }
}
