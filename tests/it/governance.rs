//! Ownership end to end: `team` and `labels` in /status, in alerts and in
//! metrics, and alert sinks with `match = { ... }` getting only their
//! team's alerts (two real webhook receivers, a real daemon).

use crate::support as common;
use crate::support::alert as support;

use std::time::Duration;

use common::{cred, http, wait_for, wait_valid, Env};
use rekey::audit::{AuditEvent, AuditOutcome};
use rekey::engine::{RetireOutcome, RetireResult, Revocation};
use rekey::status::State;
use support::Receiver;

#[test]
fn alerts_filtered_by_team_or_label_reach_only_the_matching_sink() {
    let env = Env::new();
    let (payments, search, prod) = (
        Receiver::start(Some(200)),
        Receiver::start(Some(200)),
        Receiver::start(Some(200)),
    );
    let failing = "reload = { type = \"exec\", command = [\"false\"] }";
    let certs = env.cert_section("web", &format!("team = \"payments\"\nlabels = {{ env = \"staging\" }}\n{failing}"))
        + &env.cert_section("api", &format!("team = \"search\"\nlabels = {{ env = \"prod\", tier = \"1\" }}\n{failing}"))
        + &format!(
            "[[alert]]\ntype = \"webhook\"\nname = \"payments\"\nurl = \"{}\"\nmatch = {{ team = \"payments\" }}\n\n\
             [[alert]]\ntype = \"webhook\"\nname = \"search\"\nurl = \"{}\"\nmatch = {{ team = \"search\" }}\n\n\
             [[alert]]\ntype = \"webhook\"\nname = \"prod\"\nurl = \"{}\"\nmatch = {{ labels = {{ env = \"prod\" }} }}\n",
            payments.url("/hook"),
            search.url("/hook"),
            prod.url("/hook")
        );
    env.write_config(&certs);
    let d = env.start();
    wait_for(Duration::from_secs(20), "first issuance", || {
        (cred(d.addr, "web")?.generation == Some(1) && cred(d.addr, "api")?.generation == Some(1))
            .then_some(())
    });
    let web = cred(d.addr, "web").unwrap();
    assert_eq!(web.team.as_deref(), Some("payments"));
    assert_eq!(web.labels.get("env").map(String::as_str), Some("staging"));

    for name in ["web", "api"] {
        let (code, body) = d.post(&format!("/v1/rotate/{name}")).unwrap();
        assert_eq!(code, 502, "{body}");
    }
    let events = |r: &Receiver| -> Vec<serde_json::Value> {
        r.requests().iter().map(|q| q.json()).collect()
    };
    wait_for(Duration::from_secs(10), "alerts at every sink", || {
        (!events(&payments).is_empty() && !events(&search).is_empty() && !events(&prod).is_empty())
            .then_some(())
    });
    // Give a misrouted alert time to arrive before checking nothing leaked.
    std::thread::sleep(Duration::from_millis(500));
    for a in events(&payments) {
        assert_eq!(a["credential"], "web", "{a}");
        assert_eq!(a["team"], "payments");
        assert_eq!(a["labels"]["env"], "staging");
    }
    for a in events(&search).into_iter().chain(events(&prod)) {
        assert_eq!(a["credential"], "api", "{a}");
        assert_eq!(a["team"], "search");
    }

    let (_, metrics) = http(d.addr, "GET", "/metrics").unwrap();
    assert!(
        metrics.contains(
            r#"rekey_handoff_verified{credential="web",kind="certificate",team="payments"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"rekey_rotations_total{credential="api",kind="certificate",result="rolled_back",team="search"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains("staging"), "labels stay out of metrics");
}

/// `rekey CMD -c CONFIG`: (exit code, stdout + stderr).
fn rekey(cmd: &str, config: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(common::bin())
        .args([cmd, "-c"])
        .arg(config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn policy_violations_are_each_named_by_check_and_refused_by_run() {
    let strict = "[policy]\nmax_lifetime = \"398d\"\nmin_rsa_bits = 3072\nallowed_issuers = [\"dev\"]\nkey_files_private = true\nrequire_verify = true\n";
    let probe = "verify = { type = \"exec\", command = [\"true\"] }";
    // (extra keys of the certificate, the rule named, the key named)
    let table = [
        (
            format!("lifetime = \"400d\"\n{probe}"),
            "max_lifetime",
            "certificate[0].lifetime",
        ),
        (
            format!("key_type = \"rsa-2048\"\n{probe}"),
            "min_rsa_bits",
            "certificate[0].key_type",
        ),
        (
            format!("key_mode = \"0640\"\n{probe}"),
            "key_files_private",
            "certificate[0].key_mode",
        ),
        (String::new(), "require_verify", "certificate[0].verify"),
    ];
    for (extra, rule, key) in &table {
        let env = Env::new();
        let cfg = env.write_config(&(env.cert_section("web", extra) + strict));
        let (code, out) = rekey("check", &cfg);
        assert_eq!(code, 1, "{rule}: {out}");
        assert!(
            out.contains(&format!("web: {key} breaks policy.{rule}")),
            "{rule}: {out}"
        );
        assert!(out.contains("policy: 1 violation(s)"), "{rule}: {out}");
        let (code, out) = rekey("run", &cfg);
        assert_eq!(code, 2, "run must refuse ({rule}): {out}");
        assert!(out.contains(&format!("policy.{rule}")), "{out}");
    }

    // An issuer outside allowed_issuers.
    let env = Env::new();
    let cfg = env.write_config(
        &(env.cert_section("web", probe) + "[policy]\nallowed_issuers = [\"vault\"]\n"),
    );
    let (code, out) = rekey("check", &cfg);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("web: certificate[0].issuer breaks policy.allowed_issuers"),
        "{out}"
    );

    // Every violation at once is listed, not just the first.
    let env = Env::new();
    let all = "lifetime = \"400d\"\nkey_type = \"rsa-2048\"\nkey_mode = \"0644\"";
    let cfg = env.write_config(&(env.cert_section("web", all) + strict));
    let (code, out) = rekey("check", &cfg);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("policy: 4 violation(s)"), "{out}");

    // Compliant, and a waived verify = none: both pass.
    let env = Env::new();
    let certs = env.cert_section("web", probe)
        + &env.cert_section(
            "legacy",
            "policy_waiver = \"app cannot be probed; JIRA-123\"",
        )
        + strict;
    let cfg = env.write_config(&certs);
    let (code, out) = rekey("check", &cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("every credential complies"), "{out}");
}

#[test]
fn sighup_keeps_the_running_config_when_the_new_one_violates_policy() {
    let env = Env::new();
    let policy = "[policy]\nrequire_verify = true\n";
    let probe = "verify = { type = \"exec\", command = [\"true\"] }";
    env.write_config(&(env.cert_section("web", probe) + policy));
    let d = env.start();
    wait_for(Duration::from_secs(20), "first issuance", || {
        (cred(d.addr, "web")?.generation == Some(1)).then_some(())
    });
    env.write_config(&(env.cert_section("web", probe) + &env.cert_section("bad", "") + policy));
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the rejection", || {
        env.log().contains("violates [policy]").then_some(())
    });
    assert!(
        cred(d.addr, "bad").is_none(),
        "a violating credential was started"
    );
    assert!(cred(d.addr, "web").is_some());
}

#[test]
fn retire_removes_the_files_records_and_alerts_and_says_it_was_not_revoked() {
    let env = Env::new();
    let hook = Receiver::start(Some(200));
    let certs = env.cert_section("web", "team = \"payments\"")
        + &env.cert_section("sym", "swap = \"symlink\"")
        + &format!(
            "[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\nevents = [\"retired\"]\n",
            hook.url("/hook")
        );
    let cfg = env.write_config(&certs);
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "[daemon]\n",
        &format!(
            "[daemon]\naudit_log = \"{}\"\n",
            env.path("audit.log").display()
        ),
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let d = env.start();
    wait_for(Duration::from_secs(20), "first issuance", || {
        (cred(d.addr, "web")?.state == State::Valid && cred(d.addr, "sym")?.state == State::Valid)
            .then_some(())
    });
    for name in ["web", "sym"] {
        let out = std::process::Command::new(common::bin())
            .args(["retire", name, "-c"])
            .arg(env.path("rekey.toml"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(text.contains("not revoked"), "{text}");
        // The local CA cannot revoke, and says so rather than pretending.
        assert!(text.contains("publishes no CRL"), "{text}");
        let dir = env.path("tls").join(name);
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{name}: files left: {left:?}");
        assert!(cred(d.addr, name).is_none(), "{name} still in /status");
        let (code, _) = d.post(&format!("/v1/rotate/{name}")).unwrap();
        assert_eq!(code, 404);
    }
    wait_for(Duration::from_secs(10), "two retired alerts", || {
        (hook.requests().len() >= 2).then_some(())
    });
    let a = hook.requests()[0].json();
    assert_eq!(a["event"], "retired");
    let web_alert = hook
        .requests()
        .iter()
        .map(|r| r.json())
        .find(|a| a["credential"] == "web")
        .unwrap();
    assert_eq!(web_alert["team"], "payments");
    let log = std::fs::read_to_string(env.path("audit.log")).unwrap();
    let retired: Vec<_> = env
        .audit()
        .into_iter()
        .filter(|r| r.event == AuditEvent::Retired)
        .collect();
    assert_eq!(retired.len(), 2, "{log}");
    assert!(
        !log.contains("\"event\":\"revoked\""),
        "a revoked record for a CA that cannot revoke: {log}"
    );
    assert!(retired.iter().all(|r| r.outcome == AuditOutcome::Retired
        && r.reason.as_deref().unwrap().contains("not revoked")));
    let (code, out) = rekey_audit_verify(&cfg);
    assert_eq!(code, 0, "{out}");
}

fn rekey_audit_verify(config: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(common::bin())
        .args(["audit", "verify", "-c"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

#[test]
fn retire_over_http_reports_the_revocation_and_an_unknown_name_is_404() {
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let d = env.start();
    wait_valid(d.addr, "web", Duration::from_secs(20));
    let (code, body) = d.post("/v1/retire/web").unwrap();
    assert_eq!(code, 200, "{body}");
    let v: RetireOutcome = serde_json::from_str(&body).unwrap();
    assert_eq!(v.result, RetireResult::Retired, "{v:?}");
    assert!(!v.revoked, "{v:?}");
    assert_eq!(v.revocation, Revocation::Unsupported, "{v:?}");
    let (code, _) = d.post("/v1/retire/web").unwrap();
    assert_eq!(code, 404);
}

#[test]
fn on_remove_revoke_retires_a_credential_a_reload_drops_and_keep_leaves_it() {
    let env = Env::new();
    let hook = Receiver::start(Some(200));
    let alert = format!(
        "[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\nevents = [\"retired\"]\n",
        hook.url("/hook")
    );
    let keep = env.cert_section("keep", "");
    let gone = env.cert_section("gone", "on_remove = \"revoke\"");
    let stays = env.cert_section("stays", "");
    env.write_config_audited(&format!("{keep}{gone}{stays}{alert}"));
    let d = env.start();
    wait_for(Duration::from_secs(20), "first issuance", || {
        ["keep", "gone", "stays"]
            .iter()
            .all(|n| cred(d.addr, n).is_some_and(|s| s.state == State::Valid))
            .then_some(())
    });
    env.write_config_audited(&format!("{stays}{alert}"));
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the reload", || {
        cred(d.addr, "keep").is_none().then_some(())
    });
    wait_for(Duration::from_secs(10), "gone retired", || {
        env.audit()
            .iter()
            .any(|r| r.event == AuditEvent::Retired && r.credential == "gone")
            .then_some(())
    });
    assert!(cred(d.addr, "gone").is_none());
    let files = |n: &str| -> Vec<_> {
        std::fs::read_dir(env.path("tls").join(n))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default()
    };
    assert!(files("gone").is_empty(), "{:?}", files("gone"));
    assert_eq!(files("keep").len(), 4, "on_remove = keep removed files");
    let audit = env.audit();
    assert!(
        !audit
            .iter()
            .any(|r| r.credential == "keep" && r.event == AuditEvent::Retired),
        "{audit:?}"
    );
    let reloaded = audit
        .iter()
        .find(|r| r.event == AuditEvent::ConfigReloaded)
        .unwrap();
    let why = reloaded.reason.as_deref().unwrap();
    assert!(
        why.contains("removed [\"keep\"]") && why.contains("retired [\"gone\"]"),
        "{why}"
    );
    wait_for(Duration::from_secs(10), "the retired alert", || {
        hook.requests()
            .iter()
            .any(|r| r.json()["credential"] == "gone")
            .then_some(())
    });
    assert!(hook
        .requests()
        .iter()
        .all(|r| r.json()["credential"] == "gone"));
}

#[test]
fn api_key_policy_needs_an_expiry_and_a_bounded_lifetime() {
    let issuer = "[issuer.keys]\ntype = \"http\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n";
    let key = |mint_extra: &str, extra: &str| {
        format!(
            "[[api_key]]\nname = \"token\"\nissuer = \"keys\"\nfile = \"/tmp/rekey-t/token\"\n\
             mint = {{ path = \"/keys\", secret = \"secret\", id = \"id\"{mint_extra} }}\n{extra}\n"
        )
    };
    let policy = "[policy]\napi_key_max_lifetime = \"30d\"\napi_keys_must_expire = true\n";
    // (api_key section, violations named)
    let cases = [
        (
            key("", "lifetime = \"90d\""),
            vec![
                "token: api_key[0].lifetime breaks policy.api_key_max_lifetime",
                "token: api_key[0].mint breaks policy.api_keys_must_expire",
            ],
        ),
        (key(", body = { ttl = \"{lifetime}\" }", ""), vec![]),
        (key(", ttl = \"ttl\"", "lifetime = \"30d\""), vec![]),
        (key(", expires = \"expires_at\"", ""), vec![]),
    ];
    for (section, named) in cases {
        let env = Env::new();
        let cfg = env.write_config(&format!("{issuer}{section}{policy}"));
        let (code, out) = rekey("check", &cfg);
        if named.is_empty() {
            assert_eq!(code, 0, "{section}: {out}");
            assert!(out.contains("every credential complies"), "{out}");
        } else {
            assert_eq!(code, 1, "{section}: {out}");
            for n in &named {
                assert!(out.contains(n), "{n}: {out}");
            }
            assert!(
                out.contains(&format!("policy: {} violation(s)", named.len())),
                "{out}"
            );
        }
    }
}
