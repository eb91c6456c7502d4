//! `[[api_key]]` from the generic issuers, against an in-test key service
//! (`type = "http"`) and scripts (`type = "exec"`): mint, hand over, revoke
//! the old key after `overlap`; revocation failures retried and alerted.

use crate::support as common;
use crate::support::alert as support;

use std::time::Duration;

use common::keyservice::*;
use common::*;
use rekey::status::{CredentialStatus, Handoff, State};
use serde_json::Value;

fn rotate(env: &Env) -> std::process::Output {
    std::process::Command::new(bin())
        .args(["rotate", "svc", "-c"])
        .arg(env.path("rekey.toml"))
        .output()
        .unwrap()
}

fn valid(d: &Daemon) -> CredentialStatus {
    wait_for(Duration::from_secs(30), "svc valid", || {
        let s = cred(d.addr, "svc")?;
        (s.state == State::Valid).then_some(s)
    })
}

#[test]
fn http_key_service_mints_hands_over_and_revokes_the_old_key() {
    let env = Env::new();
    let key = env.path("app/svc.json");
    let (svc, keys) = key_service(key.clone());
    let hook = support::Receiver::start(Some(200));
    http_config(&env, svc, Some(&hook.url("/hook")));
    let d = env.start();
    let s = valid(&d);
    assert_eq!(s.kind, "api_key");
    assert_eq!(s.serial.as_deref(), Some("key-1"));
    assert_eq!(mode(&key), 0o600);
    let file: Value = serde_json::from_slice(&std::fs::read(&key).unwrap()).unwrap();
    assert_eq!(file["id"], "key-1");
    assert!(file["secret"].as_str().unwrap().starts_with("secret-1-"));
    assert_eq!(file["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(keys.lock().unwrap().auth[0], "Bearer from-a-file");

    let out = rotate(&env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = cred(d.addr, "svc").unwrap();
    assert_eq!(
        (s.serial.as_deref(), s.handoff),
        (Some("key-2"), Handoff::Verified)
    );
    // key-1 is revoked after the 1 s overlap, key-2 stays.
    wait_for(Duration::from_secs(10), "key-1 revoked", || {
        (live(&keys) == ["key-2"]).then_some(())
    });
    let log = env.log();
    let secret2 = serde_json::from_slice::<Value>(&std::fs::read(&key).unwrap()).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!log.contains(&secret2), "the secret is in the log");
    let status = http(d.addr, "GET", "/status").unwrap().1;
    assert!(!status.contains(&secret2), "the secret is in /status");
}

#[test]
fn revocation_failures_are_retried_and_alerted() {
    let env = Env::new();
    let key = env.path("app/svc.json");
    let (svc, keys) = key_service(key.clone());
    let hook = support::Receiver::start(Some(200));
    http_config(&env, svc, Some(&hook.url("/hook")));
    let d = env.start();
    valid(&d);
    keys.lock().unwrap().refuse_revokes = 2;
    let out = rotate(&env);
    assert!(out.status.success());
    // Two refusals (retried after about 2 s and 4 s), then revoked.
    wait_for(
        Duration::from_secs(20),
        "key-1 revoked after retries",
        || (live(&keys) == ["key-2"]).then_some(()),
    );
    let alerts: Vec<Value> = hook.requests().iter().map(|r| r.json()).collect();
    assert!(
        alerts.iter().any(|a| a["kind"] == "api_key"
            && a["message"]
                .as_str()
                .unwrap_or("")
                .contains("cannot revoke key key-1")),
        "{alerts:?}"
    );
    assert!(env.log().contains("revoke_failed"));
}

#[test]
fn failed_handoff_with_the_http_service_revokes_the_new_key_and_alerts() {
    let env = Env::new();
    let key = env.path("app/svc.json");
    let (svc, keys) = key_service(key.clone());
    let hook = support::Receiver::start(Some(200));
    http_config(&env, svc, Some(&hook.url("/hook")));
    let d = env.start();
    valid(&d);
    // From now on the app never re-reads its key file.
    keys.lock().unwrap().frozen = Some(std::fs::read_to_string(&key).unwrap());
    let first = std::fs::read(&key).unwrap();
    let out = rotate(&env);
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&key).unwrap(), first, "the old key is back");
    assert_eq!(live(&keys), ["key-1"], "the new key was revoked");
    let alerts = wait_for(Duration::from_secs(10), "handoff_failed alert", || {
        let a: Vec<Value> = hook.requests().iter().map(|r| r.json()).collect();
        a.iter()
            .any(|a| a["event"] == "handoff_failed")
            .then_some(a)
    });
    let a = alerts
        .iter()
        .find(|a| a["event"] == "handoff_failed")
        .unwrap();
    assert_eq!(
        (a["kind"].as_str(), a["rolled_back"].as_bool()),
        (Some("api_key"), Some(true))
    );
    let s = cred(d.addr, "svc").unwrap();
    assert_eq!(s.handoff, Handoff::Failed);
    assert_eq!(s.serial.as_deref(), Some("key-1"));
}

#[test]
fn exec_commands_mint_and_revoke() {
    let env = Env::new();
    let dir = env.path("scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let mint = dir.join("mint");
    let revoke = dir.join("revoke");
    let counter = dir.join("n");
    let revoked = dir.join("revoked");
    std::fs::write(
        &mint,
        format!(
            "#!/bin/sh\nn=$(($(cat {c} 2>/dev/null || echo 0) + 1))\necho $n > {c}\n\
             printf '{{\"secret\": \"s3cret-%s\", \"id\": \"exec-%s\", \"expires_at\": \"2099-01-01T00:00:00Z\", \"lifetime\": \"%s\"}}' $n $n \"$REKEY_LIFETIME\"\n",
            c = counter.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &revoke,
        format!(
            "#!/bin/sh\necho \"$REKEY_KEY_ID\" >> {}\n",
            revoked.display()
        ),
    )
    .unwrap();
    for p in [&mint, &revoke] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let key = env.path("app/token.env");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    env.write_config(&format!(
        "[issuer.cmd]\ntype = \"exec\"\n\n\
         [[api_key]]\nname = \"svc\"\nissuer = \"cmd\"\nfile = \"{key}\"\nformat = \"env\"\noverlap = \"1s\"\n\
         mint = {{ command = [\"{mint}\"] }}\nrevoke = {{ command = [\"{revoke}\"] }}\n",
        key = key.display(),
        mint = mint.display(),
        revoke = revoke.display(),
    ));
    let d = env.start();
    let s = valid(&d);
    assert_eq!(s.serial.as_deref(), Some("exec-1"));
    assert_eq!(s.handoff, Handoff::Unverified);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "SVC=s3cret-1\n");
    let out = rotate(&env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "SVC=s3cret-2\n");
    wait_for(Duration::from_secs(10), "exec-1 revoked", || {
        let r = std::fs::read_to_string(&revoked).ok()?;
        (r == "exec-1\n").then_some(())
    });
    assert!(!env.log().contains("s3cret-2"), "the secret is in the log");
}
