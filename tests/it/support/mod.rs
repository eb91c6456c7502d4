//! Shared helpers for the integration tests: a daemon process on a random
//! loopback port, config files in a temp dir, polling with deadlines, and
//! (in the submodules) the real servers and in-test fakes the tests run
//! against.

pub mod alert;
pub mod alertmanager;
pub mod bao;
pub mod bao_keys;
pub mod certs;
pub mod fake_http;
pub mod fake_issuer;
pub mod invariants;
pub mod keyservice;
pub mod notify;
pub mod pebble;
pub mod scorecard;
pub mod tinyproxy;
pub mod vault;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rekey::status::{CredentialStatus, RotateOutcome, State};

/// The rekey binary built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rekey")
}

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Poll `f` until it returns Some or `timeout` passes; panics naming `what`
/// on timeout.
pub fn wait_for<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_until(Instant::now() + timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Poll `f` until it returns Some, or None once `deadline` passes (for
/// waits whose timeout is an outcome, not a failure). The one polling loop:
/// quick at first, then every 100 ms.
pub fn wait_until<T>(deadline: Instant, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request; returns (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    exchange(s, &addr.to_string(), method, path)
}

/// One HTTP/1.1 request over a Unix socket (the daemon's admin socket).
pub fn http_unix(socket: &Path, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(130)))?;
    exchange(s, "localhost", method, path)
}

fn exchange(
    mut s: impl Read + Write,
    host: &str,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    // Bodies are small and sent with Content-Length, not chunked.
    Ok((status, body.to_string()))
}

/// `/status`: every credential's status, typed as the daemon serialises
/// it (None while the endpoint does not answer 200).
pub fn statuses(addr: SocketAddr) -> Option<Vec<CredentialStatus>> {
    let (code, body) = http(addr, "GET", "/status").ok()?;
    if code != 200 {
        return None;
    }
    let all = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/status does not parse as CredentialStatus: {e}: {body}"));
    Some(all)
}

/// The status of credential `name`, typed as the daemon serialises it.
pub fn cred(addr: SocketAddr, name: &str) -> Option<CredentialStatus> {
    statuses(addr)?.into_iter().find(|c| c.name == name)
}

/// `/status` as untyped JSON: only for the tests that check the wire shape
/// itself (a field left out, how a value is spelled), which the typed
/// reads would hide.
pub fn status_json(addr: SocketAddr) -> Option<serde_json::Value> {
    let (code, body) = http(addr, "GET", "/status").ok()?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// Poll `/status` until credential `name` is `valid`; its status.
pub fn wait_valid(addr: SocketAddr, name: &str, timeout: Duration) -> CredentialStatus {
    wait_for(timeout, &format!("{name} to be valid"), || {
        cred(addr, name).filter(|s| s.state == State::Valid)
    })
}

/// A temp dir with a config file in it.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            addr: free_addr(),
        }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// Write `rekey.toml`: a daemon section pointing into the temp dir, a
    /// local CA named `dev`, and `certs` appended verbatim.
    pub fn write_config(&self, certs: &str) -> PathBuf {
        let text = format!(
            "[daemon]\nstate_dir = \"{state}\"\nlisten = \"{addr}\"\n\n[issuer.dev]\ntype = \"local-ca\"\n\n{certs}",
            state = self.path("state").display(),
            addr = self.addr,
        );
        let p = self.path("rekey.toml");
        std::fs::write(&p, text).unwrap();
        p
    }
    /// Add `line` (TOML, e.g. `max_issuances = "unlimited"`) to the
    /// `[issuer.dev]` table that [`Env::write_config`] wrote.
    pub fn dev_issuer(&self, line: &str) {
        self.issuer_line("dev", line);
    }
    /// Add `line` (TOML) to the `[issuer.NAME]` table of `rekey.toml`.
    pub fn issuer_line(&self, name: &str, line: &str) {
        let p = self.path("rekey.toml");
        let table = format!("[issuer.{name}]\n");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(&table), "no {table} in {text}");
        let text = text.replacen(&table, &format!("{table}{line}\n"), 1);
        std::fs::write(&p, text).unwrap();
    }
    /// Add `line` (TOML, e.g. `reload_window = "1s"`) to the `[daemon]`
    /// table that [`Env::write_config`] wrote.
    pub fn daemon_line(&self, line: &str) {
        let p = self.path("rekey.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        let text = text.replacen("[daemon]\n", &format!("[daemon]\n{line}\n"), 1);
        std::fs::write(&p, text).unwrap();
    }
    /// Like [`Env::write_config`], with `daemon.audit_log` at `audit.log`.
    pub fn write_config_audited(&self, certs: &str) -> PathBuf {
        let p = self.write_config(certs);
        let text = std::fs::read_to_string(&p).unwrap().replacen(
            "[daemon]\n",
            &format!(
                "[daemon]\naudit_log = \"{}\"\n",
                self.path("audit.log").display()
            ),
            1,
        );
        std::fs::write(&p, text).unwrap();
        p
    }
    /// The audit log's records (from [`Env::write_config_audited`]), typed
    /// as rekey writes them.
    pub fn audit(&self) -> Vec<rekey::audit::Record> {
        std::fs::read_to_string(self.path("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("an audit line is not a record: {e}: {l}"))
            })
            .collect()
    }
    /// Run `rekey retire NAME -c rekey.toml` (the admin socket): exit code and output.
    pub fn retire(&self, name: &str) -> (i32, String) {
        let out = Command::new(bin())
            .args(["retire", name, "-c"])
            .arg(self.path("rekey.toml"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }
    /// An exec key service: `mint.sh`, which prints the key `s3cret-N`
    /// with id `exec-N` (valid until 2099) and counts its mints in the
    /// returned counter file.
    pub fn mint_script(&self) -> (PathBuf, PathBuf) {
        let (mint, count) = (self.path("mint.sh"), self.path("minted"));
        std::fs::write(
            &mint,
            format!(
                "#!/bin/sh\nn=$(($(cat {c} 2>/dev/null || echo 0) + 1))\necho $n > {c}\n\
                 printf '{{\"secret\": \"s3cret-%s\", \"id\": \"exec-%s\", \"expires_at\": \"2099-01-01T00:00:00Z\"}}' $n $n\n",
                c = count.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&mint, std::fs::Permissions::from_mode(0o755)).unwrap();
        (mint, count)
    }
    /// A certificate section with files under `tls/` (cert, key, fullchain, ca).
    pub fn cert_section(&self, name: &str, extra: &str) -> String {
        let d = self.path("tls").join(name);
        format!(
            "[[certificate]]\nname = \"{name}\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\nip_addresses = [\"127.0.0.1\"]\n\
             files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\", fullchain = \"{d}/fullchain.pem\", ca = \"{d}/ca.pem\" }}\n{extra}\n",
            d = d.display()
        )
    }
    /// Start `rekey run` on this config; logs go to `daemon.log`.
    pub fn start(&self) -> Daemon {
        self.start_with_env(&[])
    }

    /// Like [`Env::start`], with extra environment variables.
    pub fn start_with_env(&self, vars: &[(&str, &str)]) -> Daemon {
        let mut cmd = self.run_command();
        cmd.env("REKEY_LOG", "debug").envs(vars.iter().copied());
        let mut d = self.spawn(&mut cmd);
        wait_for(Duration::from_secs(20), "the daemon's endpoint", || {
            // A daemon that exited (a bad config, a state dir still locked)
            // fails at once, with what it said.
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("the daemon exited ({st}) before serving:\n{}", self.log());
            }
            http(self.addr, "GET", "/healthz")
                .ok()
                .filter(|r| r.0 == 200)
        });
        d
    }

    /// `rekey run -c rekey.toml`, not yet started, for a test that starts
    /// it its own way (another user, its own environment) with [`Env::spawn`].
    pub fn run_command(&self) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "-c"]).arg(self.path("rekey.toml"));
        cmd
    }

    /// Start `cmd` (a [`Env::run_command`], or a wrapper that runs rekey) as
    /// this env's daemon, stdin closed and output appended to `daemon.log`;
    /// returns at once, without waiting for the endpoint.
    pub fn spawn(&self, cmd: &mut Command) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon {
            child,
            addr: self.addr,
            socket: self.socket(),
        }
    }

    /// Give the temp dir, `tls/` and `tls/web` to `nobody`, so a daemon
    /// running as nobody can work in them.
    pub fn hand_to_nobody(&self) {
        let nobody = nix::unistd::Uid::from_raw(NOBODY);
        let nogroup = nix::unistd::Gid::from_raw(NOBODY);
        std::fs::create_dir_all(self.path("tls/web")).unwrap();
        for p in [self.dir.path(), &self.path("tls"), &self.path("tls/web")] {
            nix::unistd::chown(p, Some(nobody), Some(nogroup)).unwrap();
        }
    }

    /// The admin socket of a daemon on [`Env::write_config`]'s state dir.
    pub fn socket(&self) -> PathBuf {
        self.path("state/rekey.sock")
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }
}

/// A running daemon, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    /// Its admin socket, where rotate and retire are served.
    pub socket: PathBuf,
}

impl Daemon {
    /// POST `path` (`/v1/rotate/NAME`, `/v1/retire/NAME`) on the admin socket.
    pub fn post(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_unix(&self.socket, "POST", path)
    }

    /// Ask for a rotation of every credential in `names` at the same moment
    /// (one thread each, released together); each answer's status code and
    /// outcome, in the order of `names` (code 0 and no outcome when there
    /// was no answer: the daemon died).
    pub fn rotate_all(&self, names: &[String]) -> Vec<(u16, Option<RotateOutcome>)> {
        let start = std::sync::Arc::new(std::sync::Barrier::new(names.len()));
        let asks: Vec<_> = names
            .iter()
            .map(|n| {
                let (socket, path, start) = (
                    self.socket.clone(),
                    format!("/v1/rotate/{n}"),
                    start.clone(),
                );
                std::thread::spawn(move || {
                    start.wait();
                    let (code, body) = http_unix(&socket, "POST", &path).unwrap_or_default();
                    (code, serde_json::from_str(&body).ok())
                })
            })
            .collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    }

    /// Send a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let stopped = wait_until(Instant::now() + Duration::from_secs(20), || {
            self.child.try_wait().ok().flatten()
        });
        if stopped.is_none() {
            // Never leave it holding the state dir for the next start (Drop
            // kills and reaps it); None tells the caller it did not stop.
            eprintln!("the daemon did not stop within 20 s of SIGTERM; killing it");
        }
        stopped?.code()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Read the cert and key at the given paths; Ok((fingerprint, matches)) when
/// both parse; Err with what is wrong otherwise.
pub fn pair(cert: &Path, key: &Path) -> Result<(String, bool), String> {
    let cb = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let kb = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    pair_bytes(&cb, &kb)
}

/// Like [`pair`], on bytes already read.
pub fn pair_bytes(cb: &[u8], kb: &[u8]) -> Result<(String, bool), String> {
    let ders = rekey::cert::pem_certs(cb, "cert").map_err(|e| e.to_string())?;
    let der = ders.first().ok_or("no certificate in the cert file")?;
    let info = rekey::cert::parse_der(der).map_err(|e| e.to_string())?;
    let kp = rekey::cert::pem_private_key(kb).ok_or("no key in the key file")?;
    let key = rekey::cert::load_key(&kp, "key").map_err(|e| e.to_string())?;
    Ok((info.fingerprint, info.public_key == key.public_key()))
}

/// The uid and gid of `nobody` (and `nogroup`) on Debian.
pub const NOBODY: u32 = 65534;

/// Resident memory of process `pid` in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// File mode bits.
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A live test's server program. Under `scripts/test` (REKEY_REQUIRE_LIVE=1,
/// which installs it) a missing program fails the test; under a bare
/// `cargo test` the test is skipped, saying why (the caller returns on None).
pub fn live_binary(name: &str, install_hint: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var_os("REKEY_REQUIRE_LIVE").is_some() {
            panic!("{name} is required for this live test but is not installed ({install_hint}); scripts/test installs it");
        }
        eprintln!("SKIPPED: {name} is not installed ({install_hint}); run scripts/test to install it and run this test");
    }
    found
}

/// The SHA-256 fingerprint of the leaf a TLS server presents, read with
/// Python's ssl module: an implementation independent of rekey's probes.
pub fn served_fingerprint(addr: SocketAddr, sni: &str) -> Option<String> {
    let script = "import ssl,socket,hashlib,sys\n\
ctx=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname=False; ctx.verify_mode=ssl.CERT_NONE\n\
s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5)\n\
t=ctx.wrap_socket(s,server_hostname=sys.argv[3])\n\
print('sha256:'+hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest())\n";
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &addr.ip().to_string(),
            &addr.port().to_string(),
            sni,
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A real nginx (Debian nginx-light) serving TLS from given files, with its
/// own prefix dir and pid file; stopped on drop.
pub struct Nginx {
    pub child: Child,
    pub addr: SocketAddr,
    pub pid_file: PathBuf,
}

impl Nginx {
    /// Write a config under `prefix` for `cert`/`key` on a random port.
    pub fn configure(prefix: &Path, cert: &Path, key: &Path) -> (PathBuf, SocketAddr) {
        let addr = free_addr();
        for d in ["tmp", "logs"] {
            std::fs::create_dir_all(prefix.join(d)).unwrap();
        }
        let p = prefix.display();
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 2;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_body_temp_path {p}/tmp/body;\n proxy_temp_path {p}/tmp/proxy;\n\
             fastcgi_temp_path {p}/tmp/fastcgi;\n uwsgi_temp_path {p}/tmp/uwsgi;\n scgi_temp_path {p}/tmp/scgi;\n\
             server {{\n  listen {addr} ssl;\n  server_name localhost;\n  ssl_certificate {};\n  ssl_certificate_key {};\n\
             location / {{ return 200 \"ok\\n\"; }}\n }}\n}}\n",
            cert.display(),
            key.display()
        );
        let path = prefix.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        (path, addr)
    }

    /// Write a config under `prefix` with one TLS server block per
    /// `(server_name, fullchain, key)`, all on one random port and told
    /// apart by SNI (the first is also the default server).
    pub fn configure_sites(
        prefix: &Path,
        sites: &[(String, PathBuf, PathBuf)],
    ) -> (PathBuf, SocketAddr) {
        let addr = free_addr();
        for d in ["tmp", "logs"] {
            std::fs::create_dir_all(prefix.join(d)).unwrap();
        }
        let p = prefix.display();
        let mut servers = String::new();
        for (i, (name, cert, key)) in sites.iter().enumerate() {
            let default = if i == 0 { " default_server" } else { "" };
            servers.push_str(&format!(
                " server {{\n  listen {addr} ssl{default};\n  server_name {name};\n  ssl_certificate {};\n  ssl_certificate_key {};\n  location / {{ return 200 \"{name}\\n\"; }}\n }}\n",
                cert.display(),
                key.display()
            ));
        }
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 2;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log info;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n access_log off;\n server_names_hash_bucket_size 128;\n client_body_temp_path {p}/tmp/body;\n proxy_temp_path {p}/tmp/proxy;\n\
             fastcgi_temp_path {p}/tmp/fastcgi;\n uwsgi_temp_path {p}/tmp/uwsgi;\n scgi_temp_path {p}/tmp/scgi;\n{servers}}}\n"
        );
        let path = prefix.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        (path, addr)
    }

    /// How many times the nginx under `prefix` has reloaded its
    /// configuration: its master's `reconfiguring` notices (SIGHUPs that
    /// arrive together count once, as they cost once).
    pub fn reloads(prefix: &Path) -> usize {
        std::fs::read_to_string(prefix.join("logs/error.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.ends_with(": reconfiguring"))
            .count()
    }

    /// Start nginx on a config written by [`Nginx::configure`]; waits until it serves TLS.
    pub fn start(nginx: &Path, prefix: &Path, conf: &Path, addr: SocketAddr) -> Nginx {
        let child = Command::new(nginx)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let n = Nginx {
            child,
            addr,
            pid_file: prefix.join("nginx.pid"),
        };
        wait_for(Duration::from_secs(10), "nginx to serve TLS", || {
            served_fingerprint(addr, "localhost")
        });
        n
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let exited = wait_until(Instant::now() + Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten()
        });
        if exited.is_some() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
