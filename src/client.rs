//! A tiny HTTP/1.1 client for `rekey status` and `rekey rotate`, talking to a
//! running daemon's endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

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
    request_with_token(addr, method, path, timeout, None).await
}

/// Like [`request`], with `Authorization: Bearer TOKEN` when `token` is given.
pub async fn request_with_token(
    addr: SocketAddr,
    method: Method,
    path: &str,
    timeout: Duration,
    token: Option<&str>,
) -> Result<Reply, ClientError> {
    let fail = |reason: String| ClientError::Connect { addr, reason };
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        if let Some(t) = token {
            let mut value =
                hyper::header::HeaderValue::try_from(format!("Bearer {t}")).map_err(|_| {
                    fail("the admin token has characters not allowed in a header".into())
                })?;
            value.set_sensitive(true);
            req = req.header(hyper::header::AUTHORIZATION, value);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| fail(format!("no answer within {timeout:?}")))?
}
