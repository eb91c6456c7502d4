//! The HTTP POST of the webhook and Alertmanager sinks, through rekey's
//! outbound client ([`crate::net::httpc`]): the platform roots plus an optional
//! `trust_bundle` (verification cannot be turned off), the sink's `proxy`
//! setting, and a new connection per alert (alerts are rare).

use std::path::{Path, PathBuf};

use http::header::{HeaderName, HeaderValue};
use http::{Method, Uri};

use super::error::first_bytes;
use super::{AlertError, Policy};
use crate::config::{HeaderSource, HttpConfig, UrlSource};
use crate::net::httpc::{self, Call, HttpError, SetupError};
use crate::net::tls::TrustError;

/// How much of an error response's body goes into the message.
const BODY_TAIL: usize = 300;

/// A header to send: fixed, or re-read from its file on every request.
enum Header {
    Inline(HeaderValue),
    File(PathBuf),
}

/// One sink's HTTP target.
pub(super) struct HttpClient {
    sink: String,
    url: String,
    /// The URL as shown in messages (no query; no path when it is a secret).
    shown: String,
    http: httpc::Client,
    headers: Vec<(HeaderName, Header)>,
    policy: Policy,
}

impl HttpClient {
    /// Resolve the URL (reading `url_file`), check header files, set up TLS.
    /// `api_path`, when given, is appended to the URL's path unless already there.
    pub fn new(
        sink: &str,
        cfg: &HttpConfig,
        api_path: Option<&str>,
    ) -> Result<HttpClient, AlertError> {
        let setup = |message: String| AlertError::Setup {
            sink: sink.to_string(),
            message,
        };
        let (uri, secret) = match &cfg.url {
            UrlSource::Inline(u) => (u.clone(), false),
            UrlSource::File(p) => (read_url(sink, p)?, true),
        };
        let uri = match api_path {
            Some(api) => with_api_path(&uri, api).map_err(|e| setup(format!("bad url: {e}")))?,
            None => uri,
        };
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let shown = if secret {
            format!("{}://{authority}/…", uri.scheme_str().unwrap_or("http"))
        } else {
            format!(
                "{}://{authority}{}",
                uri.scheme_str().unwrap_or("http"),
                uri.path()
            )
        };
        let url = uri.to_string();
        let http = httpc::Client::remote(httpc::Remote {
            url: &url,
            trust_bundle: cfg.trust_bundle.as_deref(),
            proxy: &cfg.proxy,
            keep_alive: false,
        })
        .map_err(|e| match e {
            SetupError::Trust(TrustError::Bundle { path, reason }) => AlertError::File {
                sink: sink.to_string(),
                what: "trust_bundle".to_string(),
                path,
                reason,
            },
            other => setup(other.to_string()),
        })?;
        let mut headers = Vec::with_capacity(cfg.headers.len());
        for h in &cfg.headers {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| setup(format!("invalid header name {}", h.name)))?;
            let value = match &h.value {
                HeaderSource::Inline(v) => {
                    let mut v = HeaderValue::from_str(v)
                        .map_err(|_| setup(format!("header {}: invalid value", h.name)))?;
                    v.set_sensitive(true);
                    Header::Inline(v)
                }
                HeaderSource::File(p) => {
                    // Read once now so a missing file stops the daemon at start.
                    header_file(sink, &h.name, p)?;
                    Header::File(p.clone())
                }
            };
            headers.push((name, value));
        }
        Ok(HttpClient {
            sink: sink.to_string(),
            url,
            shown,
            http,
            headers,
            policy: Policy {
                attempts: cfg.retries.saturating_add(1),
                timeout: cfg.timeout,
                ..Policy::default()
            },
        })
    }

    /// The URL as shown in messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Tries and timeout from the config; backoff 1 s, doubling.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// POST `body` as JSON; Ok on a 2xx answer.
    pub async fn post_json(&self, body: Vec<u8>) -> Result<(), AlertError> {
        let mut call = Call::new(Method::POST, self.url.as_str(), self.policy.timeout)
            .body("application/json", body)
            // Only the start of an error page is worth showing.
            .keep_head(BODY_TAIL);
        for (name, value) in &self.headers {
            let value = match value {
                Header::Inline(v) => v.clone(),
                Header::File(p) => header_file(&self.sink, name.as_str(), p)?,
            };
            call = call.header_value(name.clone(), value);
        }
        let resp = self.http.send(call).await.map_err(|e| match e {
            // The same words as the Alerter's own deadline.
            HttpError::Timeout { after } => AlertError::Timeout {
                sink: self.sink.clone(),
                target: self.shown.clone(),
                after,
            },
            source => AlertError::Transport {
                sink: self.sink.clone(),
                url: self.shown.clone(),
                source,
            },
        })?;
        if resp.is_success() {
            return Ok(());
        }
        Err(AlertError::Status {
            sink: self.sink.clone(),
            url: self.shown.clone(),
            status: resp.status,
            body: first_bytes(&resp.body, BODY_TAIL),
        })
    }
}

/// A file holding a secret (a header value, a URL with a token in it):
/// bounded, never blocking, and refused when other users can write it.
fn read_secret_file(
    path: &Path,
    key: &str,
) -> Result<zeroize::Zeroizing<String>, crate::fs::safefile::ReadError> {
    use crate::fs::safefile::{self, Guard};
    let bytes = safefile::read_guarded(path, key, Guard::Secret, safefile::MAX_SECRET)?;
    safefile::text(path, bytes)
}

/// The value of a header read from a file (trailing newline trimmed).
fn header_file(sink: &str, name: &str, path: &Path) -> Result<HeaderValue, AlertError> {
    let err = |reason: String| AlertError::File {
        sink: sink.to_string(),
        what: format!("header {name} file"),
        path: path.to_path_buf(),
        reason,
    };
    let text = read_secret_file(path, &format!("alert {sink} header {name} file"))
        .map_err(|e| err(e.reason()))?;
    let text = text.trim_end_matches(['\r', '\n']);
    let mut value = HeaderValue::from_str(text).map_err(|_| {
        err(
            "it holds characters not allowed in a header value (such as a line break inside)"
                .to_string(),
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The URL in `url_file`, checked like an inline one; its text never appears in errors.
fn read_url(sink: &str, path: &Path) -> Result<Uri, AlertError> {
    let err = |reason: &str| AlertError::File {
        sink: sink.to_string(),
        what: "url_file".to_string(),
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let text =
        read_secret_file(path, &format!("alert {sink} url_file")).map_err(|e| err(&e.reason()))?;
    let uri: Uri = text
        .trim()
        .parse()
        .map_err(|_| err("does not hold a valid URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(err("the URL must start with http:// or https://"));
    }
    match uri.authority() {
        Some(a) if a.as_str().contains('@') => Err(err(
            "the URL holds user:password; send credentials in a header read from a file",
        )),
        Some(a) if !a.host().is_empty() => Ok(uri),
        _ => Err(err("the URL has no host")),
    }
}

/// `uri` with `api` appended to its path (once), keeping its query.
fn with_api_path(uri: &Uri, api: &str) -> Result<Uri, http::Error> {
    let base = uri.path().trim_end_matches('/');
    let path = if base.ends_with(api) {
        base.to_string()
    } else {
        format!("{base}{api}")
    };
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut b = Uri::builder().path_and_query(pq);
    if let Some(s) = uri.scheme() {
        b = b.scheme(s.clone());
    }
    if let Some(a) = uri.authority() {
        b = b.authority(a.clone());
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_path_is_appended_once() {
        let cases = [
            ("http://am:9093", "http://am:9093/api/v2/alerts"),
            ("http://am:9093/", "http://am:9093/api/v2/alerts"),
            ("http://h/prefix/", "http://h/prefix/api/v2/alerts"),
            ("http://h/api/v2/alerts", "http://h/api/v2/alerts"),
            ("http://h/x?a=1", "http://h/x/api/v2/alerts?a=1"),
        ];
        for (given, want) in cases {
            let uri: Uri = given.parse().unwrap();
            assert_eq!(
                with_api_path(&uri, "/api/v2/alerts").unwrap().to_string(),
                want
            );
        }
    }
}
