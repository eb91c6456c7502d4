//! Receivers and helpers for the alert tests: a plain HTTP receiver that
//! records requests, an https one, the metrics-hook recorder, polling.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekey::alert::{self, Alert, Alerter, Event, Options, ResultHook};
use rekey::config::{AlertConfig, Config};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A tiny HTTP/1.1 receiver: answers every request with `status`, or never
/// answers when `status` is None. Records what it got.
pub struct Receiver {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Req>>>,
    pub status: Arc<Mutex<Option<u16>>>,
}

impl Receiver {
    pub fn start(status: Option<u16>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(status));
        let (g, st) = (got.clone(), status.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let g = g.clone();
                let now = *st.lock().unwrap();
                std::thread::spawn(move || serve(conn, now, &g));
            }
        });
        Receiver { addr, got, status }
    }

    /// Answer later requests with `status`.
    pub fn answer(&self, status: u16) {
        *self.status.lock().unwrap() = Some(status);
    }

    pub fn requests(&self) -> Vec<Req> {
        self.got.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

pub fn serve(conn: TcpStream, status: Option<u16>, got: &Mutex<Vec<Req>>) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
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
    if r.read_exact(&mut body).is_err() {
        return;
    }
    got.lock().unwrap().push(Req {
        method,
        path,
        headers,
        body,
    });
    match status {
        Some(code) => {
            let text = if code < 300 {
                "ok"
            } else {
                "receiver is broken"
            };
            let mut w = conn;
            let _ = write!(
                w,
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
        // Never answer: hold the connection until the client gives up.
        None => while r.read(&mut [0; 64]).is_ok_and(|n| n > 0) {},
    }
}

/// Outcomes reported through the metrics hook.
#[derive(Clone, Default)]
pub struct Results(pub Arc<Mutex<Vec<(String, Event, String)>>>);

impl Results {
    pub fn hook(&self) -> ResultHook {
        let r = self.0.clone();
        Arc::new(move |sink: &str, event: Event, result: alert::Delivery| {
            r.lock()
                .unwrap()
                .push((sink.to_string(), event, result.as_str().to_string()));
        })
    }

    pub fn of(&self, sink: &str) -> Vec<(Event, String)> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|(s, _, _)| s == sink)
            .map(|(_, e, r)| (*e, r.clone()))
            .collect()
    }
}

/// Poll `f` until it returns Some, at most `timeout`.
pub async fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `[[alert]]` tables parsed as the daemon parses them.
pub fn alerts(toml: &str) -> Vec<AlertConfig> {
    Config::parse(toml, Path::new("/etc/rekey/rekey.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .alerts
}

pub fn start(toml: &str, results: &Results) -> Alerter {
    let options = Options {
        on_result: Some(results.hook()),
        ..Options::default()
    };
    alert::build_with(&alerts(toml), options).unwrap()
}

pub fn handoff_failed(credential: &str) -> Alert {
    Alert::new(
        Event::HandoffFailed,
        credential,
        "certificate",
        "app still serves sha256:old after 30s",
    )
    .with_generation(7)
    .with_fingerprint("sha256:new")
    .with_served_fingerprint("sha256:old")
    .with_not_after(rekey::status::Timestamp::parse("2026-11-24T19:00:00Z").unwrap())
    .with_rolled_back(true)
}

/// An https receiver on 127.0.0.1 with a fresh self-signed certificate for
/// 127.0.0.1; answers 200 and counts requests. Returns (addr, cert PEM, count).
pub async fn tls_receiver() -> (SocketAddr, String, Arc<Mutex<usize>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(Mutex::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, c) = (acceptor.clone(), c.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0; 4096];
                // Headers, then a body of Content-Length bytes.
                loop {
                    let Ok(n) = tls.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break;
                        }
                    }
                }
                *c.lock().unwrap() += 1;
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, ck.cert.pem(), count)
}
