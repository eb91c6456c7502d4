//! Bad configs: each error names the key and the line.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{line_of, parse, web, with_cert, FILE};
use crate::config::{check_state_dir, Config, ConfigError};

#[test]
fn bad_configs_name_key_and_line() {
    // (label, config text, expected key, text on the expected line, expected message part)
    let second_cert = |extra: &str| {
        with_cert(&format!(
            "{}\n[[certificate]]\nname = \"api\"\nissuer = \"dev\"\ndns_names = [\"api.internal\"]\n{extra}",
            web("")
        ))
    };
    let cases: Vec<(&str, String, &str, &str, &str)> = vec![
        (
            "syntax error",
            "[daemon]\nlisten = 127.0.0.1:9464\n".into(),
            "",
            "listen",
            "TOML syntax error",
        ),
        (
            "unknown key with did-you-mean",
            with_cert(&web("renew_befor = \"10%\"")),
            "certificate[0].renew_befor",
            "renew_befor",
            "did you mean `renew_before`?",
        ),
        (
            "unknown key, dash instead of underscore",
            "[daemon]\nstate-dir = \"/x\"\n".into(),
            "daemon.state-dir",
            "state-dir",
            "did you mean `state_dir`?",
        ),
        (
            "unknown key in a tagged table",
            "[issuer.dev]\ntype = \"local-ca\"\nca_lifetim = \"1d\"\n".into(),
            "issuer.dev.ca_lifetim",
            "ca_lifetim",
            "did you mean `ca_lifetime`?",
        ),
        (
            "a CA renewed too late",
            "[issuer.dev]\ntype = \"local-ca\"\nca_renew_before = \"95%\"\n".into(),
            "issuer.dev.ca_renew_before",
            "ca_renew_before",
            "at most 90% of ca_lifetime",
        ),
        (
            "a CA renewed before it exists",
            "[issuer.dev]\ntype = \"local-ca\"\nca_lifetime = \"30d\"\nca_renew_before = \"30d\"\n".into(),
            "issuer.dev.ca_renew_before",
            "ca_renew_before",
            "at most 90% of ca_lifetime (30days)",
        ),
        (
            "unknown top-level table",
            "[deamon]\n".into(),
            "deamon",
            "deamon",
            "did you mean `daemon`?",
        ),
        (
            "bad duration",
            with_cert(&web("lifetime = \"5 parsecs\"")),
            "certificate[0].lifetime",
            "parsecs",
            "invalid duration \"5 parsecs\"",
        ),
        (
            "lifetime too short",
            with_cert(&web("lifetime = \"5s\"")),
            "certificate[0].lifetime",
            "\"5s\"",
            "at least 10s",
        ),
        (
            "bad percentage",
            with_cert(&web("renew_before = \"abc%\"")),
            "certificate[0].renew_before",
            "abc%",
            "invalid percentage",
        ),
        (
            "renew_before 100%",
            with_cert(&web("renew_before = \"100%\"")),
            "certificate[0].renew_before",
            "100%",
            "less than 100%",
        ),
        (
            "renew_before longer than lifetime",
            with_cert(&web("lifetime = \"1h\"\nrenew_before = \"2h\"")),
            "certificate[0].renew_before",
            "\"2h\"",
            "less than lifetime",
        ),
        (
            "renew_before + jitter",
            with_cert(&web("renew_before = \"60%\"\njitter = \"40%\"")),
            "certificate[0].jitter",
            "jitter =",
            "must be less than 100% of lifetime",
        ),
        (
            "bad key_type",
            with_cert(&web("key_type = \"ecdsa-p999\"")),
            "certificate[0].key_type",
            "key_type",
            "unknown key type \"ecdsa-p999\"; allowed: ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096",
        ),
        (
            "wrong value type",
            with_cert(&web("lifetime = 5")),
            "certificate[0].lifetime",
            "lifetime",
            "expected a string",
        ),
        (
            "missing required key",
            with_cert("issuer = \"dev\"\ndns_names = [\"x\"]"),
            "certificate[0].name",
            "[[certificate]]",
            "required key is missing",
        ),
        (
            "bad certificate name",
            with_cert(&web("").replace("\"web\"", "\".hidden\"")),
            "certificate[0].name",
            ".hidden",
            "must not start with '.'",
        ),
        (
            "duplicate certificate names",
            second_cert("files = { fullchain = \"/tls/b.pem\", key = \"/tls/b.key\" }")
                .replace("\"api\"", "\"web\""),
            "certificate[1].name",
            "name = \"web\"\nissuer = \"dev\"\ndns_names = [\"api",
            "duplicate certificate name \"web\"",
        ),
        (
            "duplicate paths across two credentials",
            second_cert("files = { fullchain = \"/tls/b.pem\", key = \"/tls/cert.pem\" }"),
            "certificate[1].files.key",
            "/tls/b.pem",
            "also used by certificate[0].files.cert (certificate \"web\"",
        ),
        (
            "missing issuer",
            with_cert(&web("").replace("\"dev\"", "\"prod\"")),
            "certificate[0].issuer",
            "\"prod\"",
            "issuer \"prod\" is not defined; defined issuers: dev, other",
        ),
        (
            "unknown issuer type",
            "[issuer.dev]\ntype = \"acme2\"\n".into(),
            "issuer.dev.type",
            "acme2",
            "allowed: local-ca",
        ),
        (
            "files without a key",
            with_cert("name = \"web\"\nissuer = \"dev\"\ndns_names = [\"a\"]\nfiles = { cert = \"/tls/c.pem\" }"),
            "certificate[0].files",
            "files =",
            "set `key`, `bundle`, `key_der` or `pkcs12`",
        ),
        (
            "a keystore without a password",
            with_cert("name = \"web\"\nissuer = \"dev\"\ndns_names = [\"a\"]\nfiles = { pkcs12 = \"/tls/k.p12\" }"),
            "certificate[0].files.pkcs12_password",
            "files =",
            "required with pkcs12",
        ),
        (
            "a keystore password in the config",
            with_cert("name = \"web\"\nissuer = \"dev\"\ndns_names = [\"a\"]\nfiles = { pkcs12 = \"/tls/k.p12\", pkcs12_password = \"changeit\" }"),
            "certificate[0].files.pkcs12_password",
            "files =",
            "the password itself never goes in the config",
        ),
        (
            "a keystore password file that is not there",
            with_cert("name = \"web\"\nissuer = \"dev\"\ndns_names = [\"a\"]\nfiles = { pkcs12 = \"/tls/k.p12\", pkcs12_password = { file = \"/nonexistent/p12-pass\" } }"),
            "certificate[0].files.pkcs12_password.file",
            "files =",
            "cannot read /nonexistent/p12-pass",
        ),
        (
            "keystore settings without a keystore",
            with_cert("name = \"web\"\nissuer = \"dev\"\ndns_names = [\"a\"]\nfiles = { bundle = \"/b.pem\", pkcs12_legacy = true }"),
            "certificate[0].files.pkcs12_legacy",
            "files =",
            "set `pkcs12 = \"PATH\"` too",
        ),
        (
            "a JKS keystore",
            with_cert("name = \"web\"\nissuer = \"dev\"\ndns_names = [\"a\"]\nfiles = { bundle = \"/b.pem\", jks = \"/k.jks\" }"),
            "certificate[0].files.jks",
            "files =",
            "write `pkcs12` instead",
        ),
        (
            "no files at all",
            with_cert("name = \"web\"\nissuer = \"dev\"\ndns_names = [\"a\"]"),
            "certificate[0].files",
            "[[certificate]]",
            "the certificate is written nowhere",
        ),
        (
            "no subject name",
            with_cert("name = \"web\"\nissuer = \"dev\"\nfiles = { bundle = \"/b.pem\" }"),
            "certificate[0]",
            "[[certificate]]",
            "at least one of common_name, dns_names, ip_addresses",
        ),
        (
            "bad dns name",
            with_cert(&web("").replace("app.internal", "app..internal")),
            "certificate[0].dns_names[0]",
            "app..internal",
            "invalid DNS name",
        ),
        (
            "bad ip address",
            with_cert(&web("ip_addresses = [\"::1\", \"300.1.1.1\"]")),
            "certificate[0].ip_addresses[1]",
            "ip_addresses",
            "invalid IP address \"300.1.1.1\"",
        ),
        (
            "symlink mode with files in two dirs",
            with_cert(&web("swap = \"symlink\"").replace("/tls/key.pem", "/keys/key.pem")),
            "certificate[0].files.key",
            "files =",
            "all files must be in one directory",
        ),
        (
            "two symlink credentials in one dir",
            second_cert("swap = \"symlink\"\nfiles = { bundle = \"/tls/b.pem\" }")
                .replace("/tls/key.pem\" }", "/tls/key.pem\" }\nswap = \"symlink\""),
            "certificate[1].swap",
            "swap = \"symlink\"\nfiles = { bundle",
            "already uses swap = \"symlink\" in /tls",
        ),
        (
            "bad mode string",
            with_cert(&web("key_mode = \"0999\"")),
            "certificate[0].key_mode",
            "key_mode",
            "invalid mode",
        ),
        (
            "mode too large",
            with_cert(&web("cert_mode = 0o1777")),
            "certificate[0].cert_mode",
            "cert_mode",
            "at most 0777",
        ),
        (
            "unknown owner user",
            with_cert(&web("owner = \"no-such-user-rekey\"")),
            "certificate[0].owner",
            "owner",
            "unknown user \"no-such-user-rekey\"",
        ),
        (
            "unknown group",
            with_cert(&web("group = \"no-such-group-rekey\"")),
            "certificate[0].group",
            "group",
            "unknown group",
        ),
        (
            "unknown reload type",
            with_cert(&web("reload = { type = \"kill\" }")),
            "certificate[0].reload.type",
            "reload",
            "unknown type \"kill\"; allowed: none, signal, exec, http",
        ),
        (
            "verify without type",
            with_cert(&web("verify = { }")),
            "certificate[0].verify.type",
            "verify",
            "required key is missing",
        ),
        (
            "bad listen",
            "[daemon]\nlisten = \"localhost\"\n".into(),
            "daemon.listen",
            "listen",
            "invalid address",
        ),
        (
            "state_dir too long for the admin socket",
            format!("[daemon]\nstate_dir = \"/{}\"\n", "d".repeat(100)),
            "daemon.state_dir",
            "state_dir",
            "at most 107; use a shorter state_dir",
        ),
        (
            "empty admin_token_file",
            "[daemon]\nadmin_token_file = \"\"\n".into(),
            "daemon.admin_token_file",
            "admin_token",
            "must not be empty",
        ),
        (
            "bad log_format",
            "[daemon]\nlog_format = \"xml\"\n".into(),
            "daemon.log_format",
            "log_format",
            "allowed: text, json",
        ),
        (
            "zero concurrency",
            "[daemon]\nmax_concurrent_rotations = 0\n".into(),
            "daemon.max_concurrent_rotations",
            "max_concurrent",
            "at least 1",
        ),
        (
            "backstop too short",
            "[daemon]\nbackstop = \"30s\"\n".into(),
            "daemon.backstop",
            "backstop",
            "at least 60s",
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
        let prefix = format!("{FILE}:{line}:");
        assert!(
            msg.starts_with(&prefix),
            "{label}: {msg:?} lacks {prefix:?}"
        );
        if !key.is_empty() {
            assert!(msg.contains(&format!(": {key}: ")), "{label}: {msg}");
        }
    }
    assert!(count >= 30);
}

#[test]
fn message_format_matches_the_contract() {
    let text = with_cert(&web("key_type = \"ecdsa-p999\""));
    let err = Config::parse(&text, Path::new("rekey.toml")).err();
    let line = line_of(&text, "key_type");
    assert_eq!(
        err.map(|e| e.to_string()),
        Some(format!(
            "rekey.toml:{line}:12: certificate[0].key_type: unknown key type \"ecdsa-p999\"; allowed: ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096"
        ))
    );
}

#[test]
fn duplicate_paths_name_both_credentials() {
    let text = with_cert(&format!(
        "{}\n[[certificate]]\nname = \"api\"\nissuer = \"dev\"\ndns_names = [\"a\"]\nfiles = {{ bundle = \"/tls/key.pem\" }}\n",
        web("")
    ));
    let msg = parse(&text)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("certificate[1].files.bundle"), "{msg}");
    assert!(msg.contains("certificate[0].files.key"), "{msg}");
    assert!(
        msg.contains(&format!("line {}", line_of(&text, "files = { cert"))),
        "{msg}"
    );
}

/// Write `text` as rekey.toml in `dir` and load it.
fn load_in(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    let file = dir.join("rekey.toml");
    std::fs::write(&file, text).unwrap();
    Config::load(&file)
}

#[test]
fn state_dir_that_is_a_regular_file() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::write(&state, "x").unwrap();
    let text = "# comment\n[daemon]\nstate_dir = \"state\"\n";
    let err = load_in(tmp.path(), text).unwrap_err();
    assert_eq!(err.key(), "daemon.state_dir");
    assert_eq!(err.line(), Some(3));
    let msg = err.to_string();
    assert!(msg.contains("not a directory"), "{msg}");
    assert!(msg.contains("rekey.toml:3:"), "{msg}");
}

#[test]
fn state_dir_readable_by_others() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = format!("[daemon]\nstate_dir = \"{}\"\n", state.display());
    let err = load_in(tmp.path(), &text).unwrap_err();
    assert_eq!(err.key(), "daemon.state_dir");
    assert_eq!(err.line(), Some(2));
    let msg = err.to_string();
    assert!(msg.contains("mode 0755"), "{msg}");
    assert!(
        msg.contains(&format!("chmod 700 {}", state.display())),
        "{msg}"
    );

    // The fix the message names makes it load.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(load_in(tmp.path(), &text).is_ok());
    // A state dir that does not exist yet is fine: it is created later.
    assert!(check_state_dir(&tmp.path().join("missing")).is_ok());
}

#[test]
fn state_dir_owned_by_another_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to give the state dir to another user");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let text = format!("[daemon]\nstate_dir = \"{}\"\n", state.display());
    let err = load_in(tmp.path(), &text).unwrap_err();
    assert_eq!(err.key(), "daemon.state_dir");
    let msg = err.to_string();
    assert!(msg.contains("belongs to uid 65534, not to uid 0"), "{msg}");
    assert!(
        msg.contains(&format!("chown -R 0 {}", state.display())),
        "{msg}"
    );
    // `sudo rekey check` only reads: root may inspect rekey's state dir.
    let file = tmp.path().join("rekey.toml");
    std::fs::write(&file, &text).unwrap();
    assert!(Config::load(&file).is_err());
    assert!(Config::load_to_inspect(&file).is_ok());
    std::os::unix::fs::chown(&state, Some(0), Some(0)).unwrap();
    assert!(load_in(tmp.path(), &text).is_ok());
}

#[test]
fn load_of_a_missing_file_names_it() {
    let err = Config::load(Path::new("/nonexistent/rekey.toml")).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("/nonexistent/rekey.toml: cannot read"));
    assert_eq!(err.key(), "");
}
