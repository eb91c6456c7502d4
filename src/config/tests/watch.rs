//! `[[watch]]` and `daemon.compat_metrics`: defaults, every key, and the
//! bad values named with their key and line.

use std::path::Path;
use std::time::Duration;

use super::{line_of, parse, web, with_cert};
use crate::config::{CompatMetrics, Share, WatchSource};

#[test]
fn watch_entries_parse_with_defaults_and_every_key() {
    let text = format!(
        "[daemon]\ncompat_metrics = [\"x509-exporter\"]\n\n{}\n\
         [[watch]]\nname = \"partner-ca\"\nfile = \"certs/partner.pem\"\n\n\
         [[watch]]\nname = \"billing\"\nendpoint = \"billing.internal:443\"\n\n\
         [[watch]]\nname = \"db\"\nendpoint = \"127.0.0.1:5433\"\nserver_name = \"db.internal\"\nstarttls = \"postgres\"\ninterval = \"1m\"\ntimeout = \"3s\"\nalert_before = \"14d\"\nteam = \"data\"\nlabels = {{ env = \"prod\" }}\n\n\
         [[watch]]\nname = \"v6\"\nendpoint = \"[::1]:8443\"\nalert_before = \"25%\"\n",
        with_cert(&web(""))
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.daemon.compat_metrics, [CompatMetrics::X509Exporter]);
    assert_eq!(c.watches.len(), 4);
    let file = &c.watches[0];
    // Relative to the config file's directory, like every path.
    assert_eq!(
        file.source,
        WatchSource::File(Path::new("/etc/rekey/certs/partner.pem").to_path_buf())
    );
    assert_eq!(file.alert_before, None);
    assert_eq!(file.team, None);
    let billing = &c.watches[1];
    assert_eq!(
        billing.source,
        WatchSource::Endpoint {
            connect: "billing.internal:443".into(),
            server_name: "billing.internal".into(),
            starttls: None,
        }
    );
    assert_eq!(billing.interval, Duration::from_secs(300));
    assert_eq!(billing.timeout, Duration::from_secs(10));
    let db = &c.watches[2];
    assert_eq!(
        db.source,
        WatchSource::Endpoint {
            connect: "127.0.0.1:5433".into(),
            server_name: "db.internal".into(),
            starttls: Some(crate::config::StartTls::Postgres),
        }
    );
    assert_eq!(db.interval, Duration::from_secs(60));
    assert_eq!(db.timeout, Duration::from_secs(3));
    assert_eq!(
        db.alert_before,
        Some(Share::Duration(Duration::from_secs(14 * 86400)))
    );
    assert_eq!(db.team.as_deref(), Some("data"));
    assert_eq!(db.labels.get("env").map(String::as_str), Some("prod"));
    let v6 = &c.watches[3];
    assert!(
        matches!(&v6.source, WatchSource::Endpoint { server_name, .. } if server_name == "::1")
    );
    assert_eq!(v6.alert_before, Some(Share::Fraction(0.25)));
    // Watches are not credentials: no policy applies to them.
    assert!(crate::config::evaluate_policy(&c).is_empty());
}

#[test]
fn bad_watches_are_named_with_key_and_line() {
    let w = |body: &str| format!("[[watch]]\nname = \"w\"\n{body}\n");
    let cases: Vec<(String, &str, &str)> = vec![
        (w(""), "watch[0]", "set file"),
        (
            w("file = \"/a.pem\"\nendpoint = \"a:443\""),
            "watch[0].endpoint",
            "not both",
        ),
        (w("file = \"\""), "watch[0].file", "empty"),
        (w("endpoint = \"a\""), "watch[0].endpoint", "host:port"),
        (w("endpoint = \"a:0\""), "watch[0].endpoint", "host:port"),
        (
            w("endpoint = \"a:443\"\nserver_name = \"bad name\""),
            "watch[0].server_name",
            "SNI",
        ),
        (
            w("file = \"/a.pem\"\nserver_name = \"a\""),
            "watch[0].server_name",
            "only an endpoint watch",
        ),
        (
            w("file = \"/a.pem\"\nstarttls = \"smtp\""),
            "watch[0].starttls",
            "only an endpoint watch",
        ),
        (
            w("endpoint = \"a:25\"\nstarttls = \"SMTP\""),
            "watch[0].starttls",
            "unknown protocol",
        ),
        (
            w("file = \"/a.pem\"\ninterval = \"1m\""),
            "watch[0].interval",
            "only an endpoint watch",
        ),
        (
            w("endpoint = \"a:443\"\ninterval = \"5s\""),
            "watch[0].interval",
            "at least 10s",
        ),
        (
            w("endpoint = \"a:443\"\ninterval = \"1m\"\ntimeout = \"2m\""),
            "watch[0].timeout",
            "at most interval",
        ),
        (
            w("file = \"/a.pem\"\nalert_before = \"100%\""),
            "watch[0].alert_before",
            "less than 100%",
        ),
        (
            w("file = \"/a.pem\"\nalert_before = \"soon\""),
            "watch[0].alert_before",
            "percentage",
        ),
        (
            w("file = \"/a.pem\"\nteam = \" \""),
            "watch[0].team",
            "empty",
        ),
        (
            w("file = \"/a.pem\"\nprotocol = \"smtp\""),
            "watch[0].protocol",
            "unknown",
        ),
        (
            w("file = \"/a.pem\"\nfiles = \"/b.pem\""),
            "watch[0].files",
            "did you mean `file`",
        ),
        (
            "[[watch]]\nname = \"a/b\"\nfile = \"/a.pem\"\n".to_string(),
            "watch[0].name",
            "may only contain",
        ),
        (
            format!("{}\n{}", w("file = \"/a.pem\""), w("file = \"/b.pem\"")),
            "watch[1].name",
            "another watch (line 2)",
        ),
        (
            format!(
                "{}\n[[watch]]\nname = \"web\"\nfile = \"/a.pem\"\n",
                with_cert(&web(""))
            ),
            "watch[0].name",
            "a certificate is already named \"web\"",
        ),
        (
            "[daemon]\ncompat_metrics = [\"blackbox\"]\n".to_string(),
            "daemon.compat_metrics[0]",
            "allowed: x509-exporter",
        ),
    ];
    for (text, key, words) in cases {
        let e = parse(&text).expect_err(key);
        assert_eq!(e.key(), key, "{e}");
        assert!(e.to_string().contains(words), "{key}: {e}");
        assert!(e.line().is_some(), "{key}: no line in {e}");
    }
    // The line is the offending value's.
    let text = w("endpoint = \"a:443\"\ninterval = \"5s\"");
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line(), Some(line_of(&text, "interval")));
}
