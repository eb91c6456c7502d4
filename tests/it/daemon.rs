//! The daemon end to end on the embedded CA: issue, publish, rotate on
//! request, adopt on restart, repair tampering, stop cleanly.

use crate::support as common;
use crate::support::alert as alert_support;

use std::time::Duration;

use common::*;
use rekey::status::{Handoff, State};

#[test]
fn issues_rotates_on_request_and_adopts_on_restart() {
    let env = Env::new();
    let extra = "key_mode = \"0640\"\ncert_mode = \"0604\"\n";
    env.write_config(&env.cert_section("web", extra));
    let cert = env.path("tls/web/cert.pem");
    let key = env.path("tls/web/key.pem");

    let d = env.start();
    let first = wait_valid(d.addr, "web", Duration::from_secs(10));
    let (fp1, ok) = pair(&cert, &key).unwrap();
    assert!(ok, "published key does not match the certificate");
    assert_eq!(first.fingerprint, Some(fp1.clone()));
    assert_eq!(
        first.handoff,
        Handoff::Unverified,
        "verify = none is never verified"
    );
    assert_eq!(mode(&key), 0o640);
    assert_eq!(mode(&cert), 0o604);
    assert_eq!(mode(&env.path("state")), 0o700);
    // The CA file lets clients trust the leaf.
    let ca = std::fs::read_to_string(env.path("tls/web/ca.pem")).unwrap();
    assert!(ca.contains("BEGIN CERTIFICATE"));

    // `rekey rotate` through the CLI client.
    let out = std::process::Command::new(bin())
        .args(["rotate", "web", "-c"])
        .arg(env.path("rekey.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (fp2, ok) = pair(&cert, &key).unwrap();
    assert!(ok);
    assert_ne!(fp1, fp2, "rotate did not publish a new certificate");
    let second = cred(d.addr, "web").unwrap();
    assert_eq!(second.fingerprint, Some(fp2.clone()));
    assert!(second.generation > first.generation);
    assert_eq!(
        second.last_rotation.map(|r| r.result.as_str()),
        Some("success")
    );
    assert_eq!(mode(&key), 0o640, "modes are applied on every write");

    // `rekey status` prints a table and exits 0 when all is well.
    let out = std::process::Command::new(bin())
        .args(["status", "--addr", &env.addr.to_string()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("web") && table.contains("valid"),
        "{table}"
    );

    assert_eq!(d.terminate(), Some(0), "SIGTERM exits 0");

    // Restart: the valid pair is adopted, not reissued.
    let d = env.start();
    let again = wait_valid(d.addr, "web", Duration::from_secs(10));
    assert_eq!(again.fingerprint, Some(fp2.clone()), "restart reissued");
    assert_eq!(again.generation, second.generation);
    assert_eq!(pair(&cert, &key).unwrap().0, fp2);
}

#[test]
fn a_fresh_state_dir_adopts_a_valid_published_pair() {
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let d = env.start();
    let fp = wait_for(Duration::from_secs(10), "issuance", || {
        cred(d.addr, "web")?.fingerprint
    });
    d.kill9();
    // Lose the state dir but keep the CA (the pair must still chain to it).
    std::fs::remove_dir_all(env.path("state/certs")).unwrap();
    let d = env.start();
    let s = wait_valid(d.addr, "web", Duration::from_secs(10));
    assert_eq!(s.fingerprint, Some(fp));
    assert!(env.log().contains("adopted"), "{}", env.log());
}

#[test]
fn deleted_or_overwritten_files_are_repaired_within_seconds() {
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let cert = env.path("tls/web/cert.pem");
    let key = env.path("tls/web/key.pem");
    let d = env.start();
    let fp = wait_for(Duration::from_secs(10), "issuance", || {
        cred(d.addr, "web")?.fingerprint
    });

    std::fs::remove_file(&key).unwrap();
    wait_for(
        Duration::from_secs(5),
        "the deleted key to come back",
        || pair(&cert, &key).ok().filter(|(f, ok)| *ok && *f == fp),
    );

    std::fs::write(&cert, "garbage").unwrap();
    wait_for(
        Duration::from_secs(5),
        "the overwritten cert to be restored",
        || pair(&cert, &key).ok().filter(|(f, ok)| *ok && *f == fp),
    );
    assert!(env.log().contains("tampered"));
    // Restoring is not rotating: the generation did not change.
    assert_eq!(cred(d.addr, "web").unwrap().fingerprint, Some(fp));
}

#[test]
fn unknown_credential_rotate_is_refused() {
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let d = env.start();
    let (code, body) = d.post("/v1/rotate/nope").unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("nope"));
    let out = std::process::Command::new(bin())
        .args(["rotate", "nope", "-c"])
        .arg(env.path("rekey.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Regression: the re-check reads the managed files, and reads are inotify
/// events too; reacting to them made an idle daemon loop forever.
#[test]
fn an_idle_daemon_does_not_react_to_its_own_reads() {
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let d = env.start();
    wait_valid(d.addr, "web", Duration::from_secs(10));
    // Let the events of the first publish settle, then watch for activity.
    let count = || env.log().matches("file events dispatched").count();
    let settled = wait_for(Duration::from_secs(5), "publish events to settle", || {
        let a = count();
        std::thread::sleep(Duration::from_millis(300));
        (count() == a).then_some(a)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        count(),
        settled,
        "the idle daemon keeps dispatching file events"
    );
    // A real change is still noticed.
    std::fs::write(env.path("tls/web/cert.pem"), "x").unwrap();
    wait_for(
        Duration::from_secs(5),
        "the change to be dispatched",
        || (count() > settled).then_some(()),
    );
}

/// An exec reload is told the generation it hands over: `REKEY_NOT_AFTER`
/// is the published certificate's end, RFC 3339 UTC to the second (the
/// spelling of `/status`), for the first issue and for a rotation.
#[test]
fn an_exec_reload_gets_the_published_certificates_not_after() {
    let env = Env::new();
    let seen = env.path("reload.env");
    let extra = format!(
        "reload = {{ type = \"exec\", command = [\"sh\", \"-c\", \"echo \\\"$REKEY_GENERATION $REKEY_NOT_AFTER\\\" >> {}\"] }}\n",
        seen.display()
    );
    env.write_config(&env.cert_section("web", &extra));
    let d = env.start();
    let first = wait_valid(d.addr, "web", Duration::from_secs(10));
    let (code, body) = d.post("/v1/rotate/web").unwrap();
    assert_eq!(code, 200, "{body}");
    let second = cred(d.addr, "web").unwrap();
    assert!(second.generation > first.generation);

    let published = std::fs::read(env.path("tls/web/cert.pem")).unwrap();
    let leaf = rekey::cert::pem_certs(&published, "cert.pem").unwrap();
    let info = rekey::cert::parse_der(&leaf[0]).unwrap();
    let end = rekey::status::Timestamp::new(info.not_after).to_string();
    assert_eq!(second.not_after.map(|t| t.to_string()), Some(end.clone()));
    assert!(
        end.len() == 20 && end.as_bytes()[10] == b'T' && end.ends_with('Z'),
        "{end} is not RFC 3339 UTC to the second"
    );
    let lines = std::fs::read_to_string(&seen).unwrap();
    let handed: Vec<&str> = lines.lines().collect();
    let ends = |s: &rekey::status::CredentialStatus| {
        format!("{} {}", s.generation.unwrap(), s.not_after.unwrap())
    };
    assert_eq!(handed, [ends(&first), ends(&second)], "{lines}");
    assert!(handed[1].ends_with(&end), "{lines}");
}

/// A sink that accepts connections and never answers must not hold up a
/// rotation: alerts are queued, never awaited by the engine.
#[test]
fn a_hanging_alert_sink_delays_no_rotation() {
    let env = Env::new();
    let hung = alert_support::Receiver::start(None);
    let extra = "reload = { type = \"exec\", command = [\"false\"] }\n";
    env.write_config(&format!(
        "{}[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\ntimeout = \"30s\"\n",
        env.cert_section("web", extra),
        hung.url("/hook")
    ));
    let d = env.start();
    wait_valid(d.addr, "web", Duration::from_secs(10));
    // Each of these raises handoff_failed; the sink would hold each for 30 s.
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let (code, body) = d.post("/v1/rotate/web").unwrap();
        assert_eq!(code, 502, "{body}");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "a rotation waited for the alert sink"
        );
    }
    wait_for(Duration::from_secs(10), "the sink to be reached", || {
        (!hung.requests().is_empty() || env.log().contains("handoff_failed")).then_some(())
    });
}

#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused_once_and_clearly() {
    let env = Env::new();
    let conf = env.write_config(&env.cert_section("web", ""));
    let d = env.start();
    wait_for(Duration::from_secs(10), "issuance", || {
        cred(d.addr, "web")?.fingerprint
    });
    // Same state dir, its own port.
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace(&d.addr.to_string(), &free_addr().to_string());
    let second = env.path("second.toml");
    std::fs::write(&second, text).unwrap();
    let out = std::process::Command::new(bin())
        .args(["run", "-c"])
        .arg(&second)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("daemon.state_dir"), "{err}");
    assert_eq!(
        err.matches("locked by another rekey process").count(),
        1,
        "{err}"
    );
    // The first daemon keeps running and answering.
    assert!(cred(d.addr, "web").is_some());
}

/// The committed generation's files in the state dir (the daemon
/// keeps only digests in memory and reads these back to repair).
fn staged_dir(env: &Env, generation: Option<u64>) -> std::path::PathBuf {
    env.path(&format!("state/certs/web/gen-{}", generation.unwrap()))
}

#[test]
fn a_tampered_file_is_replaced_by_a_rotation_when_the_staged_copy_is_lost() {
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let cert = env.path("tls/web/cert.pem");
    let key = env.path("tls/web/key.pem");
    let d = env.start();
    let first = wait_valid(d.addr, "web", Duration::from_secs(10));
    std::fs::remove_dir_all(staged_dir(&env, first.generation)).unwrap();
    // Nothing intact is left to restore: the only right answer is a new,
    // validated generation, never the garbage and never an unchecked copy.
    std::fs::write(&cert, "garbage").unwrap();
    let (fp, _) = wait_for(Duration::from_secs(10), "a new valid pair", || {
        pair(&cert, &key).ok().filter(|(_, ok)| *ok)
    });
    assert_ne!(Some(fp.clone()), first.fingerprint);
    let s = wait_for(Duration::from_secs(5), "the rotation to commit", || {
        cred(d.addr, "web").filter(|s| s.fingerprint == Some(fp.clone()) && s.state == State::Valid)
    });
    assert!(staged_dir(&env, s.generation).is_dir());
    assert!(env.log().contains("repair_by_rotation"), "{}", env.log());
}

#[test]
fn a_mode_change_is_repaired_from_the_published_files_when_the_staged_copy_is_lost() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let cert = env.path("tls/web/cert.pem");
    let key = env.path("tls/web/key.pem");
    let d = env.start();
    let first = wait_valid(d.addr, "web", Duration::from_secs(10));
    let want = mode(&key);
    let staged = staged_dir(&env, first.generation);
    std::fs::remove_dir_all(&staged).unwrap();
    // The published files still hold exactly the committed generation: it
    // is staged again from them and the mode put back, with no reissue.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    wait_for(
        Duration::from_secs(5),
        "the key mode to be restored",
        || (mode(&key) == want).then_some(()),
    );
    assert!(
        staged.is_dir(),
        "the committed generation was not staged again: {}",
        env.log()
    );
    let s = cred(d.addr, "web").unwrap();
    assert_eq!(s.fingerprint, first.fingerprint);
    assert_eq!(s.generation, first.generation);
    let (fp, ok) = pair(&cert, &key).unwrap();
    assert!(ok && Some(fp.clone()) == first.fingerprint);
}

#[test]
fn a_failed_handoff_still_rolls_back_when_the_staged_copy_is_lost() {
    let env = Env::new();
    let reload = "reload = { type = \"exec\", command = [\"false\"] }";
    env.write_config(&env.cert_section("web", reload));
    let cert = env.path("tls/web/cert.pem");
    let key = env.path("tls/web/key.pem");
    let d = env.start();
    let first = wait_valid(d.addr, "web", Duration::from_secs(10));
    let staged = staged_dir(&env, first.generation);
    std::fs::remove_dir_all(&staged).unwrap();
    // The reload fails, so the new generation must go: the old one is
    // taken from the published files (checked against its digests) before
    // they are overwritten, and put back.
    let (code, body) = d.post("/v1/rotate/web").unwrap();
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("rolled back"), "{body}");
    let (fp, ok) = pair(&cert, &key).unwrap();
    assert!(ok && Some(fp.clone()) == first.fingerprint, "{fp}");
    let s = cred(d.addr, "web").unwrap();
    assert_eq!(s.generation, first.generation);
    assert!(
        staged.is_dir(),
        "the committed generation was not staged again"
    );
}
