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

use crate::support as common;
use crate::support::pebble as acme_support;
mod limits;
use crate::support::alert as support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::scorecard::Scenario;
use common::*;
use rekey::status::{CredentialStatus, Handoff, State};

/// How long the first minute of a failing handoff is watched.
const FIRST_MINUTE: Duration = Duration::from_secs(60);

/// `rekey ARGS --addr ADDR`: exit code and stdout + stderr.
/// Run the CLI against `env`'s daemon: rotate and retire through the admin
/// socket (`-c`), the rest over its TCP endpoint.
fn rekey(env: &Env, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    if matches!(args.first(), Some(&"rotate" | &"retire")) {
        cmd.arg("-c").arg(env.path("rekey.toml"));
    } else {
        cmd.args(["--addr", &env.addr.to_string()]);
    }
    let out = cmd.output().unwrap();
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

fn web(env: &Env) -> CredentialStatus {
    cred(env.addr, "web").unwrap_or_else(|| panic!("web is not in /status:\n{}", env.log()))
}

fn wait_web(
    env: &Env,
    what: &str,
    within: Duration,
    f: impl Fn(&CredentialStatus) -> bool,
) -> CredentialStatus {
    wait_for(within, what, || cred(env.addr, "web").filter(|s| f(s)))
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
        s.handoff == Handoff::Verified
    });
    let first = s.fingerprint.as_deref().unwrap_or_default().to_string();
    let before = issued();
    sc.check("one issuance for generation 1", before == 1, || {
        format!("{before}")
    });
    let good = break_nginx(conf);

    // The failing handoff starts: one new certificate, rolled back.
    let t0 = Instant::now();
    let (code, out) = rekey(env, &["rotate", "web"]);
    sc.check(
        "the rotation reports the failed handoff",
        code == 1 && out.contains("rolled back"),
        || format!("{code}: {out}"),
    );
    let s = web(env);
    let staged = s
        .staged
        .as_ref()
        .map(|t| t.fingerprint.as_str())
        .unwrap_or_default()
        .to_string();
    sc.check(
        "the new certificate stays staged",
        !staged.is_empty() && staged != first,
        || format!("{s:?}"),
    );
    sc.check(
        "the app still serves generation 1",
        served_fingerprint(nginx.addr, "localhost").as_deref() == Some(&first),
        || format!("{:?}", served_fingerprint(nginx.addr, "localhost")),
    );

    // A plain `rekey rotate` retries the staged certificate's handoff.
    std::thread::sleep(Duration::from_secs(5));
    let (code, out) = rekey(env, &["rotate", "web"]);
    let s = web(env);
    sc.check(
        "a plain rotate retries the staged handoff",
        code == 1 && s.staged.as_ref().map(|t| t.fingerprint.as_str()) == Some(staged.as_str()),
        || format!("{code:?}: {out:?}\n{s:?}"),
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
    let attempts = s.staged.as_ref().map_or(0, |t| t.attempts);
    sc.check(
        "the handoff was retried with the staged certificate",
        attempts >= 3 && s.staged.as_ref().map(|t| t.fingerprint.as_str()) == Some(staged.as_str()),
        || format!("{s:?}"),
    );
    sc.note(format!(
        "first minute: {in_minute} issuance(s), {attempts} failed handoffs of the one staged certificate"
    ));

    // nginx reloads again: the staged certificate is verified, not a new one.
    std::fs::write(conf, good).unwrap();
    let fixed = Instant::now();
    if nudge {
        let (code, out) = rekey(env, &["rotate", "web"]);
        sc.check("the retry after the fix succeeds", code == 0, || {
            format!("{code}: {out}")
        });
    }
    let s = wait_web(
        env,
        "the staged certificate verified",
        Duration::from_secs(240),
        |s| s.handoff == Handoff::Verified && s.fingerprint.as_deref() != Some(first.as_str()),
    );
    sc.note(format!(
        "verified {:.0} s after the fix",
        fixed.elapsed().as_secs_f64()
    ));
    sc.check(
        "the staged certificate is the one verified",
        s.fingerprint.as_deref() == Some(staged.as_str()) && s.staged.is_none(),
        || format!("{s:?}"),
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
        s.generation == Some(1)
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
        s.generation == Some(1)
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
        |s| s.handoff == Handoff::Verified,
    );
    std::fs::write(env.path("broken"), "").unwrap();
    let (code, _) = rekey(&env, &["rotate", "web"]);
    sc.check("the handoff fails", code == 1, || format!("{code}"));
    let s = web(&env);
    let staged = s
        .staged
        .as_ref()
        .map(|t| t.fingerprint.as_str())
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
        |s| s.state != State::Starting && s.staged.is_some(),
    );
    sc.check(
        "the same staged certificate after restarts",
        s.staged.as_ref().map(|t| t.fingerprint.as_str()) == Some(staged.as_str()),
        || format!("{s:?}"),
    );
    // Its handoff is retried, by the backoff or at once by a plain rotate
    // (the backoff after several failures may be a minute away).
    let (code, out) = rekey(&env, &["rotate", "web"]);
    let s = web(&env);
    sc.check(
        "its handoff is retried after the restart",
        code == 1
            && out.contains("rolled back")
            && s.staged.as_ref().map(|t| t.fingerprint.as_str()) == Some(staged.as_str()),
        || format!("{code:?}: {out:?}\n{s:?}"),
    );
    std::fs::remove_file(env.path("broken")).unwrap();
    let (code, out) = rekey(&env, &["rotate", "web"]);
    sc.check(
        "the retry once the app is fixed succeeds",
        code == 0,
        || format!("{code}: {out}"),
    );
    let s = wait_web(
        &env,
        "the staged certificate verified",
        Duration::from_secs(30),
        |s| s.handoff == Handoff::Verified && s.staged.is_none(),
    );
    sc.check(
        "the staged certificate is the one verified",
        s.fingerprint.as_deref() == Some(staged.as_str()),
        || format!("{s:?}"),
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
            Ok(o) if o.result.as_str() == "success" => {
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
