//! Real servers for tests/it/apps.rs, started on 127.0.0.1 with random ports
//! as the users they need, in the test's temp dir, and stopped on drop:
//! PostgreSQL (initdb + pg_ctl as `postgres`), Postfix (a private config
//! directory, `postfix -c DIR start`) and slapd (a slapd.conf, run as
//! `openldap`).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::common::wait_for;

/// Let the servers' users through the test's temp dir (created 0700).
pub fn open_to_all(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `chown USER path`.
fn chown(user: &str, path: &Path) {
    let u = nix::unistd::User::from_name(user).unwrap().unwrap();
    std::os::unix::fs::chown(path, Some(u.uid.as_raw()), Some(u.gid.as_raw())).unwrap();
}

/// Run `argv` as `user` (runuser), panicking with its output on failure.
fn run_as(user: &str, argv: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", user, "--"])
        .args(argv)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{argv:?} as {user}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The leaf a STARTTLS server at `addr` presents, read by `openssl
/// s_client -starttls PROTO`: `sha256:...`, or None when there is none.
pub fn served_starttls(openssl: &Path, addr: SocketAddr, proto: &str) -> Option<String> {
    let out = Command::new(openssl)
        .args([
            "s_client",
            "-starttls",
            proto,
            "-servername",
            "localhost",
            "-connect",
        ])
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ders = rekey::cert::pem_certs(text.as_bytes(), "s_client").ok()?;
    ders.first().map(|d| rekey::cert::fingerprint(d))
}

/// A PostgreSQL installation (Debian's postgresql package).
pub struct Postgres {
    pub pg_ctl: PathBuf,
    initdb: PathBuf,
}

/// A running PostgreSQL cluster; stopped (immediate) on drop.
pub struct PgServer {
    pg_ctl: PathBuf,
    data: PathBuf,
    tls: PathBuf,
}

impl Postgres {
    /// The newest installed version's programs; None (skip) or a panic
    /// under REKEY_REQUIRE_LIVE when PostgreSQL is not installed.
    pub fn find() -> Option<Postgres> {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
            .unwrap_or_default();
        versions.retain(|b| b.join("pg_ctl").is_file() && b.join("initdb").is_file());
        versions.sort();
        match versions.pop() {
            Some(bin) => Some(Postgres {
                pg_ctl: bin.join("pg_ctl"),
                initdb: bin.join("initdb"),
            }),
            None if std::env::var_os("REKEY_REQUIRE_LIVE").is_some() => {
                panic!("PostgreSQL is required for this live test but /usr/lib/postgresql/*/bin has no pg_ctl (Debian package postgresql); scripts/test installs it")
            }
            None => {
                eprintln!("SKIPPED: PostgreSQL is not installed (Debian package postgresql); run scripts/test to install it and run this test");
                None
            }
        }
    }

    /// A fresh cluster in `data` on `addr`, TLS from `tls/{fullchain,key}.pem`
    /// when `ssl`; waits until it accepts connections.
    pub fn start(&self, data: &Path, addr: SocketAddr, tls: &Path, ssl: bool) -> PgServer {
        std::fs::create_dir_all(data).unwrap();
        chown("postgres", data);
        let d = data.to_str().unwrap();
        run_as(
            "postgres",
            &[
                self.initdb.to_str().unwrap(),
                "-D",
                d,
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        let conf = format!(
            "listen_addresses = '{}'\nport = {}\nunix_socket_directories = '{d}'\n",
            addr.ip(),
            addr.port()
        );
        let path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&conf);
        std::fs::write(&path, text).unwrap();
        let server = PgServer {
            pg_ctl: self.pg_ctl.clone(),
            data: data.to_path_buf(),
            tls: tls.to_path_buf(),
        };
        if ssl {
            server.ssl_settings();
        }
        let log = data.join("server.log");
        run_as(
            "postgres",
            &[
                self.pg_ctl.to_str().unwrap(),
                "-D",
                d,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        server
    }
}

impl PgServer {
    fn ssl_settings(&self) {
        let path = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            self.tls.join("fullchain.pem").display(),
            self.tls.join("key.pem").display()
        ));
        std::fs::write(&path, text).unwrap();
    }

    /// Turn TLS on (the files rekey manages) and reload.
    pub fn enable_ssl(&self) {
        self.ssl_settings();
        run_as(
            "postgres",
            &[
                self.pg_ctl.to_str().unwrap(),
                "-D",
                self.data.to_str().unwrap(),
                "reload",
            ],
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&self.pg_ctl)
            .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"])
            .stdin(Stdio::null())
            .output();
    }
}

/// A private Postfix instance; stopped on drop.
pub struct Postfix {
    postfix: PathBuf,
    conf: PathBuf,
}

impl Postfix {
    /// Postfix in `dir` (conf/, queue/, data/) with smtpd on `addr`,
    /// STARTTLS from `tls/{fullchain,key}.pem`; waits until it answers.
    pub fn start(postfix: &Path, dir: &Path, addr: SocketAddr, tls: &Path) -> Postfix {
        let (conf, queue, data) = (dir.join("conf"), dir.join("queue"), dir.join("data"));
        for d in [&conf, &queue, &data] {
            std::fs::create_dir_all(d).unwrap();
        }
        chown("postfix", &data);
        let main = format!(
            "compatibility_level = 3.6\nqueue_directory = {q}\ndata_directory = {data}\nmail_owner = postfix\n\
             setgid_group = postdrop\ninet_interfaces = {ip}\ninet_protocols = ipv4\nmyhostname = mx.test\n\
             mydestination =\nalias_maps =\nalias_database =\nmaillog_file_prefixes = {dir}\nmaillog_file = {dir}/maillog\n\
             smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {key}, {chain}\n",
            q = queue.display(),
            data = data.display(),
            ip = addr.ip(),
            dir = dir.display(),
            key = tls.join("key.pem").display(),
            chain = tls.join("fullchain.pem").display(),
        );
        std::fs::write(conf.join("main.cf"), main).unwrap();
        // Only what an SMTP server with STARTTLS needs (Debian's master.cf, trimmed).
        let master = format!(
            "{addr} inet n - n - - smtpd\n\
             pickup unix n - n 60 1 pickup\ncleanup unix n - n - 0 cleanup\nqmgr unix n - n 300 1 qmgr\n\
             tlsmgr unix - - n 1000? 1 tlsmgr\nrewrite unix - - n - - trivial-rewrite\nbounce unix - - n - 0 bounce\n\
             defer unix - - n - 0 bounce\ntrace unix - - n - 0 bounce\nverify unix - - n - 1 verify\n\
             flush unix n - n 1000? 0 flush\nproxymap unix - - n - - proxymap\nsmtp unix - - n - - smtp\n\
             relay unix - - n - - smtp\nshowq unix n - n - - showq\nerror unix - - n - - error\nretry unix - - n - - error\n\
             discard unix - - n - - discard\nlocal unix - n n - - local\nanvil unix - - n - 1 anvil\n\
             scache unix - - n - 1 scache\npostlog unix-dgram n - n - 1 postlogd\n"
        );
        std::fs::write(conf.join("master.cf"), master).unwrap();
        let p = Postfix {
            postfix: postfix.to_path_buf(),
            conf: conf.clone(),
        };
        let out = Command::new(postfix)
            .arg("-c")
            .arg(&conf)
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let log = || std::fs::read_to_string(dir.join("maillog")).unwrap_or_default();
        assert!(out.status.success(), "postfix start: {}", log());
        wait_for(Duration::from_secs(20), "postfix to answer", || {
            std::net::TcpStream::connect(addr).ok()
        });
        p
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(&self.postfix)
            .arg("-c")
            .arg(&self.conf)
            .arg("abort")
            .stdin(Stdio::null())
            .output();
    }
}

/// A slapd on loopback; killed on drop.
pub struct Slapd {
    child: Child,
    /// `sha256:` of the certificate it serves (none without TLS).
    pub fingerprint: String,
}

impl Slapd {
    /// slapd in `dir` on `addr` with a fresh self-signed certificate.
    pub fn start(slapd: &Path, dir: &Path, addr: SocketAddr) -> Slapd {
        Self::spawn(slapd, dir, addr, true)
    }

    /// slapd with no TLS configured: StartTLS is refused.
    pub fn start_without_tls(slapd: &Path, dir: &Path, addr: SocketAddr) -> Slapd {
        Self::spawn(slapd, dir, addr, false)
    }

    fn spawn(slapd: &Path, dir: &Path, addr: SocketAddr, tls: bool) -> Slapd {
        let (db, run) = (dir.join("db"), dir.join("run"));
        for d in [&db, &run] {
            std::fs::create_dir_all(d).unwrap();
            chown("openldap", d);
        }
        let mut conf = format!(
            "include /etc/ldap/schema/core.schema\npidfile {}/slapd.pid\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\n",
            run.display()
        );
        let mut fingerprint = String::new();
        if tls {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            fingerprint = rekey::cert::fingerprint(cert.der());
            std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
            std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
            chown("openldap", &dir.join("key.pem"));
            std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
            conf.push_str(&format!(
                "TLSCertificateFile {d}/cert.pem\nTLSCertificateKeyFile {d}/key.pem\n",
                d = dir.display()
            ));
        }
        conf.push_str(&format!(
            "database mdb\nsuffix \"dc=test\"\ndirectory {}\n",
            db.display()
        ));
        std::fs::write(dir.join("slapd.conf"), conf).unwrap();
        let child = Command::new(slapd)
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .args([
                "-h",
                &format!("ldap://{addr}/"),
                "-u",
                "openldap",
                "-g",
                "openldap",
                "-d",
                "0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(Duration::from_secs(20), "slapd to listen", || {
            std::net::TcpStream::connect(addr).ok()
        });
        Slapd { child, fingerprint }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
