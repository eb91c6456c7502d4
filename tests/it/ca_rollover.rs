//! The local CA rolls over while an mTLS client talks to a real nginx the
//! whole time: a CA that lives two minutes, leaves of thirty seconds, and
//! two rollovers in a row (next CA created, bundle with both delivered to
//! nginx and to the client, leaves from the new CA, old CA dropped after its
//! last leaf expired), with rekey killed (-9) and restarted in the middle
//! of each. Every handshake is counted; none may fail.

use crate::support as common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rekey::status::State;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The config: a local CA of two minutes that makes its next CA half way,
/// nginx's server certificate (reloaded by SIGHUP, verified over TLS) and
/// the client's certificate (read by the client at every connection).
fn config(env: &Env, nginx: SocketAddr, pid_file: &Path) {
    let (s, c) = (env.path("tls/server"), env.path("tls/client"));
    let text = format!(
        "[daemon]\nstate_dir = \"{state}\"\nlisten = \"{addr}\"\n\n\
         [issuer.dev]\ntype = \"local-ca\"\ncommon_name = \"rollover CA\"\nca_lifetime = \"2m\"\nca_renew_before = \"50%\"\n\n\
         [[certificate]]\nname = \"server\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\nlifetime = \"30s\"\nrenew_before = \"50%\"\n\
         files = {{ fullchain = \"{s}/fullchain.pem\", key = \"{s}/key.pem\", ca = \"{s}/ca.pem\" }}\n\
         reload = {{ type = \"signal\", signal = \"HUP\", pid_file = \"{pid}\" }}\n\
         verify = {{ type = \"tls\", connect = \"{nginx}\", server_name = \"localhost\", timeout = \"10s\" }}\n\n\
         [[certificate]]\nname = \"client\"\nissuer = \"dev\"\ncommon_name = \"client\"\ndns_names = [\"client.test\"]\nlifetime = \"30s\"\nrenew_before = \"50%\"\n\
         swap = \"symlink\"\nfiles = {{ bundle = \"{c}/bundle.pem\", ca = \"{c}/ca.pem\" }}\n",
        state = env.path("state").display(),
        addr = env.addr,
        s = s.display(),
        c = c.display(),
        pid = pid_file.display(),
    );
    std::fs::write(env.path("rekey.toml"), text).unwrap();
}

/// nginx requiring a client certificate that chains to the `ca` file.
fn nginx_conf(prefix: &Path, tls: &Path) -> (std::path::PathBuf, SocketAddr) {
    let addr = free_addr();
    for d in ["tmp", "logs"] {
        std::fs::create_dir_all(prefix.join(d)).unwrap();
    }
    let p = prefix.display();
    let t = tls.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 2;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n access_log off;\n client_body_temp_path {p}/tmp/body;\n proxy_temp_path {p}/tmp/proxy;\n\
         fastcgi_temp_path {p}/tmp/fastcgi;\n uwsgi_temp_path {p}/tmp/uwsgi;\n scgi_temp_path {p}/tmp/scgi;\n\
         server {{\n  listen {addr} ssl;\n  server_name localhost;\n  ssl_certificate {t}/fullchain.pem;\n  ssl_certificate_key {t}/key.pem;\n\
         ssl_client_certificate {t}/ca.pem;\n  ssl_verify_client on;\n\
         location / {{ return 200 \"client $ssl_client_s_dn\\n\"; }}\n }}\n}}\n"
    );
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    (path, addr)
}

/// The subjects' common names of the certificates in a PEM file.
fn bundle_names(path: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let Ok(ders) = rekey::cert::pem_certs(&bytes, "ca") else {
        return Vec::new();
    };
    ders.iter()
        .map(|d| {
            let info = rekey::cert::parse_der(d).unwrap();
            info.subject.trim_start_matches("CN=").to_string()
        })
        .collect()
}

/// One mTLS exchange the way an app does it: the client's certificate and
/// its trust bundle read from rekey's files, a full handshake with nginx
/// (which checks the client against its bundle), an HTTP request; Ok when
/// nginx answers 200.
fn exchange(client_dir: &Path, addr: SocketAddr) -> Result<(), String> {
    let bundle = std::fs::read(client_dir.join("bundle.pem")).map_err(|e| e.to_string())?;
    let ca = std::fs::read(client_dir.join("ca.pem")).map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(&bundle).map_err(|e| format!("client key: {e}"))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bundle)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("client chain: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(rekey::net::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("handshake or request: {e}"))?;
    let mut reply = Vec::new();
    match tls.read_to_end(&mut reply) {
        Ok(_) => {}
        // nginx closes without close_notify after `Connection: close`.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !reply.is_empty() => {}
        Err(e) => return Err(format!("reading the answer: {e}")),
    }
    let head = String::from_utf8_lossy(&reply);
    let status = head.lines().next().unwrap_or_default();
    if status.contains(" 200 ") {
        Ok(())
    } else {
        Err(format!("nginx answered {status:?}"))
    }
}

#[test]
fn an_mtls_client_never_fails_a_handshake_through_two_ca_rollovers_and_two_kills() {
    let Some(nginx) = live_binary("nginx", "Debian package nginx-light") else {
        return;
    };
    let env = Env::new();
    let prefix = env.path("nginx");
    let (server_tls, client_tls) = (env.path("tls/server"), env.path("tls/client"));
    let (conf, addr) = nginx_conf(&prefix, &server_tls);
    config(&env, addr, &prefix.join("nginx.pid"));
    let mut daemon = Some(env.start());
    wait_for(Duration::from_secs(30), "both first certificates", || {
        let s = cred(env.addr, "server")?;
        let c = cred(env.addr, "client")?;
        (s.state == State::Valid && c.state == State::Valid).then_some(())
    });
    let _nginx = Nginx::start(&nginx, &prefix, &conf, addr);
    exchange(&client_tls, addr).expect("the first exchange");

    // The client talks to nginx the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new((0u64, Vec::<String>::new())));
    let client = {
        let (stop, tally, dir) = (stop.clone(), tally.clone(), client_tls.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = exchange(&dir, addr);
                let mut t = tally.lock().unwrap();
                t.0 += 1;
                if let Err(e) = r {
                    t.1.push(e);
                }
                drop(t);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Watch nginx's trust bundle go through two rollovers:
    // G1 -> G1+G2 -> G2 -> G2+G3 -> G3. Each time a new CA appears, rekey
    // is killed (-9) and started again: the rollover goes on from its
    // journal.
    let started = Instant::now();
    let mut seen: Vec<Vec<String>> = Vec::new();
    let want = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let last = want(&["rollover CA G3"]);
    wait_for(Duration::from_secs(300), "two CA rollovers", || {
        let now = bundle_names(&server_tls.join("ca.pem"));
        if !now.is_empty() && seen.last() != Some(&now) {
            eprintln!(
                "{:>5.1}s  nginx trusts {now:?}",
                started.elapsed().as_secs_f64()
            );
            seen.push(now.clone());
            if now.len() == 2 {
                if let Some(d) = daemon.take() {
                    d.kill9();
                }
                daemon = Some(env.start());
                eprintln!(
                    "{:>5.1}s  rekey killed and started again",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        (now == last).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let (handshakes, failures) = tally.lock().unwrap().clone();
    eprintln!(
        "{handshakes} mTLS exchanges in {:.0}s, {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(failures.is_empty(), "failed exchanges: {failures:?}");
    assert!(handshakes > 500, "only {handshakes} exchanges");
    assert_eq!(
        seen,
        vec![
            want(&["rollover CA"]),
            want(&["rollover CA", "rollover CA G2"]),
            want(&["rollover CA G2"]),
            want(&["rollover CA G2", "rollover CA G3"]),
            want(&["rollover CA G3"]),
        ],
        "every step of both rollovers, in order"
    );
    // The client's bundle went the same way, and both leaves come from the newest CA.
    assert_eq!(bundle_names(&client_tls.join("ca.pem")), last);
    // Untyped on purpose: the wire shape, `shortened_by_ca` left out (not
    // written as null) for a certificate the CA did not cut short.
    let all = status_json(env.addr).unwrap();
    for name in ["server", "client"] {
        let s = all
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap();
        assert!(s.get("shortened_by_ca").is_none(), "{name}: {s}");
    }
    let fullchain = std::fs::read(server_tls.join("fullchain.pem")).unwrap();
    let leaf =
        rekey::cert::parse_der(&rekey::cert::pem_certs(&fullchain, "leaf").unwrap()[0]).unwrap();
    assert!(leaf.issuer.contains("G3"), "{}", leaf.issuer);
    let log = env.log();
    assert_eq!(log.matches("event=\"ca_created\"").count(), 2, "{log}");
    assert_eq!(log.matches("event=\"ca_dropped\"").count(), 2, "{log}");
    assert!(
        !log.contains("can no longer sign"),
        "a switch was forced: {log}"
    );
    assert!(!log.contains("event=\"handoff_failed\""), "{log}");
}

#[test]
fn a_certificate_the_ca_would_outlive_is_shortened_with_a_warning_and_a_status_field() {
    let env = Env::new();
    let d = env.path("tls/web");
    let text = format!(
        "[daemon]\nstate_dir = \"{state}\"\nlisten = \"{addr}\"\n\n\
         [issuer.dev]\ntype = \"local-ca\"\nca_lifetime = \"10m\"\n\n\
         [[certificate]]\nname = \"web\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\nlifetime = \"1h\"\n\
         files = {{ fullchain = \"{d}/fullchain.pem\", key = \"{d}/key.pem\" }}\n",
        state = env.path("state").display(),
        addr = env.addr,
        d = d.display(),
    );
    std::fs::write(env.path("rekey.toml"), text).unwrap();
    let _d = env.start();
    let s = wait_for(Duration::from_secs(20), "the first certificate", || {
        cred(env.addr, "web").filter(|s| s.state == State::Valid)
    });
    let why = s
        .shortened_by_ca
        .as_deref()
        .unwrap_or_else(|| panic!("{s:?}"));
    assert!(
        why.contains("local CA \"dev\"") && why.contains("ends at"),
        "{why}"
    );
    let log = env.log();
    assert!(log.contains("event=\"shortened_by_ca\""), "{log}");
    let out = std::process::Command::new(bin())
        .args(["status", "--addr"])
        .arg(env.addr.to_string())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("shortened by its CA"), "{table}");
}
