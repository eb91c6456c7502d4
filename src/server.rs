//! The HTTP endpoint: health, readiness, status and metrics for monitoring,
//! and the two requests that change something, rotate and retire. It reads
//! the engine's status snapshot and never mutates the engine except to queue
//! those requests.
//!
//! It listens twice:
//!
//! - on TCP (`daemon.listen`), for probes, scrapers and people. Nobody who
//!   merely reaches the port can change anything: rotate and retire are
//!   answered there only with the admin token (`daemon.admin_token_file`),
//!   and refused with 403 without one;
//! - on the admin socket `STATE_DIR/rekey.sock` (0600 in the 0700 state dir),
//!   where file permissions are the authorization: rekey's own user (and
//!   root) may rotate and retire there, no token needed. `rekey rotate` and
//!   `rekey retire` use it by default.
//!
//! Clients cannot exhaust it: every connection is accepted, and the
//! connections waiting on their client are bounded by [`gate`] (one peer
//! holding half-sent requests displaces only its own connections, so probes
//! keep being answered). Request headers must arrive within
//! [`HEADER_TIMEOUT`] (this also closes idle keep-alive connections), bodies
//! of at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`], headers of at most
//! 16 KiB.

pub mod gate;
mod listen;

pub use crate::config::ADMIN_SOCKET;
pub use listen::{bind, bind_admin, spawn};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::engine::{EngineError, Handle};
use crate::metrics::Metrics;
use crate::status::{self, RotateResult};
use crate::token::AdminToken;
use gate::Ticket;

/// Slow clients get this long to send their request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// ...and this long to send the body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger request bodies are refused with 413 (no route needs a body).
pub const MAX_BODY: usize = 16 * 1024;
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
    /// The admin socket could not be created.
    #[error("cannot create the admin socket {} (in daemon.state_dir): {source}; check that the state dir is writable by rekey's user", path.display())]
    AdminSocket {
        /// `STATE_DIR/rekey.sock`.
        path: PathBuf,
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

#[derive(Clone)]
struct Inner {
    handle: Handle,
    metrics: Metrics,
    token: Option<AdminToken>,
    /// Named in the 403 that tells a TCP client where rotate is served.
    admin_socket: Option<PathBuf>,
    /// Watched certificates, listed in `/status` after the credentials.
    watches: Option<tokio::sync::watch::Receiver<crate::watched::View>>,
}

impl Endpoint {
    /// Serve `handle`'s status and `metrics`; `token` lets TCP clients that
    /// present it rotate and retire (without one, only the admin socket may).
    pub fn new(handle: Handle, metrics: Metrics, token: Option<AdminToken>) -> Endpoint {
        Endpoint {
            inner: Arc::new(Inner {
                handle,
                metrics,
                token,
                admin_socket: None,
                watches: None,
            }),
        }
    }

    /// The same, naming `path` as the admin socket in refusals.
    pub fn with_admin_socket(self, path: PathBuf) -> Endpoint {
        self.with(|i| i.admin_socket = Some(path))
    }

    /// The same, also listing the monitor's watches in `/status` (they
    /// never count for `/readyz`).
    pub fn with_watches(
        self,
        watches: tokio::sync::watch::Receiver<crate::watched::View>,
    ) -> Endpoint {
        self.with(|i| i.watches = Some(watches))
    }

    fn with(self, change: impl FnOnce(&mut Inner)) -> Endpoint {
        let mut inner = (*self.inner).clone();
        change(&mut inner);
        Endpoint {
            inner: Arc::new(inner),
        }
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// The admin socket: rekey's user or root.
    Admin,
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

/// Refuse oversized or slow bodies, then route. The connection waits on its
/// client (and may be closed to make room) until the body is in, and again
/// once the answer is ready.
async fn handle(
    req: Request<Incoming>,
    endpoint: Endpoint,
    origin: Origin,
    ticket: Arc<Ticket>,
) -> Result<Reply, Infallible> {
    let reply = read_and_route(req, &endpoint, origin, &ticket).await;
    ticket.waiting();
    Ok(reply)
}

async fn read_and_route(
    req: Request<Incoming>,
    endpoint: &Endpoint,
    origin: Origin,
    ticket: &Ticket,
) -> Reply {
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
        return too_large();
    }
    // Chunked bodies have no declared length: read at most MAX_BODY + 1 bytes.
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, ?origin, "cannot read the request body");
            return error(StatusCode::BAD_REQUEST, "unreadable request body");
        }
        Err(_) => {
            let mut r = error(StatusCode::REQUEST_TIMEOUT, "request body too slow");
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    }
    ticket.busy();
    route(&parts, &endpoint.inner, origin).await
}

async fn route(req: &hyper::http::request::Parts, ep: &Inner, origin: Origin) -> Reply {
    let path = req.uri.path();
    match (&req.method, path) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/readyz") => readyz(&ep.handle, req.uri.query()),
        (&Method::GET, "/status") => {
            let list = ep.handle.with_snapshot(|s| {
                let view = ep.watches.as_ref().map(|w| w.borrow());
                let watches = view.iter().flat_map(|v| v.watches.values());
                let credentials = s.values().map(|c| &**c);
                serde_json::to_value(credentials.chain(watches).collect::<Vec<_>>())
            });
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
            match refusal(req, ep, origin, p, name) {
                None => post(&ep.handle, p, name, reissue).await,
                Some(refused) => refused,
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

/// Why `origin` may not rotate or retire, or None when it may: always on the
/// admin socket; over TCP only with the admin token (401 without the right
/// one), and never when no token is configured (403, naming the socket).
fn refusal(
    req: &hyper::http::request::Parts,
    ep: &Inner,
    origin: Origin,
    path: &str,
    name: &str,
) -> Option<Reply> {
    let action = if path.starts_with("/v1/retire/") {
        "retire"
    } else {
        "rotate"
    };
    let peer = match origin {
        Origin::Admin => return None,
        Origin::Tcp(peer) => peer,
    };
    match &ep.token {
        Some(token) => {
            let auth = req.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
            if token.accepts(auth) {
                return None;
            }
            tracing::warn!(%peer, credential = name, action, "refused: missing or wrong admin token");
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                format!("{action} needs `Authorization: Bearer TOKEN` with the token in daemon.admin_token_file (rekey {action} NAME --addr ADDR --token-file FILE)"),
            );
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rekey\""),
            );
            Some(r)
        }
        None => {
            tracing::warn!(%peer, credential = name, action, "refused over TCP: no admin token is configured");
            let socket = ep.admin_socket.as_ref().map_or_else(
                || format!("STATE_DIR/{ADMIN_SOCKET}"),
                |p| p.display().to_string(),
            );
            Some(error(
                StatusCode::FORBIDDEN,
                format!("{action} is served on the admin socket {socket}, not over TCP: run `rekey {action} NAME -c CONFIG` as rekey's user, or set daemon.admin_token_file to allow it over TCP with the token"),
            ))
        }
    }
}

/// 200 when [`status::readiness`] finds nothing wrong, else 503 with every
/// reason. `?strict` (or `?strict=1`/`true`) also wants no failed handoff
/// ([`status::Strictness::HandoffOk`]); any other query is a 400, so a typo
/// cannot silently fall back to the lenient rule.
fn readyz(handle: &Handle, query: Option<&str>) -> Reply {
    let strictness = match query.unwrap_or("") {
        "" => status::Strictness::Usable,
        "strict" | "strict=1" | "strict=true" => status::Strictness::HandoffOk,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown /readyz query {other:?}; use /readyz or /readyz?strict"),
            )
        }
    };
    let (reasons, n) = handle.with_snapshot(|s| {
        (
            status::readiness_with(s.values().map(|c| &**c), SystemTime::now(), strictness),
            s.len(),
        )
    });
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
    use crate::engine::{RetireResult, Revocation};
    engine_reply(call, name, |o| match (o.result, o.revocation) {
        (RetireResult::Retired, Revocation::Failed) => StatusCode::BAD_GATEWAY,
        (RetireResult::Retired, _) => StatusCode::OK,
        (RetireResult::Failed, _) => StatusCode::INTERNAL_SERVER_ERROR,
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
    let mut r = engine_reply(call, name, |o| match o.result {
        RotateResult::Success => StatusCode::OK,
        RotateResult::Refused => {
            let at = o.retry_at.map_or(0, |t| t.unix_seconds().max(0) as u64);
            frees.store(at, Ordering::Relaxed);
            StatusCode::TOO_MANY_REQUESTS
        }
        RotateResult::Failed | RotateResult::RolledBack => StatusCode::BAD_GATEWAY,
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
