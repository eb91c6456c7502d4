//! When Vault says no or is gone: wrong role, denied policy, sealed,
//! unreachable. Clear errors naming issuer, path and status; nothing
//! installed; backoff.

use std::time::Duration;

use serde_json::json;

use super::common::bao::Bao;
use super::common::*;
use super::support::*;
use rekey::status::State;

#[test]
fn wrong_role_and_denied_policy_fail_clearly_and_back_off() {
    let env = Env::new();
    let Some(bao) = Bao::start(&env.path("bao"), false) else {
        return;
    };
    bao.setup_pki("web");
    let good = bao.approle(
        env.dir.path(),
        "good",
        "path \"pki/sign/*\" { capabilities = [\"update\"] }",
        json!({}),
    );
    let denied = bao.approle(
        env.dir.path(),
        "denied",
        "path \"pki/sign/other\" { capabilities = [\"update\"] }",
        json!({}),
    );
    env.write_config(&format!(
        "{}{}{}{}",
        issuer(
            "wrongrole",
            &bao,
            &approle_auth(&good),
            "pki_role = \"nope\""
        ),
        issuer("denied", &bao, &approle_auth(&denied), "pki_role = \"web\""),
        cert(&env, "a", "wrongrole"),
        cert(&env, "b", "denied"),
    ));
    let d = env.start();
    let cases = [
        (
            "a",
            [
                "issuer wrongrole",
                "POST /v1/pki/sign/nope",
                "HTTP 400",
                "unknown role",
            ],
        ),
        (
            "b",
            [
                "issuer denied",
                "POST /v1/pki/sign/web",
                "HTTP 403",
                "permission denied",
            ],
        ),
    ];
    for (name, wants) in cases {
        // Backoff: failures keep being counted, spaced out, never installed.
        let s = wait_for(
            Duration::from_secs(30),
            &format!("{name} to fail twice"),
            || {
                let s = cred(d.addr, name)?;
                (s.consecutive_failures >= 2).then_some(s)
            },
        );
        assert_eq!(s.state, State::Missing, "{s:?}");
        let err = s.last_error.as_deref().unwrap();
        eprintln!("{name}: {err}");
        for w in wants {
            assert!(err.contains(w), "{name}: {err:?} should contain {w:?}");
        }
        assert!(!env.path(&format!("tls/{name}")).join("cert.pem").exists());
        assert!(!env.path(&format!("tls/{name}")).join("key.pem").exists());
    }
    // A policy denial is not a dead token: no login per attempt.
    assert_eq!(
        bao.audited("auth/approle/login"),
        2,
        "{:?}",
        bao.audited_paths()
    );
    let metrics = http(d.addr, "GET", "/metrics").unwrap().1;
    assert!(
        metrics.contains("rekey_issuer_requests_total{issuer=\"denied\",result=\"failure\"}"),
        "{metrics}"
    );
}

#[test]
fn sealed_then_unreachable_keeps_the_installed_certificate() {
    let env = Env::new();
    let Some(mut bao) = Bao::start(&env.path("bao"), false) else {
        return;
    };
    bao.setup_pki("web");
    let role = bao.approle(env.dir.path(), "rekey", SIGN_ONLY, json!({}));
    env.write_config(&format!(
        "{}{}",
        issuer("vault", &bao, &approle_auth(&role), ""),
        cert(&env, "web", "vault")
    ));
    let d = env.start();
    let before = valid(d.addr, "web");
    let files = ["cert.pem", "key.pem", "fullchain.pem", "ca.pem"];
    let read_all = || -> Vec<Vec<u8>> {
        files
            .iter()
            .map(|f| std::fs::read(env.path("tls/web").join(f)).unwrap())
            .collect()
    };
    let installed = read_all();

    bao.root("PUT", "sys/seal", None);
    let out = rotate(&env, "web");
    assert!(
        !out.status.success(),
        "rotate succeeded against a sealed Vault"
    );
    let s = cred(d.addr, "web").unwrap();
    let err = s.last_error.as_deref().unwrap();
    eprintln!("sealed: {err}");
    for w in [
        "issuer vault",
        "POST /v1/pki/sign/web",
        "HTTP 503",
        "Vault is sealed",
    ] {
        assert!(err.contains(w), "{err:?} should contain {w:?}");
    }
    assert_eq!(s.state, State::Backoff, "{s:?}");
    assert_eq!(s.fingerprint, before.fingerprint);
    assert!(s.consecutive_failures >= 1);
    assert_eq!(
        read_all(),
        installed,
        "files changed after a failed issuance"
    );

    bao.stop();
    let out = rotate(&env, "web");
    assert!(!out.status.success());
    let s = cred(d.addr, "web").unwrap();
    let err = s.last_error.as_deref().unwrap();
    eprintln!("unreachable: {err}");
    for w in [
        "issuer vault",
        "POST /v1/pki/sign/web",
        "cannot connect",
        &bao.url,
    ] {
        assert!(err.contains(w), "{err:?} should contain {w:?}");
    }
    assert!(s.consecutive_failures >= 2, "{s:?}");
    assert_eq!(s.state, State::Backoff);
    assert_eq!(read_all(), installed);
}
