//! `/metrics` of a running daemon: every family of the contract, accepted
//! by a real `promtool check metrics`, and scraped by a real Prometheus
//! server whose query API then returns a sample per credential.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

/// A daemon with two credentials, both issued.
fn two_credentials() -> (Env, Daemon) {
    let env = Env::new();
    env.write_config(&format!(
        "{}{}",
        env.cert_section("web", ""),
        env.cert_section("api", "lifetime = \"2h\"\n")
    ));
    let d = env.start();
    wait_for(Duration::from_secs(15), "both issued", || {
        let s = status(d.addr)?;
        s.as_array()?
            .iter()
            .all(|c| c["state"] == "valid")
            .then_some(())
    });
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
    let (_env, d) = two_credentials();
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
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: rekey\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{}']\n",
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
    let web_status = cred_status(d.addr, "web").unwrap();
    let sample = result
        .iter()
        .find(|s| s["metric"]["credential"] == "web")
        .unwrap();
    assert_eq!(sample["metric"]["kind"], "certificate");
    assert_eq!(sample["metric"]["job"], "rekey");
    // The same instant /status reports, as Unix seconds.
    let scraped: f64 = sample["value"][1].as_str().unwrap().parse().unwrap();
    let not_after = rekey::status::parse_time(web_status["not_after"].as_str())
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(scraped, not_after, "{web_status}");
}
