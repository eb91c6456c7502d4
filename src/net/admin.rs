//! The CLI's side of `rekey status`, `rekey rotate` and `rekey retire`:
//! one request to a running daemon over TCP or its admin socket, through
//! [`crate::net::httpc`] (never a proxy: the daemon is on this host).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Method;

use crate::net::httpc::{self, Call, HttpError, SetupError};

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the address.
    #[error("cannot reach rekey at {addr}: {source}; is `rekey run` running, and is --addr its daemon.listen?")]
    Connect {
        /// Address tried.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: HttpError,
    },
    /// The admin socket could not be used.
    #[error("cannot reach rekey's admin socket {}: {source}; {hint}", path.display())]
    Socket {
        /// The socket tried.
        path: PathBuf,
        /// Cause.
        #[source]
        source: HttpError,
        /// What to do.
        hint: &'static str,
    },
    /// The HTTP client could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
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

/// Send one request to `target` (with `Authorization: Bearer TOKEN` when
/// `token` is given) and read the whole reply within `timeout`.
pub async fn send(
    target: &Target,
    method: Method,
    path: &str,
    timeout: Duration,
    token: Option<&str>,
) -> Result<Reply, ClientError> {
    let (client, url) = match target {
        Target::Tcp(addr) => (httpc::Client::local()?, format!("http://{addr}{path}")),
        // The host is only the Host header: the socket is the destination.
        Target::Socket(p) => (httpc::Client::unix(p)?, format!("http://localhost{path}")),
    };
    let fail = |source: HttpError| match target {
        Target::Tcp(addr) => ClientError::Connect {
            addr: *addr,
            source,
        },
        Target::Socket(path) => {
            let hint = if source.io_kind() == Some(std::io::ErrorKind::PermissionDenied) {
                "only rekey's own user and root may use it: run this as that user (e.g. `sudo -u rekey rekey ...`), or use --addr with --token-file"
            } else {
                "is `rekey run` running with that state_dir (-c CONFIG, or --socket PATH)?"
            };
            ClientError::Socket {
                path: path.clone(),
                source,
                hint,
            }
        }
    };
    // A /status of 10,000 credentials is a few MB; the daemon is ours.
    let mut call = Call::new(method, url, timeout).max_body(64 << 20);
    if let Some(t) = token {
        let value = zeroize::Zeroizing::new(format!("Bearer {t}"));
        call = call.header("authorization", &value).map_err(fail)?;
    }
    let resp = client.send(call).await.map_err(fail)?;
    Ok(Reply {
        status: resp.status,
        body: String::from_utf8_lossy(&resp.body).into_owned(),
    })
}
