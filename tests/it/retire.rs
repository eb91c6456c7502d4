//! Decommissioning against real issuers: `rekey retire` on an OpenBao API
//! key (the token stops working), on a Vault/OpenBao PKI certificate (the
//! serial is revoked in Vault), a revocation Vault refuses (files still
//! removed, the failure reported and audited), and `on_remove = "revoke"`
//! on an API key a SIGHUP reload drops. ACME/Pebble: `tests/it/acme_daemon.rs`;
//! the local CA: `tests/it/governance.rs`.

use crate::support as common;
use crate::support::vault as support;

use std::path::PathBuf;
use std::time::Duration;

use common::bao::Bao;
use common::*;
use rekey::audit::{AuditEvent, AuditOutcome, Record};
use rekey::status::{CredentialStatus, State};
use serde_json::json;

const KEYS_POLICY: &str = "path \"auth/token/create\" { capabilities = [\"create\", \"update\"] }\npath \"auth/token/revoke-accessor\" { capabilities = [\"update\"] }";
const SIGN_AND_REVOKE: &str = "path \"pki/sign/web\" { capabilities = [\"update\"] }\npath \"pki/revoke\" { capabilities = [\"update\"] }";

/// An `[[api_key]]` minting OpenBao tokens; `extra` lines appended.
fn key(env: &Env, name: &str, extra: &str) -> String {
    let file = env.path("app").join(name);
    format!(
        "[[api_key]]\nname = \"{name}\"\nissuer = \"bao\"\nfile = \"{}\"\nlifetime = \"1h\"\n\
         mint = {{ path = \"auth/token/create\", body = {{ policies = [\"default\"], ttl = \"{{lifetime}}\" }}, secret = \"auth.client_token\", id = \"auth.accessor\", ttl = \"auth.lease_duration\" }}\n{extra}\n",
        file.display()
    )
}

const REVOKE: &str =
    "revoke = { path = \"auth/token/revoke-accessor\", body = { accessor = \"{id}\" } }";

/// `auth/token/lookup-self` with `token`: the HTTP status.
fn lookup(bao: &Bao, token: &str) -> u16 {
    bao.call_as(token, "GET", "auth/token/lookup-self", None).0
}

fn valid_key(addr: std::net::SocketAddr, name: &str) -> CredentialStatus {
    wait_for(Duration::from_secs(30), &format!("{name} valid"), || {
        let s = cred(addr, name)?;
        (s.state == State::Valid).then_some(s)
    })
}

fn start_bao(env: &Env) -> Option<Bao> {
    let bao = Bao::start(&env.path("bao"), false)?;
    std::fs::create_dir_all(env.path("app")).unwrap();
    Some(bao)
}

fn bao_issuer(bao: &Bao, role: &(PathBuf, PathBuf)) -> String {
    support::issuer("bao", bao, &support::approle_auth(role), "")
}

#[test]
fn retire_revokes_an_openbao_token_and_a_reload_with_on_remove_revoke_does_too() {
    let env = Env::new();
    let Some(bao) = start_bao(&env) else { return };
    let role = bao.approle(env.dir.path(), "rekey", KEYS_POLICY, json!({}));
    let issuer = bao_issuer(&bao, &role);
    let (a, b, plain) = (
        key(&env, "a", REVOKE),
        key(&env, "b", &format!("{REVOKE}\non_remove = \"revoke\"")),
        key(&env, "plain", ""),
    );
    env.write_config_audited(&format!("{issuer}{a}{b}{plain}"));
    let d = env.start();
    for n in ["a", "b", "plain"] {
        valid_key(d.addr, n);
    }
    let token = |n: &str| std::fs::read_to_string(env.path("app").join(n)).unwrap();
    let (ta, tb, tp) = (token("a"), token("b"), token("plain"));
    for t in [&ta, &tb, &tp] {
        assert_eq!(lookup(&bao, t), 200, "a fresh token does not work");
    }

    // rekey retire: revoked at OpenBao, file gone, audited.
    let (code, out) = env.retire("a");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("revoked key"), "{out}");
    assert_eq!(lookup(&bao, &ta), 403, "the retired token still works");
    assert!(!env.path("app/a").exists(), "the key file is left");
    assert!(cred(d.addr, "a").is_none());
    let audit = env.audit();
    let of = |n: &str, e: AuditEvent| -> Vec<&Record> {
        audit
            .iter()
            .filter(|r| r.credential == n && r.event == e)
            .collect()
    };
    let revoked = of("a", AuditEvent::Revoked);
    assert_eq!(revoked.len(), 1, "{audit:?}");
    assert_eq!(revoked[0].outcome, AuditOutcome::Success);
    assert!(revoked[0].key_id.is_some(), "{audit:?}");
    assert_eq!(of("a", AuditEvent::Retired).len(), 1, "{audit:?}");

    // Without revoke configured: reported, never silently dropped.
    let (code, out) = env.retire("plain");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no revoke configured"), "{out}");
    assert_eq!(lookup(&bao, &tp), 200, "nothing revoked it, so it works");
    assert!(!env.path("app/plain").exists());
    let audit = env.audit();
    assert!(!audit
        .iter()
        .any(|r| r.credential == "plain" && r.event == AuditEvent::Revoked));

    // Dropped from the config with on_remove = "revoke": retired on SIGHUP.
    env.write_config_audited(&issuer);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(Duration::from_secs(15), "b's token revoked", || {
        (lookup(&bao, &tb) == 403).then_some(())
    });
    wait_for(Duration::from_secs(10), "b's retired record", || {
        env.audit()
            .iter()
            .any(|r| r.credential == "b" && r.event == AuditEvent::Retired)
            .then_some(())
    });
    assert!(!env.path("app/b").exists());
    // The audit record can come a moment before the status snapshot
    // drops `b` (a race seen under load): poll, with a deadline.
    wait_for(Duration::from_secs(10), "b to leave /status", || {
        cred(d.addr, "b").is_none().then_some(())
    });
    let log = env.log();
    for t in [&ta, &tb, &tp] {
        assert!(!log.contains(t.as_str()), "a token is in the log");
    }
}

#[test]
fn retire_revokes_a_vault_certificate_and_reports_a_refused_revocation() {
    let env = Env::new();
    let Some(bao) = start_bao(&env) else { return };
    bao.setup_pki("web");
    let can = bao.approle(env.dir.path(), "rekey", SIGN_AND_REVOKE, json!({}));
    let cannot = bao.approle(env.dir.path(), "signer", support::SIGN_ONLY, json!({}));
    env.write_config_audited(&format!(
        "{}{}{}{}",
        support::issuer("vault", &bao, &support::approle_auth(&can), ""),
        support::issuer("signonly", &bao, &support::approle_auth(&cannot), ""),
        support::cert(&env, "web", "vault"),
        support::cert(&env, "api", "signonly"),
    ));
    let d = env.start();
    let web = support::valid(d.addr, "web");
    let api = support::valid(d.addr, "api");
    let serial = |s: &CredentialStatus| {
        s.serial
            .as_deref()
            .unwrap()
            .trim_start_matches("00:")
            .to_string()
    };
    let revocation_time = |serial: &str| -> i64 {
        bao.root("GET", &format!("pki/cert/{serial}"), None)["data"]["revocation_time"]
            .as_i64()
            .unwrap_or(0)
    };
    let (ws, as_) = (serial(&web), serial(&api));
    assert_eq!(revocation_time(&ws), 0);

    let (code, out) = env.retire("web");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("revoked at the issuer"), "{out}");
    assert!(
        revocation_time(&ws) > 0,
        "serial {ws} is not revoked in Vault"
    );
    let files = |n: &str| std::fs::read_dir(env.path("tls").join(n)).unwrap().count();
    assert_eq!(files("web"), 0);

    // A policy without pki/revoke: 403. The files still go (the operator
    // asked for that), the failure is reported with a non-zero exit and
    // audited, and the certificate is, truthfully, still valid.
    let (code, out) = env.retire("api");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("NOT revoked") && out.contains("403") && out.contains("pki/revoke"),
        "{out}"
    );
    assert_eq!(files("api"), 0);
    assert_eq!(revocation_time(&as_), 0);
    // The refused request counts as an issuer failure.
    let (_, metrics) = http(d.addr, "GET", "/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rekey_issuer_requests_total")
                && l.contains("issuer=\"signonly\"")
                && l.contains("result=\"failure\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    let audit = env.audit();
    let outcome = |n: &str, e: AuditEvent| {
        audit
            .iter()
            .find(|r| r.credential == n && r.event == e)
            .map(|r| r.outcome.clone())
            .unwrap_or_else(|| panic!("no {e:?} record for {n}: {audit:?}"))
    };
    assert_eq!(outcome("web", AuditEvent::Revoked), AuditOutcome::Success);
    assert_eq!(outcome("api", AuditEvent::Revoked), AuditOutcome::Failure);
    assert_eq!(outcome("api", AuditEvent::Retired), AuditOutcome::Retired);
    let (code, text) = {
        let out = std::process::Command::new(bin())
            .args(["audit", "verify", "-c"])
            .arg(env.path("rekey.toml"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    assert_eq!(code, Some(0), "{text}");
}
