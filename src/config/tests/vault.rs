//! `[issuer.NAME] type = "vault"`: every key, defaults, bad tables that
//! name the key and the line, and no secret in the parsed config.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{line_of, parse, FILE};
use crate::config::{Config, IssuerConfig, VaultAuth, VaultConfig, DEFAULT_JWT_FILE};

fn vault(c: &Config, name: &str) -> VaultConfig {
    match c.issuer(name) {
        Some(IssuerConfig::Vault(v)) => v.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn every_key_and_each_auth_method_parses() {
    let text = r#"
[issuer.full]
type = "vault"
address = "https://vault.internal:8200/"
trust_bundle = "roots/vault-ca.pem"
namespace = "team-a/"
pki_mount = "/pki/int/"
pki_role = "web"
server_keygen = true
timeout = "5s"
auth = { method = "approle", role_id_file = "/etc/rekey/role-id", secret_id_file = "secret-id", mount = "approle-rekey" }

[issuer.min]
type = "vault"
address = "http://127.0.0.1:8200"
pki_role = "web"
auth = { method = "token", token_file = "/run/rekey/token" }

[issuer.k8s]
type = "vault"
address = "https://vault:8200"
pki_role = "web"
auth = { method = "kubernetes", role = "rekey" }

[issuer.k8s-custom]
type = "vault"
address = "https://vault:8200"
pki_role = "web"

[issuer.k8s-custom.auth]
method = "kubernetes"
role = "rekey"
jwt_file = "/var/run/secrets/tokens/vault"
mount = "kubernetes/cluster-b"
"#;
    let c = parse(text).unwrap();
    assert_eq!(c.issuer("full").unwrap().type_name(), "vault");
    assert_eq!(
        vault(&c, "full"),
        VaultConfig {
            address: "https://vault.internal:8200".into(),
            trust_bundle: Some(PathBuf::from("/etc/rekey/roots/vault-ca.pem")),
            proxy: crate::config::ProxyConfig::Environment,
            namespace: Some("team-a".into()),
            pki_mount: "pki/int".into(),
            pki_role: "web".into(),
            server_keygen: true,
            timeout: Duration::from_secs(5),
            auth: VaultAuth::AppRole {
                role_id_file: "/etc/rekey/role-id".into(),
                secret_id_file: "/etc/rekey/secret-id".into(),
                mount: "approle-rekey".into(),
            },
        }
    );
    let min = vault(&c, "min");
    assert_eq!(min.pki_mount, "pki");
    assert_eq!(min.timeout, Duration::from_secs(30));
    assert!(!min.server_keygen && min.namespace.is_none() && min.trust_bundle.is_none());
    assert_eq!(
        min.auth,
        VaultAuth::Token {
            token_file: "/run/rekey/token".into()
        }
    );
    assert_eq!(
        vault(&c, "k8s").auth,
        VaultAuth::Kubernetes {
            role: "rekey".into(),
            jwt_file: DEFAULT_JWT_FILE.into(),
            mount: "kubernetes".into(),
        }
    );
    assert_eq!(
        vault(&c, "k8s-custom").auth,
        VaultAuth::Kubernetes {
            role: "rekey".into(),
            jwt_file: "/var/run/secrets/tokens/vault".into(),
            mount: "kubernetes/cluster-b".into(),
        }
    );
}

#[test]
fn bad_vault_tables_name_key_and_line() {
    let table = |body: &str| {
        format!("[issuer.dev]\ntype = \"local-ca\"\n\n[issuer.v]\ntype = \"vault\"\n{body}\n")
    };
    const ADDR: &str = "address = \"https://vault:8200\"";
    const AUTH: &str = "auth = { method = \"token\", token_file = \"/t\" }";
    let ok = |extra: &str| table(&format!("{ADDR}\npki_role = \"web\"\n{AUTH}\n{extra}"));
    // (label, text, key, text on the expected line, message part)
    let cases: Vec<(&str, String, &str, &str, &str)> = vec![
        (
            "unknown type",
            "[issuer.v]\ntype = \"valt\"\n".into(),
            "issuer.v.type",
            "valt",
            "unknown type \"valt\"; allowed: local-ca, acme, vault",
        ),
        (
            "missing address",
            table(&format!("pki_role = \"web\"\n{AUTH}")),
            "issuer.v.address",
            "[issuer.v]",
            "required key is missing",
        ),
        (
            "address not http",
            table(&format!("address = \"vault:8200\"\npki_role = \"web\"\n{AUTH}")),
            "issuer.v.address",
            "vault:8200",
            "not an http:// or https:// URL",
        ),
        (
            "address with credentials",
            table(&format!("address = \"https://u:p@vault\"\npki_role = \"web\"\n{AUTH}")),
            "issuer.v.address",
            "u:p@",
            "user:password",
        ),
        (
            "address with a query",
            table(&format!("address = \"https://vault/?x=1\"\npki_role = \"web\"\n{AUTH}")),
            "issuer.v.address",
            "?x=1",
            "query",
        ),
        (
            "missing pki_role",
            table(&format!("{ADDR}\n{AUTH}")),
            "issuer.v.pki_role",
            "[issuer.v]",
            "required key is missing",
        ),
        (
            "bad pki_role",
            table(&format!("{ADDR}\npki_role = \"a/b\"\n{AUTH}")),
            "issuer.v.pki_role",
            "a/b",
            "invalid role name",
        ),
        (
            "bad pki_mount",
            ok("pki_mount = \"pki/../sys\""),
            "issuer.v.pki_mount",
            "pki/../sys",
            "invalid path",
        ),
        (
            "server_keygen not a bool",
            ok("server_keygen = \"yes\""),
            "issuer.v.server_keygen",
            "server_keygen",
            "expected true or false, found string",
        ),
        (
            "zero timeout",
            ok("timeout = \"0s\""),
            "issuer.v.timeout",
            "timeout",
            "longer than 0s",
        ),
        (
            "empty trust_bundle",
            ok("trust_bundle = \"\""),
            "issuer.v.trust_bundle",
            "trust_bundle",
            "must not be empty",
        ),
        (
            "insecure switch does not exist",
            ok("tls_skip_verify = true"),
            "issuer.v.tls_skip_verify",
            "tls_skip_verify",
            "unknown key `tls_skip_verify`",
        ),
        (
            "unknown key with did-you-mean",
            ok("pki_roel = \"x\""),
            "issuer.v.pki_roel",
            "pki_roel",
            "did you mean `pki_role`?",
        ),
        (
            "missing auth",
            table(&format!("{ADDR}\npki_role = \"web\"")),
            "issuer.v.auth",
            "[issuer.v]",
            "allowed: token, approle, kubernetes",
        ),
        (
            "auth not a table",
            table(&format!("{ADDR}\npki_role = \"web\"\nauth = \"approle\"")),
            "issuer.v.auth",
            "auth =",
            "must be a table",
        ),
        (
            "unknown auth method",
            table(&format!("{ADDR}\npki_role = \"web\"\nauth = {{ method = \"ldap\" }}")),
            "issuer.v.auth.method",
            "ldap",
            "unknown auth method \"ldap\"; allowed: token, approle, kubernetes",
        ),
        (
            "auth without method",
            table(&format!("{ADDR}\npki_role = \"web\"\nauth = {{ token_file = \"/t\" }}")),
            "issuer.v.auth.method",
            "token_file",
            "required key is missing",
        ),
        (
            "token without token_file",
            table(&format!("{ADDR}\npki_role = \"web\"\nauth = {{ method = \"token\" }}")),
            "issuer.v.auth.token_file",
            "method = \"token\"",
            "required key is missing",
        ),
        (
            "a token written in the config",
            table(&format!("{ADDR}\npki_role = \"web\"\nauth = {{ method = \"token\", token = \"s.abc\" }}")),
            "issuer.v.auth.token",
            "s.abc",
            "secrets are never written in the config; put it in a file readable only by rekey and set token_file",
        ),
        (
            "approle without secret_id_file",
            table(&format!("{ADDR}\npki_role = \"web\"\nauth = {{ method = \"approle\", role_id_file = \"/r\" }}")),
            "issuer.v.auth.secret_id_file",
            "role_id_file",
            "never written in the config",
        ),
        (
            "approle key typo",
            table(&format!("{ADDR}\npki_role = \"web\"\nauth = {{ method = \"approle\", role_id_file = \"/r\", secret_id_file = \"/s\", secret_idfile = \"/s\" }}")),
            "issuer.v.auth.secret_idfile",
            "secret_idfile",
            "did you mean `secret_id_file`?",
        ),
        (
            "kubernetes without role",
            table(&format!("{ADDR}\npki_role = \"web\"\nauth = {{ method = \"kubernetes\" }}")),
            "issuer.v.auth.role",
            "kubernetes",
            "required key is missing",
        ),
        (
            "bad auth mount",
            table(&format!("{ADDR}\npki_role = \"web\"\nauth = {{ method = \"kubernetes\", role = \"r\", mount = \"a b\" }}")),
            "issuer.v.auth.mount",
            "a b",
            "invalid path",
        ),
    ];
    let count = cases.len();
    for (label, text, key, marker, part) in cases {
        let err = match parse(&text) {
            Ok(_) => panic!("{label}: parsed, expected an error:\n{text}"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert_eq!(err.key(), key, "{label}: {msg}");
        let line = line_of(&text, marker);
        assert_eq!(err.line(), Some(line), "{label}: {msg}");
        assert!(msg.contains(part), "{label}: {msg:?} lacks {part:?}");
        assert!(
            msg.starts_with(&format!("{FILE}:{line}:")),
            "{label}: {msg}"
        );
    }
    assert!(count >= 20);
}

#[test]
fn the_config_holds_paths_never_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let role = write("role-id", "role-1234-SECRETISH");
    let secret = write("secret-id", "secret-5678-SECRET");
    let text = format!(
        "[issuer.v]\ntype = \"vault\"\naddress = \"https://vault:8200\"\npki_role = \"web\"\n\
         auth = {{ method = \"approle\", role_id_file = \"{}\", secret_id_file = \"{}\" }}\n",
        role.display(),
        secret.display()
    );
    let c = Config::parse(&text, Path::new(FILE)).unwrap();
    let shown = format!("{c:?}");
    assert!(
        shown.contains("secret-id") && shown.contains("role-id"),
        "{shown}"
    );
    assert!(!shown.contains("SECRET"), "a secret in Debug: {shown}");
}
