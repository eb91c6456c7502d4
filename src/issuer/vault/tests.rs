//! Answer parsing and request building, on certificates made in the test.

use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::{json, Value};

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
        proxy: crate::config::ProxyConfig::Off,
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
    let e = issuer.issue(&request(&key)).await.unwrap_err();
    // The cause is typed all the way up: a refused connection, not a timeout.
    assert!(
        matches!(
            e.transport(),
            Some(crate::net::httpc::HttpError::Connect { .. })
        ),
        "{e:?}"
    );
    let err = e.to_string();
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

/// One request the fake Vault got.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Script = dyn Fn(&Seen) -> (u16, &'static str, String) + Send + Sync;

/// A scripted HTTP server standing in for Vault where a real one cannot be
/// made to answer (a Kubernetes login, 429 with Retry-After). Answers each
/// request with `script(req)` = (status, extra header line, body).
fn fake_vault(script: Box<Script>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Seen>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (method, path) = (
                parts.next().unwrap_or_default().to_string(),
                parts.next().unwrap_or_default().to_string(),
            );
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let req = Seen {
                method,
                path,
                headers,
                body: String::from_utf8(body).unwrap(),
            };
            let (status, extra, answer) = script(&req);
            log.lock().unwrap().push(req);
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, seen)
}

#[tokio::test]
async fn kubernetes_login_sends_role_and_jwt_then_signs_with_the_token() {
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let (leaf, int, root) = pki(&key);
    let signed = json!({"data": {"certificate": leaf, "ca_chain": [int, root]}}).to_string();
    let (url, seen) = fake_vault(Box::new(move |r: &Seen| {
        match r.path.as_str() {
        "/v1/auth/k8s-east/login" => (
            200,
            "",
            json!({"auth": {"client_token": "s.k8stoken", "lease_duration": 600, "renewable": true}})
                .to_string(),
        ),
        "/v1/pki/int/sign/web" => (200, "", signed.clone()),
        _ => (404, "", r#"{"errors":[]}"#.to_string()),
    }
    }));
    let dir = tempfile::tempdir().unwrap();
    let jwt = dir.path().join("jwt");
    std::fs::write(&jwt, "eyJhbGciOi.payload.sig\n").unwrap();
    let (_tmp, mut cfg) = config(false);
    cfg.address = url;
    cfg.auth = VaultAuth::Kubernetes {
        role: "rekey".into(),
        jwt_file: jwt,
        mount: "k8s-east".into(),
    };
    let issuer = VaultIssuer::new("corp", &cfg).unwrap();
    let issued = issuer.issue(&request(&key)).await.unwrap();
    assert_eq!(issued.chain_pem.trim(), int.trim());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let login: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(
        login,
        json!({"role": "rekey", "jwt": "eyJhbGciOi.payload.sig"})
    );
    assert_eq!(seen[0].header("x-vault-token"), None);
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[1].header("x-vault-token"), Some("s.k8stoken"));
    for s in &seen {
        assert_eq!(s.header("x-vault-namespace"), Some("team"), "{s:?}");
        assert_eq!(s.header("x-vault-request"), Some("true"));
    }
}

#[tokio::test]
async fn busy_vault_passes_retry_after_to_the_engine() {
    let (url, _seen) = fake_vault(Box::new(|r: &Seen| match r.path.as_str() {
        "/v1/auth/token/lookup-self" => (
            200,
            "",
            json!({"data": {"ttl": 0, "renewable": false}}).to_string(),
        ),
        _ if r.body.contains("\"ttl\":\"3600s\"") => (
            429,
            "Retry-After: 7\r\n",
            r#"{"errors":["rate limit quota exceeded"]}"#.to_string(),
        ),
        _ => (500, "", "upstream exploded".to_string()),
    }));
    let (_tmp, mut cfg) = config(false);
    cfg.address = url;
    let issuer = VaultIssuer::new("corp", &cfg).unwrap();
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let err = issuer.issue(&request(&key)).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    let msg = err.to_string();
    assert!(
        msg.contains("POST /v1/pki/int/sign/web answered HTTP 429: rate limit quota exceeded"),
        "{msg}"
    );
    // A 5xx without Retry-After: the engine's own backoff decides.
    let mut other = request(&key);
    other.lifetime = Duration::from_secs(60);
    let err = issuer.issue(&other).await.unwrap_err();
    assert_eq!(err.retry_after(), None);
    assert!(
        err.to_string().contains("HTTP 500: upstream exploded"),
        "{err}"
    );
}

#[test]
fn serials_are_spelled_as_vault_does_without_the_der_sign_byte() {
    let root =
        CertifiedIssuer::self_signed(ca_params("test root"), KeyPair::generate().unwrap()).unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    // High bit set: DER prefixes a zero byte that Vault's spelling leaves out.
    p.serial_number = Some(rcgen::SerialNumber::from(vec![0x80, 0x0a, 0xff]));
    let leaf = p.signed_by(&KeyPair::generate().unwrap(), &root).unwrap();
    assert_eq!(serial_of(&leaf.pem()).unwrap(), "80:0a:ff");
    let e = serial_of("no pem here").unwrap_err();
    assert!(e.contains("no certificate"), "{e}");
}
