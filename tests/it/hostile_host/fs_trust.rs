//! Paths rekey writes, and what it trusts: a target directory swapped for a
//! symlink, credentials planted before the first start, a state dir another
//! user owns, an admin token others can write.

use std::os::unix::fs::symlink;
use std::time::{Duration, SystemTime};

use super::*;
use crate::support::scorecard::Scenario;
use rekey::audit::{AuditEvent, AuditOutcome};
use rekey::status::State;

fn directory_swapped_for_a_symlink(swap: &str) {
    let mut sc = Scenario::new(
        SUITE,
        &format!("target directory replaced by a symlink to another directory ({swap})"),
    );
    let env = Env::new();
    let hook = support::Receiver::start(Some(200));
    env.write_config_audited(&format!(
        "{}\n[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\n",
        env.cert_section("web", &format!("swap = \"{swap}\"")),
        hook.url("/hook")
    ));
    let d = env.start();
    let (cert, key) = inv_cred(&env);
    let first = wait_for(Duration::from_secs(20), "issuance", || {
        pair(&cert, &key).ok().map(|p| p.0)
    });
    // The first rotation has ended (a request sent while it runs would
    // join it, and get its outcome).
    wait_for(Duration::from_secs(20), "generation 1 committed", || {
        cred(d.addr, "web")
            .filter(|s| s.state == State::Valid && s.fingerprint.as_deref() == Some(first.as_str()))
    });
    // Someone moves the directory away and puts a symlink to another
    // directory (holding its own key.pem) in its place.
    sc.round();
    let victim = env.path("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("key.pem"), "VICTIM").unwrap();
    let dir = env.path("tls/web");
    std::fs::rename(&dir, env.path("tls/web.moved")).unwrap();
    symlink(&victim, &dir).unwrap();
    let (code, body) = d.post("/v1/rotate/web").unwrap();
    sc.check("the rotation is refused", code != 200, || {
        format!("{code} {body}")
    });
    sc.check(
        "it says why: the directory was replaced",
        body.contains("refusing to write into") && body.contains(&dir.display().to_string()),
        || body.clone(),
    );
    let names: Vec<_> = std::fs::read_dir(&victim)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    sc.check(
        "nothing written through the symlink",
        std::fs::read(victim.join("key.pem")).unwrap() == b"VICTIM" && names.len() == 1,
        || format!("victim holds {names:?}"),
    );
    let alert = wait_until(Instant::now() + Duration::from_secs(15), || {
        hook.requests()
            .iter()
            .map(|r| r.json())
            .find(|j| j["event"] == "tampered" && j["credential"] == "web")
    });
    sc.check("a tampered alert is sent", alert.is_some(), || {
        format!(
            "{:?}",
            hook.requests().iter().map(|r| r.json()).collect::<Vec<_>>()
        )
    });
    let audited = env
        .audit()
        .iter()
        .any(|r| r.event == AuditEvent::Tampered && r.outcome == AuditOutcome::Refused);
    sc.check("the audit log records it", audited, || {
        format!("{:?}", env.audit())
    });
    // The backstop/file-event repair refuses the same way (no write).
    let s = cred(d.addr, "web").unwrap();
    sc.check(
        "the committed generation stays",
        s.fingerprint.as_deref() == Some(first.as_str()),
        || format!("{s:?}"),
    );
    // Put back: rotations work again.
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(env.path("tls/web.moved"), &dir).unwrap();
    let (code, body) = d.post("/v1/rotate/web").unwrap();
    sc.check(
        "rotates again once the directory is back",
        code == 200,
        || format!("{code} {body}"),
    );
    sc.check_ok(
        "the pair matches",
        pair(&cert, &key).and_then(|(fp, ok)| {
            (ok && fp != first)
                .then_some(())
                .ok_or(format!("{fp} matches={ok}"))
        }),
    );
    sc.finish();
}

#[test]
fn a_target_directory_swapped_for_a_symlink_is_never_written_through_rename() {
    directory_swapped_for_a_symlink("rename");
}

#[test]
fn a_target_directory_swapped_for_a_symlink_is_never_written_through_symlink() {
    directory_swapped_for_a_symlink("symlink");
}

fn line_of<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.trim_start().starts_with(name))
        .unwrap_or("")
}

#[test]
fn a_planted_certificate_is_not_adopted_unless_it_chains_and_complies() {
    let mut sc = Scenario::new(
        SUITE,
        "self-signed 100-year certificate planted before the first start",
    );
    let env = Env::new();
    let cfg = env.write_config_audited(&env.cert_section("web", ""));
    let (cert, key) = inv_cred(&env);
    let d = env.path("tls/web");
    std::fs::create_dir_all(&d).unwrap();
    let (pem, key_pem, planted) = self_signed(36500);
    for f in ["cert.pem", "fullchain.pem", "ca.pem"] {
        std::fs::write(d.join(f), &pem).unwrap();
    }
    std::fs::write(&key, &key_pem).unwrap();
    sc.round();
    let check = |env: &Env| {
        run_to_end(env.dir.path(), &os(&["check", "-c", cfg.to_str().unwrap()]))
            .map(|(_, out)| line_of(&out, "web").to_string())
            .unwrap_or_default()
    };
    let line = check(&env);
    sc.check(
        "rekey check does not call it valid",
        line.contains("NOT trusted") && !line.contains("valid until") && !line.contains("renews"),
        || line.clone(),
    );
    let daemon = env.start();
    let s = wait_for(Duration::from_secs(20), "a certificate of its own", || {
        let s = cred(daemon.addr, "web")?;
        (s.state == State::Valid && s.fingerprint.as_deref() != Some(planted.as_str())).then_some(s)
    });
    let renews = s.next_renewal.map(|t| t.time());
    let day = SystemTime::now() + Duration::from_secs(2 * 86400);
    sc.check(
        "reissued by the configured CA, renewal within its lifetime",
        renews.is_some_and(|t| t < day) && pair(&cert, &key).is_ok_and(|p| p.0 != planted && p.1),
        || format!("{s:?}"),
    );
    let refused = env
        .audit()
        .into_iter()
        .find(|r| r.event == AuditEvent::Adopted);
    sc.check(
        "an audit record says why it was not adopted",
        refused.as_ref().is_some_and(|r| {
            r.outcome == AuditOutcome::Refused
                && r.reason
                    .as_deref()
                    .is_some_and(|w| w.contains("does not chain"))
        }),
        || format!("{refused:?}"),
    );
    sc.check(
        "a WARN says so",
        env.log().contains("not adopted") && env.log().contains("WARN"),
        || env.log(),
    );
    let ours = s.fingerprint.as_deref().unwrap().to_string();
    drop(daemon);

    // Control: the state dir's journal is lost but the local CA kept; the
    // published pair chains to it and is adopted, not reissued.
    sc.round();
    std::fs::remove_dir_all(env.path("state/certs")).unwrap();
    let line = check(&env);
    sc.check(
        "rekey check calls a pair from the CA valid",
        line.contains("valid until"),
        || line.clone(),
    );
    let daemon = env.start();
    let s = wait_for(Duration::from_secs(20), "adoption", || {
        let s = cred(daemon.addr, "web")?;
        (s.state == State::Valid).then_some(s)
    });
    sc.check(
        "adopted, not reissued",
        s.fingerprint.as_deref() == Some(ours.as_str()),
        || format!("{s:?}"),
    );
    drop(daemon);

    // A pair from the CA that lives longer than [policy] max_lifetime.
    sc.round();
    std::fs::remove_dir_all(env.path("state/certs")).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[[certificate]]\nname = \"web\"\n",
        "[policy]\nmax_lifetime = \"1h\"\n\n[[certificate]]\nname = \"web\"\nlifetime = \"1h\"\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let line = check(&env);
    sc.check(
        "rekey check names the policy",
        line.contains("NOT trusted") && line.contains("max_lifetime"),
        || line.clone(),
    );
    let daemon = env.start();
    let s = wait_for(Duration::from_secs(20), "a compliant certificate", || {
        let s = cred(daemon.addr, "web")?;
        (s.state == State::Valid && s.fingerprint.as_deref() != Some(ours.as_str())).then_some(s)
    });
    let nb = s.not_before.map(|t| t.time());
    let na = s.not_after.map(|t| t.time());
    sc.check(
        "reissued within max_lifetime",
        matches!((nb, na), (Some(b), Some(a)) if a.duration_since(b).unwrap() <= Duration::from_secs(3600)),
        || format!("{s:?}"),
    );
    sc.finish();
}

#[test]
fn a_state_dir_another_user_owns_and_an_admin_token_others_can_write_are_refused() {
    let Some(mut sc) = Scenario::new(
        SUITE,
        "state dir owned by another user; admin token writable or readable by others",
    )
    .require_root("needs root to give the state dir to another user") else {
        return;
    };
    // A state dir owned by nobody, mode 0700.
    sc.round();
    let env = Env::new();
    let cfg = env.write_config(&env.cert_section("web", ""));
    let state = env.path("state");
    std::fs::create_dir(&state).unwrap();
    set_mode(&state, 0o700);
    std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    let args = os(&["run", "-c", cfg.to_str().unwrap()]);
    if let Some((code, out)) = sc.check_ok("returns", run_to_end(env.dir.path(), &args)) {
        sc.check("refused as a config error (exit 2)", code == 2, || {
            format!("exit {code}: {out}")
        });
        sc.check(
            "names the key, the owner and the fix",
            out.contains("daemon.state_dir") && out.contains("uid 65534") && out.contains("chown"),
            || out.clone(),
        );
    }
    sc.check(
        "nothing was written into it (no CA key)",
        std::fs::read_dir(&state).unwrap().count() == 0,
        || "the state dir is not empty".into(),
    );

    // An admin token file anyone may write.
    sc.round();
    let env = Env::new();
    let cfg = env.write_config(&env.cert_section("web", ""));
    let token = env.path("admin-token");
    std::fs::write(&token, "s3cret-admin\n").unwrap();
    set_mode(&token, 0o666);
    daemon_lines(&env, &format!("admin_token_file = \"{}\"", token.display()));
    let args = os(&["run", "-c", cfg.to_str().unwrap()]);
    if let Some((code, out)) = sc.check_ok("returns", run_to_end(env.dir.path(), &args)) {
        sc.check("refused", code != 0, || format!("exit {code}: {out}"));
        sc.check(
            "names the key, the mode and the fix",
            out.contains("daemon.admin_token_file")
                && out.contains("0666")
                && out.contains("chmod o-w"),
            || out.clone(),
        );
        sc.check(
            "never echoes the token",
            !out.contains("s3cret-admin"),
            || out.clone(),
        );
    }

    // Readable by others: it runs, and a WARN says so.
    sc.round();
    set_mode(&token, 0o644);
    let d = env.start();
    let warned = wait_until(Instant::now() + Duration::from_secs(10), || {
        let log = env.log();
        log.lines()
            .any(|l| {
                l.contains("WARN")
                    && l.contains("daemon.admin_token_file")
                    && l.contains("every user")
            })
            .then_some(())
    });
    sc.check(
        "a WARN names the key and what is wrong",
        warned.is_some(),
        || env.log(),
    );
    drop(d);
    sc.finish();
}

#[test]
fn an_api_key_file_planted_before_the_first_start_is_replaced_not_adopted() {
    let mut sc = Scenario::new(SUITE, "API key file planted before the first start");
    let env = Env::new();
    let key = env.path("app/svc.json");
    let (svc, keys) = crate::support::keyservice::key_service(key.clone());
    crate::support::keyservice::http_config(&env, svc, None);
    // No journal vouches for it, and a key cannot be checked offline.
    std::fs::write(
        &key,
        r#"{"secret":"planted-secret","id":"planted","expires_at":"2125-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    sc.round();
    let d = env.start();
    let s = wait_for(Duration::from_secs(30), "svc valid", || {
        let s = cred(d.addr, "svc")?;
        (s.state == State::Valid).then_some(s)
    });
    sc.check(
        "the key in use is one the issuer minted",
        s.serial.as_deref() == Some("key-1"),
        || format!("{s:?}"),
    );
    let file = std::fs::read_to_string(&key).unwrap_or_default();
    sc.check(
        "the planted file was replaced",
        file.contains("\"key-1\"") && !file.contains("planted"),
        || file.clone(),
    );
    let minted = keys.lock().unwrap().by_id.len();
    sc.check("exactly one key minted", minted == 1, || {
        format!("{minted} keys")
    });
    sc.finish();
}
