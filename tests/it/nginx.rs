//! The handoff against a real nginx (Debian nginx-light) on a random loopback
//! port: SIGHUP through the pid file and a TLS probe prove the new
//! certificate is served; an undelivered reload rolls back; bootstrap waits
//! for nginx without failing. What nginx serves is checked independently
//! (Python's ssl module), not with rekey's own probe.

use crate::support as common;
use crate::support::alert as support;

use std::time::Duration;

use common::alertmanager::Alertmanager;
use common::*;
use rekey::status::{CredentialStatus, Handoff, RotateResult, State};

fn rotate(env: &Env) -> std::process::Output {
    std::process::Command::new(bin())
        .args(["rotate", "web", "-c"])
        .arg(env.path("rekey.toml"))
        .output()
        .unwrap()
}

/// A `web` certificate for nginx with the given reload and a TLS probe,
/// plus `alerts` (`[[alert]]` tables) appended.
fn config(env: &Env, nginx_addr: std::net::SocketAddr, reload: &str, timeout: &str, alerts: &str) {
    let d = env.path("tls/web");
    env.write_config(&format!(
        "[[certificate]]\nname = \"web\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\n\
         files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\", fullchain = \"{d}/fullchain.pem\" }}\n\
         reload = {reload}\n\
         verify = {{ type = \"tls\", connect = \"{nginx_addr}\", server_name = \"localhost\", timeout = \"{timeout}\" }}\n{alerts}",
        d = d.display()
    ));
}

/// Alert events the webhook receiver got, in order.
fn events(hook: &support::Receiver) -> Vec<serde_json::Value> {
    hook.requests().iter().map(|r| r.json()).collect()
}

fn handoff_is(env: &Env, want: Handoff) -> CredentialStatus {
    wait_for(
        Duration::from_secs(15),
        &format!("handoff {want:?}"),
        || {
            let s = cred(env.addr, "web")?;
            (s.handoff == want).then_some(s)
        },
    )
}

#[test]
fn bootstrap_then_sighup_rotation_is_verified_against_real_nginx() {
    let Some(nginx) = live_binary("nginx", "Debian package nginx-light") else {
        return;
    };
    let env = Env::new();
    let prefix = env.path("nginx");
    let d = env.path("tls/web");
    let (conf, addr) = Nginx::configure(&prefix, &d.join("fullchain.pem"), &d.join("key.pem"));
    let pid_file = prefix.join("nginx.pid");
    let hook = support::Receiver::start(Some(200));
    config(
        &env,
        addr,
        &format!(
            "{{ type = \"signal\", signal = \"HUP\", pid_file = \"{}\" }}",
            pid_file.display()
        ),
        "10s",
        &format!(
            "[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\n",
            hook.url("/hook")
        ),
    );

    // rekey starts first (a native sidecar): nothing serves yet, so the
    // handoff is pending, not failed.
    let _d = env.start();
    let s = wait_for(Duration::from_secs(10), "first issuance", || {
        let s = cred(env.addr, "web")?;
        (s.state == State::Valid).then_some(s)
    });
    assert_eq!(s.handoff, Handoff::Pending, "{s:?}");

    // nginx comes up on the published files: the handoff turns verified.
    let _n = Nginx::start(&nginx, &prefix, &conf, addr);
    let s = handoff_is(&env, Handoff::Verified);
    assert_eq!(
        served_fingerprint(addr, "localhost").as_deref(),
        s.fingerprint.as_deref()
    );
    let first = s.fingerprint.as_deref().unwrap().to_string();

    // rotate: SIGHUP through the pid file, verified by the TLS probe.
    let out = rotate(&env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = cred(env.addr, "web").unwrap();
    assert_eq!(s.handoff, Handoff::Verified, "{s:?}");
    assert_ne!(s.fingerprint.as_deref(), Some(first.as_str()));
    assert_eq!(
        served_fingerprint(addr, "localhost").as_deref(),
        s.fingerprint.as_deref(),
        "nginx does not serve what /status says"
    );
    assert_eq!(s.served_fingerprint, s.fingerprint);
    let log = env.log();
    assert!(
        !log.contains("handoff_failed") && !log.contains("rolled back"),
        "{log}"
    ); // Bootstrap raised nothing: a missing app is not a failed handoff.
    assert!(events(&hook).is_empty(), "{:?}", events(&hook));
}

#[test]
fn an_undelivered_reload_rolls_back_and_nginx_keeps_serving_the_previous_generation() {
    let Some(nginx) = live_binary("nginx", "Debian package nginx-light") else {
        return;
    };
    let env = Env::new();
    let prefix = env.path("nginx");
    let d = env.path("tls/web");
    let (conf, addr) = Nginx::configure(&prefix, &d.join("fullchain.pem"), &d.join("key.pem"));
    // While the switch file exists the reload "succeeds" without signalling
    // nginx: the reload is not delivered. (A shell in argv, test only.)
    let switch = env.path("break-reload");
    let reload = format!(
        "{{ type = \"exec\", command = [\"sh\", \"-c\", \"test -e {} || kill -HUP $(cat {})\"] }}",
        switch.display(),
        prefix.join("nginx.pid").display()
    );
    let hook = support::Receiver::start(Some(200));
    let am = live_binary(
        "prometheus-alertmanager",
        "Debian package prometheus-alertmanager",
    )
    .map(|bin| Alertmanager::start(&bin));
    let mut alerts = format!(
        "[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\n",
        hook.url("/hook")
    );
    if let Some(am) = &am {
        alerts.push_str(&format!(
            "[[alert]]\ntype = \"alertmanager\"\nurl = \"http://{}\"\n",
            am.addr
        ));
    }
    config(&env, addr, &reload, "2s", &alerts);
    let _d = env.start();
    wait_valid(env.addr, "web", Duration::from_secs(10));
    let _n = Nginx::start(&nginx, &prefix, &conf, addr);
    let good = handoff_is(&env, Handoff::Verified);
    let old_fp = good.fingerprint.as_deref().unwrap().to_string();

    std::fs::write(&switch, "").unwrap();
    let out = rotate(&env);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed handoff is a failed rotate"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rolled back") && err.contains("still serves"),
        "{err}"
    );
    let s = cred(env.addr, "web").unwrap();
    assert_eq!(s.handoff, Handoff::Failed, "{s:?}");
    assert_eq!(
        s.fingerprint.as_deref(),
        Some(old_fp.as_str()),
        "the committed generation changed"
    );
    assert_eq!(s.served_fingerprint.as_deref(), Some(old_fp.as_str()));
    assert_eq!(
        s.last_rotation.as_ref().map(|r| r.result),
        Some(RotateResult::RolledBack)
    );
    assert!(
        s.last_error.as_deref().unwrap().contains("still serves"),
        "{s:?}"
    );
    // The previous generation is published again and nginx serves it.
    assert_eq!(
        pair(&d.join("cert.pem"), &d.join("key.pem")).unwrap(),
        (old_fp.clone(), true)
    );
    assert_eq!(
        served_fingerprint(addr, "localhost").as_deref(),
        Some(old_fp.as_str())
    );

    // Still ready: nginx serves the previous, valid certificate, and pulling
    // the app out of its load balancer would turn one bad reload into an
    // outage. The strict rule (a deploy gate) and `rekey status --strict`
    // say why not.
    let (code, body) = http(env.addr, "GET", "/readyz").unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(env.addr, "GET", "/readyz?strict").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("web") && body.contains("handoff failed"),
        "{body}"
    );
    // A misspelt query must not fall back to the lenient rule silently.
    let (code, body) = http(env.addr, "GET", "/readyz?strcit").unwrap();
    assert_eq!(code, 400, "{body}");
    let st = |extra: &[&str]| {
        std::process::Command::new(bin())
            .args(["status", "--addr", &env.addr.to_string()])
            .args(extra)
            .output()
            .unwrap()
    };
    assert_eq!(st(&[]).status.code(), Some(0));
    let strict = st(&["--strict"]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&strict.stderr).contains("handoff failed"));

    // Exactly one handoff_failed alert (retries with backoff are not re-sent).
    let failed = wait_for(Duration::from_secs(10), "the handoff_failed alert", || {
        let e = events(&hook);
        e.iter().find(|a| a["event"] == "handoff_failed").cloned()
    });
    assert_eq!(failed["rolled_back"], true, "{failed}");
    assert_eq!(failed["credential"], "web");
    assert_eq!(failed["served_fingerprint"], old_fp.as_str());
    assert_eq!(failed["severity"], "critical");
    if let Some(am) = &am {
        wait_for(
            Duration::from_secs(10),
            "Alertmanager to list the alert",
            || {
                am.alerts("?active=true").into_iter().find(|a| {
                    a["labels"]["credential"] == "web"
                        && a["labels"]["alertname"]
                            .as_str()
                            .is_some_and(|n| n.contains("HandoffFailed"))
                })
            },
        );
    }

    // The reload works again: the next rotation is verified.
    std::fs::remove_file(&switch).unwrap();
    let out = rotate(&env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = cred(env.addr, "web").unwrap();
    assert_eq!(s.handoff, Handoff::Verified, "{s:?}");
    assert_eq!(
        served_fingerprint(addr, "localhost").as_deref(),
        s.fingerprint.as_deref()
    );

    // Ready again after the verified rotation.
    let (code, body) = http(env.addr, "GET", "/readyz").unwrap();
    assert_eq!(code, 200, "{body}");

    // Both sinks learn of the recovery.
    wait_for(Duration::from_secs(10), "the recovered alert", || {
        events(&hook)
            .iter()
            .find(|a| a["event"] == "recovered")
            .cloned()
    });
    let e = events(&hook);
    let n = e.iter().filter(|a| a["event"] == "handoff_failed").count();
    assert_eq!(n, 1, "handoff_failed was sent {n} times: {e:?}");
    if let Some(am) = &am {
        wait_for(
            Duration::from_secs(10),
            "the Alertmanager alert to resolve",
            || {
                let active = am.alerts("?active=true");
                (!active.iter().any(|a| a["labels"]["credential"] == "web")).then_some(())
            },
        );
    }
}

/// Failed reloads (without nginx: `verify = none`) say which and why.
#[test]
fn failed_reloads_are_failed_handoffs_that_say_why() {
    let dead_pid = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    let cases = [
        (
            "{ type = \"exec\", command = [\"sh\", \"-c\", \"echo no such unit >&2; exit 3\"] }"
                .to_string(),
            vec!["status 3", "no such unit"],
        ),
        (
            "{ type = \"exec\", command = [\"sleep\", \"10\"], timeout = \"1s\" }".to_string(),
            vec!["did not finish within"],
        ),
        (
            "{ type = \"signal\", pid_file = \"PIDFILE\" }".to_string(),
            vec!["stale", "not signalling"],
        ),
    ];
    for (reload, words) in cases {
        let env = Env::new();
        let pid_file = env.path("app.pid");
        std::fs::write(&pid_file, dead_pid.to_string()).unwrap();
        let reload = reload.replace("PIDFILE", &pid_file.display().to_string());
        let d = env.path("tls/web");
        env.write_config(&format!(
            "[[certificate]]\nname = \"web\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\n\
             files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\" }}\nreload = {reload}\n",
            d = d.display()
        ));
        let _d = env.start();
        let first = wait_for(Duration::from_secs(10), "first issuance", || {
            let s = cred(env.addr, "web")?;
            (s.state == State::Valid).then_some(s)
        });
        let out = rotate(&env);
        assert_eq!(out.status.code(), Some(1), "{reload}");
        let s = cred(env.addr, "web").unwrap();
        assert_eq!(s.handoff, Handoff::Failed, "{reload:?}: {s:?}");
        let e = s.last_error.as_deref().unwrap_or_default().to_string();
        for w in &words {
            assert!(e.contains(w), "{reload}: error lacks {w:?}: {e}");
        }
        assert!(e.contains("web"), "the error names the credential: {e}");
        // Rolled back: the first generation is still the committed one.
        assert_eq!(s.fingerprint, first.fingerprint, "{reload}");
        let (fp, ok) = pair(&d.join("cert.pem"), &d.join("key.pem")).unwrap();
        assert!(
            ok && fp == first.fingerprint.as_deref().unwrap(),
            "{reload}"
        );
    }
}
