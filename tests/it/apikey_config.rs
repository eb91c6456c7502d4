//! Bad `[[api_key]]` tables: `rekey check` exits 2 with a message naming the
//! file, the line and the key; a good one passes and is listed.

use crate::support as common;

use common::*;

fn check(env: &Env) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(env.path("rekey.toml"))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const ISSUERS: &str = "[issuer.bao]\ntype = \"vault\"\naddress = \"http://127.0.0.1:8200\"\nauth = { method = \"token\", token_file = \"/dev/null\" }\npki_role = \"web\"\n\n\
                       [issuer.keys]\ntype = \"http\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n[issuer.cmd]\ntype = \"exec\"\n\n";

/// An api_key table for `issuer` with `mint` and extra lines.
fn key(issuer: &str, mint: &str, extra: &str) -> String {
    format!("[[api_key]]\nname = \"app-token\"\nissuer = \"{issuer}\"\nfile = \"/tmp/rekey-t/token\"\nmint = {mint}\n{extra}\n")
}

const VAULT_MINT: &str = "{ path = \"auth/token/create\", body = { policies = [\"app\"], ttl = \"{lifetime}\" }, secret = \"auth.client_token\", id = \"auth.accessor\", ttl = \"auth.lease_duration\" }";

#[test]
fn bad_api_keys_exit_2_naming_the_key_and_line() {
    // (case, api_key sections, words the message must contain)
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key",
            key("bao", VAULT_MINT, "overlapp = \"5m\""),
            vec!["overlapp", "api_key[0]", "did you mean `overlap`", ":26:"],
        ),
        (
            "undefined issuer",
            key("nope", VAULT_MINT, ""),
            vec!["api_key[0].issuer", "app-token", "\"nope\" is not defined", ":23:"],
        ),
        (
            "certificate issuer",
            key("dev", VAULT_MINT, ""),
            vec!["api_key[0].issuer", "local-ca", "cannot mint API keys"],
        ),
        (
            "bad format",
            key("bao", VAULT_MINT, "format = \"yaml\""),
            vec!["api_key[0].format", "allowed: raw, env, json", ":26:"],
        ),
        (
            "mint without secret",
            key("bao", "{ path = \"auth/token/create\", id = \"auth.accessor\" }", ""),
            vec!["api_key[0].mint.secret", "required key is missing", ":25:"],
        ),
        (
            "exec mint without command",
            key("cmd", "{ path = \"x\" }", ""),
            vec!["api_key[0].mint", ":25:"],
        ),
        (
            "lease revoke without lease field",
            key("bao", VAULT_MINT, "revoke = { lease = true }"),
            vec!["api_key[0].mint.lease", "lease id"],
        ),
        (
            "bad env_var",
            key("bao", VAULT_MINT, "format = \"env\"\nenv_var = \"APP-TOKEN\""),
            vec!["api_key[0].env_var", "not an environment variable name", ":27:"],
        ),
        (
            "bad on_remove",
            key("bao", VAULT_MINT, "on_remove = \"drop\""),
            vec!["api_key[0].on_remove", "allowed: keep, revoke", ":26:"],
        ),
        (
            "secret in expect_body",
            key("bao", VAULT_MINT, "verify = { type = \"http\", url = \"http://127.0.0.1:1/\", expect_body = \"{secret}\" }"),
            vec!["api_key[0].verify.expect_body", "unknown placeholder {secret}"],
        ),
        (
            "duplicate of a certificate name",
            format!("[[certificate]]\nname = \"app-token\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\nfiles = {{ cert = \"/tmp/rekey-t/c.pem\", key = \"/tmp/rekey-t/k.pem\" }}\n\n{}", key("bao", VAULT_MINT, "")),
            vec!["api_key[0].name", "certificate is already named \"app-token\""],
        ),
        (
            "certificate from a key issuer",
            "[[certificate]]\nname = \"web\"\nissuer = \"keys\"\ndns_names = [\"localhost\"]\nfiles = { cert = \"/tmp/rekey-t/c.pem\", key = \"/tmp/rekey-t/k.pem\" }\n".to_string(),
            vec!["certificate[0].issuer", "mints API keys only"],
        ),
        (
            "exec issuer env overriding a REKEY_ variable",
            "[issuer.other]\ntype = \"exec\"\nenv = { REKEY_LIFETIME = \"1y\" }\n".to_string(),
            vec!["issuer.other.env", "REKEY_LIFETIME is reserved"],
        ),
        (
            "http issuer without base_url",
            "[issuer.other]\ntype = \"http\"\n".to_string(),
            vec!["issuer.other.base_url", "required key is missing"],
        ),
    ];
    for (case, section, words) in cases {
        let env = Env::new();
        env.write_config(&format!("{ISSUERS}{section}"));
        let (code, _, err) = check(&env);
        assert_eq!(code, Some(2), "{case}: {err}");
        for w in words {
            assert!(err.contains(w), "{case}: {w:?} not in: {err}");
        }
    }
}

#[test]
fn a_good_api_key_passes_check_and_is_listed() {
    let env = Env::new();
    env.write_config(&format!(
        "{ISSUERS}{}",
        key(
            "bao",
            VAULT_MINT,
            "format = \"env\"\nrevoke = { path = \"auth/token/revoke-accessor\", body = { accessor = \"{id}\" } }\n\
             verify = { type = \"http\", url = \"http://127.0.0.1:8080/whoami\", headers = { X-Token = \"{secret}\" }, expect_body = \"{key_id}\" }"
        )
    ));
    let (code, out, err) = check(&env);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 api key(s)"), "{out}");
    assert!(
        out.contains("app-token") && out.contains("no key yet"),
        "{out}"
    );
}
