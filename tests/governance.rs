//! Ownership end to end: `team` and `labels` in /status, in alerts and in
//! metrics, and alert sinks with `match = { ... }` getting only their
//! team's alerts (two real webhook receivers, a real daemon).

mod common;
#[allow(dead_code)]
#[path = "alert/support.rs"]
mod support;

use std::time::Duration;

use common::{cred_status, http, wait_for, Env};
use support::Receiver;

#[test]
fn alerts_filtered_by_team_or_label_reach_only_the_matching_sink() {
    let env = Env::new();
    let (payments, search, prod) = (
        Receiver::start(Some(200)),
        Receiver::start(Some(200)),
        Receiver::start(Some(200)),
    );
    let failing = "reload = { type = \"exec\", command = [\"false\"] }";
    let certs = env.cert_section("web", &format!("team = \"payments\"\nlabels = {{ env = \"staging\" }}\n{failing}"))
        + &env.cert_section("api", &format!("team = \"search\"\nlabels = {{ env = \"prod\", tier = \"1\" }}\n{failing}"))
        + &format!(
            "[[alert]]\ntype = \"webhook\"\nname = \"payments\"\nurl = \"{}\"\nmatch = {{ team = \"payments\" }}\n\n\
             [[alert]]\ntype = \"webhook\"\nname = \"search\"\nurl = \"{}\"\nmatch = {{ team = \"search\" }}\n\n\
             [[alert]]\ntype = \"webhook\"\nname = \"prod\"\nurl = \"{}\"\nmatch = {{ labels = {{ env = \"prod\" }} }}\n",
            payments.url("/hook"),
            search.url("/hook"),
            prod.url("/hook")
        );
    env.write_config(&certs);
    let d = env.start();
    wait_for(Duration::from_secs(20), "first issuance", || {
        (cred_status(d.addr, "web")?["generation"] == 1
            && cred_status(d.addr, "api")?["generation"] == 1)
            .then_some(())
    });
    let web = cred_status(d.addr, "web").unwrap();
    assert_eq!(web["team"], "payments");
    assert_eq!(web["labels"]["env"], "staging");

    for name in ["web", "api"] {
        let (code, body) = http(d.addr, "POST", &format!("/v1/rotate/{name}")).unwrap();
        assert_eq!(code, 502, "{body}");
    }
    let events = |r: &Receiver| -> Vec<serde_json::Value> {
        r.requests().iter().map(|q| q.json()).collect()
    };
    wait_for(Duration::from_secs(10), "alerts at every sink", || {
        (!events(&payments).is_empty() && !events(&search).is_empty() && !events(&prod).is_empty())
            .then_some(())
    });
    // Give a misrouted alert time to arrive before checking nothing leaked.
    std::thread::sleep(Duration::from_millis(500));
    for a in events(&payments) {
        assert_eq!(a["credential"], "web", "{a}");
        assert_eq!(a["team"], "payments");
        assert_eq!(a["labels"]["env"], "staging");
    }
    for a in events(&search).into_iter().chain(events(&prod)) {
        assert_eq!(a["credential"], "api", "{a}");
        assert_eq!(a["team"], "search");
    }

    let (_, metrics) = http(d.addr, "GET", "/metrics").unwrap();
    assert!(
        metrics.contains(
            r#"rekey_handoff_verified{credential="web",kind="certificate",team="payments"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"rekey_rotations_total{credential="api",kind="certificate",result="rolled_back",team="search"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains("staging"), "labels stay out of metrics");
}
