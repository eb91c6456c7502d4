//! The `webhook` sink: POST the alert JSON (or a Slack-style `{"text": ...}`).

use async_trait::async_trait;

use super::http::HttpClient;
use super::{Alert, AlertError, AlertSink, Policy, Severity};
use crate::config::{WebhookConfig, WebhookFormat};

/// POSTs each alert to one URL.
pub struct WebhookSink {
    name: String,
    client: HttpClient,
    format: WebhookFormat,
}

impl WebhookSink {
    /// Set up the sink: reads `url_file` and header files once, loads TLS roots.
    pub fn new(name: &str, cfg: &WebhookConfig) -> Result<WebhookSink, AlertError> {
        Ok(WebhookSink {
            name: name.to_string(),
            client: HttpClient::new(name, &cfg.http, None)?,
            format: cfg.format,
        })
    }
}

#[async_trait]
impl AlertSink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn target(&self) -> String {
        self.client.shown().to_string()
    }

    fn policy(&self) -> Policy {
        self.client.policy()
    }

    async fn send(&self, alert: &Alert) -> Result<(), AlertError> {
        let body = match self.format {
            WebhookFormat::Json => alert.to_json(),
            WebhookFormat::Slack => slack_payload(alert),
        };
        self.client.post_json(body).await
    }
}

/// `{"text": ...}`: one line of summary, one of details.
pub(super) fn slack_payload(a: &Alert) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "text": slack_text(a) })).unwrap_or_default()
}

/// The Slack text of an alert (mrkdwn, with `&`, `<`, `>` escaped as Slack asks).
pub(super) fn slack_text(a: &Alert) -> String {
    let icon = match a.severity {
        Severity::Critical => ":rotating_light:",
        Severity::Warning => ":warning:",
        Severity::Info => ":white_check_mark:",
    };
    let mut text = format!(
        "{icon} *{}* {} `{}` on {}: {}",
        a.event, a.kind, a.credential, a.host, a.message
    );
    let mut details = Vec::new();
    if let Some(g) = a.generation {
        details.push(format!("generation {g}"));
    }
    if let Some(f) = &a.fingerprint {
        details.push(format!("fingerprint {f}"));
    }
    if let Some(f) = &a.served_fingerprint {
        details.push(format!("served {f}"));
    }
    if let Some(t) = &a.not_after {
        details.push(format!("expires {t}"));
    }
    if let Some(r) = a.rolled_back {
        details.push(if r { "rolled back" } else { "not rolled back" }.to_string());
    }
    if !details.is_empty() {
        text.push('\n');
        text.push_str(&details.join(" · "));
    }
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
