//! The audit log end to end: real daemon, real rotations, `rekey audit verify`
//! on an intact log across size rotations and on edited, deleted and
//! reordered lines; every handoff outcome leaves its records; no key material.

use crate::support as common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{bin, cred, wait_for, Env};
use rekey::audit::{AuditEvent, AuditOutcome, Record};
use rekey::status::{Handoff, State};

/// Write the config with `daemon.audit_log` (and `extra_daemon` keys) set.
fn config(env: &Env, extra_daemon: &str, certs: &str) -> PathBuf {
    let p = env.write_config(certs);
    // Rotations in a row to grow the log: the issuance budget is not under test.
    env.dev_issuer("max_issuances = \"unlimited\"");
    let text = std::fs::read_to_string(&p).unwrap().replacen(
        "[daemon]\n",
        &format!(
            "[daemon]\naudit_log = \"{}\"\n{extra_daemon}\n",
            env.path("audit.log").display()
        ),
        1,
    );
    std::fs::write(&p, text).unwrap();
    p
}

/// `rekey audit verify -c CONFIG`: (exit code, stdout).
fn verify(config: &Path) -> (i32, String) {
    let out = Command::new(bin())
        .args(["audit", "verify", "-c"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Every record in every audit file, oldest first.
fn records(env: &Env) -> Vec<Record> {
    let base = env.path("audit.log");
    let mut files: Vec<PathBuf> = (1..=5)
        .rev()
        .map(|n| PathBuf::from(format!("{}.{n}", base.display())))
        .filter(|p| p.exists())
        .collect();
    files.push(base);
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| {
            t.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn has(recs: &[Record], cred: &str, event: AuditEvent, outcome: AuditOutcome) -> bool {
    recs.iter()
        .any(|r| r.credential == cred && r.event == event && r.outcome == outcome)
}

/// Rewrite `file`'s lines with `f`, returning the original text.
fn tamper(file: &Path, f: impl FnOnce(&mut Vec<String>)) -> String {
    let orig = std::fs::read_to_string(file).unwrap();
    let mut lines: Vec<String> = orig.lines().map(str::to_string).collect();
    f(&mut lines);
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
    orig
}

#[test]
fn audit_chain_verifies_across_size_rotation_and_names_edited_deleted_reordered_lines() {
    let env = Env::new();
    let certs = env.cert_section(
        "web",
        "team = \"payments\"\nverify = { type = \"exec\", command = [\"true\"] }",
    ) + &env.cert_section("plain", "");
    let cfg = config(&env, "audit_max_size = \"4KiB\"", &certs);
    let d = env.start();
    wait_for(Duration::from_secs(20), "first issuance", || {
        (cred(d.addr, "web")?.handoff == Handoff::Verified
            && cred(d.addr, "plain")?.state == State::Valid)
            .then_some(())
    });
    for _ in 0..6 {
        let (code, body) = d.post("/v1/rotate/web").unwrap();
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(d.terminate(), Some(0));

    let rotated = env.path("audit.log.1");
    assert!(rotated.exists(), "no size rotation happened");
    let (code, out) = verify(&cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact"), "{out}");

    let recs = records(&env);
    assert_eq!(recs[0].event, AuditEvent::ConfigLoaded);
    for (event, outcome) in [
        (AuditEvent::Issued, AuditOutcome::Success),
        (AuditEvent::Published, AuditOutcome::Success),
        (AuditEvent::Reloaded, AuditOutcome::Success),
        (AuditEvent::Verified, AuditOutcome::Verified),
    ] {
        assert!(
            has(&recs, "web", event, outcome.clone()),
            "no {event:?}/{outcome}"
        );
    }
    assert!(has(
        &recs,
        "plain",
        AuditEvent::Verified,
        AuditOutcome::Unverified
    ));
    assert!(recs
        .iter()
        .filter(|r| r.credential == "web")
        .all(|r| r.team.as_deref() == Some("payments") && r.issuer.as_deref() == Some("dev")));
    // Seven generations of web: one issued record each.
    let issued = recs
        .iter()
        .filter(|r| r.credential == "web" && r.event == AuditEvent::Issued)
        .count();
    assert_eq!(issued, 7);
    no_key_material(&env, "web");

    // The evidence report counts what the log shows.
    let r = report(&cfg);
    let web = &r["credentials"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["team"], "payments");
    assert_eq!(web["generation"], 7);
    assert_eq!(web["failures"], 0);
    assert!(web["last_verified_handoff"].is_string(), "{web}");
    assert_eq!(web["policy"][0], "no policy");
    assert_eq!(
        r["credentials"][1]["last_verified_handoff"],
        serde_json::Value::Null
    );

    let name = rotated.display().to_string();
    let check = |what: &str, orig: String| {
        let (code, out) = verify(&cfg);
        assert_eq!(code, 1, "{what}: {out}");
        assert!(out.contains(&format!("{name}:3:")), "{what}: {out}");
        std::fs::write(&rotated, orig).unwrap();
    };
    let orig = tamper(&rotated, |l| l[2] = l[2].replace("\"dev\"", "\"evil\""));
    check("edited", orig);
    let orig = tamper(&rotated, |l| {
        l.remove(2);
    });
    check("deleted", orig);
    let orig = tamper(&rotated, |l| l.swap(2, 3));
    check("reordered", orig);
    assert_eq!(verify(&cfg).0, 0, "restored log must verify again");
}

/// `rekey report --json -c CONFIG`, untyped: the report's types are
/// written, never read back, so they have no `Deserialize`.
fn report(config: &Path) -> serde_json::Value {
    let out = Command::new(bin())
        .args(["report", "--json", "-c"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// No line of the published key's PEM body appears in any audit file.
fn no_key_material(env: &Env, name: &str) {
    let key = std::fs::read_to_string(env.path("tls").join(name).join("key.pem")).unwrap();
    let audit: String = [".5", ".4", ".3", ".2", ".1", ""]
        .iter()
        .filter_map(|s| {
            std::fs::read_to_string(format!("{}{s}", env.path("audit.log").display())).ok()
        })
        .collect();
    let body: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!body.is_empty());
    for line in body {
        assert!(!audit.contains(line), "key material in the audit log");
    }
    assert!(!audit.contains("PRIVATE KEY"));
}

#[test]
fn failed_reload_leaves_reloaded_failure_and_rolled_back_records() {
    let env = Env::new();
    let certs = env.cert_section("web", "reload = { type = \"exec\", command = [\"false\"] }");
    let cfg = config(&env, "", &certs);
    let d = env.start();
    wait_for(Duration::from_secs(20), "first issuance", || {
        (cred(d.addr, "web")?.generation == Some(1)).then_some(())
    });
    let (code, body) = d.post("/v1/rotate/web").unwrap();
    assert_eq!(code, 502, "{body}");
    wait_for(Duration::from_secs(10), "the rolled_back record", || {
        has(
            &records(&env),
            "web",
            AuditEvent::RolledBack,
            AuditOutcome::RolledBack,
        )
        .then_some(())
    });
    assert_eq!(d.terminate(), Some(0));
    let recs = records(&env);
    assert!(has(
        &recs,
        "web",
        AuditEvent::Reloaded,
        AuditOutcome::Failure
    ));
    assert!(has(
        &recs,
        "web",
        AuditEvent::Verified,
        AuditOutcome::Failed
    ));
    let rb = recs
        .iter()
        .find(|r| r.event == AuditEvent::RolledBack)
        .unwrap();
    assert_eq!(rb.generation, Some(2));
    assert!(rb.fingerprint.as_deref().unwrap().starts_with("sha256:"));
    no_key_material(&env, "web");
    let (code, out) = verify(&cfg);
    assert_eq!(code, 0, "{out}");
    let web = &report(&cfg)["credentials"][0];
    assert_eq!(web["rotations"], 2, "{web}");
    assert_eq!(web["failures"], 1, "{web}");
    assert_eq!(web["generation"], 1, "{web}");

    // `rekey audit --credential web` prints the records readably.
    let out = Command::new(bin())
        .args(["audit", "--credential", "web", "--since", "1h", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("rolled_back") && !text.contains("config_loaded"),
        "{text}"
    );
}

#[test]
fn tampering_and_a_kept_failed_handoff_leave_their_records() {
    let env = Env::new();
    let certs = env.cert_section("web", "")
        + &env.cert_section(
            "keep",
            "on_failure = \"keep\"\nverify = { type = \"exec\", command = [\"false\"], timeout = \"1s\" }",
        );
    let cfg = config(&env, "", &certs);
    let d = env.start();
    wait_for(Duration::from_secs(20), "first issuance", || {
        (cred(d.addr, "web")?.state == State::Valid && cred(d.addr, "keep")?.generation == Some(1))
            .then_some(())
    });
    std::fs::write(env.path("tls/web/cert.pem"), "not a certificate\n").unwrap();
    wait_for(Duration::from_secs(10), "the tampered record", || {
        has(
            &records(&env),
            "web",
            AuditEvent::Tampered,
            AuditOutcome::Restoring,
        )
        .then_some(())
    });
    let (code, body) = d.post("/v1/rotate/keep").unwrap();
    assert_eq!(code, 502, "{body}");
    wait_for(Duration::from_secs(10), "the kept record", || {
        has(
            &records(&env),
            "keep",
            AuditEvent::RolledBack,
            AuditOutcome::Kept,
        )
        .then_some(())
    });
    assert_eq!(d.terminate(), Some(0));
    let recs = records(&env);
    let t = recs
        .iter()
        .find(|r| r.event == AuditEvent::Tampered)
        .unwrap();
    assert_eq!(t.generation, Some(1));
    assert!(t.reason.as_deref().unwrap().contains("cert.pem"), "{t:?}");
    assert!(has(
        &recs,
        "keep",
        AuditEvent::Verified,
        AuditOutcome::Failed
    ));
    no_key_material(&env, "web");
    no_key_material(&env, "keep");
    assert_eq!(verify(&cfg).0, 0);
}

/// The audit files the daemon holds open (from /proc/PID/fd): none may be a
/// deleted file or a copy logrotate renamed away.
fn open_audit_files(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.display().to_string())
        .filter(|t| t.contains("audit.log"))
        .collect()
}

/// The real `logrotate` rotates the live audit log three ways: renamed and
/// compressed (no signal), renamed with a SIGHUP in `postrotate`, and
/// copy-truncated. New records always land in the configured path, the
/// daemon never writes to a renamed or deleted file, and `rekey audit
/// verify` checks the chain across every copy it can read.
#[test]
fn logrotate_rename_signal_and_copytruncate_keep_one_chain() {
    let Some(logrotate) = common::live_binary("logrotate", "Debian package logrotate") else {
        return;
    };
    let env = Env::new();
    let certs = env.cert_section("web", "");
    let cfg = config(&env, "", &certs);
    let d = env.start();
    let pid = d.child.id();
    let valid = || {
        wait_for(Duration::from_secs(10), "web valid", || {
            (cred(env.addr, "web")?.state == State::Valid).then_some(())
        })
    };
    valid();
    let rotate = || {
        let out = Command::new(bin())
            .args(["rotate", "web", "-c"])
            .arg(env.path("rekey.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let log = env.path("audit.log");
    let lines = |p: &Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
    let run_logrotate = |body: &str| {
        let conf = env.path("logrotate.conf");
        std::fs::write(&conf, format!("{} {{\n{body}\n}}\n", log.display())).unwrap();
        let out = Command::new(&logrotate)
            .arg("-f")
            .arg("-s")
            .arg(env.path("logrotate.state"))
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "logrotate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let rename_mode = "rotate 5\ncompress\ndelaycompress\nnocreate\nmissingok\n";

    // 1. Renamed, no signal: the next record starts a new file at the path.
    run_logrotate(rename_mode);
    let first = env.path("audit.log.1");
    let n1 = lines(&first);
    assert!(n1 > 0 && !log.exists());
    rotate();
    assert_eq!(lines(&first), n1, "records went to the renamed file");
    assert!(
        lines(&log) >= 3,
        "issued, published, reloaded... in the new file"
    );
    let fds = open_audit_files(pid);
    assert!(
        fds.iter().all(|f| *f == log.display().to_string()),
        "{fds:?}"
    );

    // 2. Renamed with a SIGHUP in postrotate (the previous copy is
    //    compressed now): the daemon lets go at once, and the reload's own
    //    `config_reloaded` record starts the new file.
    run_logrotate(&format!(
        "{rename_mode}postrotate\n  kill -HUP {pid}\nendscript"
    ));
    wait_for(
        Duration::from_secs(10),
        "config_reloaded in the new file",
        || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("\"config_reloaded\""))
        },
    );
    assert!(env.path("audit.log.2.gz").exists());
    let fds = open_audit_files(pid);
    assert!(
        fds.iter().all(|f| *f == log.display().to_string()),
        "{fds:?}"
    );

    // 3. Copy-truncate: the same file, emptied; appends continue at its
    //    new end (no hole of NUL bytes), and the copy holds the rest.
    rotate();
    run_logrotate(&format!("{rename_mode}copytruncate"));
    assert_eq!(lines(&log), 0);
    rotate();
    let text = std::fs::read(&log).unwrap();
    assert!(!text.contains(&0), "a hole of NUL bytes after truncation");
    assert!(lines(&log) >= 3);
    assert!(open_audit_files(pid).iter().all(|f| !f.contains("deleted")));

    // The chain verifies across the copies it can read: the oldest kept
    // uncompressed copy starts after the compressed one.
    let (code, out) = verify(&cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("audit log intact"), "{out}");
    assert!(
        out.contains("audit.log.2.gz") && out.contains("compressed"),
        "{out}"
    );
    // Decompressed next to them, the compressed copies are checked too, from #1.
    for gz in audit_gz(&env) {
        assert!(Command::new("gunzip")
            .arg("-k")
            .arg(&gz)
            .status()
            .unwrap()
            .success());
    }
    let (code, out) = verify(&cfg);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("older files were rotated away"), "{out}");
    assert!(!out.contains("compressed"), "{out}");
    assert!(out.contains("audit.log.3, "), "{out}");

    // An edit in a logrotate copy is still named by file and line.
    tamper(&env.path("audit.log.1"), |l| {
        l[0] = l[0].replacen("\"outcome\":\"", "\"outcome\":\"not ", 1)
    });
    let (code, out) = verify(&cfg);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("audit.log.1:1:"), "{out}");
    assert_eq!(d.terminate(), Some(0));
}

/// The compressed copies logrotate left.
fn audit_gz(env: &Env) -> Vec<PathBuf> {
    std::fs::read_dir(env.dir.path())
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.to_string_lossy().ends_with(".gz"))
        .collect()
}
