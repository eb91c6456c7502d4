use super::*;
use crate::status::{CredentialStatus, LastRotation, State};

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn snapshot(names: &[&str]) -> Snapshot {
    names
        .iter()
        .map(|n| {
            let mut c = CredentialStatus::starting(n, "certificate", "dev");
            c.state = State::Valid;
            c.not_after = Some(ts("2030-01-01T00:00:00Z"));
            c.next_renewal = Some(ts("2029-12-31T12:00:00.5Z"));
            c.consecutive_failures = 2;
            c.handoff = Handoff::Verified;
            c.last_rotation = Some(LastRotation {
                handoff_ms: None,
                at: ts("2029-12-31T00:00:00Z"),
                result: RotateResult::Success,
                duration_ms: 12,
            });
            (n.to_string(), Box::new(c))
        })
        .collect()
}

/// The sample line of `series` (name with labels), if any.
fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| &l[series.len() + 1..])
}

#[test]
fn gauges_come_from_the_snapshot_as_absolute_timestamps() {
    let m = Metrics::new("1.2.3");
    let text = m.render(&snapshot(&["web"])).unwrap();
    let labels = r#"{credential="web",kind="certificate"}"#;
    let get = |name: &str| sample(&text, &format!("{name}{labels}"));
    assert_eq!(
        get("rekey_credential_not_after_timestamp_seconds"),
        Some("1893456000.0"),
        "{text}"
    );
    assert_eq!(
        get("rekey_credential_next_renewal_timestamp_seconds"),
        Some("1893412800.5")
    );
    assert_eq!(
        get("rekey_credential_last_success_timestamp_seconds"),
        Some("1893369600.0")
    );
    assert_eq!(get("rekey_credential_consecutive_failures"), Some("2"));
    assert_eq!(get("rekey_handoff_verified"), Some("1"));
    assert_eq!(
        sample(&text, r#"rekey_build_info{version="1.2.3"}"#),
        Some("1")
    );
    assert!(text.contains("# TYPE rekey_build_info gauge"), "{text}");
}

#[test]
fn every_family_of_the_contract_is_exported_with_its_type() {
    let m = Metrics::new("0");
    let text = m.render(&snapshot(&["web"])).unwrap();
    // No sink configured: the alert family has no series, so no lines.
    assert!(!text.contains("rekey_alerts_total"), "{text}");
    m.alert_sink("hook");
    let text = m.render(&snapshot(&["web"])).unwrap();
    assert_eq!(
        sample(
            &text,
            r#"rekey_alerts_total{sink="hook",event="expired",result="failure"}"#
        ),
        Some("0")
    );
    for (name, ty) in [
        ("rekey_credential_not_after_timestamp_seconds", "gauge"),
        ("rekey_credential_next_renewal_timestamp_seconds", "gauge"),
        ("rekey_credential_last_success_timestamp_seconds", "gauge"),
        ("rekey_credential_consecutive_failures", "gauge"),
        ("rekey_handoff_verified", "gauge"),
        ("rekey_rotations_total", "counter"),
        ("rekey_rotation_duration_seconds", "histogram"),
        ("rekey_issuer_requests_total", "counter"),
        ("rekey_alerts_total", "counter"),
        ("rekey_build_info", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {ty}\n")),
            "{name} {ty} missing:\n{text}"
        );
    }
    // Known series start at 0 so the first failure shows up in increase().
    assert_eq!(
        sample(
            &text,
            r#"rekey_rotations_total{credential="web",kind="certificate",result="failed"}"#
        ),
        Some("0")
    );
    assert_eq!(
        sample(
            &text,
            r#"rekey_issuer_requests_total{issuer="dev",result="failure"}"#
        ),
        Some("0")
    );
}

#[test]
fn counters_and_the_histogram_count_what_callers_report() {
    let m = Metrics::new("0");
    let clone = m.clone();
    clone.rotation(
        "web",
        "certificate",
        ROTATION_SUCCESS,
        Duration::from_millis(30),
    );
    m.rotation(
        "web",
        "certificate",
        ROTATION_ROLLED_BACK,
        Duration::from_secs(3),
    );
    // Failed attempts never reached the app: counted, not timed.
    m.rotation(
        "web",
        "certificate",
        ROTATION_FAILED,
        Duration::from_secs(9),
    );
    m.issuer_request("dev", SUCCESS);
    m.issuer_request("dev", SUCCESS);
    m.alert("hook", "handoff_failed", FAILURE);
    let text = m.render(&snapshot(&["web"])).unwrap();
    let l = r#"credential="web",kind="certificate""#;
    assert_eq!(
        sample(
            &text,
            &format!(r#"rekey_rotations_total{{{l},result="failed"}}"#)
        ),
        Some("1")
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"rekey_rotations_total{{{l},result="success"}}"#)
        ),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"rekey_rotations_total{{{l},result="rolled_back"}}"#)
        ),
        Some("1")
    );
    assert_eq!(
        sample(
            &text,
            &format!("rekey_rotation_duration_seconds_count{{{l}}}")
        ),
        Some("2")
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"rekey_rotation_duration_seconds_bucket{{{l},le="0.05"}}"#)
        ),
        Some("1")
    );
    assert_eq!(
        sample(
            &text,
            r#"rekey_issuer_requests_total{issuer="dev",result="success"}"#
        ),
        Some("2")
    );
    assert_eq!(
        sample(
            &text,
            r#"rekey_alerts_total{sink="hook",event="handoff_failed",result="failure"}"#
        ),
        Some("1")
    );
}

#[test]
fn a_credential_gone_from_the_snapshot_leaves_the_gauges() {
    let m = Metrics::new("0");
    let text = m.render(&snapshot(&["web", "api"])).unwrap();
    assert!(text.contains(r#"not_after_timestamp_seconds{credential="api""#));
    let text = m.render(&snapshot(&["web"])).unwrap();
    assert!(
        !text.contains(r#"not_after_timestamp_seconds{credential="api""#),
        "{text}"
    );
    assert!(text.contains(r#"not_after_timestamp_seconds{credential="web""#));
}

#[test]
fn unknown_dates_and_failed_rotations_give_no_timestamp() {
    let m = Metrics::new("0");
    let mut snap = snapshot(&["web"]);
    if let Some(c) = snap.get_mut("web") {
        c.not_after = None;
        c.handoff = Handoff::Unverified;
        c.last_rotation = Some(LastRotation {
            handoff_ms: None,
            at: ts("2029-12-31T00:00:00Z"),
            result: RotateResult::Failed,
            duration_ms: 1,
        });
    }
    let text = m.render(&snap).unwrap();
    assert!(!text.contains("rekey_credential_not_after_timestamp_seconds{"));
    assert!(!text.contains("rekey_credential_last_success_timestamp_seconds{"));
    assert!(text.contains(r#"rekey_handoff_verified{credential="web",kind="certificate"} 0"#));
}

#[test]
fn failure_runs_lifetimes_and_failed_handoffs_are_exported() {
    let m = Metrics::new("0");
    let mut snap = snapshot(&["web"]);
    if let Some(c) = snap.get_mut("web") {
        c.not_before = Some(ts("2029-12-01T00:00:00Z"));
        c.failing_since = Some(ts("2029-12-30T00:00:00Z"));
        c.handoff = Handoff::Failed;
    }
    let text = m.render(&snap).unwrap();
    let l = r#"{credential="web",kind="certificate"}"#;
    let get = |name: &str| sample(&text, &format!("{name}{l}"));
    assert_eq!(
        get("rekey_credential_not_before_timestamp_seconds"),
        Some("1890777600.0")
    );
    assert_eq!(
        get("rekey_credential_failing_since_timestamp_seconds"),
        Some("1893283200.0")
    );
    assert_eq!(get("rekey_handoff_failed"), Some("1"));
    assert_eq!(get("rekey_handoff_verified"), Some("0"));
    // No failures: no failing_since series at all.
    let text = m.render(&snapshot(&["web"])).unwrap();
    assert!(!text.contains("rekey_credential_failing_since_timestamp_seconds{"));
    assert!(text.contains(&format!("rekey_handoff_failed{l} 0")));
}

/// A view with one readable watch of two certificates, one unreadable
/// watch, and one managed leaf.
fn view() -> crate::monitor::View {
    use crate::status::{WatchStatus, WatchedCert, KIND_WATCH};
    let cert = |cn: &str, serial: &str, not_after: &str| WatchedCert {
        subject: format!("CN={cn}"),
        subject_cn: Some(cn.into()),
        issuer: "CN=Root".into(),
        issuer_cn: Some("Root".into()),
        serial: serial.into(),
        fingerprint: format!("sha256:{cn}"),
        not_before: ts("2029-01-01T00:00:00Z"),
        not_after: ts(not_after),
        is_ca: false,
    };
    let detail = |path: &str, certs: Vec<WatchedCert>| WatchStatus {
        source: "file".into(),
        path: Some(path.into()),
        endpoint: None,
        server_name: None,
        starttls: None,
        alert_before: "14days".into(),
        alert_at: Some(ts("2029-12-18T00:00:00Z")),
        last_checked: None,
        next_check: None,
        certificates: certs,
    };
    let mut ok = CredentialStatus::starting("partner", KIND_WATCH, "Root");
    ok.state = State::Expiring;
    ok.team = Some("payments".into());
    ok.not_after = Some(ts("2030-01-01T00:00:00Z"));
    ok.watch = Some(Box::new(detail(
        "/etc/partner/bundle.pem",
        vec![
            cert("partner", "01:00", "2030-01-01T00:00:00Z"),
            cert("old", "0a", "2020-01-01T00:00:00Z"),
        ],
    )));
    let mut bad = CredentialStatus::starting("gone", KIND_WATCH, "");
    bad.state = State::Unreadable;
    bad.watch = Some(Box::new(detail("/etc/gone.pem", Vec::new())));
    let mut v = crate::monitor::View::default();
    v.watches.insert("partner".into(), ok);
    v.watches.insert("gone".into(), bad);
    v.managed.insert(
        "web".into(),
        crate::monitor::ManagedLeaf {
            path: "/tls/web/cert.pem".into(),
            cert: cert("app.internal", "ff", "2030-06-01T00:00:00Z"),
        },
    );
    v
}

#[test]
fn watches_have_one_series_each_and_never_look_like_credentials() {
    let m = Metrics::new("0");
    let (_tx, rx) = tokio::sync::watch::channel(view());
    m.set_watch_view(rx);
    let text = m.render(&Snapshot::new()).unwrap();
    let l = r#"{watch="partner",source="file",team="payments"}"#;
    let get = |name: &str| sample(&text, &format!("{name}{l}"));
    assert_eq!(
        get("rekey_watch_not_after_timestamp_seconds"),
        Some("1893456000.0")
    );
    assert_eq!(
        get("rekey_watch_alert_at_timestamp_seconds"),
        Some("1892246400.0")
    );
    assert_eq!(get("rekey_watch_readable"), Some("1"));
    assert_eq!(get("rekey_watch_certificates"), Some("2"));
    assert_eq!(
        sample(&text, r#"rekey_watch_readable{watch="gone",source="file"}"#),
        Some("0")
    );
    assert!(!text.contains(r#"rekey_watch_not_after_timestamp_seconds{watch="gone""#));
    // Not credentials: no credential series, and no x509 families unless asked.
    assert!(!text.contains("credential=\"partner\""), "{text}");
    assert!(!text.contains("x509_"), "{text}");
}

#[test]
fn x509_exporter_families_use_that_exporters_names_and_labels() {
    let m = Metrics::with_compat("0", &[crate::config::CompatMetrics::X509Exporter]);
    let (_tx, rx) = tokio::sync::watch::channel(view());
    m.set_watch_view(rx);
    let text = m.render(&Snapshot::new()).unwrap();
    for (name, ty) in [
        ("x509_cert_not_after", "gauge"),
        ("x509_cert_not_before", "gauge"),
        ("x509_cert_expired", "gauge"),
        ("x509_read_errors", "gauge"),
    ] {
        assert!(text.contains(&format!("# TYPE {name} {ty}\n")), "{text}");
    }
    // Every certificate of the bundle, serials in decimal like Go's big.Int.
    let partner = r#"{filename="bundle.pem",filepath="/etc/partner/bundle.pem",serial_number="256",subject_CN="partner",issuer_CN="Root"}"#;
    let old = r#"{filename="bundle.pem",filepath="/etc/partner/bundle.pem",serial_number="10",subject_CN="old",issuer_CN="Root"}"#;
    let web = r#"{filename="cert.pem",filepath="/tls/web/cert.pem",serial_number="255",subject_CN="app.internal",issuer_CN="Root"}"#;
    assert_eq!(
        sample(&text, &format!("x509_cert_not_after{partner}")),
        Some("1893456000.0"),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("x509_cert_not_before{partner}")),
        Some("1861920000.0")
    );
    assert_eq!(
        sample(&text, &format!("x509_cert_expired{partner}")),
        Some("0")
    );
    assert_eq!(sample(&text, &format!("x509_cert_expired{old}")), Some("1"));
    assert_eq!(
        sample(&text, &format!("x509_cert_not_after{web}")),
        Some("1906502400.0")
    );
    assert_eq!(sample(&text, "x509_read_errors"), Some("1"));
}

#[test]
fn the_issuance_budget_shows_as_exhausted_and_remaining() {
    use crate::status::{BudgetExhausted, BudgetStatus};
    let m = Metrics::new("0");
    let mut snap = snapshot(&["web", "api"]);
    snap.get_mut("web").unwrap().issuance_budget = Some(Box::new(BudgetStatus {
        limit: "5/7d".into(),
        used: 5,
        remaining: Some(0),
        exhausted: Some(BudgetExhausted {
            budget: "max_issuances = \"5/7d\" of issuer.dev".into(),
            frees_at: ts("2026-12-01T00:00:00Z"),
            retry_at: ts("2026-12-01T00:00:00Z"),
        }),
    }));
    snap.get_mut("api").unwrap().issuance_budget = Some(Box::new(BudgetStatus {
        limit: "unlimited".into(),
        used: 2,
        remaining: None,
        exhausted: None,
    }));
    let text = m.render(&snap).unwrap();
    assert!(
        text.contains("# TYPE rekey_issuance_budget_exhausted gauge\n"),
        "{text}"
    );
    let series = |name: &str, cred: &str| {
        sample(
            &text,
            &format!(r#"{name}{{credential="{cred}",kind="certificate"}}"#),
        )
    };
    assert_eq!(series("rekey_issuance_budget_exhausted", "web"), Some("1"));
    assert_eq!(series("rekey_issuance_budget_remaining", "web"), Some("0"));
    assert_eq!(series("rekey_issuance_budget_exhausted", "api"), Some("0"));
    assert_eq!(
        series("rekey_issuance_budget_remaining", "api"),
        None,
        "unlimited"
    );
}
