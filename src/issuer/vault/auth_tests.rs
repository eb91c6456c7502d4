//! Token bookkeeping: when to renew or replace, capped renewals, parsing
//! login answers, secret files.

use super::*;

fn token(ttl: u64, renewable: bool) -> Token {
    Token::new(Zeroizing::new("s.secret".into()), ttl, renewable, ttl)
}

#[test]
fn renews_after_two_thirds_and_replaces_when_it_cannot() {
    let t = token(300, true);
    let at = t.at;
    assert_eq!(t.step(at), Step::Use);
    assert_eq!(t.step(at + Duration::from_secs(199)), Step::Use);
    assert_eq!(t.step(at + Duration::from_secs(200)), Step::Renew);
    assert_eq!(t.step(at + Duration::from_secs(296)), Step::Replace);
    let fixed = token(300, false);
    assert_eq!(fixed.step(fixed.at + Duration::from_secs(199)), Step::Use);
    assert_eq!(
        fixed.step(fixed.at + Duration::from_secs(200)),
        Step::Replace
    );
    let forever = token(0, true);
    assert!(!forever.renewable);
    assert_eq!(
        forever.step(forever.at + Duration::from_secs(1 << 30)),
        Step::Use
    );
}

#[test]
fn a_capped_renewal_stops_renewing() {
    let t = token(300, true).renewed(300, true);
    assert!(t.renewable);
    // max TTL reached: Vault granted less than asked.
    let t = t.renewed(120, true);
    assert!(!t.renewable);
    assert_eq!(t.step(t.at + Duration::from_secs(80)), Step::Replace);
}

#[test]
fn debug_never_shows_the_token() {
    let t = token(300, true);
    let shown = format!("{t:?}");
    assert!(
        !shown.contains("s.secret") && shown.contains("<redacted>"),
        "{shown}"
    );
}

#[test]
fn auth_block_takes_the_token_and_reads_ttl() {
    let v = json!({"auth": {"client_token": "s.abc", "lease_duration": 4, "renewable": true}});
    let (secret, ttl, renewable) = auth_block("auth/approle/login", v).unwrap();
    assert_eq!((secret.as_str(), ttl, renewable), ("s.abc", 4, true));
    let err = auth_block("auth/approle/login", json!({"auth": null})).unwrap_err();
    assert!(err.to_string().contains("/v1/auth/approle/login"), "{err}");
}

#[test]
fn secret_files_are_trimmed_and_must_not_be_empty() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("secret-id");
    std::fs::write(&p, "  abc-123\n").unwrap();
    assert_eq!(
        read_secret("secret_id_file", &p).unwrap().as_str(),
        "abc-123"
    );
    std::fs::write(&p, "\n").unwrap();
    let e = read_secret("secret_id_file", &p).unwrap_err().to_string();
    assert!(e.contains("secret_id_file") && e.contains("empty"), "{e}");
    let e = read_secret("secret_id_file", &dir.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"), "{e}");
}
