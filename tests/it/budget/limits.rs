//! The budgets themselves: an exhausted one refuses, alerts once, shows
//! everywhere, survives a restart and gives way before expiry; API key
//! mints and `max_issuances_total` count too; an old journal is adopted;
//! a bad budget exits 2.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::common::scorecard::Scenario;
use super::common::*;
use super::{ca_issued, flag_cert, rekey, support, wait_web, web};
use rekey::status::{Handoff, State};

/// A raw `POST` whose answer headers are kept: (status line and headers, body).
fn post_raw(socket: &Path, path: &str) -> (String, String) {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    (head.to_string(), body.to_string())
}

#[test]
fn an_exhausted_budget_refuses_alerts_once_shows_everywhere_and_survives_a_restart() {
    let mut sc = Scenario::new(
        "budget",
        "an exhausted budget: refused, alerted once, shown, persisted",
    );
    let env = Env::new();
    let hook = support::Receiver::start(Some(200));
    env.write_config(&format!(
        "{}[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\n",
        flag_cert(&env, ""),
        hook.url("/hook")
    ));
    env.dev_issuer("max_issuances = \"3/1h\"");
    let d = env.start();
    wait_web(
        &env,
        "generation 1 verified",
        Duration::from_secs(20),
        |s| s.handoff == Handoff::Verified,
    );
    for _ in 0..2 {
        let (code, out) = rekey(&env, &["rotate", "web", "--reissue"]);
        sc.check("reissues within the budget succeed", code == 0, || {
            out.clone()
        });
    }
    let s = web(&env);
    sc.check(
        "the budget shows its use",
        s.issuance_budget
            .as_ref()
            .is_some_and(|b| b.limit == "3/1h" && b.used == 3 && b.remaining == Some(0)),
        || format!("{s:?}"),
    );
    let (code, out) = rekey(&env, &["rotate", "web", "--reissue"]);
    sc.check(
        "a reissue beyond the budget is refused, saying which budget and until when",
        code == 1
            && out.contains("issuance budget exhausted")
            && out.contains("max_issuances = \"3/1h\" of issuer.dev")
            && out.contains("the current certificate stays in place"),
        || format!("{code}: {out}"),
    );
    let (code, out) = rekey(&env, &["rotate", "web"]);
    sc.check(
        "a plain rotate (nothing staged) is refused too",
        code == 1 && out.contains("refused"),
        || format!("{code}: {out}"),
    );
    let (head, body) = post_raw(&env.socket(), "/v1/rotate/web?reissue=1");
    let retry_after: Option<u64> = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("retry-after: ")
                .or_else(|| l.strip_prefix("Retry-After: "))
        })
        .and_then(|v| v.trim().parse().ok());
    sc.check(
        "HTTP says 429 with Retry-After",
        head.starts_with("HTTP/1.1 429") && retry_after.is_some_and(|s| s > 0 && s <= 3600),
        || format!("{head}\n{body}"),
    );
    let s = web(&env);
    let ex = s
        .issuance_budget
        .as_ref()
        .and_then(|b| b.exhausted.as_ref());
    sc.check(
        "/status shows the exhausted budget and when it frees up",
        // `frees_at` is not optional: it parsed whenever `exhausted` did.
        ex.is_some_and(|ex| ex.budget == "max_issuances = \"3/1h\" of issuer.dev"),
        || format!("{s:?}"),
    );
    sc.check(
        "a refusal is no failure",
        s.state == State::Valid && s.consecutive_failures == 0,
        || format!("{s:?}"),
    );
    let (_, metrics) = http(env.addr, "GET", "/metrics").unwrap();
    sc.check(
        "the metric says exhausted",
        metrics
            .contains("rekey_issuance_budget_exhausted{credential=\"web\",kind=\"certificate\"} 1"),
        || {
            metrics
                .lines()
                .filter(|l| l.contains("budget"))
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
    let (_, table) = rekey(&env, &["status"]);
    sc.check(
        "rekey status says so",
        table.contains("issuance budget exhausted") && table.contains("frees up at"),
        || table.clone(),
    );
    let alerts = wait_for(
        Duration::from_secs(10),
        "the budget_exhausted alert",
        || {
            let a: Vec<serde_json::Value> = hook
                .requests()
                .iter()
                .map(|r| r.json())
                .filter(|a| a["event"] == "budget_exhausted")
                .collect();
            (!a.is_empty()).then_some(a)
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let n = hook
        .requests()
        .iter()
        .filter(|r| r.json()["event"] == "budget_exhausted")
        .count();
    sc.check(
        "one budget_exhausted alert naming credential, budget and time",
        n == 1
            && alerts[0]["credential"] == "web"
            && alerts[0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("3/1h") && m.contains("before 20")),
        || format!("{n}: {alerts:?}"),
    );
    // A restart cannot reset it: the ledger is in the state dir.
    assert_eq!(d.terminate(), Some(0));
    let _d = env.start();
    wait_web(&env, "restarted", Duration::from_secs(20), |s| {
        s.state == State::Valid
    });
    let (code, out) = rekey(&env, &["rotate", "web", "--reissue"]);
    sc.check(
        "still refused after a restart",
        code == 1 && out.contains("issuance budget exhausted"),
        || format!("{code}: {out}"),
    );
    let issued = ca_issued(&env);
    sc.check("three issuances at the CA in all", issued == 3, || {
        format!("{issued}")
    });
    sc.finish();
}

#[test]
fn an_exhausted_budget_never_lets_the_certificate_expire() {
    let mut sc = Scenario::new(
        "budget",
        "an exhausted budget gives way before the certificate expires",
    );
    let env = Env::new();
    env.write_config(&env.cert_section("web", "lifetime = \"30s\"\njitter = \"0%\""));
    env.dev_issuer("max_issuances = \"1/1h\"");
    let _d = env.start();
    let s1 = wait_web(&env, "generation 1", Duration::from_secs(20), |s| {
        s.generation == Some(1)
    });
    let expires = s1.not_after.unwrap().time();
    // Due at two thirds of the lifetime, but the budget (1 an hour) is used up.
    let s = wait_web(
        &env,
        "held back by the budget",
        Duration::from_secs(30),
        |s| {
            s.issuance_budget
                .as_ref()
                .is_some_and(|b| b.exhausted.is_some())
        },
    );
    sc.check(
        "held back while the certificate has time left",
        s.generation == Some(1) && s.state == State::Backoff,
        || format!("{s:?}"),
    );
    let s = wait_web(&env, "generation 2", Duration::from_secs(30), |s| {
        s.generation == Some(2)
    });
    let renewed = s.last_rotation.as_ref().unwrap().at.time();
    sc.check(
        "renewed before generation 1 expired",
        renewed < expires,
        || format!("renewed {s:?} vs expiry {:?}", s1.not_after),
    );
    sc.check(
        "the budget gave way, and said so",
        env.log().contains("budget_override"),
        || "no budget_override in the log".into(),
    );
    let issued = ca_issued(&env);
    sc.check("two issuances at the CA", issued == 2, || {
        format!("{issued}")
    });
    sc.note(format!(
        "renewed {:.1} s before expiry",
        expires
            .duration_since(renewed)
            .unwrap_or_default()
            .as_secs_f64()
    ));
    sc.finish();
}

#[test]
fn a_state_dir_from_before_budgets_is_adopted_without_issuing() {
    let mut sc = Scenario::new(
        "budget",
        "a journal written before budgets is read, nothing reissued",
    );
    let env = Env::new();
    env.write_config(&flag_cert(&env, ""));
    let d = env.start();
    let s = wait_web(
        &env,
        "generation 1 verified",
        Duration::from_secs(20),
        |s| s.handoff == Handoff::Verified,
    );
    assert_eq!(d.terminate(), Some(0));
    // What an earlier rekey wrote: no issuance ledger, no staged record.
    let path = env.path("state/certs/web/journal.json");
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let had = j.as_object_mut().unwrap().remove("issuances").is_some();
    sc.check("this rekey records issuances", had, || j.to_string());
    std::fs::write(&path, serde_json::to_vec_pretty(&j).unwrap()).unwrap();
    let _d = env.start();
    let again = wait_web(&env, "started", Duration::from_secs(20), |s| {
        s.state == State::Valid
    });
    sc.check(
        "the same generation",
        again.fingerprint == s.fingerprint && again.generation == Some(1),
        || format!("{again:?}"),
    );
    sc.check("nothing issued", ca_issued(&env) == 1, || {
        format!("{}", ca_issued(&env))
    });
    sc.finish();
}

#[test]
fn a_budget_that_does_not_parse_or_is_zero_exits_2_naming_the_key() {
    let mut sc = Scenario::new("budget", "a bad budget exits 2 naming the key");
    let env = Env::new();
    for (key, value) in [
        ("max_issuances", "0/7d"),
        ("max_issuances", "five a week"),
        ("max_issuances_total", "0/3h"),
        ("max_issuances_total", "50/never"),
    ] {
        sc.round();
        env.write_config(&env.cert_section("web", ""));
        env.dev_issuer(&format!("{key} = \"{value}\""));
        for cmd in ["check", "run"] {
            let out = Command::new(bin())
                .args([cmd, "-c"])
                .arg(env.path("rekey.toml"))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            sc.check(
                "exit 2 naming the key",
                out.status.code() == Some(2) && err.contains(&format!("issuer.dev.{key}")),
                || format!("{cmd} {key} = {value:?}: {:?} {err}", out.status.code()),
            );
        }
    }
    sc.finish();
}

#[test]
fn api_keys_and_an_issuer_total_are_budgeted_too() {
    let mut sc = Scenario::new(
        "budget",
        "API key mints and max_issuances_total across credentials",
    );
    let env = Env::new();
    // The key service: a mint command that counts what it minted.
    let (mint, minted) = env.mint_script();
    let key = env.path("app/token");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    env.write_config(&format!(
        "{}{}[issuer.cmd]\ntype = \"exec\"\nmax_issuances = \"2/1h\"\n\n\
         [[api_key]]\nname = \"svc\"\nissuer = \"cmd\"\nfile = \"{key}\"\nlifetime = \"90d\"\nmint = {{ command = [\"{mint}\"] }}\n",
        env.cert_section("a", "lifetime = \"90d\""),
        env.cert_section("b", "lifetime = \"90d\""),
        key = key.display(),
        mint = mint.display(),
    ));
    env.dev_issuer("max_issuances_total = \"3/1h\"");
    let _d = env.start();
    wait_for(Duration::from_secs(20), "everything issued", || {
        statuses(env.addr)?
            .iter()
            .all(|c| c.state == State::Valid)
            .then_some(())
    });
    let count = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| t.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    let (code, out) = rekey(&env, &["rotate", "svc"]);
    sc.check("a second key within the budget", code == 0, || out.clone());
    let (code, out) = rekey(&env, &["rotate", "svc"]);
    sc.check(
        "a third key in the hour is refused",
        code == 1 && out.contains("max_issuances = \"2/1h\" of issuer.cmd"),
        || format!("{code}: {out}"),
    );
    sc.check(
        "two keys minted at the key service",
        count(&minted) == 2,
        || format!("{}", count(&minted)),
    );
    let (code, out) = rekey(&env, &["rotate", "a", "--reissue"]);
    sc.check("the issuer's third certificate", code == 0, || out.clone());
    let (code, out) = rekey(&env, &["rotate", "b", "--reissue"]);
    sc.check(
        "a fourth certificate of the issuer is refused, for any credential",
        code == 1
            && out.contains("max_issuances_total = \"3/1h\" of issuer.dev, across its credentials"),
        || format!("{code}: {out}"),
    );
    sc.check("three certificates at the CA", ca_issued(&env) == 3, || {
        format!("{}", ca_issued(&env))
    });
    sc.finish();
}
