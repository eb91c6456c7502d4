//! A minimal HTTP/1.1 POST client for the webhook and Alertmanager sinks:
//! one connection per request (alerts are rare), plain TCP for `http://`,
//! rustls on aws-lc-rs for `https://` with the platform roots plus an
//! optional `trust_bundle`. There is no way to turn verification off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::error::first_bytes;
use super::{AlertError, Policy};
use crate::config::{HeaderSource, HttpConfig, UrlSource};

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
    uri: Uri,
    /// The URL as shown in messages (no query; no path when it is a secret).
    shown: String,
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
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
        let https = uri.scheme_str() == Some("https");
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
        let raw_host = uri.host().unwrap_or_default();
        // Uri keeps IPv6 literals in brackets; sockets and SNI want them bare.
        let host = raw_host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| setup(format!("{shown}: host is not a valid TLS server name: {e}")))?;
            Some((connector(sink, cfg.trust_bundle.as_deref())?, name))
        } else {
            None
        };
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
            uri,
            shown,
            host,
            port,
            tls,
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

    fn transport(&self, reason: String) -> AlertError {
        AlertError::Transport {
            sink: self.sink.clone(),
            url: self.shown.clone(),
            reason,
        }
    }

    /// POST `body` as JSON; Ok on a 2xx answer.
    pub async fn post_json(&self, body: Vec<u8>) -> Result<(), AlertError> {
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = self.uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, authority)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("rekey/", env!("CARGO_PKG_VERSION")))
            .header(CONNECTION, "close")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.transport(format!("cannot build the request: {e}")))?;
        for (name, value) in &self.headers {
            let value = match value {
                Header::Inline(v) => v.clone(),
                Header::File(p) => header_file(&self.sink, name.as_str(), p)?,
            };
            req.headers_mut().insert(name.clone(), value);
        }
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.transport(format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let (status, body) = match &self.tls {
            None => self.exchange(TokioIo::new(tcp), req).await?,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| self.transport(format!("TLS handshake: {e}")))?;
                self.exchange(TokioIo::new(tls), req).await?
            }
        };
        if status.is_success() {
            return Ok(());
        }
        Err(AlertError::Status {
            sink: self.sink.clone(),
            url: self.shown.clone(),
            status: status.as_u16(),
            body,
        })
    }

    /// Send `req` over `io`; the status and the start of the body.
    async fn exchange<T>(
        &self,
        io: T,
        req: Request<Full<Bytes>>,
    ) -> Result<(hyper::StatusCode, String), AlertError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| self.transport(format!("HTTP handshake: {e}")))?;
        // Aborted on drop, so a timed-out try does not leave a task holding the socket.
        let _driver = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.transport(format!("no valid answer: {e}")))?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut head = Vec::new();
        if !status.is_success() {
            // Only the start of an error page is worth showing.
            while head.len() < BODY_TAIL {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            head.extend_from_slice(data);
                        }
                    }
                    _ => break,
                }
            }
        }
        Ok((status, first_bytes(&head, BODY_TAIL)))
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A file holding a secret (a header value, a URL with a token in it):
/// bounded, never blocking, and refused when other users can write it.
fn read_secret_file(
    path: &Path,
    key: &str,
) -> Result<zeroize::Zeroizing<String>, crate::safefile::ReadError> {
    use crate::safefile::{self, Guard};
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
fn with_api_path(uri: &Uri, api: &str) -> Result<Uri, hyper::http::Error> {
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

/// A TLS connector trusting the platform roots plus `trust_bundle`.
fn connector(sink: &str, trust_bundle: Option<&Path>) -> Result<TlsConnector, AlertError> {
    use crate::tlsutil::TrustError;
    let config = crate::tlsutil::verified_config(trust_bundle).map_err(|e| match e {
        TrustError::Bundle { path, reason } => AlertError::File {
            sink: sink.to_string(),
            what: "trust_bundle".to_string(),
            path,
            reason,
        },
        other => AlertError::Setup {
            sink: sink.to_string(),
            message: other.to_string(),
        },
    })?;
    Ok(TlsConnector::from(Arc::new(config)))
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
