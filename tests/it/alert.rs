//! Alert sinks against real receivers on 127.0.0.1: an in-test HTTP server,
//! commands, and a real Alertmanager (`alert/alertmanager.rs`). The Alerter
//! is driven at library level, configured from `[[alert]]` TOML like the
//! daemon does.

mod alertmanager;
use crate::support as common;
use crate::support::alert as support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use rekey::alert::{self, Alert, AlertSink, Event, WebhookSink};
use rekey::config::SinkConfig;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_one_post_per_alert_with_json_and_headers() {
    let json = Receiver::start(Some(200));
    let slack = Receiver::start(Some(204));
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "Bearer s3cret\n").unwrap();
    let results = Results::default();
    let alerter = start(
        &format!(
            "[[alert]]\ntype = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\n\
             headers = {{ Authorization = {{ file = \"{}\" }}, X-Team = \"ops\" }}\n\n\
             [[alert]]\ntype = \"webhook\"\nname = \"chat\"\nformat = \"slack\"\nurl = \"{}\"\n\
             events = [\"handoff_failed\"]\n",
            json.url("/rekey?src=test"),
            token.display(),
            slack.url("/services/x"),
        ),
        &results,
    );
    assert_eq!(alerter.sink_names(), ["log", "hook", "chat"]);

    let first = handoff_failed("web");
    let other = Alert::new(Event::RenewalFailed, "api", "certificate", "CA said 503");
    alerter.raise(first.clone());
    alerter.raise(other.clone());
    // A repeat of an ongoing problem is suppressed (de-dup), recovery is sent.
    alerter.raise(handoff_failed("web"));
    let recovered = Alert::new(Event::Recovered, "web", "certificate", "verified again");
    alerter.raise(recovered.clone());
    assert!(alerter.flush(Duration::from_secs(20)).await);

    let got = json.requests();
    let bodies: Vec<serde_json::Value> = got.iter().map(Req::json).collect();
    let want: Vec<serde_json::Value> = [&first, &other, &recovered]
        .iter()
        .map(|a| serde_json::to_value(a).unwrap())
        .collect();
    assert_eq!(bodies, want, "exactly one POST per alert, in order");
    assert_eq!(bodies[0]["rolled_back"], true);
    assert_eq!(bodies[0]["served_fingerprint"], "sha256:old");
    assert!(bodies[1].get("generation").is_none());
    for r in &got {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/rekey?src=test");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["authorization"], "Bearer s3cret");
        assert_eq!(r.headers["x-team"], "ops");
        assert!(r.headers["user-agent"].starts_with("rekey/"));
    }

    // The slack sink only wanted handoff_failed: one `{"text": ...}`.
    let chat = slack.requests();
    assert_eq!(chat.len(), 1, "{chat:?}");
    let text = chat[0].json()["text"].as_str().unwrap().to_string();
    assert!(
        text.contains("*handoff_failed*") && text.contains("`web`"),
        "{text}"
    );

    let sent = |e| (e, "sent".to_string());
    assert_eq!(
        results.of("hook"),
        [
            sent(Event::HandoffFailed),
            sent(Event::RenewalFailed),
            sent(Event::Recovered)
        ]
    );
    assert_eq!(results.of("chat"), [sent(Event::HandoffFailed)]);
    assert_eq!(results.of("log").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_webhook_fails_fast_is_retried_and_counted() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let broken = Receiver::start(Some(500));
    let results = Results::default();
    let alerter = start(
        &format!(
            "[[alert]]\ntype = \"webhook\"\nname = \"down\"\nurl = \"http://{closed}/x\"\n\n\
             [[alert]]\ntype = \"webhook\"\nname = \"broken\"\nurl = \"{}\"\n",
            broken.url("/x")
        ),
        &results,
    );
    let t0 = Instant::now();
    alerter.raise(handoff_failed("web"));
    let raise_took = t0.elapsed();
    assert!(raise_took < Duration::from_millis(50), "{raise_took:?}");

    wait_for(Duration::from_secs(15), "both failures counted", || {
        (results.of("down").len() == 1 && results.of("broken").len() == 1).then_some(())
    })
    .await;
    let took = t0.elapsed();
    assert_eq!(
        results.of("down"),
        [(Event::HandoffFailed, "failed".to_string())]
    );
    assert_eq!(
        results.of("broken"),
        [(Event::HandoffFailed, "failed".to_string())]
    );
    // 3 tries with 1 s and 2 s pauses: refused connections fail at once.
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(broken.requests().len(), 3, "3 attempts");
    // The log sink is unaffected.
    assert_eq!(
        results.of("log"),
        [(Event::HandoffFailed, "sent".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_errors_name_the_sink_url_status_and_what_to_do() {
    let broken = Receiver::start(Some(500));
    let cfg = alerts(&format!(
        "[[alert]]\ntype = \"webhook\"\nname = \"ops\"\nurl = \"{}\"\n",
        broken.url("/hook?token=abc")
    ));
    let SinkConfig::Webhook(w) = &cfg[0].sink else {
        panic!()
    };
    let sink = WebhookSink::new("ops", w).unwrap();
    let msg = sink
        .send(&handoff_failed("web"))
        .await
        .unwrap_err()
        .to_string();
    let url = broken.url("/hook");
    assert_eq!(
        msg,
        format!("alert sink ops: POST {url} answered 500: receiver is broken; check the receiver's logs and the sink's url and headers")
    );
    assert!(!msg.contains("token=abc"), "the query may hold a secret");

    // A secret URL from url_file shows only scheme and host.
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("url");
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    std::fs::write(
        &url_file,
        format!("http://{closed}/services/T0/B0/SECRET\n"),
    )
    .unwrap();
    let cfg = alerts(&format!(
        "[[alert]]\ntype = \"webhook\"\nurl_file = \"{}\"\n",
        url_file.display()
    ));
    let SinkConfig::Webhook(w) = &cfg[0].sink else {
        panic!()
    };
    let msg = WebhookSink::new("webhook", w)
        .unwrap()
        .send(&handoff_failed("web"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(&format!(
            "alert sink webhook: POST http://{closed}/… failed: cannot connect"
        )),
        "{msg}"
    );
    assert!(!msg.contains("SECRET"), "{msg}");

    // A missing header file stops the start, naming the file but no content.
    let cfg = alerts(&format!(
        "[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\nheaders = {{ Authorization = {{ file = \"{}/nope\" }} }}\n",
        broken.url("/"),
        dir.path().display()
    ));
    let err = alert::build(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("header Authorization file") && err.contains("/nope"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_sink_never_blocks_raise_nor_other_sinks() {
    let hang = Receiver::start(None);
    let fast = Receiver::start(Some(200));
    let results = Results::default();
    let alerter = start(
        &format!(
            "[[alert]]\ntype = \"webhook\"\nname = \"hang\"\nurl = \"{}\"\ntimeout = \"300ms\"\nretries = 0\n\n\
             [[alert]]\ntype = \"webhook\"\nname = \"fast\"\nurl = \"{}\"\n",
            hang.url("/"),
            fast.url("/")
        ),
        &results,
    );
    // Two bursts, together more than the hanging sink's queue holds, each
    // alert for a new credential so de-dup lets them all through.
    let burst = 150;
    let mut slowest = Duration::ZERO;
    for round in 0..2 {
        for i in 0..burst {
            let t = Instant::now();
            alerter.raise(handoff_failed(&format!("c{round}-{i}")));
            slowest = slowest.max(t.elapsed());
        }
        // The fast sink gets each burst promptly although "hang" is stuck.
        wait_for(Duration::from_secs(10), "fast sink", || {
            (fast.requests().len() == burst * (round + 1)).then_some(())
        })
        .await;
    }
    assert!(
        slowest < Duration::from_millis(50),
        "raise took {slowest:?}"
    );
    // The hanging sink times out per alert and drops what its queue cannot hold.
    wait_for(Duration::from_secs(10), "first hang timeout", || {
        results
            .of("hang")
            .iter()
            .any(|(_, r)| r == "failed")
            .then_some(())
    })
    .await;
    let hang_results = results.of("hang");
    let dropped = hang_results.iter().filter(|(_, r)| r == "dropped").count();
    assert!(dropped > 0, "{hang_results:?}");
    assert!(!hang_results.iter().any(|(_, r)| r == "sent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sink_gets_the_json_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alert.json");
    let results = Results::default();
    let alerter = start(
        &format!(
            "[[alert]]\ntype = \"exec\"\nname = \"cat\"\ncommand = [\"sh\", \"-c\", \"cat > \\\"$0\\\"; echo \\\"$REKEY_ALERT_EVENT $REKEY_CREDENTIAL\\\" >> \\\"$0.env\\\"\", \"{}\"]\n\n\
             [[alert]]\ntype = \"exec\"\nname = \"fails\"\ncommand = [\"sh\", \"-c\", \"echo boom >&2; exit 3\"]\n\n\
             [[alert]]\ntype = \"exec\"\nname = \"slow\"\ncommand = [\"sleep\", \"30\"]\ntimeout = \"200ms\"\n",
            out.display()
        ),
        &results,
    );
    let a = handoff_failed("web");
    let t0 = Instant::now();
    alerter.raise(a.clone());
    assert!(alerter.flush(Duration::from_secs(10)).await);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the slow command was not killed"
    );
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(written, serde_json::to_value(&a).unwrap());
    let env = std::fs::read_to_string(dir.path().join("alert.json.env")).unwrap();
    assert_eq!(env, "handoff_failed web\n");
    assert_eq!(
        results.of("cat"),
        [(Event::HandoffFailed, "sent".to_string())]
    );
    assert_eq!(
        results.of("fails"),
        [(Event::HandoffFailed, "failed".to_string())]
    );
    assert_eq!(
        results.of("slow"),
        [(Event::HandoffFailed, "failed".to_string())]
    );

    // The failure names the command, the status and the stderr tail.
    let cfg = alerts(
        "[[alert]]\ntype = \"exec\"\ncommand = [\"sh\", \"-c\", \"echo boom >&2; exit 3\"]\n",
    );
    let SinkConfig::Exec(e) = &cfg[0].sink else {
        panic!()
    };
    let msg = alert::ExecSink::new("exec", e)
        .send(&a)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "alert sink exec: [\"sh\", \"-c\", \"echo boom >&2; exit 3\"] exited with status 3: boom"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_webhook_trusts_its_trust_bundle_and_nothing_else() {
    let (addr, pem, count) = tls_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("roots.pem");
    std::fs::write(&bundle, pem).unwrap();
    let webhook = |extra: &str| {
        let cfg = alerts(&format!(
            "[[alert]]\ntype = \"webhook\"\nurl = \"https://{addr}/hook\"\n{extra}\n"
        ));
        let SinkConfig::Webhook(w) = &cfg[0].sink else {
            panic!()
        };
        WebhookSink::new("tls", w).unwrap()
    };
    let with_bundle = webhook(&format!("trust_bundle = \"{}\"", bundle.display()));
    with_bundle.send(&handoff_failed("web")).await.unwrap();
    assert_eq!(*count.lock().unwrap(), 1);

    // Without the bundle the same server is not trusted: no request is made.
    let platform_only = webhook("");
    let msg = platform_only
        .send(&handoff_failed("web"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&format!("POST https://{addr}/hook failed: TLS handshake")),
        "{msg}"
    );
    assert!(
        msg.to_lowercase().contains("unknown issuer") || msg.contains("UnknownIssuer"),
        "{msg}"
    );
    assert_eq!(*count.lock().unwrap(), 1);
}
