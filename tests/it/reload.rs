//! SIGHUP re-reads the config without a restart: added credentials start,
//! removed ones stop (their files stay), changed names rotate at once, and
//! an invalid config is rejected while the running one stays. systemd hears
//! RELOADING=1 and READY=1 around it.

use crate::support as common;

use std::time::Duration;

use common::notify::NotifySocket;
use common::*;
use nix::sys::signal::Signal;
use rekey::status::{CredentialStatus, State};

fn names(addr: std::net::SocketAddr) -> Vec<String> {
    statuses(addr)
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.name)
        .collect()
}

fn valid(env: &Env, name: &str) -> CredentialStatus {
    wait_valid(env.addr, name, Duration::from_secs(10))
}

#[test]
fn sighup_adds_removes_and_changes_credentials_and_rejects_a_bad_config() {
    let env = Env::new();
    let mut sock = NotifySocket::bind(&env.path("notify.sock"));
    let web = env.cert_section("web", "");
    env.write_config(&web);
    let d = env.start_with_env(&[sock.env()]);
    valid(&env, "web");
    wait_for(Duration::from_secs(5), "READY=1", || {
        sock.drain()
            .iter()
            .any(|m| m.contains("READY=1"))
            .then_some(())
    });

    // Add `api`.
    env.write_config(&format!("{web}{}", env.cert_section("api", "")));
    d.signal(Signal::SIGHUP);
    let api = valid(&env, "api");
    let msgs = wait_for(Duration::from_secs(5), "RELOADING=1 then READY=1", || {
        let m = sock.drain().join("\n");
        (m.contains("RELOADING=1") && m.contains("READY=1")).then_some(m)
    });
    assert!(msgs.find("RELOADING=1") < msgs.rfind("READY=1"), "{msgs}");
    let web_fp = cred(env.addr, "web").unwrap().fingerprint;

    // Change api's names: it rotates at once; web is untouched.
    let api2 = env
        .cert_section("api", "")
        .replace("[\"localhost\"]", "[\"localhost\", \"api.localhost\"]");
    env.write_config(&format!("{web}{api2}"));
    d.signal(Signal::SIGHUP);
    let rotated = wait_for(
        Duration::from_secs(10),
        "api to rotate for its new name",
        || {
            let s = cred(env.addr, "api")?;
            (s.state == State::Valid && s.fingerprint != api.fingerprint).then_some(s)
        },
    );
    assert_ne!(rotated.fingerprint, api.fingerprint);
    assert_eq!(
        cred(env.addr, "web").unwrap().fingerprint,
        web_fp,
        "web was reissued"
    );

    // Remove web: it stops, its files stay.
    env.write_config(&api2);
    d.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "web to be removed", || {
        (names(env.addr) == vec!["api".to_string()]).then_some(())
    });
    assert!(
        pair(&env.path("tls/web/cert.pem"), &env.path("tls/web/key.pem"))
            .unwrap()
            .1
    );

    // An invalid config is rejected; the running one stays.
    std::fs::write(env.path("rekey.toml"), "[[certificate]\nthis is not toml").unwrap();
    d.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(5), "the rejection in the log", || {
        env.log().contains("config_rejected").then_some(())
    });
    assert_eq!(names(env.addr), vec!["api".to_string()]);
    assert!(
        env.log().contains("rekey.toml:1"),
        "the rejection names the file and line"
    );
    let (code, _) = http(env.addr, "GET", "/healthz").unwrap();
    assert_eq!(code, 200);
    assert_eq!(d.terminate(), Some(0));
}
