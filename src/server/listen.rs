//! The endpoint's sockets: binding TCP and the admin socket, accepting
//! every connection through the [`Gate`], serving each with hyper, and the
//! thread and runtime they run on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use super::gate::{Gate, Peer, Ticket, MAX_WAITING};
use super::{handle, Endpoint, Origin, ServerError, ADMIN_SOCKET, HEADER_TIMEOUT};

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

/// Create the admin socket `STATE_DIR/rekey.sock`, mode 0600. Call with the
/// state dir's lock held: a socket file found there is a dead daemon's.
pub fn bind_admin(
    state_dir: &Path,
) -> Result<(std::os::unix::net::UnixListener, PathBuf), ServerError> {
    let path = state_dir.join(ADMIN_SOCKET);
    let fail = |source| ServerError::AdminSocket {
        path: path.clone(),
        source,
    };
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
        _ => {}
    }
    let listener = std::os::unix::net::UnixListener::bind(&path).map_err(fail)?;
    // The 0700 state dir already keeps others out; the mode says so too.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    Ok((listener, path))
}

/// Serve TCP clients until `shutdown` turns true.
pub async fn serve(listener: TcpListener, endpoint: Endpoint, mut shutdown: watch::Receiver<bool>) {
    let gate = Gate::new(MAX_WAITING);
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
        let (ticket, closed) = gate.admit(Peer::of(peer.ip()));
        tokio::spawn(connection(
            stream,
            endpoint.clone(),
            Origin::Tcp(peer),
            ticket,
            closed,
        ));
    }
}

/// Serve the admin socket until `shutdown` turns true.
pub async fn serve_admin(
    listener: UnixListener,
    endpoint: Endpoint,
    mut shutdown: watch::Receiver<bool>,
) {
    // Only rekey's user reaches it; bounded all the same.
    let gate = Gate::new(MAX_WAITING);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept on the admin socket failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let (ticket, closed) = gate.admit(Peer::Local);
        tokio::spawn(connection(
            stream,
            endpoint.clone(),
            Origin::Admin,
            ticket,
            closed,
        ));
    }
}

/// One connection, until it ends or the gate closes it.
async fn connection<S>(
    stream: S,
    endpoint: Endpoint,
    origin: Origin,
    ticket: Ticket,
    closed: tokio::sync::oneshot::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ticket = Arc::new(ticket);
    let t = ticket.clone();
    let svc =
        hyper::service::service_fn(move |req| handle(req, endpoint.clone(), origin, t.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(error = %e, ?origin, "connection ended with an error");
        },
        _ = closed => tracing::debug!(?origin, limit = MAX_WAITING, "closed a waiting connection to make room"),
    }
    drop(ticket);
}

/// Serve the endpoint (TCP, if it listens, and the admin socket) on a thread
/// and runtime of its own: `/healthz` and `/status` must answer within
/// milliseconds even while rotations keep the engine's workers busy (1,000
/// credentials due at once pushed /healthz past 100 ms on the shared
/// runtime; tests/it/load.rs). The handlers only read the status channel and
/// queue requests, which works across runtimes.
pub fn spawn(
    listener: Option<tokio::net::TcpListener>,
    admin: std::os::unix::net::UnixListener,
    endpoint: Endpoint,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let addr = listener.as_ref().and_then(|l| l.local_addr().ok());
    let bind_err = |source: std::io::Error| ServerError::Bind {
        addr: addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        source,
    };
    // The sockets move to the new runtime's reactor.
    let listener = listener
        .map(|l| l.into_std())
        .transpose()
        .map_err(bind_err)?;
    // Two workers: a large /status or /metrics never queues a /healthz.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rekey-http")
        .enable_all()
        .build()
        .map_err(bind_err)?;
    std::thread::Builder::new()
        .name("rekey-http".into())
        .spawn(move || {
            rt.block_on(async move {
                match tokio::net::UnixListener::from_std(admin) {
                    Ok(l) => {
                        tokio::spawn(serve_admin(l, endpoint.clone(), stop.clone()));
                    }
                    Err(e) => tracing::error!(error = %e, "the admin socket cannot listen"),
                }
                match listener.map(tokio::net::TcpListener::from_std) {
                    Some(Ok(l)) => serve(l, endpoint, stop).await,
                    Some(Err(e)) => tracing::error!(error = %e, "the endpoint cannot listen"),
                    None => {
                        let mut stop = stop;
                        let _ = stop.wait_for(|s| *s).await;
                    }
                }
            })
        })
        .map_err(bind_err)?;
    Ok(())
}
