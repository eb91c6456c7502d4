//! The HTTP endpoint: health and status for monitoring, and a "rotate now"
//! request. It reads the engine's status snapshot and never mutates the
//! engine except to queue a rotation.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::engine::{EngineError, Handle};

/// Slow clients get this long to send their request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A rotation requested over HTTP is waited for at most this long.
const ROTATE_WAIT: Duration = Duration::from_secs(120);

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
pub async fn serve(listener: TcpListener, handle: Handle, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| route(req, handle.clone(), peer));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", format!("{value}\n"))
}

async fn route(
    req: Request<Incoming>,
    handle: Handle,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/status") => {
            let list: Vec<_> = handle.snapshot().into_values().collect();
            match serde_json::to_value(list) {
                Ok(v) => json(StatusCode::OK, &v),
                Err(e) => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({"error": e.to_string()}),
                ),
            }
        }
        (&Method::POST, p) if p.starts_with("/v1/rotate/") => {
            let name = &p["/v1/rotate/".len()..];
            if !peer.ip().is_loopback() {
                json(
                    StatusCode::FORBIDDEN,
                    &serde_json::json!({"error": "rotate is only accepted from loopback"}),
                )
            } else {
                rotate(&handle, name).await
            }
        }
        (_, "/healthz" | "/status") => json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "use GET"}),
        ),
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": format!("no route {path}; try /healthz, /status, POST /v1/rotate/NAME")}),
        ),
    };
    Ok(resp)
}

async fn rotate(handle: &Handle, name: &str) -> Response<Full<Bytes>> {
    match tokio::time::timeout(ROTATE_WAIT, handle.rotate(name)).await {
        Ok(Ok(outcome)) => {
            let status = if outcome.result == "success" {
                StatusCode::OK
            } else {
                StatusCode::BAD_GATEWAY
            };
            match serde_json::to_value(&outcome) {
                Ok(v) => json(status, &v),
                Err(e) => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({"error": e.to_string()}),
                ),
            }
        }
        Ok(Err(e @ EngineError::UnknownCredential(_))) => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": e.to_string()}),
        ),
        Ok(Err(e)) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": e.to_string()}),
        ),
        Err(_) => json(
            StatusCode::ACCEPTED,
            &serde_json::json!({"credential": name, "result": "queued", "error": "still running; see /status"}),
        ),
    }
}
