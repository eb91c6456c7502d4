//! TEMPORARY stub with the agreed API; replaced by the alert module (sinks, de-duplication).
#![allow(missing_docs)]
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    RenewalFailed,
    HandoffFailed,
    Expiring,
    Expired,
    Tampered,
    Recovered,
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub event: Event,
    pub credential: String,
    pub kind: String,
    pub message: String,
    pub generation: Option<u64>,
    pub fingerprint: Option<String>,
    pub served_fingerprint: Option<String>,
    pub not_after: Option<String>,
    pub rolled_back: Option<bool>,
}

impl Alert {
    pub fn new(event: Event, credential: &str, kind: &str, message: impl Into<String>) -> Alert {
        Alert {
            event,
            credential: credential.into(),
            kind: kind.into(),
            message: message.into(),
            generation: None,
            fingerprint: None,
            served_fingerprint: None,
            not_after: None,
            rolled_back: None,
        }
    }
}

#[derive(Clone, Default)]
pub struct Alerter {
    _sinks: Vec<()>,
}

impl Alerter {
    pub fn raise(&self, alert: Alert) {
        tracing::warn!(event = ?alert.event, credential = %alert.credential, message = %alert.message, "alert");
    }
}
