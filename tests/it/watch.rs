//! Watched certificates (`[[watch]]`) in a running daemon: a file another
//! pipeline replaces (valid → expiring → expired → gone → garbage → valid),
//! with each state in /status and each alert at a webhook, never counting
//! for /readyz and never written; an endpoint's chain served by a real
//! nginx, probed again on its interval; SIGHUP adding and removing watches.
//! `rekey discover` is in tests/it/watch/discover.rs.

use crate::support as common;
use crate::support::alert as alerts;
mod discover;
use crate::support::certs as support;

use std::time::Duration;

use common::*;
use rekey::status::{CredentialStatus, Handoff, State, WatchStatus};
use support::{put, DAY};

fn watch_status(env: &Env, name: &str, want: State) -> CredentialStatus {
    wait_for(Duration::from_secs(20), &format!("{name} {want:?}"), || {
        cred(env.addr, name).filter(|s| s.state == want)
    })
}

/// The watch part of a watch's status.
fn watch_of(s: &CredentialStatus) -> &WatchStatus {
    s.watch
        .as_ref()
        .unwrap_or_else(|| panic!("no watch in {s:?}"))
}

/// `not_after` as `/status` writes it.
fn not_after(s: &CredentialStatus) -> Option<String> {
    s.not_after.map(|t| t.to_string())
}

/// The events the receiver got for credential `name`, in order.
fn events(hook: &alerts::Receiver, name: &str) -> Vec<String> {
    hook.requests()
        .iter()
        .map(|r| r.json())
        .filter(|a| a["credential"] == name)
        .map(|a| a["event"].as_str().unwrap_or("-").to_string())
        .collect()
}

fn wait_events(hook: &alerts::Receiver, name: &str, want: &[&str]) -> Vec<serde_json::Value> {
    wait_for(Duration::from_secs(20), &format!("alerts {want:?}"), || {
        (events(hook, name) == want).then_some(())
    });
    hook.requests()
        .iter()
        .map(|r| r.json())
        .filter(|a| a["credential"] == name)
        .collect()
}

fn readyz(env: &Env) -> (u16, serde_json::Value) {
    let (code, body) = http(env.addr, "GET", "/readyz").unwrap();
    (code, serde_json::from_str(&body).unwrap())
}

#[test]
fn a_watched_file_is_followed_through_every_state_and_alerted_but_never_written() {
    let env = Env::new();
    let hook = alerts::Receiver::start(Some(200));
    let file = env.path("partner/cert.pem");
    let missing_dir = env.path("not-yet");
    let valid = support::self_signed("partner.test", -3600, DAY * 10);
    put(&file, valid.pem.as_bytes());
    let watches = format!(
        "[[watch]]\nname = \"partner\"\nfile = \"{}\"\nalert_before = \"2d\"\nteam = \"payments\"\nlabels = {{ env = \"prod\" }}\n\n\
         [[watch]]\nname = \"later\"\nfile = \"{}/cert.pem\"\n\n",
        file.display(),
        missing_dir.display()
    );
    let sink = format!(
        "[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\nmatch = {{ team = \"payments\" }}\n",
        hook.url("/hook")
    );
    env.write_config(&format!("{}{watches}{sink}", env.cert_section("web", "")));
    let d = env.start();

    let s = watch_status(&env, "partner", State::Valid);
    assert_eq!(s.kind, "watch", "{s:?}");
    assert_eq!(s.handoff, Handoff::Unmanaged, "{s:?}");
    assert_eq!(s.team.as_deref(), Some("payments"));
    assert_eq!(s.labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(not_after(&s), Some(valid.not_after()));
    assert_eq!(s.fingerprint, Some(valid.fingerprint()));
    assert_eq!(s.issuer, "partner.test");
    let w = watch_of(&s);
    assert_eq!(w.source, "file");
    assert_eq!(w.path, Some(file.display().to_string()));
    assert_eq!(w.certificates.len(), 1);
    assert_eq!(
        w.certificates[0].subject_cn.as_deref(),
        Some("partner.test")
    );
    let later = watch_status(&env, "later", State::Unreadable);
    assert!(
        later
            .last_error
            .as_deref()
            .unwrap()
            .contains("No such file"),
        "{later:?}"
    );
    // The web credential is issued; watches do not count for readiness.
    watch_status(&env, "web", State::Valid);
    let (code, body) = readyz(&env);
    assert_eq!(
        (code, &body["credentials"]),
        (200, &serde_json::json!(1)),
        "{body}"
    );

    // Another pipeline drops in a certificate with a day left: inside alert_before.
    let expiring = support::self_signed("partner.test", -9 * 86400, DAY * 10);
    put(&file, expiring.pem.as_bytes());
    let s = watch_status(&env, "partner", State::Expiring);
    assert_eq!(not_after(&s), Some(expiring.not_after()));
    let got = wait_events(&hook, "partner", &["expiring"]);
    assert_eq!(got[0]["kind"], "watch");
    assert_eq!(got[0]["severity"], "warning");
    assert_eq!(got[0]["team"], "payments");
    assert_eq!(got[0]["labels"]["env"], "prod");
    assert_eq!(got[0]["not_after"], expiring.not_after());
    assert!(got[0]["message"]
        .as_str()
        .unwrap()
        .contains("CN=partner.test"));

    // Then one that has expired: critical alert, and the pod stays ready.
    let expired = support::self_signed("partner.test", -2 * 86400, DAY);
    put(&file, expired.pem.as_bytes());
    watch_status(&env, "partner", State::Expired);
    let got = wait_events(&hook, "partner", &["expiring", "expired"]);
    assert_eq!(got[1]["severity"], "critical");
    assert_eq!(readyz(&env).0, 200);
    let out = std::process::Command::new(bin())
        .args(["status", "--addr", &env.addr.to_string()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("partner ") && l.contains("expired") && l.contains("unmanaged")),
        "{table}"
    );

    // The file vanishes: an alert, not a crash.
    std::fs::remove_file(&file).unwrap();
    let s = watch_status(&env, "partner", State::Unreadable);
    assert!(s
        .last_error
        .as_deref()
        .unwrap()
        .contains(&file.display().to_string()));
    assert!(watch_of(&s).certificates.is_empty(), "{s:?}");
    wait_events(&hook, "partner", &["expiring", "expired", "unreadable"]);
    assert_eq!(http(env.addr, "GET", "/healthz").unwrap().0, 200);

    // It comes back as something that is not a certificate.
    put(&file, b"not a certificate\n");
    wait_for(Duration::from_secs(20), "the garbage to be read", || {
        let s = cred(env.addr, "partner")?;
        s.last_error?.contains("holds no certificate").then_some(())
    });

    // A valid one again: recovered.
    let renewed = support::self_signed("partner.test", -60, DAY * 30);
    put(&file, renewed.pem.as_bytes());
    let s = watch_status(&env, "partner", State::Valid);
    assert_eq!(s.fingerprint, Some(renewed.fingerprint()));
    assert_eq!(s.consecutive_failures, 0);
    wait_events(
        &hook,
        "partner",
        &["expiring", "expired", "unreadable", "recovered"],
    );

    // `rekey report` reads the watches itself, as they are now.
    let out = std::process::Command::new(bin())
        .args(["report", "--json", "-c"])
        .arg(env.path("rekey.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let partner = r["watches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "partner")
        .unwrap();
    assert_eq!(partner["state"], "valid", "{r}");
    assert_eq!(partner["team"], "payments");
    assert_eq!(partner["not_after"], renewed.not_after());
    assert_eq!(partner["certificates"], 1);
    let later = r["watches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "later")
        .unwrap();
    assert_eq!(later["state"], "unreadable");

    // rekey wrote nothing: the file is what the pipeline wrote, nothing else
    // appeared beside it, and the missing directory was not created.
    assert_eq!(std::fs::read(&file).unwrap(), renewed.pem.as_bytes());
    let beside: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["cert.pem"], "{beside:?}");
    assert!(!missing_dir.exists());

    // SIGHUP: a removed watch leaves /status, an added one appears.
    let other = env.path("other.pem");
    put(&other, valid.pem.as_bytes());
    env.write_config(&format!(
        "{}[[watch]]\nname = \"other\"\nfile = \"{}\"\n",
        env.cert_section("web", ""),
        other.display()
    ));
    d.signal(nix::sys::signal::Signal::SIGHUP);
    watch_status(&env, "other", State::Valid);
    wait_for(Duration::from_secs(10), "partner to leave /status", || {
        cred(env.addr, "partner").is_none().then_some(())
    });
    assert_eq!(d.terminate(), Some(0));
}

#[test]
fn an_endpoint_watch_reads_the_chain_real_nginx_serves_and_probes_again() {
    let Some(nginx) = live_binary("nginx", "Debian package nginx-light") else {
        return;
    };
    let env = Env::new();
    let ca = support::ca("Partner Issuing CA", DAY * 3650);
    let leaf = support::leaf(&ca, "localhost", &["localhost"], DAY * 30);
    let tls = env.path("app");
    put(
        &tls.join("fullchain.pem"),
        format!("{}{}", leaf.pem, ca.pem).as_bytes(),
    );
    put(&tls.join("key.pem"), leaf.key_pem().as_bytes());
    let prefix = env.path("nginx");
    let (conf, addr) = Nginx::configure(&prefix, &tls.join("fullchain.pem"), &tls.join("key.pem"));
    let server = Nginx::start(&nginx, &prefix, &conf, addr);
    let closed = free_addr();
    env.write_config(&format!(
        "[[watch]]\nname = \"app\"\nendpoint = \"{addr}\"\nserver_name = \"localhost\"\ninterval = \"10s\"\n\n\
         [[watch]]\nname = \"down\"\nendpoint = \"{closed}\"\ninterval = \"10s\"\n"
    ));
    let _d = env.start();

    let s = watch_status(&env, "app", State::Valid);
    let w = watch_of(&s);
    assert_eq!(w.source, "endpoint");
    assert_eq!(w.endpoint, Some(addr.to_string()));
    assert_eq!(w.server_name.as_deref(), Some("localhost"));
    // Every certificate served counts; the leaf expires first.
    let certs = &w.certificates;
    assert_eq!(certs.len(), 2, "{s:?}");
    assert_eq!(certs[0].fingerprint, leaf.fingerprint());
    assert_eq!(certs[1].subject_cn.as_deref(), Some("Partner Issuing CA"));
    assert_eq!(s.fingerprint, Some(leaf.fingerprint()));
    assert_eq!(not_after(&s), Some(leaf.not_after()));
    assert_eq!(s.issuer, "Partner Issuing CA");
    // What nginx serves, read independently of rekey.
    assert_eq!(
        served_fingerprint(addr, "localhost").unwrap(),
        leaf.fingerprint()
    );
    let down = watch_status(&env, "down", State::Unreadable);
    assert!(
        down.last_error
            .as_deref()
            .unwrap()
            .contains("cannot connect"),
        "{down:?}"
    );
    assert_eq!(readyz(&env).0, 200);

    // nginx is given a leaf with a day left: the next probe (10 s interval,
    // jittered earlier) sees it.
    let short = support::leaf(&ca, "localhost", &["localhost"], DAY);
    put(
        &tls.join("fullchain.pem"),
        format!("{}{}", short.pem, ca.pem).as_bytes(),
    );
    put(&tls.join("key.pem"), short.key_pem().as_bytes());
    let pid: i32 = std::fs::read_to_string(&server.pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let s = wait_for(Duration::from_secs(40), "the new leaf to be probed", || {
        cred(env.addr, "app").filter(|s| s.fingerprint == Some(short.fingerprint()))
    });
    // A day of life, 20% of it: still valid; alert_at is 4.8 hours before expiry.
    assert_eq!(s.state, State::Valid, "{s:?}");
    let alert_at = watch_of(&s).alert_at.unwrap();
    let not_after = s.not_after.unwrap();
    assert_eq!(
        not_after.unix_seconds() - alert_at.unix_seconds(),
        24 * 3600 / 5
    );
}
