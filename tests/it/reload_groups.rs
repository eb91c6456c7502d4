//! Handoff groups: credentials that reload one app hand over together. The
//! reload here is a command that appends the credentials it was run for to
//! a file (one line per reload), so every reload is counted and named; the
//! 50-name nginx proof is in `reload_groups/nginx.rs`.

use crate::support as common;
mod nginx;

use std::path::Path;
use std::time::Duration;

use common::keyservice::{http_config, key_service};
use common::*;
use rekey::status::{CredentialStatus, Handoff, RotateResult, State};

/// A reload that records, one line per run, whom it ran for: every member
/// of a grouped reload (`REKEY_CREDENTIALS`), or the one credential.
fn recording_reload(log: &Path) -> String {
    format!(
        "reload = {{ type = \"exec\", command = [\"sh\", \"-c\", \"echo ${{REKEY_CREDENTIALS:-$REKEY_CREDENTIAL}} >> {}\"] }}",
        log.display()
    )
}

/// A probe that passes unless the file `withheld-NAME` exists.
fn withholdable(env: &Env, name: &str) -> String {
    format!(
        "verify = {{ type = \"exec\", command = [\"test\", \"!\", \"-e\", \"{}\"], timeout = \"2s\", settle = \"10ms\" }}",
        env.path(&format!("withheld-{name}")).display()
    )
}

/// The reloads run so far, each as the names it covered.
fn reloads(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn verified(env: &Env, names: &[String]) -> Vec<CredentialStatus> {
    names
        .iter()
        .map(|n| {
            wait_for(Duration::from_secs(30), &format!("{n} verified"), || {
                let s = cred(env.addr, n)?;
                (s.state == State::Valid && s.handoff == Handoff::Verified).then_some(s)
            })
        })
        .collect()
}

#[test]
fn credentials_due_together_share_one_reload_and_only_the_failed_one_is_reloaded_again() {
    let env = Env::new();
    let log = env.path("reloads.log");
    let names: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
    let certs: String = names
        .iter()
        .map(|n| {
            env.cert_section(
                n,
                &format!("{}\n{}", recording_reload(&log), withholdable(&env, n)),
            )
        })
        .collect();
    env.write_config(&certs);
    // One rotation at a time: the batch still holds all five, because a
    // member gives up its slot while it waits for the group's reload. The
    // window is generous for a shared machine: a batch fires the moment all
    // its members have joined anyway.
    env.daemon_line(
        "max_concurrent_rotations = 1\nreload_window = \"2s\"\nreload_max_wait = \"20s\"",
    );
    let d = env.start();

    // The first start issues all five: one reload for all of them.
    let first = verified(&env, &names);
    assert_eq!(reloads(&log), ["c0 c1 c2 c3 c4"], "{}", env.log());

    // All five rotated at once, and the app will not take c3's new one.
    std::fs::write(env.path("withheld-c3"), "").unwrap();
    let answers = d.rotate_all(&names);
    for (n, (code, body)) in names.iter().zip(&answers) {
        let want = if n == "c3" {
            RotateResult::RolledBack
        } else {
            RotateResult::Success
        };
        let result = body.as_ref().map(|o| o.result);
        assert_eq!(result, Some(want), "{n}: {code} {body:?}");
    }
    // One reload for the five new generations, one more for c3 alone (its
    // previous generation put back).
    assert_eq!(
        reloads(&log),
        ["c0 c1 c2 c3 c4", "c0 c1 c2 c3 c4", "c3"],
        "{}",
        env.log()
    );
    for (n, before) in names.iter().zip(&first) {
        let s = cred(env.addr, n).unwrap();
        let c = common::invariants::Cred::under(env.dir.path(), n);
        let published = common::invariants::pair_matches(&c).unwrap();
        if n == "c3" {
            assert_eq!(s.handoff, Handoff::Failed, "{s:?}");
            assert_eq!(
                s.fingerprint, before.fingerprint,
                "c3's committed generation changed"
            );
            assert_eq!(
                s.fingerprint.as_deref(),
                Some(published.as_str()),
                "c3's files are not its committed generation"
            );
            assert!(
                s.last_error.as_deref().unwrap().contains("rolled back"),
                "{s:?}"
            );
        } else {
            assert_eq!(s.handoff, Handoff::Verified, "{n:?}: {s:?}");
            assert_ne!(s.fingerprint, before.fingerprint, "{n} did not rotate");
            assert_eq!(s.fingerprint.as_deref(), Some(published.as_str()), "{n}");
            assert!(s.last_error.is_none(), "{n:?}: {s:?}");
        }
    }
    // The failure is c3's alone: only it alerts.
    let log = env.log();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event=\"handoff_failed\""))
        .collect();
    assert!(
        !failed.is_empty() && failed.iter().all(|l| l.contains("credential=c3")),
        "{failed:#?}"
    );
}

#[test]
fn a_credential_that_shares_its_reload_with_nobody_does_not_wait_for_the_window() {
    let env = Env::new();
    let (paired, lone) = (env.path("paired.log"), env.path("lone.log"));
    let certs = [
        env.cert_section("p1", &recording_reload(&paired)),
        env.cert_section("p2", &recording_reload(&paired)),
        env.cert_section("lone", &recording_reload(&lone)),
    ]
    .concat();
    env.write_config(&certs);
    env.daemon_line("reload_window = \"3s\"\nreload_max_wait = \"10s\"");
    let d = env.start();
    for n in ["p1", "p2", "lone"] {
        wait_for(Duration::from_secs(30), &format!("{n} handed over"), || {
            (cred(env.addr, n)?.handoff == Handoff::Unverified).then_some(())
        });
    }
    assert_eq!((reloads(&paired).len(), reloads(&lone).len()), (1, 1));
    let handoff_ms = |name: &str| {
        let (code, body) = d.post(&format!("/v1/rotate/{name}")).unwrap();
        assert_eq!(code, 200, "{body}");
        cred(env.addr, name)
            .unwrap()
            .last_rotation
            .and_then(|r| r.handoff_ms)
            .unwrap()
    };
    // p1 rotates alone but has a partner: it waits out the window for it.
    let waited = handoff_ms("p1");
    assert!(waited >= 3000, "{waited} ms; {:?}", reloads(&paired));
    assert_eq!(reloads(&paired), ["p1 p2", "p1"]);
    // The lone credential's reload goes at once.
    assert!(handoff_ms("lone") < 3000);
    assert_eq!(reloads(&lone), ["lone", "lone"]);
}

#[test]
fn an_api_key_and_a_certificate_of_one_app_share_its_reload() {
    let env = Env::new();
    let log = env.path("reloads.log");
    let (svc, _keys) = key_service(env.path("app/svc.json"));
    http_config(&env, svc, None);
    let reload = recording_reload(&log);
    let text = std::fs::read_to_string(env.path("rekey.toml"))
        .unwrap()
        .replacen(
            "[[api_key]]\nname = \"svc\"\n",
            &format!("[[api_key]]\nname = \"svc\"\n{reload}\n"),
            1,
        )
        + &env.cert_section("web", &reload);
    std::fs::write(env.path("rekey.toml"), text).unwrap();
    env.daemon_line("reload_window = \"2s\"\nreload_max_wait = \"20s\"");
    let d = env.start();
    for n in ["svc", "web"] {
        wait_valid(env.addr, n, Duration::from_secs(30));
    }
    assert_eq!(reloads(&log), ["svc web"], "{}", env.log());
    let answers = d.rotate_all(&["svc".to_string(), "web".to_string()]);
    for (code, body) in &answers {
        let result = body.as_ref().map(|o| o.result);
        assert_eq!(result, Some(RotateResult::Success), "{code} {body:?}");
    }
    assert_eq!(reloads(&log), ["svc web", "svc web"], "{}", env.log());
}

#[test]
fn rekey_check_lists_the_groups_that_share_a_reload() {
    let env = Env::new();
    let hup = "reload = { type = \"signal\", signal = \"HUP\", pid_file = \"/run/nginx.pid\" }";
    let certs = [
        env.cert_section("a", hup),
        env.cert_section("b", hup),
        env.cert_section("c", &format!("{hup}\nreload_group = false")),
        env.cert_section(
            "d",
            "reload = { type = \"signal\", signal = \"HUP\", pid_file = \"/run/other.pid\" }",
        ),
    ]
    .concat();
    env.write_config(&certs);
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(env.path("rekey.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let groups: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("handoff group"))
        .collect();
    assert_eq!(
        groups,
        ["  handoff group (SIGHUP to the process in /run/nginx.pid): a, b; one reload for the handoffs that fall within 200ms of each other (at most 2s wait)"],
        "{text}"
    );
}

#[test]
fn a_keystore_refresh_of_certificates_that_share_a_reload_is_one_reload() {
    // A refresh (the committed certificate republished with a new keystore
    // or trust bundle, as a CA rollover does for every certificate of the CA
    // at once) is a generation like any other: it joins the group.
    let env = Env::new();
    let log = env.path("reloads.log");
    let names: Vec<String> = (0..3).map(|i| format!("c{i}")).collect();
    let section = |n: &String, keystore: bool| {
        let s = env.cert_section(
            n,
            &format!("{}\n{}", recording_reload(&log), withholdable(&env, n)),
        );
        if !keystore {
            return s;
        }
        let p12 = env.path("tls").join(n).join("keystore.p12");
        s.replacen(
            " }\n",
            &format!(
                ", pkcs12 = \"{}\", pkcs12_password = {{ file = \"{}\" }} }}\n",
                p12.display(),
                env.path("p12-pass").display()
            ),
            1,
        )
    };
    let config = |keystore: bool| {
        let certs: String = names.iter().map(|n| section(n, keystore)).collect();
        env.write_config(&certs);
        env.daemon_line("reload_window = \"2s\"\nreload_max_wait = \"20s\"");
    };
    config(false);
    let d = env.start();
    let first = verified(&env, &names);
    assert_eq!(reloads(&log), ["c0 c1 c2"], "{}", env.log());
    d.terminate();

    // Restarted with a keystore added to each: three refreshes, one reload.
    std::fs::write(env.path("p12-pass"), "changeit\n").unwrap();
    config(true);
    let _d = env.start();
    for (n, before) in names.iter().zip(&first) {
        let s = wait_for(Duration::from_secs(30), &format!("{n} refreshed"), || {
            let s = cred(env.addr, n)?;
            (s.generation != before.generation && s.handoff == Handoff::Verified).then_some(s)
        });
        assert_eq!(s.fingerprint, before.fingerprint, "{n} was reissued");
        assert!(env.path("tls").join(n).join("keystore.p12").exists(), "{n}");
    }
    assert_eq!(reloads(&log), ["c0 c1 c2", "c0 c1 c2"], "{}", env.log());
}
