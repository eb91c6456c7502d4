//! Answer parsing and request building, on certificates made in the test.

use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::json;

use super::*;
use crate::cert::{build_csr, generate_key, validate_issued, IssuedPem, Names, PrivateKey};
use crate::config::{KeyType, VaultAuth, VaultConfig};

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p
}

/// root → intermediate → leaf for `key`; PEMs of (leaf, intermediate, root).
fn pki(key: &PrivateKey) -> (String, String, String) {
    let root =
        CertifiedIssuer::self_signed(ca_params("test root"), KeyPair::generate().unwrap()).unwrap();
    let int =
        CertifiedIssuer::signed_by(ca_params("test int"), KeyPair::generate().unwrap(), &root)
            .unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(key.pair(), &int)
        .unwrap();
    (leaf.pem(), int.pem(), root.pem())
}

fn names() -> Names {
    Names {
        common_name: "localhost".into(),
        dns_names: vec!["localhost".into()],
        ip_addresses: vec![],
    }
}

fn check(issued: &Issued, key: &PrivateKey) {
    let pem = IssuedPem {
        cert_pem: &issued.cert_pem,
        chain_pem: &issued.chain_pem,
        ca_pem: issued.ca_pem.as_deref(),
    };
    validate_issued(&pem, &key.public_key(), &names(), SystemTime::now()).unwrap();
}

#[test]
fn chain_is_split_into_intermediates_and_root() {
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let (leaf, int, root) = pki(&key);
    let mut answer =
        json!({"data": {"certificate": leaf, "ca_chain": [int, root], "issuing_ca": int}});
    let issued = parse_issued(&mut answer).unwrap();
    assert_eq!(issued.chain_pem.trim(), int.trim());
    assert_eq!(issued.ca_pem.as_deref().map(str::trim), Some(root.trim()));
    check(&issued, &key);

    // The root outside this Vault: no ca file, the chain still links up.
    let mut answer = json!({"data": {"certificate": leaf, "ca_chain": [int]}});
    let issued = parse_issued(&mut answer).unwrap();
    assert_eq!(issued.chain_pem.trim(), int.trim());
    assert!(issued.ca_pem.is_none());
    check(&issued, &key);

    // The leaf listed in the chain as well, and CRLF line endings.
    let mut answer =
        json!({"data": {"certificate": leaf.replace('\n', "\r\n"), "ca_chain": [leaf, int, root]}});
    let issued = parse_issued(&mut answer).unwrap();
    assert_eq!(issued.chain_pem.trim(), int.trim());
    check(&issued, &key);

    // Old servers: issuing_ca only.
    let mut answer = json!({"data": {"certificate": leaf, "issuing_ca": int}});
    let issued = parse_issued(&mut answer).unwrap();
    assert_eq!(issued.chain_pem.trim(), int.trim());
    check(&issued, &key);
}

#[test]
fn a_root_signed_leaf_has_an_empty_chain() {
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let root =
        CertifiedIssuer::self_signed(ca_params("root"), KeyPair::generate().unwrap()).unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(key.pair(), &root)
        .unwrap();
    let mut answer = json!({"data": {"certificate": leaf.pem(), "ca_chain": [root.pem()], "issuing_ca": root.pem()}});
    let issued = parse_issued(&mut answer).unwrap();
    assert_eq!(issued.chain_pem, "");
    assert!(issued.ca_pem.is_some());
    check(&issued, &key);
}

#[test]
fn malformed_answers_say_what_is_missing() {
    for (answer, want) in [
        (json!({}), "no data block"),
        (json!({"data": {}}), "no data.certificate"),
        (json!({"data": {"certificate": " "}}), "no data.certificate"),
        (
            json!({"data": {"certificate": "x", "ca_chain": ["-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"]}}),
            "data.ca_chain",
        ),
    ] {
        let mut answer = answer;
        let err = parse_issued(&mut answer).unwrap_err();
        assert!(err.contains(want), "{err} should contain {want}");
    }
}

/// A config whose token file lives in the returned dir.
fn config(server_keygen: bool) -> (tempfile::TempDir, VaultConfig) {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s.test\n").unwrap();
    let cfg = VaultConfig {
        address: "http://127.0.0.1:1".into(),
        trust_bundle: None,
        namespace: Some("team".into()),
        pki_mount: "pki/int".into(),
        pki_role: "web".into(),
        server_keygen,
        timeout: Duration::from_secs(1),
        auth: VaultAuth::Token { token_file: token },
    };
    (dir, cfg)
}

fn request(key: &PrivateKey) -> IssueRequest {
    let names = Names {
        common_name: "app.test".into(),
        dns_names: vec!["app.test".into(), "localhost".into()],
        ip_addresses: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
    };
    IssueRequest {
        credential: "web".into(),
        csr_der: build_csr(key, &names).unwrap(),
        names,
        lifetime: Duration::from_secs(3600),
    }
}

#[test]
fn sign_sends_the_csr_and_names() {
    let issuer = VaultIssuer::new("vault", &config(false).1).unwrap();
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let (path, body) = issuer.request_for(&request(&key)).unwrap();
    assert_eq!(path, "pki/int/sign/web");
    assert!(body["csr"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"));
    assert_eq!(body["common_name"], "app.test");
    assert_eq!(body["alt_names"], "app.test,localhost");
    assert_eq!(body["ip_sans"], "127.0.0.1,::1");
    assert_eq!(body["ttl"], "3600s");
    assert_eq!(body["format"], "pem");
    assert!(body.get("key_type").is_none());
}

#[test]
fn server_keygen_asks_issue_for_the_configured_key_type() {
    let issuer = VaultIssuer::new("vault", &config(true).1).unwrap();
    for (kt, want) in [
        (KeyType::EcdsaP256, ("ec", 256)),
        (KeyType::EcdsaP384, ("ec", 384)),
        (KeyType::Ed25519, ("ed25519", 0)),
        (KeyType::Rsa2048, ("rsa", 2048)),
    ] {
        let key = generate_key(kt).unwrap();
        let (path, body) = issuer.request_for(&request(&key)).unwrap();
        assert_eq!(path, "pki/int/issue/web");
        assert!(
            body.get("csr").is_none(),
            "{kt:?}: the CSR is not sent to issue"
        );
        assert_eq!(
            (
                body["key_type"].as_str().unwrap(),
                body["key_bits"].as_u64().unwrap()
            ),
            (want.0, want.1 as u64),
            "{kt:?}"
        );
    }
    let mut answer = json!({"data": {"private_key": "-----BEGIN PRIVATE KEY-----..."}});
    let key = take_private_key(&mut answer).unwrap();
    assert_eq!(format!("{key:?}"), "ServerKey(<redacted>)");
    assert_eq!(answer["data"]["private_key"], serde_json::Value::Null);
}

#[tokio::test]
async fn unreachable_vault_names_issuer_path_and_address() {
    let (_dir, cfg) = config(false);
    let issuer = VaultIssuer::new("corp", &cfg).unwrap();
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let err = issuer.issue(&request(&key)).await.unwrap_err().to_string();
    // The token method looks the token up first; that is the path named.
    assert!(err.contains("issuer corp") && err.contains("web"), "{err}");
    assert!(
        err.contains("/v1/auth/token/lookup-self") && err.contains("http://127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn missing_secret_files_stop_setup() {
    let (_dir, mut cfg) = config(false);
    cfg.auth = VaultAuth::AppRole {
        role_id_file: "/nonexistent/role-id".into(),
        secret_id_file: "/nonexistent/secret-id".into(),
        mount: "approle".into(),
    };
    let err = VaultIssuer::new("corp", &cfg).unwrap_err().to_string();
    assert!(
        err.contains("issuer corp") && err.contains("role_id_file /nonexistent/role-id"),
        "{err}"
    );
}

#[test]
fn debug_shows_no_secret() {
    let issuer = VaultIssuer::new("vault", &config(false).1).unwrap();
    let shown = format!("{issuer:?}");
    assert!(
        shown.contains("VaultClient") && !shown.contains("s.test"),
        "{shown}"
    );
}
