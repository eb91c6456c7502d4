//! `[[api_key]]` against a real OpenBao dev server: a token from
//! `auth/token/create` handed over to a small app that proves it uses it,
//! the old token revoked after `overlap`; a failed handoff. A crash right
//! after mint is in the crash suite (`tests/faults_crash/apikey.rs`).

use crate::support as common;
use crate::support::alert as support;
use crate::support::bao_keys;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bao_keys::*;
use common::*;
use rekey::status::{Handoff, State};
use serde_json::Value;

fn token(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn rotate(env: &Env) -> std::process::Output {
    std::process::Command::new(bin())
        .args(["rotate", "app-token", "-c"])
        .arg(env.path("rekey.toml"))
        .output()
        .unwrap()
}

#[test]
fn token_is_handed_over_verified_and_the_old_one_revoked_after_overlap() {
    let env = Env::new();
    let Some((bao, role)) = setup(&env) else {
        return;
    };
    let sticky = Arc::new(AtomicBool::new(false));
    let key = env.path("app/token");
    let app = app(bao.addr, key.clone(), sticky);
    config(&env, &bao, &role, app, "");
    let d = env.start();
    let s = wait_for(Duration::from_secs(30), "app-token valid", || {
        let s = cred(d.addr, "app-token")?;
        (s.state == State::Valid).then_some(s)
    });
    assert_eq!(s.kind, "api_key");
    assert_eq!(mode(&key), 0o600);
    let first = token(&key);
    let first_acc = accessor_of(&bao, &first).expect("the key file holds a working token");
    assert_eq!(s.serial.as_deref(), Some(first_acc.as_str()));
    assert!(
        !serde_json::to_string(&s).unwrap().contains(&first),
        "the secret is in the status"
    );

    let out = rotate(&env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = token(&key);
    assert_ne!(first, second);
    assert!(accessor_of(&bao, &second).is_some(), "the new token works");
    let s = cred(d.addr, "app-token").unwrap();
    assert_eq!(s.handoff, Handoff::Verified);
    // The old token is still valid during the overlap, then revoked.
    assert!(
        accessor_of(&bao, &first).is_some(),
        "revoked before the overlap ran out"
    );
    wait_for(Duration::from_secs(15), "the old token revoked", || {
        accessor_of(&bao, &first).is_none().then_some(())
    });
    assert!(accessor_of(&bao, &second).is_some());
    assert!(!env.log().contains(&second), "the secret is in the log");
}

#[test]
fn failed_handoff_revokes_the_new_token_and_keeps_the_old() {
    let env = Env::new();
    let Some((bao, role)) = setup(&env) else {
        return;
    };
    let sticky = Arc::new(AtomicBool::new(false));
    let key = env.path("app/token");
    let app = app(bao.addr, key.clone(), sticky.clone());
    let hook = support::Receiver::start(Some(200));
    config(
        &env,
        &bao,
        &role,
        app,
        &format!(
            "\n[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\n",
            hook.url("/hook")
        ),
    );
    let d = env.start();
    wait_for(Duration::from_secs(30), "app-token valid", || {
        let s = cred(d.addr, "app-token")?;
        (s.state == State::Valid).then_some(s)
    });
    let first = token(&key);
    let tokens_before = accessors(&bao);
    // Make the app read the file once more, then never again.
    let _ = common::http(app, "GET", "/");
    sticky.store(true, Ordering::SeqCst);
    let out = rotate(&env);
    assert!(!out.status.success());
    assert_eq!(token(&key), first, "the old token is back in the file");
    assert!(
        accessor_of(&bao, &first).is_some(),
        "the old token still works"
    );
    // The new token was minted and revoked again: the live tokens are the same.
    assert_eq!(
        accessors(&bao),
        tokens_before,
        "the new token was not revoked"
    );
    assert!(bao.audited("auth/token/revoke-accessor") >= 1);
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
    assert_eq!(a["kind"], "api_key");
    assert_eq!(a["rolled_back"], true);
    let s = cred(d.addr, "app-token").unwrap();
    assert_eq!(s.handoff, Handoff::Failed);
    assert!(!serde_json::to_string(&alerts).unwrap().contains(&first));
}
