//! The endpoint against another user on the host: one peer holding
//! hundreds of half-sent requests open must not silence `/healthz` and
//! `/readyz`, and reaching the port (or being a local user) must not be
//! enough to rotate or retire anything.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::scorecard::Scenario;
use crate::support::*;
use rekey::status::State;

/// More than the daemon lets wait at once (256), so it must choose.
const HELD: usize = 320;
/// How long the attack lasts.
const ATTACK: Duration = Duration::from_secs(20);

/// A probe as the kubelet sends it: a new connection, an answer within 5 s.
fn probe(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let limit = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(limit)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)
        .map_err(|e| format!("read: {e}"))?;
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no answer (closed after {} bytes)", buf.len()))
}

/// Hold one half-sent request open; open a new one whenever the server
/// closes it. Counts the reopenings.
async fn hold(addr: SocketAddr, stop: Arc<AtomicBool>, reopened: Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // Headers that never end.
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await;
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
            }
        }
        reopened.fetch_add(1, Ordering::Relaxed);
    }
}

/// Open file descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn one_peer_holding_hundreds_of_half_sent_requests_never_silences_the_probes() {
    let mut sc = Scenario::new(
        "hostile_host",
        "endpoint: 320 half-sent requests from one peer, reopened as they close, for 20 s; every /healthz and /readyz probe answers",
    );
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let d = env.start();
    wait_valid(d.addr, "web", Duration::from_secs(20));
    let stop = Arc::new(AtomicBool::new(false));
    let reopened = Arc::new(AtomicU64::new(0));
    let attacker = {
        let (stop, reopened, addr) = (stop.clone(), reopened.clone(), d.addr);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..HELD {
                    set.spawn(hold(addr, stop.clone(), reopened.clone()));
                }
                while set.join_next().await.is_some() {}
            });
        })
    };
    // Let the attacker fill the daemon up: it is full once it closes some.
    let pid = d.child.id();
    wait_for(
        Duration::from_secs(10),
        "the attacker to fill the daemon",
        || (reopened.load(Ordering::Relaxed) > 0).then_some(()),
    );
    let started = Instant::now();
    let (mut probes, mut max_fds) = (0, 0);
    while started.elapsed() < ATTACK {
        for path in ["/healthz", "/readyz"] {
            sc.round();
            probes += 1;
            let r = probe(d.addr, path);
            sc.check("every probe answers 200", r == Ok(200), || {
                format!("{path} after {:?}: {r:?}", started.elapsed())
            });
        }
        max_fds = max_fds.max(fds(pid));
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    let closed = reopened.load(Ordering::Relaxed);
    sc.check(
        "the attacker's surplus connections were closed",
        closed > 0,
        || "none of the attacker's connections was ever closed".into(),
    );
    sc.note(format!(
        "{probes} probes answered over {}s; the attacker had {closed} connections closed and reopened; at most {max_fds} open files in the daemon (256 may wait; the rest are its own and connections being closed or answered)",
        ATTACK.as_secs()
    ));
    // The credential is untouched, and the endpoint still answers.
    let s = cred(d.addr, "web").unwrap();
    sc.check("still valid", s.state == State::Valid, || format!("{s:?}"));
    sc.finish();
}

#[test]
fn no_one_but_rekeys_user_can_rotate_or_retire() {
    let sc = Scenario::new(
        "hostile_host",
        "endpoint: rotate and retire need the admin socket (rekey's user) or the admin token, never a reachable port",
    );
    let Some(mut sc) = sc.require_root("needs root to act as another user (nobody)") else {
        return;
    };
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let d = env.start();
    let gen = wait_for(Duration::from_secs(20), "issuance", || {
        let s = cred(d.addr, "web")?;
        (s.state == State::Valid).then_some(s.generation)
    });
    let socket = env.socket();
    let mode = std::fs::metadata(&socket).map(|m| m.permissions().mode() & 0o777);
    sc.check(
        "the admin socket is 0600",
        mode.as_ref().ok() == Some(&0o600),
        || format!("{mode:?}"),
    );
    let files =
        ["cert.pem", "key.pem", "fullchain.pem", "ca.pem"].map(|f| env.path("tls/web").join(f));

    // Over TCP, from loopback (as root even): refused, whoever asks.
    for path in ["/v1/retire/web", "/v1/rotate/web"] {
        sc.round();
        let (code, body) = http(d.addr, "POST", path).unwrap();
        sc.check("TCP without a token: 403", code == 403, || {
            format!("{path}: {code} {body}")
        });
        sc.check(
            "the refusal names the admin socket",
            body.contains(&socket.display().to_string()),
            || body.clone(),
        );
    }
    // As nobody, through the CLI: over TCP, through the config, through the socket.
    let as_nobody = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .uid(65534)
            .gid(65534)
            .env_remove("REKEY_ADMIN_TOKEN_FILE")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let config = env.path("rekey.toml").display().to_string();
    let sock = socket.display().to_string();
    let addr = d.addr.to_string();
    for (how, args) in [
        ("TCP", vec!["retire", "web", "--addr", &addr]),
        ("-c CONFIG", vec!["retire", "web", "-c", &config]),
        ("--socket", vec!["retire", "web", "--socket", &sock]),
        ("--socket", vec!["rotate", "web", "--socket", &sock]),
    ] {
        sc.round();
        let (code, err) = as_nobody(&args);
        sc.check(
            &format!("nobody via {how}: refused"),
            code != Some(0),
            || format!("{args:?}: exit {code:?}: {err}"),
        );
        if how == "--socket" {
            sc.check(
                "nobody gets permission denied on the socket",
                err.contains("Permission denied") && err.contains("only rekey's own user"),
                || err.clone(),
            );
        }
    }
    // Nothing changed: same generation, every file there, ready.
    let s = cred(d.addr, "web").unwrap();
    sc.check("same generation", s.generation == gen, || format!("{s:?}"));
    let missing: Vec<_> = files.iter().filter(|f| !f.exists()).collect();
    sc.check("every file still published", missing.is_empty(), || {
        format!("{missing:?}")
    });
    let (code, body) = http(d.addr, "GET", "/readyz").unwrap();
    sc.check(
        "ready with its credential",
        code == 200 && body.contains("\"credentials\":1"),
        || format!("{code} {body}"),
    );

    // rekey's own user (root here) through the CLI: the default path works.
    sc.round();
    let out = Command::new(bin())
        .args(["rotate", "web", "-c", &config])
        .output()
        .unwrap();
    sc.check("rekey's user rotates via -c", out.status.success(), || {
        String::from_utf8_lossy(&out.stderr).into_owned()
    });
    let (code, out) = env.retire("web");
    sc.check("rekey's user retires via -c", code == 0, || out.clone());
    sc.check(
        "retire removed the files",
        files.iter().all(|f| !f.exists()),
        || format!("{files:?}"),
    );
    sc.finish();
}
