//! `/metrics` of a running daemon: every family of the contract, accepted
//! by a real `promtool check metrics`, and scraped by a real Prometheus
//! server whose query API then returns a sample per credential.

use crate::support as common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use rekey::status::State;

/// A daemon with two credentials, both issued, the x509-exporter families
/// on, and two watches: the local CA certificate rekey writes beside `web`
/// (rekey renews the leaf, not its CA) and a file that does not exist.
fn two_credentials() -> (Env, Daemon) {
    let env = Env::new();
    let p = env.write_config(&format!(
        "{}{}[[watch]]\nname = \"web-ca\"\nfile = \"{}\"\nteam = \"pki\"\n\n[[watch]]\nname = \"gone\"\nfile = \"{}\"\n",
        env.cert_section("web", ""),
        env.cert_section("api", "lifetime = \"2h\"\n"),
        env.path("tls/web/ca.pem").display(),
        env.path("gone.pem").display(),
    ));
    let text = std::fs::read_to_string(&p).unwrap().replacen(
        "[daemon]\n",
        "[daemon]\ncompat_metrics = [\"x509-exporter\"]\n",
        1,
    );
    std::fs::write(&p, text).unwrap();
    let d = env.start();
    wait_for(
        Duration::from_secs(15),
        "both issued, the CA watched",
        || {
            let list = statuses(d.addr)?;
            let ready =
                |name: &str, state: State| list.iter().any(|c| c.name == name && c.state == state);
            (ready("web", State::Valid)
                && ready("api", State::Valid)
                && ready("web-ca", State::Valid)
                && ready("gone", State::Unreadable))
            .then_some(())
        },
    );
    (env, d)
}

fn scrape(addr: SocketAddr) -> String {
    let (code, body) = http(addr, "GET", "/metrics").unwrap();
    assert_eq!(code, 200, "{body}");
    body
}

/// The value of the sample whose line starts with `series` (name{labels}).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_cover_the_contract_with_absolute_timestamps() {
    let (env, d) = two_credentials();
    let text = scrape(d.addr);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for name in ["web", "api"] {
        let l = format!("{{credential=\"{name}\",kind=\"certificate\"}}");
        let not_after = value(
            &text,
            &format!("rekey_credential_not_after_timestamp_seconds{l}"),
        )
        .unwrap_or_else(|| panic!("no not_after for {name}:\n{text}"));
        // An absolute Unix time in the future, not a number of seconds left.
        assert!(
            not_after > now && not_after < now + 3.0 * 86400.0,
            "{not_after}"
        );
        let next = value(
            &text,
            &format!("rekey_credential_next_renewal_timestamp_seconds{l}"),
        )
        .unwrap();
        assert!(next > now - 5.0 && next < not_after, "{next}");
        let last = value(
            &text,
            &format!("rekey_credential_last_success_timestamp_seconds{l}"),
        )
        .unwrap();
        assert!((now - last).abs() < 120.0, "{last}");
        assert_eq!(
            value(&text, &format!("rekey_credential_consecutive_failures{l}")),
            Some(0.0)
        );
        // verify = none: never verified.
        assert_eq!(
            value(&text, &format!("rekey_handoff_verified{l}")),
            Some(0.0)
        );
        assert!(text.contains(&format!(
            "rekey_rotations_total{{credential=\"{name}\",kind=\"certificate\",result=\"success\"}}"
        )));
        assert!(text.contains(&format!(
            "rekey_rotation_duration_seconds_bucket{{credential=\"{name}\",kind=\"certificate\",le=\"+Inf\"}}"
        )));
    }
    // Watches: one series each, in their own families.
    let ca = cred(d.addr, "web-ca").unwrap();
    let ca_not_after = ca.not_after.unwrap().unix_seconds() as f64;
    let w = r#"{watch="web-ca",source="file",team="pki"}"#;
    assert_eq!(
        value(
            &text,
            &format!("rekey_watch_not_after_timestamp_seconds{w}")
        ),
        Some(ca_not_after),
        "{text}"
    );
    assert_eq!(value(&text, &format!("rekey_watch_readable{w}")), Some(1.0));
    assert_eq!(
        value(&text, r#"rekey_watch_readable{watch="gone",source="file"}"#),
        Some(0.0)
    );
    assert!(!text.contains(r#"credential="web-ca""#), "{text}");
    // x509-certificate-exporter's families: the managed leaf and the watched
    // CA, labelled as that exporter labels them; the missing file counts as
    // a read error.
    let web = cred(d.addr, "web").unwrap();
    let web_not_after = web.not_after.unwrap().unix_seconds() as f64;
    let serial = rekey::certview::serial_decimal(web.serial.as_deref().unwrap()).unwrap();
    let leaf = format!(
        "{{filename=\"cert.pem\",filepath=\"{}\",serial_number=\"{serial}\",subject_CN=\"localhost\",issuer_CN=\"rekey local CA\"}}",
        env.path("tls/web/cert.pem").display()
    );
    let leaf_after = wait_for(
        Duration::from_secs(10),
        "the managed leaf in x509_cert_not_after",
        || value(&scrape(d.addr), &format!("x509_cert_not_after{leaf}")),
    );
    assert_eq!(leaf_after, web_not_after);
    let text = scrape(d.addr);
    assert_eq!(value(&text, &format!("x509_cert_expired{leaf}")), Some(0.0));
    let ca_series = text
        .lines()
        .find(|l| {
            l.starts_with("x509_cert_not_after{filename=\"ca.pem\"")
                && l.contains("subject_CN=\"rekey local CA\"")
        })
        .unwrap_or_else(|| panic!("no x509 series for the watched CA:\n{text}"));
    assert!(
        ca_series.ends_with(&format!(" {ca_not_after:.1}")),
        "{ca_series}"
    );
    assert_eq!(value(&text, "x509_read_errors"), Some(1.0));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&text, &format!("rekey_build_info{{version=\"{version}\"}}")),
        Some(1.0)
    );
    for family in [
        "rekey_rotations_total counter",
        "rekey_rotation_duration_seconds histogram",
        "rekey_issuer_requests_total counter",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}\n")),
            "{family}:\n{text}"
        );
    }
}

#[test]
fn promtool_accepts_the_metrics() {
    let Some(promtool) = live_binary("promtool", "Debian package prometheus") else {
        return;
    };
    let (_env, d) = two_credentials();
    let text = scrape(d.addr);
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Prometheus server, killed on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_every_credential() {
    let Some(prometheus) = live_binary("prometheus", "Debian package prometheus") else {
        return;
    };
    let (env, d) = two_credentials();
    let web = free_addr();
    let config = env.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - '{}'\nscrape_configs:\n  - job_name: rekey\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{}']\n",
            repo().join("deploy/prometheus/rekey-rules.yml").display(),
            d.addr
        ),
    )
    .unwrap();
    let log = std::fs::File::create(env.path("prometheus.log")).unwrap();
    let _server = Prometheus(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                env.path("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let query = "/api/v1/query?query=rekey_credential_not_after_timestamp_seconds";
    let result = wait_for(
        Duration::from_secs(90),
        "Prometheus to have scraped rekey",
        || {
            let (code, body) = http(web, "GET", query).ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let result = v["data"]["result"].as_array()?.clone();
            (code == 200 && result.len() == 2).then_some(result)
        },
    );
    let mut names: Vec<&str> = result
        .iter()
        .map(|s| s["metric"]["credential"].as_str().unwrap_or("-"))
        .collect();
    names.sort();
    assert_eq!(names, ["api", "web"], "{result:?}");
    let web_status = cred(d.addr, "web").unwrap();
    let sample = result
        .iter()
        .find(|s| s["metric"]["credential"] == "web")
        .unwrap();
    assert_eq!(sample["metric"]["kind"], "certificate");
    assert_eq!(sample["metric"]["job"], "rekey");
    // The same instant /status reports, as Unix seconds.
    let scraped: f64 = sample["value"][1].as_str().unwrap().parse().unwrap();
    let not_after = web_status.not_after.unwrap().unix_seconds() as f64;
    assert_eq!(scraped, not_after, "{web_status:?}");

    // The shipped alerting rules load and evaluate against what rekey
    // exports (a misspelt family would not error, so the deploy tests also
    // check every name against docs/monitoring.md and promtool's unit tests).
    let rules = wait_for(Duration::from_secs(30), "every rule evaluated", || {
        let (_, body) = get10(web, "/api/v1/rules")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let rules: Vec<serde_json::Value> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().all(|r| {
            !r["lastEvaluation"]
                .as_str()
                .unwrap_or("0001")
                .starts_with("0001")
        });
        // Evaluated after the first scrape: the missing watched file shows.
        let pending = rules.iter().any(|r| {
            r["name"] == "RekeyWatchUnreadable"
                && r["alerts"].as_array().is_some_and(|a| !a.is_empty())
        });
        (rules.len() == 10 && evaluated && pending).then_some(rules)
    });
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
    }
    // The missing watched file is unreadable; the rule fires after 10
    // minutes of that, so it is pending now.
    let unreadable = rules
        .iter()
        .find(|r| r["name"] == "RekeyWatchUnreadable")
        .unwrap();
    assert_eq!(
        unreadable["alerts"][0]["labels"]["watch"], "gone",
        "{unreadable}"
    );
    assert_eq!(unreadable["alerts"][0]["state"], "pending");

    // Every query of the Grafana dashboard runs (the team filter set to all).
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/rekey-dashboard.json")).unwrap(),
    )
    .unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$team", ".*")
                .replace("$__rate_interval", "1m");
            let (code, body) = http(
                web,
                "GET",
                &format!("/api/v1/query?query={}", encode(&expr)),
            )
            .unwrap();
            assert_eq!(code, 200, "{}: {expr}: {body}", p["title"]);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["status"], "success", "{expr}: {body}");
        }
    }
    // The table of credentials by expiry lists both, soonest first.
    let by_expiry = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Credentials by expiry")
        .unwrap();
    let expr = by_expiry["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .replace("$team", ".*");
    let (_, body) = http(
        web,
        "GET",
        &format!("/api/v1/query?query={}", encode(&expr)),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metric"]["credential"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "web"], "{body}");
}

/// The repository root.
fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// GET over HTTP/1.0, so Prometheus answers a large body (its rules list)
/// without chunked encoding; `common::http` reads plain bodies only.
fn get10(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf.split_once("\r\n\r\n")?.1.to_string()))
}

/// Percent-encode a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
