//! The one HTTP/1.1 server loop behind the in-test fakes (webhook
//! receivers, key services, a misbehaving ACME CA or Vault): one request
//! per connection, read here, answered by the fake's handler, which may
//! also misbehave on the raw stream (stall mid-body, never answer).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;

/// One request the fake got.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path and query).
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// A header's value (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Read one request (line, headers, a body of Content-Length bytes); None
/// when the client sent no complete request.
pub fn read_request(r: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// Write a whole answer: `status` ("200 OK"), extra header lines (each
/// ending in CRLF), Content-Length, and `Connection: close`, so a client's
/// pool never sends a second request down a socket being closed.
pub fn respond(w: &mut (impl Write + ?Sized), status: &str, headers: &str, body: &[u8]) {
    let _ = write!(
        w,
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = w.write_all(body);
    let _ = w.flush();
}

/// A TLS server config (rustls on aws-lc-rs) for the PEM files given.
pub fn tls_config(cert_pem: &Path, key_pem: &Path) -> Arc<rustls::ServerConfig> {
    let certs = rekey::cert::pem_certs(&std::fs::read(cert_pem).unwrap(), "cert").unwrap();
    let key = rustls_pki_types::PrivateKeyDer::try_from(
        pem::parse(std::fs::read(key_pem).unwrap())
            .unwrap()
            .into_contents(),
    )
    .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

/// What a handler answers on: the connection, plain or TLS.
pub trait Stream: Read + Write {}
impl<S: Read + Write> Stream for S {}

/// A fake's answer to one request, written to the stream it came on.
pub type Handler = Arc<dyn Fn(Request, &mut dyn Stream) + Send + Sync>;

/// Serve `handler` on `listener` (over TLS with `tls`), one thread per
/// connection, until the process ends; returns the address.
pub fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (tls, handler) = (tls.clone(), handler.clone());
            std::thread::spawn(move || serve_one(conn, tls, &handler));
        }
    });
    addr
}

/// One connection: read its request, let the handler answer.
pub fn serve_one(tcp: TcpStream, tls: Option<Arc<rustls::ServerConfig>>, handler: &Handler) {
    match tls {
        Some(config) => {
            let Ok(conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let Some(req) = read_request(&mut BufReader::new(&mut s)) else {
                return;
            };
            handler(req, &mut s);
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        None => {
            let Some(req) = read_request(&mut BufReader::new(&tcp)) else {
                return;
            };
            let mut s = tcp;
            handler(req, &mut s);
        }
    }
}
