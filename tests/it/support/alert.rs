//! Receivers and helpers for the alert tests: a plain HTTP receiver that
//! records requests, an https one, the metrics-hook recorder, polling.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekey::alert::{self, Alert, Alerter, Event, Options, ResultHook};
use rekey::config::{AlertConfig, Config};

use super::fake_http;

/// One request the receiver got.
pub use super::fake_http::Request as Req;

/// A tiny HTTP/1.1 receiver: answers every request with `status`, or never
/// answers when `status` is None. Records what it got. Alert bodies are read
/// as untyped JSON (`Req::json`): `rekey::alert::Alert` is only ever written
/// (no `Deserialize`, nor on its `Severity` and `Event`), and what a
/// receiver gets is the wire body itself.
pub struct Receiver {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Req>>>,
    pub status: Arc<Mutex<Option<u16>>>,
}

impl Receiver {
    pub fn start(status: Option<u16>) -> Receiver {
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(status));
        let (g, st) = (got.clone(), status.clone());
        let addr = fake_http::serve(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            None,
            Arc::new(move |req: Req, w: &mut dyn fake_http::Stream| {
                g.lock().unwrap().push(req);
                let now = *st.lock().unwrap();
                match now {
                    Some(code) => {
                        let text = if code < 300 {
                            "ok"
                        } else {
                            "receiver is broken"
                        };
                        fake_http::respond(w, &format!("{code} X"), "", text.as_bytes());
                    }
                    // Never answer: hold the connection until the client gives up.
                    None => while w.read(&mut [0; 64]).is_ok_and(|n| n > 0) {},
                }
            }),
        );
        Receiver { addr, got, status }
    }

    /// Answer later requests with `status`.
    pub fn answer(&self, status: u16) {
        *self.status.lock().unwrap() = Some(status);
    }

    pub fn requests(&self) -> Vec<Req> {
        self.got.lock().unwrap().clone()
    }

    /// How many alerts with this `event` it got.
    pub fn events(&self, event: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.json()["event"] == event)
            .count()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
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
