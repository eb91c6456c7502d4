//! `[[alert]]` tables: a full config, defaults, and bad configs that name
//! the key and the line.

use std::path::PathBuf;
use std::time::Duration;

use super::{line_of, parse, FILE};
use crate::config::Event;
use crate::config::{HeaderSource, SinkConfig, UrlSource, WebhookFormat};

#[test]
fn every_sink_type_parses_with_its_keys() {
    let text = r#"
[[alert]]
type = "webhook"
name = "ops"
url = "https://hooks.example.com/rekey?x=1"
headers = { Authorization = { file = "token" }, X-Team = "ops" }
timeout = "3s"
retries = 4
format = "slack"
trust_bundle = "/etc/rekey/roots.pem"
events = ["handoff_failed", "recovered", "handoff_failed"]

[[alert]]
type = "webhook"
url_file = "/etc/rekey/slack-url"

[[alert]]
type = "alertmanager"
url = "http://127.0.0.1:9093"

[[alert]]
type = "exec"
command = ["/usr/local/bin/page", "--team", "ops"]
env = { PAGER_ROUTE = "tls" }

[[alert]]
type = "log"
events = ["expired"]
"#;
    let c = parse(text).unwrap();
    let names: Vec<&str> = c.alerts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["ops", "webhook", "alertmanager", "exec", "log"]);

    let SinkConfig::Webhook(w) = &c.alerts[0].sink else {
        panic!("{:?}", c.alerts[0]);
    };
    assert_eq!(
        c.alerts[0].events,
        Some(vec![Event::HandoffFailed, Event::Recovered])
    );
    assert_eq!(w.format, WebhookFormat::Slack);
    assert_eq!(w.http.timeout, Duration::from_secs(3));
    assert_eq!(w.http.retries, 4);
    assert_eq!(
        w.http.url,
        UrlSource::Inline("https://hooks.example.com/rekey?x=1".parse().unwrap())
    );
    assert_eq!(
        w.http.trust_bundle,
        Some(PathBuf::from("/etc/rekey/roots.pem"))
    );
    let headers: Vec<(&str, &HeaderSource)> = w
        .http
        .headers
        .iter()
        .map(|h| (h.name.as_str(), &h.value))
        .collect();
    assert_eq!(
        headers,
        [
            // Relative paths resolve against the config file's directory.
            (
                "Authorization",
                &HeaderSource::File("/etc/rekey/token".into())
            ),
            ("X-Team", &HeaderSource::Inline("ops".into())),
        ]
    );
    // Header values never show up in Debug output.
    assert!(!format!("{w:?}").contains("\"ops\""), "{w:?}");

    let SinkConfig::Webhook(w2) = &c.alerts[1].sink else {
        panic!()
    };
    assert_eq!(w2.http.url, UrlSource::File("/etc/rekey/slack-url".into()));
    assert_eq!(w2.http.timeout, Duration::from_secs(10));
    assert_eq!(w2.http.retries, 2);
    assert_eq!(w2.format, WebhookFormat::Json);
    assert_eq!(c.alerts[1].events, None);

    let SinkConfig::Exec(e) = &c.alerts[3].sink else {
        panic!()
    };
    assert_eq!(e.command, ["/usr/local/bin/page", "--team", "ops"]);
    assert_eq!(e.env, [("PAGER_ROUTE".to_string(), "tls".to_string())]);
    assert!(matches!(c.alerts[4].sink, SinkConfig::Log));
}

#[test]
fn default_names_count_per_type() {
    let text = "[[alert]]\ntype = \"exec\"\ncommand = [\"a\"]\n\n[[alert]]\ntype = \"exec\"\ncommand = [\"b\"]\n\n[[alert]]\ntype = \"exec\"\nname = \"exec-9\"\ncommand = [\"c\"]\n";
    let c = parse(text).unwrap();
    let names: Vec<&str> = c.alerts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["exec", "exec-2", "exec-9"]);
    assert!(parse("").unwrap().alerts.is_empty());
}

#[test]
fn bad_alert_configs_name_key_and_line() {
    let hook = |extra: &str| {
        format!("[[alert]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/x\"\n{extra}\n")
    };
    // (label, config text, expected key, text on the expected line, expected message part)
    let cases: Vec<(&str, String, &str, &str, &str)> = vec![
        (
            "unknown type",
            "[[alert]]\ntype = \"pagerduty\"\n".into(),
            "alert[0].type",
            "pagerduty",
            "allowed: webhook, alertmanager, exec, log",
        ),
        (
            "missing type",
            "[[alert]]\nurl = \"http://x\"\n".into(),
            "alert[0].type",
            "[[alert]]",
            "required key is missing",
        ),
        (
            "unknown key, did you mean",
            hook("timout = \"5s\""),
            "alert[0].timout",
            "timout",
            "did you mean `timeout`?",
        ),
        (
            "key of another type",
            "[[alert]]\ntype = \"exec\"\ncommand = [\"x\"]\nurl = \"http://x\"\n".into(),
            "alert[0].url",
            "url =",
            "unknown key `url`",
        ),
        (
            "missing url",
            "[[alert]]\ntype = \"webhook\"\ntimeout = \"1s\"\n".into(),
            "alert[0].url",
            "[[alert]]",
            "required key is missing",
        ),
        (
            "url and url_file",
            hook("url_file = \"/u\""),
            "alert[0].url_file",
            "url_file",
            "not both",
        ),
        (
            "bad scheme",
            "[[alert]]\ntype = \"alertmanager\"\nurl = \"ftp://am:9093\"\n".into(),
            "alert[0].url",
            "ftp",
            "allowed: http, https",
        ),
        (
            "relative url",
            "[[alert]]\ntype = \"webhook\"\nurl = \"/hook\"\n".into(),
            "alert[0].url",
            "/hook",
            "not an absolute URL",
        ),
        (
            "garbage url",
            "[[alert]]\ntype = \"webhook\"\nurl = \"http://exa mple\"\n".into(),
            "alert[0].url",
            "exa mple",
            "invalid URL",
        ),
        (
            "credentials in url",
            "[[alert]]\ntype = \"webhook\"\nurl = \"https://u:p@h/x\"\n".into(),
            "alert[0].url",
            "u:p@",
            "header read from a file",
        ),
        (
            "url not a string",
            "[[alert]]\ntype = \"webhook\"\nurl = 5\n".into(),
            "alert[0].url",
            "url",
            "expected a string, found integer",
        ),
        (
            "unknown event",
            hook("events = [\"handoff_faild\"]"),
            "alert[0].events[0]",
            "events",
            "did you mean \"handoff_failed\"?",
        ),
        (
            "empty events",
            hook("events = []"),
            "alert[0].events",
            "events",
            "leave events out",
        ),
        (
            "bad timeout",
            hook("timeout = \"0s\""),
            "alert[0].timeout",
            "timeout",
            "between 1ms and 10m",
        ),
        (
            "bad retries",
            hook("retries = 11"),
            "alert[0].retries",
            "retries",
            "from 0 to 10",
        ),
        (
            "bad format",
            hook("format = \"teams\""),
            "alert[0].format",
            "teams",
            "allowed: json, slack",
        ),
        (
            "trust_bundle on http",
            hook("trust_bundle = \"/r.pem\""),
            "alert[0].trust_bundle",
            "trust_bundle",
            "only applies to an https url",
        ),
        (
            "reserved header",
            hook("headers = { Host = \"x\" }"),
            "alert[0].headers.Host",
            "headers",
            "set by rekey",
        ),
        (
            "bad header value",
            hook("headers = { X-A = { path = \"/t\" } }"),
            "alert[0].headers.X-A",
            "headers",
            "{ file = \"/path\" }",
        ),
        (
            "shell string command",
            "[[alert]]\ntype = \"exec\"\ncommand = \"notify --all\"\n".into(),
            "alert[0].command",
            "notify",
            "never runs a shell string",
        ),
        (
            "missing command",
            "[[alert]]\ntype = \"exec\"\n".into(),
            "alert[0].command",
            "[[alert]]",
            "required key is missing",
        ),
        (
            "empty program",
            "[[alert]]\ntype = \"exec\"\ncommand = [\"\"]\n".into(),
            "alert[0].command",
            "command",
            "missing or empty",
        ),
        (
            "non-string argv",
            "[[alert]]\ntype = \"exec\"\ncommand = [\"a\", 1]\n".into(),
            "alert[0].command[1]",
            "command",
            "expected a string, found integer",
        ),
        (
            "reserved env name",
            "[[alert]]\ntype = \"exec\"\ncommand = [\"a\"]\nenv = { REKEY_ALERT_EVENT = \"x\" }\n"
                .into(),
            "alert[0].env",
            "env",
            "reserved",
        ),
        (
            "duplicate name",
            format!("{}\n{}", hook("name = \"ops\""), hook("name = \"ops\"")),
            "alert[1].name",
            "name = \"ops\"\n\n",
            "two alert sinks are named \"ops\"",
        ),
        (
            "bad name",
            hook("name = \"a b\""),
            "alert[0].name",
            "a b",
            "may only contain",
        ),
        (
            "second table",
            format!(
                "{}\n[[alert]]\ntype = \"log\"\nevnts = [\"expired\"]\n",
                hook("")
            ),
            "alert[1].evnts",
            "evnts",
            "did you mean `events`?",
        ),
    ];
    for (label, text, key, marker, part) in cases {
        let err = match parse(&text) {
            Ok(_) => panic!("{label}: parsed:\n{text}"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert_eq!(err.key(), key, "{label}: {msg}");
        // The duplicate's marker is its own line, the second "name" line.
        let line = if label == "duplicate name" {
            text.rfind("name = \"ops\"")
                .map(|at| text[..at].matches('\n').count() + 1)
                .unwrap()
        } else {
            line_of(&text, marker)
        };
        assert_eq!(err.line(), Some(line), "{label}: {msg}");
        assert!(msg.contains(part), "{label}: {msg:?} lacks {part:?}");
        assert!(
            msg.starts_with(&format!("{FILE}:{line}:")),
            "{label}: {msg}"
        );
    }
}

/// SIGHUP tells the operator when `[[alert]]` changed (sinks are built
/// once): a changed inline header value counts, though its Debug text
/// hides it.
#[test]
fn alert_tables_compare_by_value() {
    let sink = |token: &str| {
        format!(
            "[[alert]]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/r\"\nheaders = {{ Authorization = \"Bearer {token}\" }}\n"
        )
    };
    let a = parse(&sink("one")).unwrap().alerts;
    let b = parse(&sink("two")).unwrap().alerts;
    assert_eq!(format!("{a:?}"), format!("{b:?}"), "Debug hides the value");
    assert_ne!(a, b);
    assert_eq!(a, parse(&sink("one")).unwrap().alerts);
}
