//! Exec commands under a careless config: a reload that daemonizes (the
//! shape of `apachectl graceful`), one that hangs with children, and
//! secrets in rekey's own environment that must never reach a command.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::scorecard::Scenario;
use crate::support::*;
use rekey::status::{Handoff, RotateResult};

/// Secrets an operator may well have in rekey's environment.
const SECRETS: [(&str, &str); 3] = [
    ("VAULT_TOKEN", "hvs.canary-4f1d9c2a7b"),
    ("AWS_SECRET_ACCESS_KEY", "aws-canary-9e8d7c6b5a"),
    (
        "HTTPS_PROXY",
        "http://ops:proxy-canary-1a2b@proxy.invalid:3128",
    ),
];

/// NAME=VALUE pairs of a NUL- or newline-separated environment dump.
fn vars(text: &str) -> BTreeMap<String, String> {
    text.split(['\0', '\n'])
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What is wrong with a command's environment, if anything: a secret of
/// rekey's, a variable that is neither allowed nor configured, or a
/// missing configured / `REKEY_*` one.
fn env_problem(what: &str, env: &BTreeMap<String, String>, want: &[&str]) -> Result<(), String> {
    for (k, v) in SECRETS {
        if env.contains_key(k) || env.values().any(|x| x.contains(v)) {
            return Err(format!("{what}: rekey's {k} leaked: {env:?}"));
        }
    }
    // Allowed: the allowlist, LC_*, the config's env, rekey's REKEY_* for
    // commands, and PWD, which /bin/sh exports itself.
    let allowed = [
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "APP_ENV", "PWD",
    ];
    for k in env.keys() {
        let rekey_var = k.starts_with("REKEY_") && k != "REKEY_LOG";
        if !(allowed.contains(&k.as_str()) || k.starts_with("LC_") || rekey_var) {
            return Err(format!("{what}: {k} is not on the allowlist: {env:?}"));
        }
    }
    for w in want {
        let (k, v) = w.split_once('=').unwrap();
        if env.get(k).map(String::as_str) != Some(v) {
            return Err(format!("{what}: {w} missing: {env:?}"));
        }
    }
    Ok(())
}

/// Whether `pid` runs (a zombie nobody reaped does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

fn pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn kill_all(pids: &[i32]) {
    for &p in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The daemon with `SECRETS` in its environment.
fn start(env: &Env) -> Daemon {
    env.start_with_env(&SECRETS)
}

#[test]
fn a_reload_that_leaves_a_background_child_succeeds_and_leaks_no_secret() {
    let mut sc = Scenario::new(
        "hostile_host",
        "exec: a reload that daemonizes (`sh -c \"sleep 30 & exit 0\"`) succeeds at once; children get no secret",
    );
    let env = Env::new();
    let children = env.path("children");
    let verify_env = env.path("verify.env");
    let alert_env = env.path("alert.env");
    // The reload leaves a child holding stdout and stderr for 30 s: waiting
    // for them would run into the 3 s timeout, fail and roll back.
    let reload = format!(
        "reload = {{ type = \"exec\", command = [\"/bin/sh\", \"-c\", \"sleep 30 & echo $! >> {c}; exit 0\"], timeout = \"3s\", env = {{ APP_ENV = \"prod\" }} }}\n\
         verify = {{ type = \"exec\", command = [\"/bin/sh\", \"-c\", \"env > {v}\"], env = {{ APP_ENV = \"prod\" }} }}\n",
        c = children.display(),
        v = verify_env.display(),
    );
    let alert = format!(
        "[[alert]]\ntype = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"env > {a}\"]\nenv = {{ APP_ENV = \"prod\" }}\n",
        a = alert_env.display()
    );
    env.write_config(&format!("{}{alert}", env.cert_section("web", &reload)));
    let d = start(&env);
    wait_for(
        Duration::from_secs(20),
        "the first verified handoff",
        || (cred(d.addr, "web")?.handoff == Handoff::Verified).then_some(()),
    );
    let mut slowest = Duration::ZERO;
    for round in 0..3 {
        sc.round();
        let started = Instant::now();
        let (code, body) = d.post("/v1/rotate/web").unwrap();
        slowest = slowest.max(started.elapsed());
        sc.check("rotation succeeds", code == 200, || {
            format!("round {round}: {code} {body}")
        });
        let s = cred(d.addr, "web").unwrap();
        sc.check(
            "handoff verified, not rolled back",
            s.handoff == Handoff::Verified
                && s.last_rotation.as_ref().map(|r| r.result) == Some(RotateResult::Success),
            || format!("{s:?}"),
        );
    }
    let kids = pids(&children);
    sc.check("a child per reload", kids.len() >= 4, || {
        format!("{kids:?}")
    });
    sc.note(format!(
        "{} background children, each left running; slowest rotation {} ms",
        kids.len(),
        slowest.as_millis()
    ));
    for &p in &kids {
        // Read before the check: the child must still run to have an environ.
        let environ = std::fs::read(format!("/proc/{p}/environ"))
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        sc.check(
            "stray child left alone after a successful exit",
            alive(p),
            || format!("{p} is gone"),
        );
        if let Ok(text) = environ {
            let r = env_problem(
                &format!("reload child {p}"),
                &vars(&text),
                &["APP_ENV=prod", "REKEY_CREDENTIAL=web"],
            );
            sc.check_ok("reload child: scrubbed environment", r);
        }
    }
    let r = env_problem(
        "verify",
        &vars(&std::fs::read_to_string(&verify_env).unwrap_or_default()),
        &["APP_ENV=prod", "REKEY_CREDENTIAL=web"],
    );
    sc.check_ok("verify command: scrubbed environment", r);

    // An alert: tamper with the key; the exec sink dumps its environment.
    std::fs::write(env.path("tls/web/key.pem"), "tampered\n").unwrap();
    let text = wait_for(Duration::from_secs(20), "the exec alert sink", || {
        std::fs::read_to_string(&alert_env)
            .ok()
            .filter(|t| t.contains("REKEY_ALERT_EVENT"))
    });
    let r = env_problem(
        "alert sink",
        &vars(&text),
        &["APP_ENV=prod", "REKEY_ALERT_EVENT=tampered"],
    );
    sc.check_ok("alert command: scrubbed environment", r);
    let log = env.log();
    sc.check(
        "no reload failure logged",
        !log.contains("did not finish"),
        || "the log reports a timeout".into(),
    );
    kill_all(&kids);
    sc.finish();
}

#[test]
fn a_reload_that_hangs_is_killed_with_everything_it_started() {
    let mut sc = Scenario::new(
        "hostile_host",
        "exec: a reload that hangs is killed at its timeout with its whole process group",
    );
    let env = Env::new();
    let children = env.path("children");
    let reload = format!(
        "reload = {{ type = \"exec\", command = [\"/bin/sh\", \"-c\", \"sleep 30 & echo $! >> {c}; sleep 30\"], timeout = \"1s\" }}\n",
        c = children.display(),
    );
    env.write_config(&env.cert_section("web", &reload));
    let d = start(&env);
    // The first issuance's reload (bootstrap) times out too: the handoff
    // stays pending, which is fine.
    wait_for(Duration::from_secs(20), "the first issuance", || {
        cred(d.addr, "web")?.generation
    });
    sc.round();
    let (code, body) = d.post("/v1/rotate/web").unwrap();
    sc.check("the rotation fails", code == 502, || {
        format!("{code} {body}")
    });
    sc.check(
        "the error says it was killed with its process group",
        body.contains("did not finish within 1s and was killed (with its process group)"),
        || body.clone(),
    );
    let kids = pids(&children);
    sc.check("background children recorded", kids.len() >= 2, || {
        format!("{kids:?}")
    });
    for &p in &kids {
        let gone = (0..500).any(|_| {
            if alive(p) {
                std::thread::sleep(Duration::from_millis(20));
                false
            } else {
                true
            }
        });
        sc.check("every child of a timed-out reload is killed", gone, || {
            format!("{p} still runs")
        });
    }
    sc.note(format!("{} children, all killed", kids.len()));
    kill_all(&kids);
    drop(d);
    sc.finish();
}
