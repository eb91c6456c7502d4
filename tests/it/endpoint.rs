//! The HTTP endpoint of a running daemon: readiness flips, the admin token,
//! and the limits that keep clients from exhausting it. Metrics scraping
//! is in tests/it/metrics.rs.

use crate::support as common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rekey::status::State;

/// Send raw request bytes; returns the whole answer as text ("" when the
/// server closed without answering).
fn raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    // The server may answer 413 and close before it reads all we send.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn code(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn readyz(addr: SocketAddr) -> (u16, serde_json::Value) {
    let (code, body) = http(addr, "GET", "/readyz").unwrap();
    (code, serde_json::from_str(&body).unwrap_or_default())
}

fn status_exit(env: &Env) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .args(["status", "--addr", &env.addr.to_string()])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Make the credential's directory a regular file: publishing into it fails.
fn block(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    std::fs::write(dir, "not a directory").unwrap();
}

#[test]
fn readyz_follows_missing_valid_expired_and_renewed() {
    let env = Env::new();
    // Shortest lifetime; renewals start at half of it.
    env.write_config(&env.cert_section(
        "web",
        "lifetime = \"10s\"\nrenew_before = \"50%\"\njitter = \"0%\"\n",
    ));
    let dir = env.path("tls/web");
    block(&dir);
    let d = env.start();

    // Nothing can be published: not ready, and the reason names it.
    let (_, body) = wait_for(Duration::from_secs(10), "503 missing", || {
        let (c, b) = readyz(d.addr);
        (c == 503 && b["reasons"].to_string().contains("no usable credential")).then_some((c, b))
    });
    assert_eq!(body["ready"], false);
    assert_eq!(body["reasons"][0]["credential"], "web", "{body}");
    let (exit, err) = status_exit(&env);
    assert_eq!(exit, Some(1), "rekey status must fail when not ready");
    assert!(err.contains("not ready: web"), "{err}");

    // Unblock: the retry publishes, and readiness follows.
    std::fs::remove_file(&dir).unwrap();
    wait_for(Duration::from_secs(15), "200 after issuance", || {
        let (c, b) = readyz(d.addr);
        (c == 200 && b["ready"] == true).then_some(())
    });
    assert_eq!(status_exit(&env).0, Some(0));

    // Block again: renewals fail, the certificate runs out.
    block(&dir);
    let (_, body) = wait_for(Duration::from_secs(20), "503 expired", || {
        let (c, b) = readyz(d.addr);
        (c == 503 && b["reasons"].to_string().contains("expired")).then_some((c, b))
    });
    assert_eq!(body["reasons"][0]["credential"], "web", "{body}");
    assert_eq!(status_exit(&env).0, Some(1));

    // Unblock: the next retry renews it, ready again.
    std::fs::remove_file(&dir).unwrap();
    wait_for(Duration::from_secs(15), "200 after renewal", || {
        (readyz(d.addr).0 == 200).then_some(())
    });
    let s = cred(d.addr, "web").unwrap();
    assert_eq!(s.state, State::Valid, "{s:?}");
    assert_eq!(d.terminate(), Some(0));
}

#[test]
fn a_non_loopback_listen_without_a_token_serves_reads_and_never_mutations() {
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    // Every address of the host, probed here through loopback.
    let port = env.addr.port();
    let text = std::fs::read_to_string(env.path("rekey.toml"))
        .unwrap()
        .replace(
            &format!("listen = \"{}\"", env.addr),
            &format!("listen = \"0.0.0.0:{port}\""),
        );
    std::fs::write(env.path("rekey.toml"), text).unwrap();
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(env.path("rekey.toml"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = env.start();
    wait_valid(d.addr, "web", Duration::from_secs(10));
    assert_eq!(http(d.addr, "GET", "/readyz").unwrap().0, 200);
    for path in ["/v1/rotate/web", "/v1/retire/web"] {
        let (code, body) = http(d.addr, "POST", path).unwrap();
        assert_eq!(code, 403, "{path}: {body}");
        assert!(
            body.contains("admin socket") && body.contains("daemon.admin_token_file"),
            "{body}"
        );
    }
    // The CLI over TCP without a token: refused, a usage error.
    let out = Command::new(bin())
        .args(["rotate", "web", "--addr", &env.addr.to_string()])
        .env_remove("REKEY_ADMIN_TOKEN_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    // Through the admin socket it works.
    let (code, body) = d.post("/v1/rotate/web").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(cred(d.addr, "web").unwrap().generation, Some(2));
}

#[test]
fn the_admin_token_guards_rotate() {
    let env = Env::new();
    let token = "tok-4f9a1c7e9b2d44e1";
    std::fs::write(env.path("token"), format!("{token}\n")).unwrap();
    env.write_config(&env.cert_section("web", ""));
    let text = std::fs::read_to_string(env.path("rekey.toml"))
        .unwrap()
        .replace(
            "[daemon]\n",
            &format!(
                "[daemon]\nadmin_token_file = \"{}\"\n",
                env.path("token").display()
            ),
        );
    std::fs::write(env.path("rekey.toml"), text).unwrap();
    let d = env.start();
    wait_valid(d.addr, "web", Duration::from_secs(10));
    let post = |auth: &str| {
        let req = format!(
            "POST /v1/rotate/web HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n"
        );
        raw(d.addr, req.as_bytes()).unwrap()
    };
    let none = post("");
    assert_eq!(code(&none), 401, "{none}");
    assert!(
        none.to_lowercase().contains("www-authenticate: bearer"),
        "{none}"
    );
    assert_eq!(code(&post("Authorization: Bearer wrong\r\n")), 401);
    assert_eq!(
        code(&post(&format!("Authorization: Basic {token}\r\n"))),
        401
    );
    let ok = post(&format!("Authorization: Bearer {token}\r\n"));
    assert_eq!(code(&ok), 200, "{ok}");

    // The CLI: without the token it is a usage error; with it, it works.
    let addr = env.addr.to_string();
    let out = Command::new(bin())
        .args(["rotate", "web", "--addr", &addr])
        .env_remove("REKEY_ADMIN_TOKEN_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = Command::new(bin())
        .args(["rotate", "web", "--addr", &addr, "--token-file"])
        .arg(env.path("token"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin())
        .args(["rotate", "web", "--addr", &addr])
        .env("REKEY_ADMIN_TOKEN_FILE", env.path("token"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The admin socket needs no token, token or not.
    let (code, body) = d.post("/v1/rotate/web").unwrap();
    assert_eq!(code, 200, "{body}");
    // Reads need no token.
    assert_eq!(http(d.addr, "GET", "/status").unwrap().0, 200);
    assert!(!env.log().contains(token), "the token appeared in the log");
}

#[test]
fn oversized_bodies_get_413() {
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let d = env.start();
    let big = vec![b'x'; 17 * 1024];
    let mut req = format!(
        "POST /v1/rotate/web HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    req.extend_from_slice(&big);
    let answer = raw(d.addr, &req).unwrap();
    assert_eq!(code(&answer), 413, "{answer}");
    // Chunked: no length up front, so the limit applies while reading.
    let mut req =
        b"POST /v1/rotate/web HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        req.extend_from_slice(format!("{:x}\r\n", 4096).as_bytes());
        req.extend_from_slice(&[b'y'; 4096]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let answer = raw(d.addr, &req).unwrap();
    assert_eq!(code(&answer), 413, "{answer}");
    // A small body is fine (and ignored).
    let answer = raw(
        d.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    )
    .unwrap();
    assert_eq!(code(&answer), 200, "{answer}");
}

#[test]
fn slow_and_idle_clients_are_dropped() {
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let d = env.start();
    // A client that never finishes its headers is closed after the header timeout.
    let mut slow = TcpStream::connect(d.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost:").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // So is a keep-alive connection that stays idle after its answer.
    let mut idle_keepalive = TcpStream::connect(d.addr).unwrap();
    idle_keepalive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    idle_keepalive
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();

    let mut buf = [0u8; 256];
    let n = slow.read(&mut buf).unwrap_or(0);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "slow client closed after {took:?}"
    );
    // hyper answers 408 or just closes.
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.contains("408"), "{answer}");

    let mut all = Vec::new();
    let _ = idle_keepalive.read_to_end(&mut all);
    let took = started.elapsed();
    assert!(
        String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200") && took < Duration::from_secs(15),
        "idle keep-alive connection still open after {took:?}"
    );
}

#[test]
fn a_full_endpoint_closes_its_oldest_waiting_connection_not_the_newcomer() {
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let d = env.start();
    // More silent connections than may wait (256), all from this host.
    let opened = Instant::now();
    let mut silent: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(d.addr).unwrap())
        .collect();
    // A newcomer is answered.
    let (code, _) = http(d.addr, "GET", "/healthz").unwrap();
    assert_eq!(code, 200);
    // The first silent one was closed to make room: EOF now, not only
    // at the header timeout (5 s; this read gives up after 3 s).
    let first = &mut silent[0];
    first
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(first.read(&mut buf), Ok(0)),
        "the oldest waiting connection is still open"
    );
    // The newest is still open (unless the header timeout already passed).
    let last = silent.last_mut().unwrap();
    last.set_nonblocking(true).unwrap();
    let r = last.read(&mut buf);
    if opened.elapsed() < Duration::from_secs(4) {
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the newest waiting connection was closed: {r:?}"
        );
    }
}
