//! Alert sinks against real receivers on 127.0.0.1: an in-test HTTP server,
//! a command, and a real Alertmanager. The Alerter is driven at library
//! level, configured from `[[alert]]` TOML like the daemon does.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekey::alert::{
    self, Alert, AlertSink, Alerter, AlertmanagerSink, Event, Options, ResultHook, WebhookSink,
};
use rekey::config::{AlertConfig, Config, SinkConfig};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Req {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A tiny HTTP/1.1 receiver: answers every request with `status`, or never
/// answers when `status` is None. Records what it got.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Req>>>,
    status: Arc<Mutex<Option<u16>>>,
}

impl Receiver {
    fn start(status: Option<u16>) -> Receiver {
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
    fn answer(&self, status: u16) {
        *self.status.lock().unwrap() = Some(status);
    }

    fn requests(&self) -> Vec<Req> {
        self.got.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn serve(conn: TcpStream, status: Option<u16>, got: &Mutex<Vec<Req>>) {
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
struct Results(Arc<Mutex<Vec<(String, Event, String)>>>);

impl Results {
    fn hook(&self) -> ResultHook {
        let r = self.0.clone();
        Arc::new(move |sink: &str, event: Event, result: &str| {
            r.lock()
                .unwrap()
                .push((sink.to_string(), event, result.to_string()));
        })
    }

    fn of(&self, sink: &str) -> Vec<(Event, String)> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|(s, _, _)| s == sink)
            .map(|(_, e, r)| (*e, r.clone()))
            .collect()
    }
}

/// Poll `f` until it returns Some, at most `timeout`.
async fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
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
fn alerts(toml: &str) -> Vec<AlertConfig> {
    Config::parse(toml, Path::new("/etc/rekey/rekey.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .alerts
}

fn start(toml: &str, results: &Results) -> Alerter {
    let options = Options {
        on_result: Some(results.hook()),
        ..Options::default()
    };
    alert::build_with(&alerts(toml), options).unwrap()
}

fn handoff_failed(credential: &str) -> Alert {
    Alert::new(
        Event::HandoffFailed,
        credential,
        "certificate",
        "app still serves sha256:old after 30s",
    )
    .with_generation(7)
    .with_fingerprint("sha256:new")
    .with_served_fingerprint("sha256:old")
    .with_not_after("2026-11-24T19:00:00Z")
    .with_rolled_back(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_one_post_per_alert_with_json_and_headers() {
    let json = Receiver::start(Some(200));
    let slack = Receiver::start(Some(204));
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "Bearer s3cret\n").unwrap();
    let results = Results::default();
    let alerter = start(
        &format!(
            "[[alert]]\ntype = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\n\
             headers = {{ Authorization = {{ file = \"{}\" }}, X-Team = \"ops\" }}\n\n\
             [[alert]]\ntype = \"webhook\"\nname = \"chat\"\nformat = \"slack\"\nurl = \"{}\"\n\
             events = [\"handoff_failed\"]\n",
            json.url("/rekey?src=test"),
            token.display(),
            slack.url("/services/x"),
        ),
        &results,
    );
    assert_eq!(alerter.sink_names(), ["log", "hook", "chat"]);

    let first = handoff_failed("web");
    let other = Alert::new(Event::RenewalFailed, "api", "certificate", "CA said 503");
    alerter.raise(first.clone());
    alerter.raise(other.clone());
    // A repeat of an ongoing problem is suppressed (de-dup), recovery is sent.
    alerter.raise(handoff_failed("web"));
    let recovered = Alert::new(Event::Recovered, "web", "certificate", "verified again");
    alerter.raise(recovered.clone());
    assert!(alerter.flush(Duration::from_secs(20)).await);

    let got = json.requests();
    let bodies: Vec<serde_json::Value> = got.iter().map(Req::json).collect();
    let want: Vec<serde_json::Value> = [&first, &other, &recovered]
        .iter()
        .map(|a| serde_json::to_value(a).unwrap())
        .collect();
    assert_eq!(bodies, want, "exactly one POST per alert, in order");
    assert_eq!(bodies[0]["rolled_back"], true);
    assert_eq!(bodies[0]["served_fingerprint"], "sha256:old");
    assert!(bodies[1].get("generation").is_none());
    for r in &got {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/rekey?src=test");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["authorization"], "Bearer s3cret");
        assert_eq!(r.headers["x-team"], "ops");
        assert!(r.headers["user-agent"].starts_with("rekey/"));
    }

    // The slack sink only wanted handoff_failed: one `{"text": ...}`.
    let chat = slack.requests();
    assert_eq!(chat.len(), 1, "{chat:?}");
    let text = chat[0].json()["text"].as_str().unwrap().to_string();
    assert!(
        text.contains("*handoff_failed*") && text.contains("`web`"),
        "{text}"
    );

    let sent = |e| (e, "sent".to_string());
    assert_eq!(
        results.of("hook"),
        [
            sent(Event::HandoffFailed),
            sent(Event::RenewalFailed),
            sent(Event::Recovered)
        ]
    );
    assert_eq!(results.of("chat"), [sent(Event::HandoffFailed)]);
    assert_eq!(results.of("log").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_webhook_fails_fast_is_retried_and_counted() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let broken = Receiver::start(Some(500));
    let results = Results::default();
    let alerter = start(
        &format!(
            "[[alert]]\ntype = \"webhook\"\nname = \"down\"\nurl = \"http://{closed}/x\"\n\n\
             [[alert]]\ntype = \"webhook\"\nname = \"broken\"\nurl = \"{}\"\n",
            broken.url("/x")
        ),
        &results,
    );
    let t0 = Instant::now();
    alerter.raise(handoff_failed("web"));
    let raise_took = t0.elapsed();
    assert!(raise_took < Duration::from_millis(50), "{raise_took:?}");

    wait_for(Duration::from_secs(15), "both failures counted", || {
        (results.of("down").len() == 1 && results.of("broken").len() == 1).then_some(())
    })
    .await;
    let took = t0.elapsed();
    assert_eq!(
        results.of("down"),
        [(Event::HandoffFailed, "failed".to_string())]
    );
    assert_eq!(
        results.of("broken"),
        [(Event::HandoffFailed, "failed".to_string())]
    );
    // 3 tries with 1 s and 2 s pauses: refused connections fail at once.
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(broken.requests().len(), 3, "3 attempts");
    // The log sink is unaffected.
    assert_eq!(
        results.of("log"),
        [(Event::HandoffFailed, "sent".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_errors_name_the_sink_url_status_and_what_to_do() {
    let broken = Receiver::start(Some(500));
    let cfg = alerts(&format!(
        "[[alert]]\ntype = \"webhook\"\nname = \"ops\"\nurl = \"{}\"\n",
        broken.url("/hook?token=abc")
    ));
    let SinkConfig::Webhook(w) = &cfg[0].sink else {
        panic!()
    };
    let sink = WebhookSink::new("ops", w).unwrap();
    let msg = sink
        .send(&handoff_failed("web"))
        .await
        .unwrap_err()
        .to_string();
    let url = broken.url("/hook");
    assert_eq!(
        msg,
        format!("alert sink ops: POST {url} answered 500: receiver is broken; check the receiver's logs and the sink's url and headers")
    );
    assert!(!msg.contains("token=abc"), "the query may hold a secret");

    // A secret URL from url_file shows only scheme and host.
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("url");
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    std::fs::write(
        &url_file,
        format!("http://{closed}/services/T0/B0/SECRET\n"),
    )
    .unwrap();
    let cfg = alerts(&format!(
        "[[alert]]\ntype = \"webhook\"\nurl_file = \"{}\"\n",
        url_file.display()
    ));
    let SinkConfig::Webhook(w) = &cfg[0].sink else {
        panic!()
    };
    let msg = WebhookSink::new("webhook", w)
        .unwrap()
        .send(&handoff_failed("web"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(&format!(
            "alert sink webhook: POST http://{closed}/… failed: cannot connect"
        )),
        "{msg}"
    );
    assert!(!msg.contains("SECRET"), "{msg}");

    // A missing header file stops the start, naming the file but no content.
    let cfg = alerts(&format!(
        "[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\nheaders = {{ Authorization = {{ file = \"{}/nope\" }} }}\n",
        broken.url("/"),
        dir.path().display()
    ));
    let err = alert::build(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("header Authorization file") && err.contains("/nope"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_sink_never_blocks_raise_nor_other_sinks() {
    let hang = Receiver::start(None);
    let fast = Receiver::start(Some(200));
    let results = Results::default();
    let alerter = start(
        &format!(
            "[[alert]]\ntype = \"webhook\"\nname = \"hang\"\nurl = \"{}\"\ntimeout = \"300ms\"\nretries = 0\n\n\
             [[alert]]\ntype = \"webhook\"\nname = \"fast\"\nurl = \"{}\"\n",
            hang.url("/"),
            fast.url("/")
        ),
        &results,
    );
    // Two bursts, together more than the hanging sink's queue holds, each
    // alert for a new credential so de-dup lets them all through.
    let burst = 150;
    let mut slowest = Duration::ZERO;
    for round in 0..2 {
        for i in 0..burst {
            let t = Instant::now();
            alerter.raise(handoff_failed(&format!("c{round}-{i}")));
            slowest = slowest.max(t.elapsed());
        }
        // The fast sink gets each burst promptly although "hang" is stuck.
        wait_for(Duration::from_secs(10), "fast sink", || {
            (fast.requests().len() == burst * (round + 1)).then_some(())
        })
        .await;
    }
    assert!(
        slowest < Duration::from_millis(50),
        "raise took {slowest:?}"
    );
    // The hanging sink times out per alert and drops what its queue cannot hold.
    wait_for(Duration::from_secs(10), "first hang timeout", || {
        results
            .of("hang")
            .iter()
            .any(|(_, r)| r == "failed")
            .then_some(())
    })
    .await;
    let hang_results = results.of("hang");
    let dropped = hang_results.iter().filter(|(_, r)| r == "dropped").count();
    assert!(dropped > 0, "{hang_results:?}");
    assert!(!hang_results.iter().any(|(_, r)| r == "sent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sink_gets_the_json_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alert.json");
    let results = Results::default();
    let alerter = start(
        &format!(
            "[[alert]]\ntype = \"exec\"\nname = \"cat\"\ncommand = [\"sh\", \"-c\", \"cat > \\\"$0\\\"; echo \\\"$REKEY_ALERT_EVENT $REKEY_CREDENTIAL\\\" >> \\\"$0.env\\\"\", \"{}\"]\n\n\
             [[alert]]\ntype = \"exec\"\nname = \"fails\"\ncommand = [\"sh\", \"-c\", \"echo boom >&2; exit 3\"]\n\n\
             [[alert]]\ntype = \"exec\"\nname = \"slow\"\ncommand = [\"sleep\", \"30\"]\ntimeout = \"200ms\"\n",
            out.display()
        ),
        &results,
    );
    let a = handoff_failed("web");
    let t0 = Instant::now();
    alerter.raise(a.clone());
    assert!(alerter.flush(Duration::from_secs(10)).await);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the slow command was not killed"
    );
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(written, serde_json::to_value(&a).unwrap());
    let env = std::fs::read_to_string(dir.path().join("alert.json.env")).unwrap();
    assert_eq!(env, "handoff_failed web\n");
    assert_eq!(
        results.of("cat"),
        [(Event::HandoffFailed, "sent".to_string())]
    );
    assert_eq!(
        results.of("fails"),
        [(Event::HandoffFailed, "failed".to_string())]
    );
    assert_eq!(
        results.of("slow"),
        [(Event::HandoffFailed, "failed".to_string())]
    );

    // The failure names the command, the status and the stderr tail.
    let cfg = alerts(
        "[[alert]]\ntype = \"exec\"\ncommand = [\"sh\", \"-c\", \"echo boom >&2; exit 3\"]\n",
    );
    let SinkConfig::Exec(e) = &cfg[0].sink else {
        panic!()
    };
    let msg = alert::ExecSink::new("exec", e)
        .send(&a)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "alert sink exec: [\"sh\", \"-c\", \"echo boom >&2; exit 3\"] exited with status 3: boom"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_sink_refreshes_firing_alerts_and_retries_resolutions() {
    let am = Receiver::start(Some(200));
    let cfg = alerts(&format!(
        "[[alert]]\ntype = \"alertmanager\"\nurl = \"{}\"\n",
        am.url("/am/")
    ));
    let SinkConfig::Alertmanager(c) = &cfg[0].sink else {
        panic!()
    };
    let sink = AlertmanagerSink::new("am", c).unwrap();
    let rfc = |v: &serde_json::Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    // Nothing firing: recovered and refresh post nothing.
    sink.send(&Alert::new(Event::Recovered, "web", "certificate", "ok"))
        .await
        .unwrap();
    sink.refresh().await.unwrap();
    assert!(am.requests().is_empty());

    sink.send(&handoff_failed("web")).await.unwrap();
    sink.refresh().await.unwrap();
    let got = am.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].path, "/am/api/v2/alerts");
    let (fired, refreshed) = (got[0].json(), got[1].json());
    assert_eq!(fired.as_array().unwrap().len(), 1);
    assert_eq!(fired[0]["labels"], refreshed[0]["labels"]);
    assert_eq!(fired[0]["startsAt"], refreshed[0]["startsAt"]);
    let now = time::OffsetDateTime::now_utc();
    // Firing alerts are held about 5 minutes ahead.
    for body in [&fired, &refreshed] {
        let ahead = rfc(&body[0]["endsAt"]) - now;
        assert!(
            ahead.whole_seconds() > 240 && ahead.whole_seconds() <= 300,
            "{ahead}"
        );
    }

    // The resolution fails: it is kept and delivered by the next refresh.
    am.answer(503);
    let recovered = Alert::new(Event::Recovered, "web", "certificate", "ok");
    assert!(sink.send(&recovered).await.is_err());
    am.answer(200);
    sink.refresh().await.unwrap();
    let got = am.requests();
    assert_eq!(got.len(), 4);
    for r in &got[2..] {
        let body = r.json();
        assert_eq!(body[0]["labels"]["alertname"], "RekeyHandoffFailed");
        let ends = rfc(&body[0]["endsAt"]);
        assert!(
            (ends - time::OffsetDateTime::now_utc()).whole_seconds() <= 0,
            "{body}"
        );
    }
    // Delivered: forgotten, so later refreshes post nothing.
    sink.refresh().await.unwrap();
    assert_eq!(am.requests().len(), 4);
}

/// An https receiver on 127.0.0.1 with a fresh self-signed certificate for
/// 127.0.0.1; answers 200 and counts requests. Returns (addr, cert PEM, count).
async fn tls_receiver() -> (SocketAddr, String, Arc<Mutex<usize>>) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_webhook_trusts_its_trust_bundle_and_nothing_else() {
    let (addr, pem, count) = tls_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("roots.pem");
    std::fs::write(&bundle, pem).unwrap();
    let webhook = |extra: &str| {
        let cfg = alerts(&format!(
            "[[alert]]\ntype = \"webhook\"\nurl = \"https://{addr}/hook\"\n{extra}\n"
        ));
        let SinkConfig::Webhook(w) = &cfg[0].sink else {
            panic!()
        };
        WebhookSink::new("tls", w).unwrap()
    };
    let with_bundle = webhook(&format!("trust_bundle = \"{}\"", bundle.display()));
    with_bundle.send(&handoff_failed("web")).await.unwrap();
    assert_eq!(*count.lock().unwrap(), 1);

    // Without the bundle the same server is not trusted: no request is made.
    let platform_only = webhook("");
    let msg = platform_only
        .send(&handoff_failed("web"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&format!("POST https://{addr}/hook failed: TLS handshake")),
        "{msg}"
    );
    assert!(
        msg.to_lowercase().contains("unknown issuer") || msg.contains("UnknownIssuer"),
        "{msg}"
    );
    assert_eq!(*count.lock().unwrap(), 1);
}

/// A running Alertmanager, stopped on drop.
struct Alertmanager {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Alertmanager {
    fn start(bin: &Path) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
        )
        .unwrap();
        let addr = common::free_addr();
        let log = std::fs::File::create(dir.path().join("am.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let am = Alertmanager {
            child,
            addr,
            _dir: dir,
        };
        common::wait_for(Duration::from_secs(30), "alertmanager ready", || {
            get(am.addr, "/-/ready").filter(|(code, _)| *code == 200)
        });
        am
    }

    /// The alerts it lists, as JSON.
    fn alerts(&self, query: &str) -> Vec<serde_json::Value> {
        let (code, body) = get(self.addr, &format!("/api/v2/alerts{query}")).unwrap_or_default();
        assert!(code == 200 || code == 0, "{code}: {body}");
        serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap_or_default()
    }
}

/// An HTTP/1.0 GET (so the answer is never chunked); (status, body).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf.split_once("\r\n\r\n")?.1.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_lists_the_alert_and_recovery_resolves_it() {
    let Some(bin) = common::live_binary(
        "prometheus-alertmanager",
        "Debian package prometheus-alertmanager",
    ) else {
        return;
    };
    let am = Alertmanager::start(&bin);
    let results = Results::default();
    let alerter = start(
        &format!(
            "[[alert]]\ntype = \"alertmanager\"\nurl = \"http://{}/\"\n",
            am.addr
        ),
        &results,
    );
    let host = alert::hostname();
    alerter.raise(handoff_failed("web"));
    alerter.raise(Alert::new(Event::Expiring, "api", "certificate", "2h left"));
    let firing = wait_for(Duration::from_secs(20), "the alert in alertmanager", || {
        let list = am.alerts("");
        list.iter()
            .find(|a| a["labels"]["credential"] == "web")
            .cloned()
            .filter(|_| list.len() == 2)
    })
    .await;
    assert_eq!(firing["labels"]["alertname"], "RekeyHandoffFailed");
    assert_eq!(firing["labels"]["severity"], "critical");
    assert_eq!(firing["labels"]["instance"], host);
    assert_eq!(firing["labels"]["kind"], "certificate");
    assert_eq!(firing["status"]["state"], "active");
    assert_eq!(firing["annotations"]["rolled_back"], "true");
    assert_eq!(firing["annotations"]["served_fingerprint"], "sha256:old");

    alerter.raise(Alert::new(
        Event::Recovered,
        "web",
        "certificate",
        "verified again",
    ));
    wait_for(Duration::from_secs(20), "the web alert resolved", || {
        let active = am.alerts("?active=true");
        let web_active = active
            .iter()
            .any(|a| a["labels"]["credential"] == "web" && a["status"]["state"] == "active");
        // The other credential's alert keeps firing.
        let api_active = active.iter().any(|a| a["labels"]["credential"] == "api");
        (!web_active && api_active).then_some(())
    })
    .await;
    assert!(alerter.flush(Duration::from_secs(10)).await);
    let am_results = results.of("alertmanager");
    assert_eq!(
        am_results,
        [
            (Event::HandoffFailed, "sent".to_string()),
            (Event::Expiring, "sent".to_string()),
            (Event::Recovered, "sent".to_string())
        ]
    );
}
