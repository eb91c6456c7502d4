//! sd_notify against a socket the test listens on, as systemd would with
//! `Type=notify` and `WatchdogSec=`: READY=1 once the initial state is
//! loaded and the endpoint answers, STATUS= lines, WATCHDOG=1 at half the
//! watchdog interval, STOPPING=1 on SIGTERM.

use crate::support as common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Messages received, with the time each arrived.
fn receive_until(
    sock: &UnixDatagram,
    seen: &mut Vec<(Instant, String)>,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&[(Instant, String)]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out waiting for {what}; got {seen:#?}"
        );
        sock.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
}

#[test]
fn ready_status_watchdog_and_stopping() {
    let env = Env::new();
    env.write_config(&format!(
        "{}{}",
        env.cert_section("web", ""),
        env.cert_section("api", "")
    ));
    let sock_path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let log = std::fs::File::create(env.path("daemon.log")).unwrap();
    let child = Command::new(bin())
        .args(["run", "-c"])
        .arg(env.path("rekey.toml"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .env("REKEY_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let d = Daemon {
        child,
        addr: env.addr,
        socket: env.socket(),
    };
    let mut seen = Vec::new();
    receive_until(&sock, &mut seen, Duration::from_secs(20), "READY=1", |s| {
        s.iter().any(|(_, m)| m == "READY=1")
    });
    // At READY the endpoint answers and no credential is still starting.
    assert_eq!(http(d.addr, "GET", "/healthz").unwrap().0, 200);
    let st = status(d.addr).unwrap();
    assert!(
        st.as_array()
            .unwrap()
            .iter()
            .all(|c| c["state"] != "starting"),
        "{st}"
    );

    // STATUS= summarises; once both are issued it says so on one line.
    receive_until(
        &sock,
        &mut seen,
        Duration::from_secs(20),
        "STATUS= ready",
        |s| {
            s.iter()
                .any(|(_, m)| m.starts_with("STATUS=2 credentials: 2 valid; ready; next renewal "))
        },
    );
    assert!(seen
        .iter()
        .filter(|(_, m)| m.starts_with("STATUS="))
        .all(|(_, m)| !m.trim_end().contains('\n')));

    // WATCHDOG=1 every 100 ms (half of 200 ms): count ten pings.
    let from = seen.len();
    receive_until(
        &sock,
        &mut seen,
        Duration::from_secs(20),
        "10 watchdog pings",
        |s| s[from..].iter().filter(|(_, m)| m == "WATCHDOG=1").count() >= 11,
    );
    let pings: Vec<Instant> = seen[from..]
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    let span = pings[10] - pings[0];
    // Ten intervals of 100 ms; generous bounds for a loaded CI machine.
    assert!(
        span >= Duration::from_millis(700) && span <= Duration::from_millis(3000),
        "10 watchdog intervals took {span:?}"
    );

    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    receive_until(
        &sock,
        &mut seen,
        Duration::from_secs(20),
        "STOPPING=1",
        |s| s.iter().any(|(_, m)| m == "STOPPING=1"),
    );
    assert_eq!(d.terminate(), Some(0));
}

#[test]
fn no_watchdog_pings_for_another_pid() {
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let sock_path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let log = std::fs::File::create(env.path("daemon.log")).unwrap();
    let child = Command::new(bin())
        .args(["run", "-c"])
        .arg(env.path("rekey.toml"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "100000")
        // PID 1 is never the daemon: the watchdog is meant for someone else.
        .env("WATCHDOG_PID", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let d = Daemon {
        child,
        addr: env.addr,
        socket: env.socket(),
    };
    let mut seen = Vec::new();
    receive_until(&sock, &mut seen, Duration::from_secs(20), "READY=1", |s| {
        s.iter().any(|(_, m)| m == "READY=1")
    });
    // Wait for the issuance to show in STATUS=, a span of many 50 ms periods.
    receive_until(
        &sock,
        &mut seen,
        Duration::from_secs(20),
        "STATUS= ready",
        |s| s.iter().any(|(_, m)| m.contains("1 valid; ready")),
    );
    // Proving an absence takes a wait: ten would-be 50 ms periods.
    let until = Instant::now() + Duration::from_millis(500);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    receive_until(
        &sock,
        &mut seen,
        Duration::from_secs(20),
        "STOPPING=1",
        |s| s.iter().any(|(_, m)| m == "STOPPING=1"),
    );
    assert!(
        !seen.iter().any(|(_, m)| m == "WATCHDOG=1"),
        "pinged a watchdog meant for PID 1: {seen:?}"
    );
    assert_eq!(d.terminate(), Some(0));
}
