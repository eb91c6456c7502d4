//! reload / verify / on_failure / on_remove: every type parses to its typed form, and
//! mistakes name the key and the line.

use std::time::Duration;

use super::{line_of, parse, web, with_cert};
use crate::config::{OnFailure, OnRemove, PidSource, ProbeConfig, ReloadConfig, StartTls};

#[test]
fn every_reload_and_probe_type_parses() {
    let c = parse(&with_cert(&web(
        "reload = { type = \"signal\", signal = \"SIGUSR1\", pid_file = \"/run/app.pid\" }\n\
         verify = [\n\
           { type = \"tls\", connect = \"127.0.0.1:8443\", timeout = \"5s\", settle = \"300ms\" },\n\
           { type = \"tls\", connect = \"127.0.0.1:5432\", starttls = \"postgres\", timeout = \"1s\" },\n\
           { type = \"http\", url = \"http://127.0.0.1:8080/version\", expect_status = 204, expect_body = \"{fingerprint}\", timeout = \"2s\" },\n\
           { type = \"exec\", command = [\"/usr/bin/check\", \"--quick\"], timeout = \"9s\", env = { CHECK_URL = \"https://127.0.0.1:8443/\" } },\n\
         ]\non_failure = \"keep\"\non_remove = \"revoke\"",
    )))
    .unwrap();
    let mut w = c.certificates[0].as_ref().clone();
    assert_eq!(
        w.reload,
        ReloadConfig::Signal {
            signal: "USR1".into(),
            target: PidSource::File("/run/app.pid".into())
        }
    );
    assert_eq!(w.verify.probes.len(), 4);
    assert!(
        matches!(&w.verify.probes[0], ProbeConfig::Tls { server_name, starttls: None, .. } if server_name == "app.internal")
    );
    assert!(matches!(
        &w.verify.probes.remove(1),
        ProbeConfig::Tls {
            starttls: Some(StartTls::Postgres),
            ..
        }
    ));
    assert!(matches!(
        &w.verify.probes[1],
        ProbeConfig::Http {
            expect_status: 204,
            ..
        }
    ));
    assert_eq!(
        w.verify.probes[2],
        ProbeConfig::Exec {
            command: vec!["/usr/bin/check".into(), "--quick".into()],
            env: vec![("CHECK_URL".into(), "https://127.0.0.1:8443/".into())],
        }
    );
    assert_eq!(
        w.verify.timeout,
        Duration::from_secs(9),
        "the longest probe timeout wins"
    );
    assert_eq!(w.verify.settle, Duration::from_millis(300));
    assert_eq!(w.on_failure, OnFailure::Keep);
    assert_eq!(w.on_remove, OnRemove::Revoke);

    let c = parse(&with_cert(&web(
        "reload = { type = \"exec\", command = [\"systemctl\", \"reload\", \"nginx\"] }",
    )))
    .unwrap();
    assert!(
        matches!(&c.certificates[0].reload, ReloadConfig::Exec { command, env, .. } if command.len() == 3 && env.is_empty())
    );
    let c = parse(&with_cert(&web(
        "reload = { type = \"exec\", command = [\"/usr/sbin/apachectl\", \"graceful\"], env = { LANG = \"C\", APACHE_CONFDIR = \"/etc/apache2\" } }",
    )))
    .unwrap();
    assert_eq!(
        c.certificates[0].reload,
        ReloadConfig::Exec {
            command: vec!["/usr/sbin/apachectl".into(), "graceful".into()],
            timeout: Duration::from_secs(30),
            env: vec![
                ("APACHE_CONFDIR".into(), "/etc/apache2".into()),
                ("LANG".into(), "C".into()),
            ],
        }
    );
    let c = parse(&with_cert(&web(
        "reload = { type = \"http\", url = \"https://127.0.0.1:9000/-/reload\" }",
    )))
    .unwrap();
    assert!(
        matches!(&c.certificates[0].reload, ReloadConfig::Http { method, .. } if method == "POST")
    );
}

#[test]
fn handoff_mistakes_name_key_and_line() {
    let cases = [
        (
            "reload = { type = \"signal\", signal = \"KILLALL\", pid = 1 }",
            "certificate[0].reload.signal",
            "unknown signal",
        ),
        (
            "reload = { type = \"signal\", pid = 1 }",
            "certificate[0].reload.pid",
            "never signals PID 1",
        ),
        (
            "reload = { type = \"signal\", pid = 10, pid_file = \"/x\" }",
            "certificate[0].reload.pid_file",
            "exactly one",
        ),
        (
            "reload = { type = \"exec\", command = \"systemctl reload nginx\" }",
            "certificate[0].reload.command",
            "without a shell",
        ),
        (
            "reload = { type = \"exec\", command = [\"x\"], env = { REKEY_CREDENTIAL = \"y\" } }",
            "certificate[0].reload.env",
            "reserved: rekey sets the REKEY_* variables itself",
        ),
        (
            "reload = { type = \"exec\", command = [\"x\"], env = { \"A-B\" = \"y\" } }",
            "certificate[0].reload.env",
            "is not a variable name",
        ),
        (
            "reload = { type = \"exec\", command = [\"x\"], env = [\"A=1\"] }",
            "certificate[0].reload.env",
            "must be a table of strings",
        ),
        (
            "verify = { type = \"exec\", command = [\"x\"], env = { A = true } }",
            "certificate[0].verify.env",
            "A must be a string, found boolean",
        ),
        (
            "reload = { type = \"http\", url = \"ftp://x\" }",
            "certificate[0].reload.url",
            "not an http",
        ),
        (
            "verify = { type = \"tls\", connect = \"localhost\" }",
            "certificate[0].verify.connect",
            "host:port",
        ),
        (
            "verify = { type = \"tls\", connect = \"127.0.0.1:25\", starttls = \"esmtp\" }",
            "certificate[0].verify.starttls",
            "allowed: postgres, mysql, smtp, imap, pop3, ldap",
        ),
        (
            "verify = [{ type = \"none\" }, { type = \"exec\", command = [\"true\"] }]",
            "certificate[0].verify[0].type",
            "cannot be combined",
        ),
        (
            "verify = { type = \"http\", url = \"http://x/\", expect_body = \"{secret}\" }",
            "certificate[0].verify.expect_body",
            "unknown placeholder",
        ),
        (
            "verify = { type = \"tls\", connect = \"127.0.0.1:1\", tiemout = \"1s\" }",
            "certificate[0].verify.tiemout",
            "did you mean `timeout`",
        ),
        (
            "on_failure = \"retry\"",
            "certificate[0].on_failure",
            "allowed: rollback, keep",
        ),
        (
            "on_remove = \"delete\"",
            "certificate[0].on_remove",
            "allowed: keep, revoke",
        ),
    ];
    for (extra, key, msg) in cases {
        let text = with_cert(&web(extra));
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key(), key, "{extra}: {err}");
        let marker = extra.split(" = ").next().unwrap();
        assert_eq!(err.line(), Some(line_of(&text, marker)), "{extra}: {err}");
        assert!(err.to_string().contains(msg), "{extra}: {err}");
    }
}
