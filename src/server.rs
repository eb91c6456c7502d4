//! The HTTP endpoint: health, readiness, status and metrics for monitoring,
//! and a "rotate now" request. It reads the engine's status snapshot and
//! never mutates the engine except to queue a rotation.
//!
//! It is built so that clients cannot exhaust the daemon through it: at
//! most [`MAX_CONNECTIONS`] connections at once (more are closed at
//! accept), request headers within [`HEADER_TIMEOUT`] (this also closes
//! idle keep-alive connections), bodies of at most [`MAX_BODY`] bytes read
//! within [`BODY_TIMEOUT`], and headers of at most 16 KiB.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::engine::{EngineError, Handle};
use crate::metrics::Metrics;
use crate::status;
use crate::token::AdminToken;

/// Slow clients get this long to send their request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// ...and this long to send the body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger request bodies are refused with 413 (no route needs a body).
pub const MAX_BODY: usize = 16 * 1024;
/// Connections beyond this many at once are closed right after accept.
pub const MAX_CONNECTIONS: usize = 64;
/// A rotation requested over HTTP is waited for at most this long.
const ROTATE_WAIT: Duration = Duration::from_secs(120);

type Reply = Response<Full<Bytes>>;

/// Errors starting the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} (daemon.listen): {source}; pick a free port or set listen = \"\" to turn the endpoint off")]
    Bind {
        /// Address from the config.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// What the endpoint serves from: the engine, the metrics, and the admin
/// token when one is configured. Cheap to clone.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

struct Inner {
    handle: Handle,
    metrics: Metrics,
    token: Option<AdminToken>,
}

impl Endpoint {
    /// Serve `handle`'s status and `metrics`; `token` guards rotate requests
    /// (without one, only loopback peers may rotate).
    pub fn new(handle: Handle, metrics: Metrics, token: Option<AdminToken>) -> Endpoint {
        Endpoint {
            inner: Arc::new(Inner {
                handle,
                metrics,
                token,
            }),
        }
    }
}

/// Bind the endpoint; returns the bound address (port 0 resolves here).
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    Ok((listener, local))
}

/// Serve until `shutdown` turns true.
pub async fn serve(listener: TcpListener, endpoint: Endpoint, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, limit = MAX_CONNECTIONS, "too many connections; closing this one");
            drop(stream);
            continue;
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, endpoint.clone(), peer));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
    reply(status, "application/json", format!("{value}\n"))
}

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json(status, &json!({ "error": message.into() }))
}

/// Refuse oversized or slow bodies, then route.
async fn handle(
    req: Request<Incoming>,
    endpoint: Endpoint,
    peer: SocketAddr,
) -> Result<Reply, Infallible> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    let too_large = || {
        let mut r = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_BODY} bytes"),
        );
        // The rest of the body is never read: the connection cannot be reused.
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        r
    };
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Ok(too_large());
    }
    // Chunked bodies have no declared length: read at most MAX_BODY + 1 bytes.
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Ok(too_large()),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, %peer, "cannot read the request body");
            return Ok(error(StatusCode::BAD_REQUEST, "unreadable request body"));
        }
        Err(_) => {
            let mut r = error(StatusCode::REQUEST_TIMEOUT, "request body too slow");
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return Ok(r);
        }
    }
    Ok(route(&parts, &endpoint.inner, peer).await)
}

async fn route(req: &hyper::http::request::Parts, ep: &Inner, peer: SocketAddr) -> Reply {
    let path = req.uri.path();
    match (&req.method, path) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/readyz") => readyz(&ep.handle),
        (&Method::GET, "/status") => {
            let list = ep
                .handle
                .with_snapshot(|s| serde_json::to_value(s.values().collect::<Vec<_>>()));
            match list {
                Ok(v) => json(StatusCode::OK, &v),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        (&Method::GET, "/metrics") => match ep.handle.with_snapshot(|s| ep.metrics.render(s)) {
            Ok(text) => reply(StatusCode::OK, crate::metrics::CONTENT_TYPE, text),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        (&Method::POST, p) if p.starts_with("/v1/rotate/") || p.starts_with("/v1/retire/") => {
            let name = &p["/v1/rotate/".len()..];
            let reissue = wants_reissue(req.uri.query());
            match &ep.token {
                Some(token) => {
                    let auth = req.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
                    if token.accepts(auth) {
                        post(&ep.handle, p, name, reissue).await
                    } else {
                        tracing::warn!(%peer, credential = name, "rotate refused: missing or wrong admin token");
                        let mut r = error(
                            StatusCode::UNAUTHORIZED,
                            "rotate needs `Authorization: Bearer TOKEN` with the token in daemon.admin_token_file (rekey rotate --token-file FILE)",
                        );
                        r.headers_mut().insert(
                            hyper::header::WWW_AUTHENTICATE,
                            HeaderValue::from_static("Bearer realm=\"rekey\""),
                        );
                        r
                    }
                }
                None if peer.ip().is_loopback() => post(&ep.handle, p, name, reissue).await,
                None => error(
                    StatusCode::FORBIDDEN,
                    "rotate is only accepted from loopback unless daemon.admin_token_file is set",
                ),
            }
        }
        (_, "/healthz" | "/readyz" | "/status" | "/metrics") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "use GET")
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!(
                "no route {path}; try /healthz, /readyz, /status, /metrics, POST /v1/rotate/NAME, POST /v1/retire/NAME"
            ),
        ),
    }
}

/// 200 when [`status::readiness`] finds nothing wrong, else 503 with every reason.
fn readyz(handle: &Handle) -> Reply {
    let (reasons, n) =
        handle.with_snapshot(|s| (status::readiness(s.values(), SystemTime::now()), s.len()));
    if reasons.is_empty() {
        json(StatusCode::OK, &json!({ "ready": true, "credentials": n }))
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "ready": false, "reasons": reasons }),
        )
    }
}

/// `POST /v1/rotate/NAME` or `POST /v1/retire/NAME` (same length prefixes).
async fn post(handle: &Handle, path: &str, name: &str, reissue: bool) -> Reply {
    if path.starts_with("/v1/retire/") {
        retire(handle, name).await
    } else {
        rotate(handle, name, reissue).await
    }
}

/// Whether a rotate request asks for a new issuance: `?reissue=1` (or
/// `true`), what `rekey rotate NAME --reissue` sends.
fn wants_reissue(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv, "reissue" | "reissue=1" | "reissue=true"))
    })
}

/// 200 retired (revoked, or the issuer cannot revoke: said in `detail`);
/// 502 retired but the issuer failed to revoke; 500 files not removed.
async fn retire(handle: &Handle, name: &str) -> Reply {
    let call = handle.retire(name);
    engine_reply(call, name, |o| match o.result.as_str() {
        "retired" if o.revocation == crate::engine::retire_revocation::FAILED => {
            StatusCode::BAD_GATEWAY
        }
        "retired" => StatusCode::OK,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    })
    .await
}

/// 200 success; 429 refused by the issuance budget (with `Retry-After`);
/// 502 failed or rolled back.
async fn rotate(handle: &Handle, name: &str, reissue: bool) -> Reply {
    use std::sync::atomic::{AtomicU64, Ordering};
    let call = handle.rotate_with(name, reissue);
    // When a refused issuance may be asked for again (Unix seconds; 0: none).
    let frees = AtomicU64::new(0);
    let mut r = engine_reply(call, name, |o| match o.result.as_str() {
        "success" => StatusCode::OK,
        "refused" => {
            let at = status::parse_time(o.retry_at.as_deref())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            frees.store(at.map_or(0, |d| d.as_secs()), Ordering::Relaxed);
            StatusCode::TOO_MANY_REQUESTS
        }
        _ => StatusCode::BAD_GATEWAY,
    })
    .await;
    let at = frees.load(Ordering::Relaxed);
    if at > 0 {
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Ok(v) = HeaderValue::from_str(&at.saturating_sub(now).max(1).to_string()) {
            r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
    }
    r
}

/// Wait (bounded) for an engine request and turn its outcome into a reply:
/// the status `status` picks, 404 for an unknown credential, 202 when it
/// is still running.
async fn engine_reply<T: serde::Serialize>(
    call: impl std::future::Future<Output = Result<T, EngineError>>,
    name: &str,
    status: impl Fn(&T) -> StatusCode,
) -> Reply {
    match tokio::time::timeout(ROTATE_WAIT, call).await {
        Ok(Ok(outcome)) => {
            let status = status(&outcome);
            match serde_json::to_value(&outcome) {
                Ok(v) => json(status, &v),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        Ok(Err(e @ EngineError::UnknownCredential(_))) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(_) => json(
            StatusCode::ACCEPTED,
            &json!({"credential": name, "result": "queued", "error": "still running; see /status"}),
        ),
    }
}
