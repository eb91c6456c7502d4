//! The HTTPS client used for every request to the CA: system roots plus the
//! configured `trust_bundle`, always verified, aws-lc-rs only, a timeout on
//! each request, and the `Retry-After` / status of the latest response kept
//! for the issuance running in the current task (instant-acme's errors do
//! not carry them).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{LOCATION, RETRY_AFTER};
use http::{Method, Request};
use http_body_util::{BodyExt, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};

/// Each request (connect, send, whole response) must finish within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Response bodies from the CA are small JSON or PEM; refuse anything larger.
const MAX_BODY: usize = 1 << 20;

/// What the latest response told us beyond its body.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Hints {
    /// Its `Retry-After`, as a delay from when it arrived.
    pub retry_after: Option<Duration>,
    /// Its HTTP status.
    pub status: Option<u16>,
}

tokio::task_local! {
    /// Hints of the current issuance; scoped per task so concurrent
    /// issuances on one issuer never see each other's.
    static HINTS: Arc<Mutex<Hints>>;
}

/// Run `fut` with its own hints slot.
pub(super) async fn with_hints<F: Future>(fut: F) -> F::Output {
    HINTS
        .scope(Arc::new(Mutex::new(Hints::default())), fut)
        .await
}

/// The hints of the latest response in this task, then forget them.
pub(super) fn take_hints() -> Hints {
    HINTS
        .try_with(|h| {
            h.lock()
                .map(|mut g| std::mem::take(&mut *g))
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// Parse `Retry-After`: delay-seconds or an HTTP-date.
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// The client; cheap to clone (one connection pool).
#[derive(Clone)]
pub(super) struct Http {
    client: HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
}

impl Http {
    /// A client trusting the system roots and the PEM certificates in `bundle`.
    pub(super) fn new(bundle: Option<&Path>) -> Result<Http, String> {
        let tls = crate::tlsutil::verified_config(bundle).map_err(|e| e.to_string())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Http { client })
    }

    /// A boxed clone for instant-acme.
    pub(super) fn boxed(&self) -> Box<dyn HttpClient> {
        Box::new(self.clone())
    }

    /// GET `url`; returns (status, body). Hints are recorded as for every request.
    pub(super) async fn get(&self, url: &str) -> Result<(u16, Bytes), String> {
        let (status, body, _, _) = self.send(Method::GET, url, None).await?;
        Ok((status, body))
    }

    /// Send a request and read the whole body; returns (status, body, Location, Replay-Nonce).
    pub(super) async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<(u16, Bytes, Option<String>, Option<String>), String> {
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::USER_AGENT, USER_AGENT);
        let body = match body {
            Some((bytes, content_type)) => {
                req = req.header(http::header::CONTENT_TYPE, content_type);
                BodyWrapper::from(bytes)
            }
            None => BodyWrapper::default(),
        };
        let req = req
            .body(body)
            .map_err(|e| format!("bad request to {url}: {e}"))?;
        let mut rsp = self.request(req).await.map_err(|e| error_chain(&e))?;
        let status = rsp.parts.status.as_u16();
        let location = header(&rsp, LOCATION.as_str());
        let nonce = header(&rsp, "replay-nonce");
        let bytes = rsp
            .body
            .into_bytes()
            .await
            .map_err(|e| format!("reading the answer from {url}: {e}"))?;
        if bytes.len() > MAX_BODY {
            return Err(format!(
                "the answer from {url} is larger than {MAX_BODY} bytes"
            ));
        }
        Ok((status, bytes, location, nonce))
    }
}

/// A header's value as a string.
fn header(rsp: &BytesResponse, name: &str) -> Option<String> {
    rsp.parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

const USER_AGENT: &str = concat!("rekey/", env!("CARGO_PKG_VERSION"));

impl HttpClient for Http {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.client.request(req);
        // Read the slot now: `request` is called from the issuing task.
        let hints = HINTS.try_with(Arc::clone).ok();
        Box::pin(async move {
            // One deadline for the headers *and* the body: a CA (or a proxy)
            // that sends headers and then stalls must not hang the issuance.
            let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
            let no_answer = || {
                instant_acme::Error::Other(
                    format!("no complete answer within {}s", REQUEST_TIMEOUT.as_secs()).into(),
                )
            };
            let rsp = tokio::time::timeout_at(deadline, fut)
                .await
                .map_err(|_| no_answer())?
                .map_err(|e| instant_acme::Error::Other(error_chain(&e).into()))?;
            if let Some(h) = hints {
                let retry_after = rsp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                if let Ok(mut g) = h.lock() {
                    *g = Hints {
                        retry_after,
                        status: Some(rsp.status().as_u16()),
                    };
                }
            }
            let (parts, body) = rsp.into_parts();
            let body = tokio::time::timeout_at(deadline, Limited::new(body, MAX_BODY).collect())
                .await
                .map_err(|_| no_answer())?
                .map_err(|e| instant_acme::Error::Other(format!("reading the answer: {e}").into()))?
                .to_bytes();
            Ok(BytesResponse {
                parts,
                body: Box::new(body),
            })
        })
    }
}

/// An error and its sources, "a: b: c", so connection failures say why.
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
