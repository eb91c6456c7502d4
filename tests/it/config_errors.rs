//! A table of bad configs: each exits 2 from `rekey check` with a message
//! naming the file, the line and the key.

use crate::support as common;

use common::*;

fn check(env: &Env) -> (Option<i32>, String) {
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(env.path("rekey.toml"))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configs_exit_2_naming_the_key() {
    // (case, certificate sections, words the message must contain)
    let web = |extra: &str| {
        format!(
            "[[certificate]]\nname = \"web\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\nfiles = {{ cert = \"/tmp/rekey-t/w/c.pem\", key = \"/tmp/rekey-t/w/k.pem\" }}\n{extra}\n"
        )
    };
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "syntax error",
            "[[certificate]\nname = \"x\"\n".into(),
            vec!["rekey.toml", ":8:"],
        ),
        (
            "unknown key",
            web("renew_befor = \"33%\""),
            vec!["renew_befor", "did you mean", "renew_before", ":13:"],
        ),
        (
            "bad duration",
            web("lifetime = \"ten minutes\""),
            vec!["lifetime", ":13:"],
        ),
        (
            "bad percentage",
            web("renew_before = \"150%\""),
            vec!["renew_before", ":13:"],
        ),
        (
            "bad key_type",
            web("key_type = \"ecdsa-p999\""),
            vec!["key_type", "ecdsa-p256", ":13:"],
        ),
        (
            "undeclared reload group",
            web("reload = { type = \"signal\", pid_file = \"/run/app.pid\" }\nreload_group = \"ngnix\""),
            vec![
                "certificate[0].reload_group",
                "\"ngnix\" is not declared",
                ":14:",
            ],
        ),
        (
            "reload window out of bounds",
            format!(
                "[reload_group.web]\nwindow = \"1m\"\n\n{}",
                web("reload_group = \"web\"")
            ),
            vec![
                "reload_group.web.window",
                "between 0s (no batching) and 5s",
                ":9:",
            ],
        ),
        (
            "duplicate names",
            format!("{}{}", web(""), web("").replace("/w/", "/w2/")),
            vec!["name", "web", ":15:"],
        ),
        (
            "duplicate paths",
            format!("{}{}", web(""), web("").replace("\"web\"", "\"api\"")),
            vec![
                "certificate[1].files.cert",
                "/tmp/rekey-t/w/c.pem",
                "certificate[0]",
                "\"web\"",
            ],
        ),
        (
            "bad on_remove",
            web("on_remove = \"delete\""),
            vec!["certificate[0].on_remove", "allowed: keep, revoke", ":13:"],
        ),
        (
            "SOCKS proxy",
            "[issuer.v]\ntype = \"vault\"\naddress = \"https://vault.internal:8200\"\npki_role = \"web\"\nproxy = \"socks5://127.0.0.1:1080\"\nauth = { method = \"token\", token_file = \"/tmp/rekey-t/token\" }\n".into(),
            vec!["issuer.v.proxy", "SOCKS proxies are not supported", ":12:"],
        ),
        (
            "proxy with credentials",
            "[[alert]]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/x\"\nproxy = \"http://ops:s3cret@proxy.internal:3128\"\n".into(),
            vec!["alert[0].proxy", "***@proxy.internal:3128", "user:password", "HTTPS_PROXY", ":11:"],
        ),
        (
            "proxy that is not a URL",
            "[issuer.le]\ntype = \"acme\"\ndirectory = \"https://acme.example/dir\"\nproxy = \"proxy.internal:3128\"\nchallenge = { type = \"http-01\", listen = \"0.0.0.0:80\" }\n".into(),
            vec!["issuer.le.proxy", "is not an http:// or https:// URL", "\"none\""],
        ),
        (
            "proxy on an issuer that sends no HTTP",
            "[issuer.cmd]\ntype = \"exec\"\nproxy = \"none\"\n".into(),
            vec!["issuer.cmd", "proxy"],
        ),
        (
            "missing issuer",
            web("").replace("issuer = \"dev\"", "issuer = \"nope\""),
            vec!["issuer", "nope", "dev", ":10:"],
        ),
    ];
    for (case, certs, words) in cases {
        let env = Env::new();
        env.write_config(&certs);
        let (code, msg) = check(&env);
        assert_eq!(code, Some(2), "{case}: exit code {code:?}: {msg}");
        for w in words {
            assert!(msg.contains(w), "{case}: message lacks {w:?}: {msg}");
        }
        assert!(
            !msg.contains("s3cret"),
            "{case}: a secret in the message: {msg}"
        );
    }
}

#[test]
fn an_unusable_state_dir_exits_2_naming_the_key() {
    let env = Env::new();
    env.write_config("");
    // A regular file where the state dir should be.
    std::fs::write(env.path("state"), "not a dir").unwrap();
    let (code, msg) = check(&env);
    assert_eq!(code, Some(2), "{msg}");
    assert!(msg.contains("state_dir"), "{msg}");

    // A state dir others can read.
    std::fs::remove_file(env.path("state")).unwrap();
    std::fs::create_dir(env.path("state")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.path("state"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, msg) = check(&env);
    assert_eq!(code, Some(2), "{msg}");
    assert!(
        msg.contains("state_dir") && msg.contains("chmod 700"),
        "{msg}"
    );
}

#[test]
fn a_missing_config_file_exits_2() {
    let out = std::process::Command::new(bin())
        .args(["check", "-c", "/nonexistent/rekey.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/rekey.toml"));
}
