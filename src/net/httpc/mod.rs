//! Outbound HTTP, for every request rekey sends: issuers (Vault/OpenBao,
//! the HTTP key service, ACME through instant-acme), alert sinks, HTTP
//! reloads and probes of the local app, and the CLI talking to the daemon.
//! One `reqwest` client setup, three kinds of client:
//!
//! - [`Client::remote`]: issuers and alert receivers. TLS verified against
//!   the platform's roots plus the configured `trust_bundle` (there is no
//!   switch to turn that off); proxies from the environment or the
//!   `proxy` key; idle keep-alive connections closed after 30 s.
//! - [`Client::local`]: the app on this host (HTTP reload and verify).
//!   Never a proxy, any server certificate accepted (the served
//!   certificate is what the handoff checks, by fingerprint), a fresh
//!   connection per request so a reloaded app is never asked over a
//!   connection to its old process.
//! - [`Client::unix`]: the daemon's admin socket, for the CLI.
//!
//! Every request has a deadline on the whole exchange (connect, request,
//! the complete answer) and a cap on the body it reads. Redirects are
//! never followed: a redirect would carry `X-Vault-Token` or a sink's
//! headers to a host nobody configured. The TLS probe that reads the served
//! certificate chain is not HTTP and stays on tokio-rustls
//! (`handoff::probe::served_chain`).

mod error;
mod proxy;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::Method;
use zeroize::Zeroize;

pub use error::HttpError;
pub use proxy::redact;

use crate::config::ProxyConfig;
use crate::net::tls::TrustError;
use proxy::Route;

/// Bodies larger than this are an error unless a call sets its own cap.
pub const MAX_BODY: usize = 1024 * 1024;
/// Sent as `User-Agent` with every request.
pub const USER_AGENT: &str = concat!("rekey/", env!("CARGO_PKG_VERSION"));
/// Keep-alive connections to issuers are closed after this long idle: a
/// rotation's requests share one, and an idle daemon holds none.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The TLS roots (platform or `trust_bundle`) are unusable.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The configured proxy URL is refused by the HTTP client.
    #[error("proxy {proxy}: {source}")]
    Proxy {
        /// The proxy, without credentials.
        proxy: String,
        /// The client's reason.
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP client refused its settings.
    #[error("cannot set up the HTTP client: {source}")]
    Build {
        /// The client's reason.
        #[source]
        source: reqwest::Error,
    },
}

/// An HTTP client; cheap to clone (clones share connections).
#[derive(Clone)]
pub struct Client {
    inner: reqwest::Client,
    route: Arc<Route>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("httpc::Client")
    }
}

/// What [`Client::remote`] needs to know.
#[derive(Debug, Clone, Copy)]
pub struct Remote<'a> {
    /// The server's (base) URL: its scheme decides whether roots are needed.
    pub url: &'a str,
    /// Extra PEM roots, besides the platform's.
    pub trust_bundle: Option<&'a Path>,
    /// The `proxy` setting.
    pub proxy: &'a ProxyConfig,
    /// Keep idle connections for a while (issuers, whose requests come in
    /// bursts); alert sinks, rare, connect every time.
    pub keep_alive: bool,
}

/// Settings every client shares.
fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
}

impl Client {
    /// A client for an issuer or an alert receiver: TLS verified against
    /// the platform's roots plus `trust_bundle`, proxies as `proxy` says.
    pub fn remote(r: Remote<'_>) -> Result<Client, SetupError> {
        let tls = match crate::net::tls::verified_config(r.trust_bundle) {
            Ok(tls) => tls,
            // A plain-http server needs no roots, and a host without the
            // ca-certificates package must still reach it; verification
            // stays on (with nothing trusted, any https fails).
            Err(TrustError::NoRoots) if !r.url.starts_with("https://") => {
                crate::net::tls::verified_config_with(rustls::RootCertStore::empty())?
            }
            Err(e) => return Err(e.into()),
        };
        let route = Route::new(r.proxy);
        let b = builder().tls_backend_preconfigured(tls);
        let b = if r.keep_alive {
            b.pool_idle_timeout(POOL_IDLE)
        } else {
            b.pool_max_idle_per_host(0)
        };
        let b = route.apply(b)?;
        let inner = b.build().map_err(|source| SetupError::Build { source })?;
        Ok(Client {
            inner,
            route: Arc::new(route),
        })
    }

    /// The client for the app on this host (HTTP reload and verify) and for
    /// the daemon's TCP endpoint: never a proxy, any server certificate
    /// accepted, a new connection per request. One per process.
    pub fn local() -> Result<Client, SetupError> {
        static LOCAL: OnceLock<Client> = OnceLock::new();
        if let Some(c) = LOCAL.get() {
            return Ok(c.clone());
        }
        let tls = crate::net::tls::probe_config(None)
            .map_err(|reason| SetupError::Trust(TrustError::Setup(reason)))?;
        let inner = builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|source| SetupError::Build { source })?;
        Ok(LOCAL
            .get_or_init(|| Client {
                inner,
                route: Arc::new(Route::Direct),
            })
            .clone())
    }

    /// A client whose every request goes to the Unix socket `path` (the
    /// daemon's admin socket); URLs then only give the path.
    pub fn unix(path: &Path) -> Result<Client, SetupError> {
        let inner = builder()
            .unix_socket(path)
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|source| SetupError::Build { source })?;
        Ok(Client {
            inner,
            route: Arc::new(Route::Direct),
        })
    }

    /// Send `call` and read the whole answer within its deadline.
    pub async fn send(&self, call: Call) -> Result<Response, HttpError> {
        let url = reqwest::Url::parse(&call.url).map_err(|e| HttpError::Url {
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(HttpError::Url {
                reason: "only http:// and https:// URLs with a host are supported".into(),
            });
        }
        let proxy = self.route.proxy_for(&url);
        let mut req = self.inner.request(call.method, url).headers(call.headers);
        if let Some(body) = call.body {
            req = req.body(body);
        }
        let (max, truncate) = (call.max_body, call.truncate);
        let work = async move {
            let mut resp = req
                .send()
                .await
                .map_err(|e| HttpError::classify(e, proxy))?;
            let status = resp.status().as_u16();
            let headers = std::mem::take(resp.headers_mut());
            let expected = resp.content_length().unwrap_or(0);
            if expected > max as u64 && !truncate {
                return Err(HttpError::TooLarge { limit: max });
            }
            // Sized up front so a secret in the body is not left behind in
            // buffers given up while growing.
            let mut body = Vec::with_capacity(expected.min(max as u64) as usize);
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| HttpError::classify(e, None))?
            {
                if body.len() + chunk.len() > max {
                    if truncate {
                        // The rest is never read; the connection is not reused.
                        body.extend_from_slice(&chunk[..max - body.len()]);
                        break;
                    }
                    body.zeroize();
                    return Err(HttpError::TooLarge { limit: max });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Response {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(call.timeout, work)
            .await
            .map_err(|_| HttpError::Timeout {
                after: call.timeout,
            })?
    }
}

/// One request: method, URL, headers, body, deadline and body cap.
#[derive(Debug)]
pub struct Call {
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    timeout: Duration,
    max_body: usize,
    truncate: bool,
}

impl Call {
    /// `method url` with no header and no body, finished within `timeout`.
    pub fn new(method: Method, url: impl Into<String>, timeout: Duration) -> Call {
        Call {
            method,
            url: url.into(),
            headers: HeaderMap::new(),
            body: None,
            timeout,
            max_body: MAX_BODY,
            truncate: false,
        }
    }

    /// Like [`Call::new`] with the method's name as configured ("POST").
    pub fn named(
        method: &str,
        url: impl Into<String>,
        timeout: Duration,
    ) -> Result<Call, HttpError> {
        let m = Method::from_bytes(method.as_bytes()).map_err(|_| HttpError::Url {
            reason: format!("\"{method}\" is not an HTTP method"),
        })?;
        Ok(Call::new(m, url, timeout))
    }

    /// Add a header. Every value is treated as sensitive (kept out of
    /// debug output): headers carry tokens.
    pub fn header(mut self, name: &str, value: &str) -> Result<Call, HttpError> {
        let bad = |reason| HttpError::Header {
            name: name.to_string(),
            reason,
        };
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("not a valid header name"))?;
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            bad("the value holds characters not allowed in a header (such as a line break)")
        })?;
        value.set_sensitive(true);
        self.headers.append(name, value);
        Ok(self)
    }

    /// Add a header already checked.
    pub fn header_value(mut self, name: HeaderName, mut value: HeaderValue) -> Call {
        value.set_sensitive(true);
        self.headers.insert(name, value);
        self
    }

    /// The request body and its content type (unless a header set one).
    pub fn body(mut self, content_type: &'static str, bytes: Vec<u8>) -> Call {
        self.headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static(content_type));
        self.body = Some(bytes);
        self
    }

    /// Read at most `max` bytes of the answer's body.
    pub fn max_body(mut self, max: usize) -> Call {
        self.max_body = max;
        self
    }

    /// Keep only the first `max` bytes of the answer's body and stop
    /// reading there (for showing the start of an error page).
    pub fn keep_head(mut self, max: usize) -> Call {
        self.max_body = max;
        self.truncate = true;
        self
    }
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body (at most the call's cap).
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The answer's `Retry-After` as a wait from now.
    pub fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers, SystemTime::now())
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `Retry-After` (RFC 9110 10.2.3) of `headers` as a wait from `now`:
/// delay-seconds, or an HTTP-date (one in the past means no wait). The one
/// parser of the project: Vault, ACME and key services all use it.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests;
