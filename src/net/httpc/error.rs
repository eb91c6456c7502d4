//! `HttpError`: why an outbound request failed, classified (no connection,
//! TLS, proxy, deadline, oversized answer...) with the transport's own error
//! kept as `source()`.
//!
//! rekey shows errors as one line (status, alerts, logs), so each message
//! also says the cause in words, taken from the deepest error of the chain.
//! Messages never hold the URL (callers add it, redacted where it is a
//! secret), a header value or a proxy's credentials.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

/// Why an outbound HTTP request failed. `Clone` (the transport's error is
/// shared) so that one outcome can be handed to every waiter, as a handoff
/// group's one reload is to each member.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    /// The URL does not parse or is not http/https.
    #[error("invalid URL: {reason}")]
    Url {
        /// What is wrong with it (never the URL itself: it may hold a token).
        reason: String,
    },
    /// A request header cannot be sent as given.
    #[error("header {name}: {reason}")]
    Header {
        /// The header's name.
        name: String,
        /// What is wrong (never the value).
        reason: &'static str,
    },
    /// No TCP connection to the server (refused, unreachable, no such host).
    #[error("cannot connect: {}", cause(source))]
    Connect {
        /// The transport's error.
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// The TLS handshake with the server failed (untrusted certificate,
    /// wrong name, no common protocol).
    #[error("TLS handshake failed: {}", cause(source))]
    Tls {
        /// The transport's error.
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// The proxy could not be reached, or refused to open a tunnel.
    #[error("through proxy {proxy} (from {origin}): {}; is the proxy running, and does it let rekey through?", proxy_cause(source))]
    Proxy {
        /// The proxy's URL, without credentials.
        proxy: String,
        /// Where the proxy setting came from: "the proxy key", or the
        /// environment variables.
        origin: &'static str,
        /// The transport's error.
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// The whole exchange (connect, request, answer) did not finish in time.
    #[error("no complete answer within {after:?}")]
    Timeout {
        /// The deadline.
        after: Duration,
    },
    /// The answer's body is larger than the caller accepts.
    #[error("the answer is larger than {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// The connection broke during the exchange, or the answer was not HTTP.
    #[error("{}", cause(source))]
    Exchange {
        /// The transport's error.
        #[source]
        source: Arc<reqwest::Error>,
    },
}

impl HttpError {
    /// Sort a transport error. `proxy` is the proxy this request went
    /// through, if any (already without credentials).
    pub(super) fn classify(e: reqwest::Error, proxy: Option<(String, &'static str)>) -> HttpError {
        // The URL may hold a secret (a Slack-style webhook, url_file).
        let e = Arc::new(e.without_url());
        if e.is_timeout() {
            // Only reqwest's own connect/read timers; rekey's deadline is
            // applied around the whole exchange and reported by the caller.
            return HttpError::Exchange { source: e };
        }
        if is_tls(&e) {
            return HttpError::Tls { source: e };
        }
        if e.is_connect() {
            return match proxy {
                Some((proxy, origin)) => HttpError::Proxy {
                    proxy,
                    origin,
                    source: e,
                },
                None => HttpError::Connect { source: e },
            };
        }
        HttpError::Exchange { source: e }
    }

    /// The OS error kind at the root of a connect failure (e.g.
    /// `PermissionDenied` on a Unix socket, `ConnectionRefused`).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        let source: &(dyn StdError + 'static) = match self {
            HttpError::Connect { source }
            | HttpError::Tls { source }
            | HttpError::Proxy { source, .. }
            | HttpError::Exchange { source } => &**source,
            _ => return None,
        };
        chain(source).find_map(|e| e.downcast_ref::<std::io::Error>().map(|io| io.kind()))
    }

    /// Whether the server was never reached: nothing was sent, so nothing
    /// can have happened there (connect or proxy failures).
    pub fn not_connected(&self) -> bool {
        matches!(self, HttpError::Connect { .. } | HttpError::Proxy { .. })
    }
}

/// `e` and its sources, outermost first. An `io::Error` wrapping another
/// error (how hyper and tokio-rustls pass on TLS failures) is followed into
/// that error: its own `source()` skips it.
fn chain<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next = Some(e);
    std::iter::from_fn(move || {
        let e = next?;
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
        Some(e)
    })
}

/// Whether a rustls error is anywhere in the chain.
fn is_tls(e: &reqwest::Error) -> bool {
    chain(e).any(|e| e.is::<rustls::Error>())
}

/// The deepest error's words: "Connection refused (os error 111)" rather
/// than "error sending request".
fn cause(e: &reqwest::Error) -> String {
    let last = chain(e).last().map(|e| e.to_string()).unwrap_or_default();
    if last.is_empty() {
        e.to_string()
    } else {
        last
    }
}

/// A proxy failure in words: the proxy's refusal (hyper-util's tunnel
/// errors, not a public type, so matched by their words) or the cause.
fn proxy_cause(e: &reqwest::Error) -> String {
    for e in chain(e) {
        match e.to_string().as_str() {
            "tunnel error: unsuccessful" => {
                return "the proxy refused to open a tunnel (CONNECT answered with an error status)"
                    .to_string()
            }
            "tunnel error: proxy authorization required" => {
                return "the proxy wants credentials (407); put them in the proxy URL of HTTPS_PROXY".to_string()
            }
            _ => {}
        }
    }
    format!("cannot connect: {}", cause(e))
}
