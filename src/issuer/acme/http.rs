//! Requests to the CA: rekey's outbound client ([`crate::net::httpc`]: platform
//! roots plus the configured `trust_bundle`, always verified, the issuer's
//! proxy setting), a deadline on each request's whole exchange, bodies
//! capped, and the `Retry-After` / status of the latest response kept for
//! the issuance running in the current task (instant-acme's errors do not
//! carry them). instant-acme sends through the same client, by its
//! [`HttpClient`] trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::LOCATION;
use http::{Method, Request};
use http_body_util::BodyExt;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};

use crate::config::AcmeConfig;
use crate::net::httpc::{self, Call, HttpError};

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

/// Record `resp`'s hints in the slot of the current task, if it has one.
fn record(slot: Option<&Arc<Mutex<Hints>>>, resp: &httpc::Response) {
    if let Some(h) = slot {
        if let Ok(mut g) = h.lock() {
            *g = Hints {
                retry_after: httpc::retry_after(&resp.headers, SystemTime::now()),
                status: Some(resp.status),
            };
        }
    }
}

/// An answer of the CA as rekey reads it itself.
pub(super) struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Bytes,
    /// `Location`.
    pub location: Option<String>,
    /// `Replay-Nonce`.
    pub nonce: Option<String>,
}

/// The client; cheap to clone (one connection pool).
#[derive(Clone)]
pub(super) struct Http {
    client: httpc::Client,
}

impl Http {
    /// A client for the CA of `cfg`: its `trust_bundle` and `proxy`.
    pub(super) fn new(cfg: &AcmeConfig) -> Result<Http, httpc::SetupError> {
        let client = httpc::Client::remote(httpc::Remote {
            url: &cfg.directory,
            trust_bundle: cfg.trust_bundle.as_deref(),
            proxy: &cfg.proxy,
            keep_alive: true,
        })?;
        Ok(Http { client })
    }

    /// A boxed clone for instant-acme.
    pub(super) fn boxed(&self) -> Box<dyn HttpClient> {
        Box::new(self.clone())
    }

    /// GET `url`; returns (status, body). Hints are recorded as for every request.
    pub(super) async fn get(&self, url: &str) -> Result<(u16, Bytes), HttpError> {
        let a = self.send(Method::GET, url, None).await?;
        Ok((a.status, a.body))
    }

    /// Send a request and read the whole answer.
    pub(super) async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<(Vec<u8>, &'static str)>,
    ) -> Result<Answer, HttpError> {
        let mut call = Call::new(method, url, REQUEST_TIMEOUT).max_body(MAX_BODY);
        if let Some((bytes, content_type)) = body {
            call = call.body(content_type, bytes);
        }
        let resp = self.client.send(call).await?;
        record(HINTS.try_with(Arc::clone).ok().as_ref(), &resp);
        Ok(Answer {
            status: resp.status,
            location: resp.header(LOCATION.as_str()).map(str::to_string),
            nonce: resp.header("replay-nonce").map(str::to_string),
            body: Bytes::from(resp.body),
        })
    }
}

impl HttpClient for Http {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.client.clone();
        // Read the slot now: `request` is called from the issuing task.
        let hints = HINTS.try_with(Arc::clone).ok();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            // A `BodyWrapper<Bytes>` holds its bytes already: this never waits.
            let body = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(never) => match never {},
            };
            let mut call =
                Call::new(parts.method, parts.uri.to_string(), REQUEST_TIMEOUT).max_body(MAX_BODY);
            for (name, value) in &parts.headers {
                call = call.header_value(name.clone(), value.clone());
            }
            if !body.is_empty() {
                call = call.body("application/jose+json", body.to_vec());
            }
            // The error keeps its type inside instant-acme's `Other`, so
            // `Ctx::acme` can take it back out.
            let resp = client
                .send(call)
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            record(hints.as_ref(), &resp);
            let mut out = http::Response::new(());
            *out.status_mut() = http::StatusCode::from_u16(resp.status)
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            *out.headers_mut() = resp.headers;
            let (parts, ()) = out.into_parts();
            Ok(BytesResponse {
                parts,
                body: Box::new(Bytes::from(resp.body)),
            })
        })
    }
}
