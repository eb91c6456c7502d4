//! `AlertError`: what went wrong delivering an alert, and what to do.

use std::path::PathBuf;
use std::time::Duration;

/// Why a sink could not be set up or could not deliver an alert.
///
/// Messages name the sink, the URL (without query, and without the path
/// when the URL came from `url_file`) or the command, and never a header
/// value.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The receiver answered with a non-2xx status.
    #[error("alert sink {sink}: POST {url} answered {status}{}; check the receiver's logs and the sink's url and headers", tail(body))]
    Status {
        /// Sink name.
        sink: String,
        /// Where the POST went (redacted).
        url: String,
        /// HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// No connection, TLS handshake failure, proxy failure, or a broken exchange.
    #[error("alert sink {sink}: POST {url} failed: {source}{}", reach_hint(source))]
    Transport {
        /// Sink name.
        sink: String,
        /// Where the POST went (redacted).
        url: String,
        /// What failed.
        #[source]
        source: crate::net::httpc::HttpError,
    },
    /// One try took longer than the sink's `timeout`.
    #[error("alert sink {sink}: no answer within {} from {target}; raise the sink's timeout or fix the receiver", humantime::format_duration(*after))]
    Timeout {
        /// Sink name.
        sink: String,
        /// URL or command.
        target: String,
        /// The timeout.
        after: Duration,
    },
    /// The exec sink's command could not be started.
    #[error("alert sink {sink}: cannot run {command}: {source}; check the path and that it is executable")]
    Spawn {
        /// Sink name.
        sink: String,
        /// The argv, shell-quoted for display.
        command: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The exec sink's command exited non-zero.
    #[error("alert sink {sink}: {command} {status}{}", tail(stderr))]
    Exit {
        /// Sink name.
        sink: String,
        /// The argv, shell-quoted for display.
        command: String,
        /// "exited with status 3" or "was killed by signal 9".
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// A file the sink needs (header value, URL, trust bundle) is unusable.
    #[error("alert sink {sink}: {what} {}: {reason}", path.display())]
    File {
        /// Sink name.
        sink: String,
        /// Which file, e.g. "header Authorization file".
        what: String,
        /// Its path.
        path: PathBuf,
        /// What is wrong with it (never its content).
        reason: String,
    },
    /// Settings that passed config validation but cannot be used (e.g. TLS setup).
    #[error("alert sink {sink}: {message}")]
    Setup {
        /// Sink name.
        sink: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// `alert::build` was called outside a Tokio runtime.
    #[error("alerts need a running Tokio runtime to start their background tasks")]
    NoRuntime,
}

/// What to check when the receiver was not reached; a proxy failure
/// already says what to check.
fn reach_hint(e: &crate::net::httpc::HttpError) -> &'static str {
    match e {
        crate::net::httpc::HttpError::Proxy { .. } => "",
        _ => "; is the receiver running and reachable from this host?",
    }
}

/// ": <text>" when there is text, else "".
fn tail(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// The last `max` bytes of `bytes` as lossy UTF-8 on one line.
pub(super) fn last_bytes(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    one_line(&String::from_utf8_lossy(&bytes[start..]))
}

/// The first `max` bytes of `bytes` as lossy UTF-8 on one line.
pub(super) fn first_bytes(bytes: &[u8], max: usize) -> String {
    let end = bytes.len().min(max);
    one_line(&String::from_utf8_lossy(&bytes[..end]))
}

/// Newlines and tabs folded so a log line stays one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
