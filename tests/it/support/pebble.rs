//! Live ACME test harness: a real Pebble and pebble-challtestsrv on random
//! loopback ports with a TLS certificate made here, plus tiny servers the
//! tests need (a webroot HTTP server, a TLS server for an ARI directory).
//! Every process and thread stops on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{fake_http, free_addr, live_binary, wait_for};

/// A child process killed and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA and a server certificate for 127.0.0.1/localhost, as PEM files.
#[derive(Clone)]
pub struct TestTls {
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

/// Write a fresh CA and a server certificate for `127.0.0.1` and `localhost` into `dir`.
pub fn test_tls(dir: &Path) -> TestTls {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "rekey test TLS CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let t = TestTls {
        ca_pem: dir.join("tls-ca.pem"),
        cert_pem: dir.join("tls-cert.pem"),
        key_pem: dir.join("tls-key.pem"),
    };
    std::fs::write(&t.ca_pem, ca.pem()).unwrap();
    std::fs::write(&t.cert_pem, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(&t.key_pem, key.serialize_pem()).unwrap();
    t
}

/// How to run Pebble.
#[derive(Default, Clone)]
pub struct Opts {
    /// `PEBBLE_WFE_NONCEREJECT` percentage.
    pub nonce_reject: u32,
    /// `Some(max seconds)`: validation sleeps on (`PEBBLE_VA_SLEEPTIME`);
    /// `None`: `PEBBLE_VA_NOSLEEP=1`.
    pub sleep: Option<u32>,
    /// `(kid, base64url HMAC key)`: EAB required.
    pub eab: Option<(String, String)>,
    /// Listen here instead of a fresh port (to start Pebble late on a known port).
    pub listen: Option<SocketAddr>,
    /// The http-01 validation port (a fresh one when None).
    pub http_port: Option<u16>,
    /// Pebble's TLS certificate, made beforehand (a fresh one when None).
    pub tls: Option<TestTls>,
}

/// A running Pebble with its challenge test server.
pub struct Pebble {
    pub dir: tempfile::TempDir,
    pub url: String,
    /// Its ACME listener (what a proxy's CONNECT names).
    pub addr: SocketAddr,
    /// Roots for TLS to Pebble (its listener certificate's CA).
    pub bundle: PathBuf,
    /// Where Pebble sends http-01 validation requests (on 127.0.0.1).
    pub http_port: u16,
    /// challtestsrv's management API.
    pub mgmt: SocketAddr,
    /// Pebble's own management API (https; `/cert-status-by-serial/`).
    pub pebble_mgmt: SocketAddr,
    _cts: Proc,
    _pebble: Proc,
}

/// Whether the live programs exist; `None` means the test is skipped.
pub fn have_pebble() -> Option<()> {
    live_binary("pebble", "Debian package pebble")?;
    live_binary("pebble-challtestsrv", "Debian package pebble")?;
    Some(())
}

impl Pebble {
    /// Start challtestsrv and Pebble; waits until Pebble accepts connections.
    pub fn start(opts: Opts) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let tls = opts.tls.clone().unwrap_or_else(|| test_tls(dir.path()));
        let addr = opts.listen.unwrap_or_else(free_addr);
        let http_port = opts.http_port.unwrap_or_else(|| free_addr().port());
        let dns = free_addr();
        let mgmt = free_addr();
        let pebble_mgmt = free_addr();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let cts = Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &dns.to_string(),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args(["-management", &mgmt.to_string(), "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let cts = Proc(cts);
        let mut cfg = serde_json::json!({"pebble": {
            "listenAddress": addr.to_string(),
            "managementListenAddress": pebble_mgmt.to_string(),
            "certificate": tls.cert_pem,
            "privateKey": tls.key_pem,
            "httpPort": http_port,
            "tlsPort": free_addr().port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": opts.eab.is_some(),
        }});
        if let Some((kid, key)) = &opts.eab {
            cfg["pebble"]["externalAccountMACKeys"] = serde_json::json!({ kid: key });
        }
        let cfg_path = dir.path().join("pebble.json");
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let mut cmd = Command::new("pebble");
        cmd.arg("-config")
            .arg(&cfg_path)
            .args(["-dnsserver", &dns.to_string()])
            .env("PEBBLE_WFE_NONCEREJECT", opts.nonce_reject.to_string())
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"));
        match opts.sleep {
            Some(max) => cmd.env("PEBBLE_VA_SLEEPTIME", max.to_string()),
            None => cmd.env("PEBBLE_VA_NOSLEEP", "1"),
        };
        let mut pebble = Proc(cmd.spawn().unwrap());
        let logs = dir.path().to_path_buf();
        wait_for(Duration::from_secs(20), "pebble to listen", || {
            if let Ok(Some(st)) = pebble.0.try_wait() {
                let text = std::fs::read_to_string(logs.join("pebble.log")).unwrap_or_default();
                panic!("pebble exited ({st}):\n{text}");
            }
            TcpStream::connect(addr).ok()
        });
        wait_for(Duration::from_secs(20), "challtestsrv to listen", || {
            TcpStream::connect(mgmt).ok()
        });
        Pebble {
            url: format!("https://{addr}/dir"),
            addr,
            bundle: tls.ca_pem.clone(),
            http_port,
            mgmt,
            pebble_mgmt,
            dir,
            _cts: cts,
            _pebble: pebble,
        }
    }

    /// `[issuer.NAME]` TOML for this Pebble with the given challenge and extra keys.
    pub fn issuer_toml(&self, name: &str, challenge: &str, extra: &str) -> String {
        format!(
            "[issuer.{name}]\ntype = \"acme\"\ndirectory = \"{}\"\ntrust_bundle = \"{}\"\ncontact = [\"mailto:ops@rekey.test\"]\nchallenge = {challenge}\n{extra}\n",
            self.url,
            self.bundle.display()
        )
    }

    /// The http-01 listen challenge on the port Pebble validates.
    pub fn listen_challenge(&self) -> String {
        format!(
            "{{ type = \"http-01\", listen = \"127.0.0.1:{}\" }}",
            self.http_port
        )
    }

    /// What Pebble's management API says of the certificate with serial
    /// `serial` (hex, colons allowed): its JSON answer, or the error.
    pub fn cert_status(&self, serial: &str) -> Result<serde_json::Value, String> {
        let script = "import ssl,sys,urllib.request\n\
ctx=ssl.create_default_context(cafile=sys.argv[2])\n\
print(urllib.request.urlopen(sys.argv[1],context=ctx,timeout=5).read().decode())\n";
        let url = format!(
            "https://{}/cert-status-by-serial/{}",
            self.pebble_mgmt,
            serial.replace(':', "")
        );
        let out = Command::new("python3")
            .args(["-c", script, &url])
            .arg(&self.bundle)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).to_string());
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Pebble's log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

/// A thread-per-connection server on 127.0.0.1, stopped on drop.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One parsed request: method and path.
pub type Handler = Arc<dyn Fn(&str, &str) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync>;

impl Server {
    /// Serve `handler` on `addr` (plain HTTP, or TLS with `tls`).
    pub fn start(addr: SocketAddr, tls: Option<&TestTls>, handler: Handler) -> Server {
        Server::serve(TcpListener::bind(addr).unwrap(), tls, handler)
    }

    /// Serve `handler` on a listener already bound.
    pub fn serve(listener: TcpListener, tls: Option<&TestTls>, handler: Handler) -> Server {
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let config = tls.map(|t| fake_http::tls_config(&t.cert_pem, &t.key_pem));
        let answer: fake_http::Handler = Arc::new(move |req, w| {
            let (status, headers, body) = handler(&req.method, &req.path);
            let headers: String = headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}\r\n"))
                .collect();
            fake_http::respond(w, &format!("{status} X"), &headers, &body);
        });
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                let (config, answer) = (config.clone(), answer.clone());
                std::thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                    fake_http::serve_one(tcp, config, &answer);
                });
            }
        });
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A webroot server: serves files under `root`, and records the paths asked.
pub fn webroot_server(addr: SocketAddr, root: PathBuf) -> (Server, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let handler: Handler = Arc::new(move |_m, path| {
        s.lock().unwrap().push(path.to_string());
        let rel = path.trim_start_matches('/');
        if rel.contains("..") {
            return (400, vec![], vec![]);
        }
        match std::fs::read(root.join(rel)) {
            Ok(b) => (200, vec![], b),
            Err(_) => (404, vec![], vec![]),
        }
    });
    (Server::start(addr, None, handler), seen)
}

/// A dns-01 hook script that sets/clears TXT records through challtestsrv's
/// management API (bash's /dev/tcp: no curl needed) and logs each call.
pub fn dns_hook(dir: &Path, mgmt: SocketAddr) -> (PathBuf, PathBuf) {
    let log = dir.join("hook.log");
    let script = dir.join("dns-hook");
    let text = format!(
        r#"#!/bin/bash
set -eu
echo "$1 $REKEY_DNS_NAME $REKEY_DNS_DOMAIN $REKEY_DNS_VALUE" >> '{log}'
if [ "$1" = present ]; then
  path=/set-txt; body="{{\"host\":\"$REKEY_DNS_NAME.\",\"value\":\"$REKEY_DNS_VALUE\"}}"
else
  path=/clear-txt; body="{{\"host\":\"$REKEY_DNS_NAME.\"}}"
fi
exec 3<>/dev/tcp/{ip}/{port}
printf 'POST %s HTTP/1.1\r\nHost: {ip}\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "$path" "${{#body}}" "$body" >&3
read -r status <&3
case "$status" in *" 200"*) ;; *) echo "challtestsrv said: $status" >&2; exit 1;; esac
"#,
        log = log.display(),
        ip = mgmt.ip(),
        port = mgmt.port()
    );
    std::fs::write(&script, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, log)
}
