//! A failing app or CA never turns into a stream of new certificates.
//! Issuances are counted at the issuer itself: the local CA's own record
//! (`state/ca/NAME/issued.log`) and Pebble's log ("Issued certificate").
//!
//! - a real nginx that never reloads (a broken config): the staged
//!   certificate's handoff is retried, not the issuance, on the local CA and
//!   on Pebble; once nginx reloads, the same certificate is verified;
//! - `kill -9` while a staged certificate waits: the restart resumes it;
//! - a burst of concurrent rotate requests is one issuance;
//! - an exhausted budget refuses `--reissue` and plain rotations, alerts
//!   once, shows in `/status`, `rekey status` and the metrics, survives a
//!   restart, and never blocks the renewal that keeps a credential valid;
//! - a state dir written before budgets existed is adopted without issuing;
//! - a budget that cannot parse or is zero exits 2 naming the key.

mod acme_support;
mod common;
#[allow(dead_code)]
#[path = "alert/support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::scorecard::Scenario;
use common::*;

/// How long the first minute of a failing handoff is watched.
const FIRST_MINUTE: Duration = Duration::from_secs(60);

/// `rekey ARGS --addr ADDR`: exit code and stdout + stderr.
fn rekey(addr: SocketAddr, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .args(args)
        .args(["--addr", &addr.to_string()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// Certificates the local CA `dev` says it issued (its `issued.log`).
fn ca_issued(env: &Env) -> usize {
    std::fs::read_to_string(env.path("state/ca/dev/issued.log"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Certificates Pebble says it issued.
fn pebble_issued(p: &acme_support::Pebble) -> usize {
    p.log().matches("Issued certificate serial").count()
}

fn web(env: &Env) -> serde_json::Value {
    cred_status(env.addr, "web").unwrap_or_default()
}

fn wait_web(
    env: &Env,
    what: &str,
    within: Duration,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(within, what, || {
        cred_status(env.addr, "web").filter(|s| f(s))
    })
}

/// nginx's config with a directive it refuses: a SIGHUP then keeps the old
/// configuration, and with it the old certificate (an app that never reloads).
fn break_nginx(conf: &Path) -> String {
    let good = std::fs::read_to_string(conf).unwrap();
    std::fs::write(conf, format!("{good}this_is_not_a_directive on;\n")).unwrap();
    good
}

/// The `web` certificate for nginx: SIGHUP through its pid file, a TLS probe.
fn nginx_cert(
    env: &Env,
    issuer: &str,
    names: &str,
    sni: &str,
    nginx: SocketAddr,
    pid: &Path,
) -> String {
    let d = env.path("tls/web");
    format!(
        "[[certificate]]\nname = \"web\"\nissuer = \"{issuer}\"\ndns_names = [{names}]\nlifetime = \"90d\"\n\
         files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\", fullchain = \"{d}/fullchain.pem\" }}\n\
         reload = {{ type = \"signal\", signal = \"HUP\", pid_file = \"{p}\" }}\n\
         verify = {{ type = \"tls\", connect = \"{nginx}\", server_name = \"{sni}\", timeout = \"2s\" }}\n",
        d = d.display(),
        p = pid.display(),
    )
}

/// The shared body of the two nginx scenarios: nginx serves generation 1,
/// its config breaks, a rotation issues one certificate whose handoff then
/// fails for a minute (retried, never reissued, also by a plain `rekey
/// rotate`), then nginx is fixed and the same certificate is verified.
/// `issued` counts at the issuer; `nudge` retries at once once fixed
/// (else the backoff's own retry is awaited).
fn failing_nginx(
    sc: &mut Scenario,
    env: &Env,
    nginx: &Nginx,
    conf: &Path,
    issued: &dyn Fn() -> usize,
    nudge: bool,
) {
    let s = wait_web(env, "generation 1 verified", Duration::from_secs(30), |s| {
        s["handoff"] == "verified"
    });
    let first = s["fingerprint"].as_str().unwrap_or_default().to_string();
    let before = issued();
    sc.check("one issuance for generation 1", before == 1, || {
        format!("{before}")
    });
    let good = break_nginx(conf);

    // The failing handoff starts: one new certificate, rolled back.
    let t0 = Instant::now();
    let (code, out) = rekey(env.addr, &["rotate", "web"]);
    sc.check(
        "the rotation reports the failed handoff",
        code == 1 && out.contains("rolled back"),
        || format!("{code}: {out}"),
    );
    let s = web(env);
    let staged = s["staged"]["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    sc.check(
        "the new certificate stays staged",
        !staged.is_empty() && staged != first,
        || s.to_string(),
    );
    sc.check(
        "the app still serves generation 1",
        served_fingerprint(nginx.addr, "localhost").as_deref() == Some(&first),
        || format!("{:?}", served_fingerprint(nginx.addr, "localhost")),
    );

    // A plain `rekey rotate` retries the staged certificate's handoff.
    std::thread::sleep(Duration::from_secs(5));
    let (code, out) = rekey(env.addr, &["rotate", "web"]);
    let s = web(env);
    sc.check(
        "a plain rotate retries the staged handoff",
        code == 1 && s["staged"]["fingerprint"] == staged.as_str(),
        || format!("{code}: {out}\n{s}"),
    );

    // The rest of the first minute: the backoff retries the handoff.
    let mut max_in_minute = 0;
    while t0.elapsed() < FIRST_MINUTE {
        max_in_minute = max_in_minute.max(issued() - before);
        std::thread::sleep(Duration::from_millis(500));
    }
    let in_minute = issued() - before;
    sc.check(
        "at most 2 issuances in the first minute of a failing handoff",
        in_minute.max(max_in_minute) <= 2,
        || format!("{in_minute} issuances"),
    );
    let s = web(env);
    let attempts = s["staged"]["attempts"].as_u64().unwrap_or(0);
    sc.check(
        "the handoff was retried with the staged certificate",
        attempts >= 3 && s["staged"]["fingerprint"] == staged.as_str(),
        || s.to_string(),
    );
    sc.note(format!(
        "first minute: {in_minute} issuance(s), {attempts} failed handoffs of the one staged certificate"
    ));

    // nginx reloads again: the staged certificate is verified, not a new one.
    std::fs::write(conf, good).unwrap();
    let fixed = Instant::now();
    if nudge {
        let (code, out) = rekey(env.addr, &["rotate", "web"]);
        sc.check("the retry after the fix succeeds", code == 0, || {
            format!("{code}: {out}")
        });
    }
    let s = wait_web(
        env,
        "the staged certificate verified",
        Duration::from_secs(240),
        |s| s["handoff"] == "verified" && s["fingerprint"] != first.as_str(),
    );
    sc.note(format!(
        "verified {:.0} s after the fix",
        fixed.elapsed().as_secs_f64()
    ));
    sc.check(
        "the staged certificate is the one verified",
        s["fingerprint"] == staged.as_str() && s["staged"].is_null(),
        || s.to_string(),
    );
    sc.check(
        "nginx serves it",
        served_fingerprint(nginx.addr, "localhost").as_deref() == Some(&staged),
        || format!("{:?}", served_fingerprint(nginx.addr, "localhost")),
    );
    let total = issued() - before;
    sc.check("no issuance after the first one", total == 1, || {
        format!("{total} issuances")
    });
}

#[test]
fn local_ca_a_real_nginx_that_never_reloads_gets_its_handoff_retried_not_new_certificates() {
    let mut sc = Scenario::new(
        "budget",
        "local CA, 90-day certificate, real nginx that never reloads: handoff retried, not issuance",
    );
    let Some(nginx_bin) = live_binary("nginx", "Debian package nginx-light") else {
        return sc.skip("nginx is not installed");
    };
    let env = Env::new();
    let prefix = env.path("nginx");
    let d = env.path("tls/web");
    let (conf, addr) = Nginx::configure(&prefix, &d.join("fullchain.pem"), &d.join("key.pem"));
    env.write_config(&nginx_cert(
        &env,
        "dev",
        "\"localhost\"",
        "localhost",
        addr,
        &prefix.join("nginx.pid"),
    ));
    let _d = env.start();
    wait_web(&env, "generation 1 issued", Duration::from_secs(20), |s| {
        s["generation"] == 1
    });
    let nginx = Nginx::start(&nginx_bin, &prefix, &conf, addr);
    // No nudge: the backoff's own retry finds nginx fixed.
    failing_nginx(&mut sc, &env, &nginx, &conf, &|| ca_issued(&env), false);
    sc.finish();
}

#[test]
fn pebble_a_real_nginx_that_never_reloads_gets_its_handoff_retried_not_new_orders() {
    let mut sc = Scenario::new(
        "budget",
        "ACME (Pebble), real nginx that never reloads: handoff retried, not issuance",
    );
    if acme_support::have_pebble().is_none() {
        return sc.skip("pebble is not installed");
    }
    let Some(nginx_bin) = live_binary("nginx", "Debian package nginx-light") else {
        return sc.skip("nginx is not installed");
    };
    let pebble = acme_support::Pebble::start(acme_support::Opts::default());
    let env = Env::new();
    let prefix = env.path("nginx");
    let d = env.path("tls/web");
    let (conf, addr) = Nginx::configure(&prefix, &d.join("fullchain.pem"), &d.join("key.pem"));
    let issuer = pebble.issuer_toml("le", &pebble.listen_challenge(), "");
    let cert = nginx_cert(
        &env,
        "le",
        "\"web.rekey.test\"",
        "web.rekey.test",
        addr,
        &prefix.join("nginx.pid"),
    );
    env.write_config(&format!("{issuer}\n{cert}"));
    let _d = env.start();
    wait_web(&env, "generation 1 issued", Duration::from_secs(60), |s| {
        s["generation"] == 1
    });
    let nginx = Nginx::start(&nginx_bin, &prefix, &conf, addr);
    failing_nginx(
        &mut sc,
        &env,
        &nginx,
        &conf,
        &|| pebble_issued(&pebble),
        true,
    );
    sc.finish();
}

/// A `web` certificate whose exec probe fails while `broken` exists.
fn flag_cert(env: &Env, extra: &str) -> String {
    env.cert_section(
        "web",
        &format!(
            "lifetime = \"90d\"\nverify = {{ type = \"exec\", command = [\"test\", \"!\", \"-e\", \"{}\"], timeout = \"1s\", settle = \"10ms\" }}\n{extra}",
            env.path("broken").display()
        ),
    )
}

#[test]
fn kill9_while_a_staged_certificate_waits_resumes_the_same_one() {
    let mut sc = Scenario::new(
        "budget",
        "kill -9 while a staged certificate waits for its handoff",
    );
    let env = Env::new();
    env.write_config(&flag_cert(&env, ""));
    let d = env.start();
    wait_web(
        &env,
        "generation 1 verified",
        Duration::from_secs(20),
        |s| s["handoff"] == "verified",
    );
    std::fs::write(env.path("broken"), "").unwrap();
    let (code, _) = rekey(env.addr, &["rotate", "web"]);
    sc.check("the handoff fails", code == 1, || format!("{code}"));
    let s = web(&env);
    let staged = s["staged"]["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let issued = ca_issued(&env);
    sc.check("two issuances so far", issued == 2, || format!("{issued}"));
    // Killed while it waits between retries...
    std::thread::sleep(Duration::from_millis(1500));
    sc.round();
    d.kill9();
    // ...and twice more, right after restarts, while it resumes.
    for _ in 0..2 {
        sc.round();
        let d = env.start();
        std::thread::sleep(Duration::from_millis(300));
        d.kill9();
        sc.check(
            "no issuance across the restarts",
            ca_issued(&env) == issued,
            || format!("{} issuances, {issued} before", ca_issued(&env)),
        );
    }
    let d = env.start();
    let s = wait_web(
        &env,
        "the staged certificate resumed",
        Duration::from_secs(20),
        |s| s["state"] != "starting" && !s["staged"].is_null(),
    );
    sc.check(
        "the same staged certificate after restarts",
        s["staged"]["fingerprint"] == staged.as_str(),
        || s.to_string(),
    );
    // Its handoff is retried, by the backoff or at once by a plain rotate
    // (the backoff after several failures may be a minute away).
    let (code, out) = rekey(env.addr, &["rotate", "web"]);
    let s = web(&env);
    sc.check(
        "its handoff is retried after the restart",
        code == 1 && out.contains("rolled back") && s["staged"]["fingerprint"] == staged.as_str(),
        || format!("{code}: {out}\n{s}"),
    );
    std::fs::remove_file(env.path("broken")).unwrap();
    let (code, out) = rekey(env.addr, &["rotate", "web"]);
    sc.check(
        "the retry once the app is fixed succeeds",
        code == 0,
        || format!("{code}: {out}"),
    );
    let s = wait_web(
        &env,
        "the staged certificate verified",
        Duration::from_secs(30),
        |s| s["handoff"] == "verified" && s["staged"].is_null(),
    );
    sc.check(
        "the staged certificate is the one verified",
        s["fingerprint"] == staged.as_str(),
        || s.to_string(),
    );
    sc.check(
        "no issuance since the first failed handoff",
        ca_issued(&env) == issued,
        || format!("{} issuances, {issued} before", ca_issued(&env)),
    );
    let c = invariants_pair(&env);
    sc.check(
        "the published pair is the staged certificate and matches",
        c.as_ref().is_ok_and(|(fp, ok)| *ok && *fp == staged),
        || format!("{c:?}"),
    );
    drop(d);
    sc.finish();
}

fn invariants_pair(env: &Env) -> Result<(String, bool), String> {
    let d = env.path("tls/web");
    pair(&d.join("cert.pem"), &d.join("key.pem"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_concurrent_rotate_requests_is_one_issuance() {
    let mut sc = Scenario::new(
        "budget",
        "500 concurrent rotate requests for one credential",
    );
    let env = Env::new();
    // The probe takes a second, so every request of the burst finds the
    // rotation still running.
    env.write_config(&env.cert_section(
        "web",
        "lifetime = \"90d\"\nverify = { type = \"exec\", command = [\"sleep\", \"1\"], timeout = \"10s\" }",
    ));
    let text = std::fs::read_to_string(env.path("rekey.toml"))
        .unwrap()
        .replace(&format!("listen = \"{}\"", env.addr), "listen = \"\"");
    std::fs::write(env.path("rekey.toml"), text).unwrap();
    let config = rekey::config::Config::load(&env.path("rekey.toml")).unwrap();
    let metrics = rekey::metrics::Metrics::new("test");
    let alerter = rekey::daemon::build_alerter(&config, &metrics).unwrap();
    let running = rekey::daemon::start(&config, alerter, metrics)
        .await
        .unwrap();
    let h = running.handle();
    support::wait_for(Duration::from_secs(30), "generation 1", || {
        h.snapshot()
            .get("web")
            .filter(|s| s.handoff == rekey::status::Handoff::Verified)
            .map(|_| ())
    })
    .await;
    let before = ca_issued(&env);
    const N: usize = 500;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let calls: Vec<_> = (0..N)
        .map(|_| {
            let (h, b) = (h.clone(), barrier.clone());
            tokio::spawn(async move {
                b.wait().await;
                h.rotate("web").await
            })
        })
        .collect();
    let mut generations = std::collections::BTreeSet::new();
    let mut ok = 0;
    for c in calls {
        sc.round();
        match c.await.unwrap() {
            Ok(o) if o.result == "success" => {
                ok += 1;
                generations.insert(o.generation);
            }
            other => {
                sc.check("every request gets the rotation's outcome", false, || {
                    format!("{other:?}")
                });
            }
        }
    }
    let issued = ca_issued(&env) - before;
    sc.check(
        "one issuance for the burst, counted at the CA",
        issued == 1,
        || format!("{issued} issuances"),
    );
    sc.check(
        "every waiter got that one rotation's outcome",
        ok == N && generations.len() == 1,
        || format!("{ok} successes, generations {generations:?}"),
    );
    sc.note(format!("{N} requests, {issued} issuance"));
    running.shutdown().await;
    sc.finish();
}

/// A raw `POST` whose answer headers are kept: (status line and headers, body).
fn post_raw(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
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
        |s| s["handoff"] == "verified",
    );
    for _ in 0..2 {
        let (code, out) = rekey(env.addr, &["rotate", "web", "--reissue"]);
        sc.check("reissues within the budget succeed", code == 0, || {
            out.clone()
        });
    }
    let s = web(&env);
    sc.check(
        "the budget shows its use",
        s["issuance_budget"]["limit"] == "3/1h"
            && s["issuance_budget"]["used"] == 3
            && s["issuance_budget"]["remaining"] == 0,
        || s.to_string(),
    );
    let (code, out) = rekey(env.addr, &["rotate", "web", "--reissue"]);
    sc.check(
        "a reissue beyond the budget is refused, saying which budget and until when",
        code == 1
            && out.contains("issuance budget exhausted")
            && out.contains("max_issuances = \"3/1h\" of issuer.dev")
            && out.contains("the current certificate stays in place"),
        || format!("{code}: {out}"),
    );
    let (code, out) = rekey(env.addr, &["rotate", "web"]);
    sc.check(
        "a plain rotate (nothing staged) is refused too",
        code == 1 && out.contains("refused"),
        || format!("{code}: {out}"),
    );
    let (head, body) = post_raw(env.addr, "/v1/rotate/web?reissue=1");
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
    let ex = &s["issuance_budget"]["exhausted"];
    sc.check(
        "/status shows the exhausted budget and when it frees up",
        ex["budget"] == "max_issuances = \"3/1h\" of issuer.dev" && ex["frees_at"].is_string(),
        || s.to_string(),
    );
    sc.check(
        "a refusal is no failure",
        s["state"] == "valid" && s["consecutive_failures"] == 0,
        || s.to_string(),
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
    let (_, table) = rekey(env.addr, &["status"]);
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
        s["state"] == "valid"
    });
    let (code, out) = rekey(env.addr, &["rotate", "web", "--reissue"]);
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
        s["generation"] == 1
    });
    let expires = humantime::parse_rfc3339(s1["not_after"].as_str().unwrap()).unwrap();
    // Due at two thirds of the lifetime, but the budget (1 an hour) is used up.
    let s = wait_web(
        &env,
        "held back by the budget",
        Duration::from_secs(30),
        |s| !s["issuance_budget"]["exhausted"].is_null(),
    );
    sc.check(
        "held back while the certificate has time left",
        s["generation"] == 1 && s["state"] == "backoff",
        || s.to_string(),
    );
    let s = wait_web(&env, "generation 2", Duration::from_secs(30), |s| {
        s["generation"] == 2
    });
    let renewed = humantime::parse_rfc3339(s["last_rotation"]["at"].as_str().unwrap()).unwrap();
    sc.check(
        "renewed before generation 1 expired",
        renewed < expires,
        || format!("renewed {s} vs expiry {}", s1["not_after"]),
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
        |s| s["handoff"] == "verified",
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
        s["state"] == "valid"
    });
    sc.check(
        "the same generation",
        again["fingerprint"] == s["fingerprint"] && again["generation"] == 1,
        || again.to_string(),
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
    let mint = env.path("mint");
    let minted = env.path("minted");
    std::fs::write(
        &mint,
        format!(
            "#!/bin/sh\nn=$(($(cat {c} 2>/dev/null || echo 0) + 1))\necho $n > {c}\n\
             printf '{{\"secret\": \"s3cret-%s\", \"id\": \"exec-%s\", \"expires_at\": \"2099-01-01T00:00:00Z\"}}' $n $n\n",
            c = minted.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&mint, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
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
        let s = status(env.addr)?;
        s.as_array()?
            .iter()
            .all(|c| c["state"] == "valid")
            .then_some(())
    });
    let count = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| t.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    let (code, out) = rekey(env.addr, &["rotate", "svc"]);
    sc.check("a second key within the budget", code == 0, || out.clone());
    let (code, out) = rekey(env.addr, &["rotate", "svc"]);
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
    let (code, out) = rekey(env.addr, &["rotate", "a", "--reissue"]);
    sc.check("the issuer's third certificate", code == 0, || out.clone());
    let (code, out) = rekey(env.addr, &["rotate", "b", "--reissue"]);
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
