//! The Alertmanager sink: its refresh and resolution bookkeeping against the
//! in-test receiver, and a real Alertmanager listing and resolving alerts.

use std::time::Duration;

use rekey::alert::{self, Alert, AlertSink, AlertmanagerSink, Event};
use rekey::config::SinkConfig;

use super::common;
use super::support::*;
use common::alertmanager::Alertmanager;

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
