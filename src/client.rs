//! A tiny HTTP/1.1 client for `rekey status`, `rekey rotate` and `rekey
//! retire`, talking to a running daemon over TCP or its admin socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the address.
    #[error("cannot reach rekey at {addr}: {reason}; is `rekey run` running, and is --addr its daemon.listen?")]
    Connect {
        /// Address tried.
        addr: SocketAddr,
        /// Cause.
        reason: String,
    },
    /// The admin socket could not be used.
    #[error("cannot reach rekey's admin socket {}: {reason}; {hint}", path.display())]
    Socket {
        /// The socket tried.
        path: PathBuf,
        /// Cause.
        reason: String,
        /// What to do.
        hint: &'static str,
    },
}

/// Where a running daemon answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Its TCP endpoint (`daemon.listen`).
    Tcp(SocketAddr),
    /// Its admin socket (`STATE_DIR/rekey.sock`).
    Socket(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "{a}"),
            Target::Socket(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A response: status code and body text.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

/// Send one request with an empty body and read the whole reply.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    send(&Target::Tcp(addr), method, path, timeout, None).await
}

/// Like [`request`], with `Authorization: Bearer TOKEN` when `token` is given.
pub async fn request_with_token(
    addr: SocketAddr,
    method: Method,
    path: &str,
    timeout: Duration,
    token: Option<&str>,
) -> Result<Reply, ClientError> {
    send(&Target::Tcp(addr), method, path, timeout, token).await
}

/// Send one request to `target` (with `Authorization: Bearer TOKEN` when
/// `token` is given) and read the whole reply within `timeout`.
pub async fn send(
    target: &Target,
    method: Method,
    path: &str,
    timeout: Duration,
    token: Option<&str>,
) -> Result<Reply, ClientError> {
    let fail = |reason: String| match target {
        Target::Tcp(addr) => ClientError::Connect {
            addr: *addr,
            reason,
        },
        Target::Socket(path) => ClientError::Socket {
            path: path.clone(),
            reason,
            hint: "is `rekey run` running with that state_dir (-c CONFIG, or --socket PATH)?",
        },
    };
    let work = async {
        match target {
            Target::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                exchange(stream, &addr.to_string(), method, path, token)
                    .await
                    .map_err(fail)
            }
            Target::Socket(p) => {
                let stream = tokio::net::UnixStream::connect(p).await.map_err(|e| {
                    if e.kind() == std::io::ErrorKind::PermissionDenied {
                        ClientError::Socket {
                            path: p.clone(),
                            reason: e.to_string(),
                            hint: "only rekey's own user and root may use it: run this as that user (e.g. `sudo -u rekey rekey ...`), or use --addr with --token-file",
                        }
                    } else {
                        fail(e.to_string())
                    }
                })?;
                exchange(stream, "localhost", method, path, token)
                    .await
                    .map_err(fail)
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| fail(format!("no answer within {timeout:?}")))?
}

/// One request and its whole answer over an open connection.
async fn exchange<S>(
    stream: S,
    host: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> Result<Reply, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    if let Some(t) = token {
        let mut value = hyper::header::HeaderValue::try_from(format!("Bearer {t}"))
            .map_err(|_| "the admin token has characters not allowed in a header".to_string())?;
        value.set_sensitive(true);
        req = req.header(hyper::header::AUTHORIZATION, value);
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
