//! The real `rekey` binary on an ACME issuer (real Pebble): a restart reuses
//! the account and does not reissue a valid certificate; a CA that is down
//! at start leaves the old certificate in place until it comes up.

use crate::support as common;
use crate::support::alert as alert_support;
use crate::support::pebble as support;

use std::time::Duration;

use common::*;
use rekey::audit::{AuditEvent, AuditOutcome};
use rekey::status::{CredentialStatus, State};
use support::{have_pebble, Opts, Pebble};

/// A certificate section for `web` on `issuer`, files under `tls/web/`.
fn web(env: &Env, issuer: &str) -> String {
    let d = env.path("tls/web");
    format!(
        "[[certificate]]\nname = \"web\"\nissuer = \"{issuer}\"\ndns_names = [\"web.rekey.test\"]\nlifetime = \"1h\"\n\
         files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\", fullchain = \"{d}/fullchain.pem\" }}\n",
        d = d.display()
    )
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

fn valid(addr: std::net::SocketAddr) -> Option<CredentialStatus> {
    let s = cred(addr, "web")?;
    (s.state == State::Valid).then_some(s)
}

#[test]
fn restart_reuses_the_account_and_keeps_the_valid_certificate() {
    let Some(()) = have_pebble() else { return };
    let p = Pebble::start(Opts::default());
    let env = Env::new();
    let issuer = p.issuer_toml("pebble", &p.listen_challenge(), "");
    env.write_config(&format!("{issuer}\n{}", web(&env, "pebble")));
    let (cert, key) = (env.path("tls/web/cert.pem"), env.path("tls/web/key.pem"));
    let acct = env.path("state/acme/pebble/account.json");

    let d = env.start();
    let first = wait_for(Duration::from_secs(30), "first ACME issuance", || {
        valid(d.addr)
    });
    let (fp1, ok) = pair(&cert, &key).unwrap();
    assert!(
        ok && first.fingerprint.as_deref() == Some(fp1.as_str()),
        "{first:?}"
    );
    let reg = std::fs::read_to_string(&acct).unwrap();
    let account_key = std::fs::read(env.path("state/acme/pebble/account.key")).unwrap();
    assert_eq!(d.terminate(), Some(0));

    let d = env.start();
    let again = wait_for(Duration::from_secs(30), "restart", || valid(d.addr));
    assert_eq!(
        again.fingerprint.as_deref(),
        Some(fp1.as_str()),
        "restart reissued a valid certificate"
    );
    assert_eq!(again.generation, first.generation);
    let log = env.log();
    assert_eq!(count(&log, "ACME certificate issued"), 1, "{log}");

    // A rotation after the restart uses the stored account: no new registration.
    let (code, body) = d.post("/v1/rotate/web").unwrap();
    assert_eq!(code, 200, "{body}");
    let (fp2, ok) = pair(&cert, &key).unwrap();
    assert!(ok && fp2 != fp1);
    let log = env.log();
    assert_eq!(count(&log, "ACME account registered"), 1, "{log}");
    assert_eq!(std::fs::read_to_string(&acct).unwrap(), reg);
    assert_eq!(
        std::fs::read(env.path("state/acme/pebble/account.key")).unwrap(),
        account_key
    );
}

#[test]
fn ca_down_at_start_keeps_the_old_certificate_until_it_comes_up() {
    let Some(()) = have_pebble() else { return };
    let env = Env::new();
    let (cert, key) = (env.path("tls/web/cert.pem"), env.path("tls/web/key.pem"));

    // An old certificate, from the local CA.
    env.write_config(&web(&env, "dev"));
    let d = env.start();
    wait_for(Duration::from_secs(30), "the old certificate", || {
        valid(d.addr)
    });
    let (old, _) = pair(&cert, &key).unwrap();
    assert_eq!(d.terminate(), Some(0));

    // Move the credential to an ACME CA that is not running yet.
    let pebble_addr = free_addr();
    let http_port = free_addr().port();
    let tls_dir = tempfile::tempdir().unwrap();
    let tls = support::test_tls(tls_dir.path());
    let issuer = format!(
        "[issuer.pebble]\ntype = \"acme\"\ndirectory = \"https://{pebble_addr}/dir\"\ntrust_bundle = \"{}\"\nchallenge = {{ type = \"http-01\", listen = \"127.0.0.1:{http_port}\" }}\n",
        tls.ca_pem.display()
    );
    let hook = alert_support::Receiver::start(Some(200));
    let alert = format!(
        "[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\n",
        hook.url("/hook")
    );
    env.write_config(&format!("{issuer}\n{}\n{alert}", web(&env, "pebble")));
    let d = env.start();
    let (code, body) = d.post("/v1/rotate/web").unwrap();
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("cannot reach the ACME CA"), "{body}");
    assert_eq!(
        pair(&cert, &key).unwrap(),
        (old.clone(), true),
        "the old pair was touched"
    );
    assert_eq!(http(d.addr, "GET", "/healthz").unwrap().0, 200);
    let s = cred(d.addr, "web").unwrap();
    assert!(s.consecutive_failures >= 1, "{s:?}");
    assert_eq!(s.fingerprint.as_deref(), Some(old.as_str()), "{s:?}");

    // The CA comes up: the daemon's own backoff retry issues, no prompting.
    let _p = Pebble::start(Opts {
        listen: Some(pebble_addr),
        http_port: Some(http_port),
        tls: Some(tls),
        ..Opts::default()
    });
    let s = wait_for(
        Duration::from_secs(60),
        "issuance once the CA is up",
        || {
            let s = valid(d.addr)?;
            (s.fingerprint.as_deref() != Some(old.as_str())).then_some(s)
        },
    );
    let (fp, ok) = pair(&cert, &key).unwrap();
    assert!(ok && s.fingerprint.as_deref() == Some(fp.as_str()), "{s:?}");
    assert_eq!(count(&env.log(), "ACME certificate issued"), 1);

    // While the CA was down, retries with backoff alerted renewal_failed
    // once; the issuance that followed sent recovered.
    let events = |e: &str| {
        hook.requests()
            .iter()
            .filter(|r| r.json()["event"] == e)
            .count()
    };
    wait_for(Duration::from_secs(10), "the recovered alert", || {
        (events("recovered") == 1).then_some(())
    });
    assert_eq!(
        events("renewal_failed"),
        1,
        "{:?}",
        hook.requests().iter().map(|r| r.json()).collect::<Vec<_>>()
    );
    let failures = Some(u64::from(s.consecutive_failures));
    assert_eq!(failures, Some(0), "{s:?}");
}

#[test]
fn retire_revokes_the_certificate_at_the_ca_and_removes_the_files() {
    let Some(()) = have_pebble() else { return };
    let p = Pebble::start(Opts::default());
    let env = Env::new();
    let issuer = p.issuer_toml("pebble", &p.listen_challenge(), "");
    env.write_config_audited(&format!("{issuer}\n{}", web(&env, "pebble")));
    let d = env.start();
    let s = wait_for(Duration::from_secs(30), "first ACME issuance", || {
        valid(d.addr)
    });
    let serial = s.serial.as_deref().unwrap().to_string();
    let before = p.cert_status(&serial).unwrap();
    assert_eq!(before["Status"], "Valid", "{before}");

    let (code, out) = env.retire("web");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("revoked at the issuer"), "{out}");
    let after = p.cert_status(&serial).unwrap();
    assert_eq!(after["Status"], "Revoked", "{after}");
    for f in ["cert.pem", "key.pem", "fullchain.pem"] {
        assert!(!env.path("tls/web").join(f).exists(), "{f} left behind");
    }
    let audit = env.audit();
    let of = |e: AuditEvent| audit.iter().filter(|r| r.event == e).collect::<Vec<_>>();
    let revoked = of(AuditEvent::Revoked);
    assert_eq!(revoked.len(), 1, "{audit:?}");
    assert_eq!(revoked[0].outcome, AuditOutcome::Success);
    assert_eq!(revoked[0].credential, "web");
    let retired = of(AuditEvent::Retired);
    assert_eq!(retired.len(), 1, "{audit:?}");
    assert!(
        retired[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("revoked at the issuer"),
        "{audit:?}"
    );
}
