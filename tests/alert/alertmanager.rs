//! The Alertmanager sink: its refresh and resolution bookkeeping against the
//! in-test receiver, and a real Alertmanager listing and resolving alerts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rekey::alert::{self, Alert, AlertSink, AlertmanagerSink, Event};
use rekey::config::SinkConfig;

use super::common;
use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_sink_refreshes_firing_alerts_and_retries_resolutions() {
    let am = Receiver::start(Some(200));
    let cfg = alerts(&format!(
        "[[alert]]\ntype = \"alertmanager\"\nurl = \"{}\"\n",
        am.url("/am/")
    ));
    let SinkConfig::Alertmanager(c) = &cfg[0].sink else {
        panic!()
    };
    let sink = AlertmanagerSink::new("am", c).unwrap();
    let rfc = |v: &serde_json::Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    // Nothing firing: recovered and refresh post nothing.
    sink.send(&Alert::new(Event::Recovered, "web", "certificate", "ok"))
        .await
        .unwrap();
    sink.refresh().await.unwrap();
    assert!(am.requests().is_empty());

    sink.send(&handoff_failed("web")).await.unwrap();
    sink.refresh().await.unwrap();
    let got = am.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].path, "/am/api/v2/alerts");
    let (fired, refreshed) = (got[0].json(), got[1].json());
    assert_eq!(fired.as_array().unwrap().len(), 1);
    assert_eq!(fired[0]["labels"], refreshed[0]["labels"]);
    assert_eq!(fired[0]["startsAt"], refreshed[0]["startsAt"]);
    let now = time::OffsetDateTime::now_utc();
    // Firing alerts are held about 5 minutes ahead.
    for body in [&fired, &refreshed] {
        let ahead = rfc(&body[0]["endsAt"]) - now;
        assert!(
            ahead.whole_seconds() > 240 && ahead.whole_seconds() <= 300,
            "{ahead}"
        );
    }

    // The resolution fails: it is kept and delivered by the next refresh.
    am.answer(503);
    let recovered = Alert::new(Event::Recovered, "web", "certificate", "ok");
    assert!(sink.send(&recovered).await.is_err());
    am.answer(200);
    sink.refresh().await.unwrap();
    let got = am.requests();
    assert_eq!(got.len(), 4);
    for r in &got[2..] {
        let body = r.json();
        assert_eq!(body[0]["labels"]["alertname"], "RekeyHandoffFailed");
        let ends = rfc(&body[0]["endsAt"]);
        assert!(
            (ends - time::OffsetDateTime::now_utc()).whole_seconds() <= 0,
            "{body}"
        );
    }
    // Delivered: forgotten, so later refreshes post nothing.
    sink.refresh().await.unwrap();
    assert_eq!(am.requests().len(), 4);
}

/// A running Alertmanager, stopped on drop.
struct Alertmanager {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Alertmanager {
    fn start(bin: &Path) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
        )
        .unwrap();
        let addr = common::free_addr();
        let log = std::fs::File::create(dir.path().join("am.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let am = Alertmanager {
            child,
            addr,
            _dir: dir,
        };
        common::wait_for(Duration::from_secs(30), "alertmanager ready", || {
            get(am.addr, "/-/ready").filter(|(code, _)| *code == 200)
        });
        am
    }

    /// The alerts it lists, as JSON.
    fn alerts(&self, query: &str) -> Vec<serde_json::Value> {
        let (code, body) = get(self.addr, &format!("/api/v2/alerts{query}")).unwrap_or_default();
        assert!(code == 200 || code == 0, "{code}: {body}");
        serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap_or_default()
    }
}

/// An HTTP/1.0 GET (so the answer is never chunked); (status, body).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf.split_once("\r\n\r\n")?.1.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_lists_the_alert_and_recovery_resolves_it() {
    let Some(bin) = common::live_binary(
        "prometheus-alertmanager",
        "Debian package prometheus-alertmanager",
    ) else {
        return;
    };
    let am = Alertmanager::start(&bin);
    let results = Results::default();
    let alerter = start(
        &format!(
            "[[alert]]\ntype = \"alertmanager\"\nurl = \"http://{}/\"\n",
            am.addr
        ),
        &results,
    );
    let host = alert::hostname();
    alerter.raise(handoff_failed("web"));
    alerter.raise(Alert::new(Event::Expiring, "api", "certificate", "2h left"));
    let firing = wait_for(Duration::from_secs(20), "the alert in alertmanager", || {
        let list = am.alerts("");
        list.iter()
            .find(|a| a["labels"]["credential"] == "web")
            .cloned()
            .filter(|_| list.len() == 2)
    })
    .await;
    assert_eq!(firing["labels"]["alertname"], "RekeyHandoffFailed");
    assert_eq!(firing["labels"]["severity"], "critical");
    assert_eq!(firing["labels"]["instance"], host);
    assert_eq!(firing["labels"]["kind"], "certificate");
    assert_eq!(firing["status"]["state"], "active");
    assert_eq!(firing["annotations"]["rolled_back"], "true");
    assert_eq!(firing["annotations"]["served_fingerprint"], "sha256:old");

    alerter.raise(Alert::new(
        Event::Recovered,
        "web",
        "certificate",
        "verified again",
    ));
    wait_for(Duration::from_secs(20), "the web alert resolved", || {
        let active = am.alerts("?active=true");
        let web_active = active
            .iter()
            .any(|a| a["labels"]["credential"] == "web" && a["status"]["state"] == "active");
        // The other credential's alert keeps firing.
        let api_active = active.iter().any(|a| a["labels"]["credential"] == "api");
        (!web_active && api_active).then_some(())
    })
    .await;
    assert!(alerter.flush(Duration::from_secs(10)).await);
    let am_results = results.of("alertmanager");
    assert_eq!(
        am_results,
        [
            (Event::HandoffFailed, "sent".to_string()),
            (Event::Expiring, "sent".to_string()),
            (Event::Recovered, "sent".to_string())
        ]
    );
}
