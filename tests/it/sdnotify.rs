//! sd_notify against a socket the test listens on, as systemd would with
//! `Type=notify` and `WatchdogSec=`: READY=1 once the initial state is
//! loaded and the endpoint answers, STATUS= lines, WATCHDOG=1 at half the
//! watchdog interval, STOPPING=1 on SIGTERM.

use crate::support as common;

use std::time::{Duration, Instant};

use common::notify::NotifySocket;
use common::*;
use rekey::status::State;

#[test]
fn ready_status_watchdog_and_stopping() {
    let env = Env::new();
    env.write_config(&format!(
        "{}{}",
        env.cert_section("web", ""),
        env.cert_section("api", "")
    ));
    let mut sock = NotifySocket::bind(&env.path("notify.sock"));
    let d = env.spawn(
        env.run_command()
            .env("NOTIFY_SOCKET", &sock.path)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            .env("REKEY_LOG", "debug"),
    );
    sock.expect("READY=1", Duration::from_secs(20));
    // At READY the endpoint answers and no credential is still starting.
    assert_eq!(http(d.addr, "GET", "/healthz").unwrap().0, 200);
    let st = statuses(d.addr).unwrap();
    assert!(st.iter().all(|c| c.state != State::Starting), "{st:?}");

    // STATUS= summarises; once both are issued it says so on one line.
    sock.receive_until(Duration::from_secs(20), "STATUS= ready", |s| {
        s.iter()
            .any(|(_, m)| m.starts_with("STATUS=2 credentials: 2 valid; ready; next renewal "))
    });
    assert!(sock
        .seen
        .iter()
        .filter(|(_, m)| m.starts_with("STATUS="))
        .all(|(_, m)| !m.trim_end().contains('\n')));

    // WATCHDOG=1 every 100 ms (half of 200 ms): count ten pings.
    let from = sock.seen.len();
    sock.receive_until(Duration::from_secs(20), "10 watchdog pings", |s| {
        s[from..].iter().filter(|(_, m)| m == "WATCHDOG=1").count() >= 11
    });
    let pings: Vec<Instant> = sock.seen[from..]
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
    sock.expect("STOPPING=1", Duration::from_secs(20));
    assert_eq!(d.terminate(), Some(0));
}

#[test]
fn no_watchdog_pings_for_another_pid() {
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let mut sock = NotifySocket::bind(&env.path("notify.sock"));
    let d = env.spawn(
        env.run_command()
            .env("NOTIFY_SOCKET", &sock.path)
            .env("WATCHDOG_USEC", "100000")
            // PID 1 is never the daemon: the watchdog is meant for someone else.
            .env("WATCHDOG_PID", "1"),
    );
    sock.expect("READY=1", Duration::from_secs(20));
    // Wait for the issuance to show in STATUS=, a span of many 50 ms periods.
    sock.receive_until(Duration::from_secs(20), "STATUS= ready", |s| {
        s.iter().any(|(_, m)| m.contains("1 valid; ready"))
    });
    // Proving an absence takes a wait: ten would-be 50 ms periods.
    sock.listen_for(Duration::from_millis(500));
    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    sock.expect("STOPPING=1", Duration::from_secs(20));
    assert!(
        !sock.seen.iter().any(|(_, m)| m == "WATCHDOG=1"),
        "pinged a watchdog meant for PID 1: {:?}",
        sock.seen
    );
    assert_eq!(d.terminate(), Some(0));
}
