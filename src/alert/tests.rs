//! Unit tests of the alert shapes: the documented alert JSON, severities, Slack text,
//! the Alertmanager payload.

use serde_json::json;

use super::alertmanager::{alertname, to_am};
use super::webhook::{slack_payload, slack_text};
use super::*;

fn full() -> Alert {
    let mut a = Alert::new(
        Event::HandoffFailed,
        "web",
        "certificate",
        "app still serves sha256:ab… after 30s",
    )
    .with_generation(7)
    .with_fingerprint("sha256:new")
    .with_served_fingerprint("sha256:old")
    .with_not_after(ts("2026-11-24T19:00:00Z"))
    .with_rolled_back(true);
    a.host = "web-1".into();
    a.time = ts("2026-11-23T19:00:00Z");
    a
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

/// The bytes a receiver gets, written out literally: field order, the
/// times' spelling (UTC, `Z`, no fraction) and the omitted fields are the
/// contract receivers parse.
#[test]
fn json_text_is_byte_for_byte_the_documented_one() {
    let got = String::from_utf8(full().to_json()).unwrap();
    assert_eq!(
        got,
        r#"{"event":"handoff_failed","severity":"critical","credential":"web","kind":"certificate","message":"app still serves sha256:ab… after 30s","generation":7,"fingerprint":"sha256:new","served_fingerprint":"sha256:old","not_after":"2026-11-24T19:00:00Z","rolled_back":true,"host":"web-1","time":"2026-11-23T19:00:00Z"}"#
    );
    // Made from a clock (with a fraction of a second), a time is still
    // written to the second.
    let mut a = Alert::new(Event::Expiring, "api", "api_key", "soon").with_not_after(
        Timestamp::new(std::time::UNIX_EPOCH + Duration::from_millis(1_795_546_800_999)),
    );
    a.host = "web-1".into();
    a.time =
        Timestamp::new(std::time::UNIX_EPOCH + Duration::from_nanos(1_795_460_400_123_456_789));
    assert_eq!(
        String::from_utf8(a.to_json()).unwrap(),
        r#"{"event":"expiring","severity":"warning","credential":"api","kind":"api_key","message":"soon","not_after":"2026-11-24T19:00:00Z","host":"web-1","time":"2026-11-23T19:00:00Z"}"#
    );
}

#[test]
fn json_is_exactly_the_design_shape() {
    let v: serde_json::Value = serde_json::from_slice(&full().to_json()).unwrap();
    assert_eq!(
        v,
        json!({"event": "handoff_failed", "severity": "critical", "credential": "web",
               "kind": "certificate", "message": "app still serves sha256:ab… after 30s",
               "generation": 7, "fingerprint": "sha256:new", "served_fingerprint": "sha256:old",
               "not_after": "2026-11-24T19:00:00Z", "rolled_back": true,
               "host": "web-1", "time": "2026-11-23T19:00:00Z"})
    );
}

#[test]
fn optional_fields_are_omitted_when_none() {
    let a = Alert::new(Event::Recovered, "api", "api_key", "verified again");
    let v: serde_json::Value = serde_json::from_slice(&a.to_json()).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "credential",
            "event",
            "host",
            "kind",
            "message",
            "severity",
            "time"
        ]
    );
    assert_eq!(v["severity"], "info");
    assert_eq!(v["host"], hostname());
}

#[test]
fn time_is_rfc3339_utc_to_the_second() {
    let a = Alert::new(Event::Expired, "web", "certificate", "x");
    let text = a.time.to_string();
    let t =
        time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(text.ends_with('Z'), "{text}");
    assert_eq!(text.len(), "2026-11-23T19:00:00Z".len(), "{text}");
    let age = time::OffsetDateTime::now_utc() - t;
    assert!(age.whole_seconds() >= 0 && age.whole_seconds() < 5, "{age}");
}

#[test]
fn severity_follows_the_event() {
    let table = [
        (Event::RenewalFailed, "renewal_failed", "warning"),
        (Event::HandoffFailed, "handoff_failed", "critical"),
        (Event::Expiring, "expiring", "warning"),
        (Event::Expired, "expired", "critical"),
        (Event::Tampered, "tampered", "warning"),
        (Event::Recovered, "recovered", "info"),
        (Event::Retired, "retired", "info"),
        (Event::Unreadable, "unreadable", "warning"),
        (Event::BudgetExhausted, "budget_exhausted", "warning"),
    ];
    for (event, name, severity) in table {
        let a = Alert::new(event, "c", "certificate", "m");
        assert_eq!(a.severity.as_str(), severity, "{event}");
        assert_eq!(event.as_str(), name);
        assert_eq!(Event::from_name(name), Some(event));
        assert_eq!(serde_json::to_value(event).unwrap(), name);
        assert_eq!(serde_json::to_value(a.severity).unwrap(), severity);
    }
    assert_eq!(Event::ALL.len(), table.len());
    assert_eq!(Event::from_name("handoff-failed"), None);
}

#[test]
fn slack_payload_is_one_text_field_with_details_and_escaping() {
    let mut a = full();
    a.message = "served <old> & not <new>".into();
    let v: serde_json::Value = serde_json::from_slice(&slack_payload(&a)).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 1, "{v}");
    let text = obj["text"].as_str().unwrap();
    assert_eq!(text, slack_text(&a));
    assert!(
        text.starts_with(":rotating_light: *handoff_failed* certificate `web` on web-1: served &lt;old&gt; &amp; not &lt;new&gt;\n"),
        "{text}"
    );
    assert!(text.contains("generation 7 · fingerprint sha256:new · served sha256:old · expires 2026-11-24T19:00:00Z · rolled back"), "{text}");
    let ok = Alert::new(Event::Recovered, "web", "certificate", "fine");
    assert!(!slack_text(&ok).contains('\n'));
    assert!(slack_text(&ok).starts_with(":white_check_mark: *recovered*"));
}

#[test]
fn alertmanager_payload_has_the_identifying_labels() {
    let am = to_am(&full(), ts("2026-11-23T19:05:00Z"));
    let v = serde_json::to_value(&am).unwrap();
    assert_eq!(
        v["labels"],
        json!({"alertname": "RekeyHandoffFailed", "credential": "web", "kind": "certificate",
               "severity": "critical", "instance": "web-1"})
    );
    assert_eq!(v["startsAt"], "2026-11-23T19:00:00Z");
    assert_eq!(v["endsAt"], "2026-11-23T19:05:00Z");
    assert_eq!(v["annotations"]["not_after"], "2026-11-24T19:00:00Z");
    assert_eq!(v["annotations"]["rolled_back"], "true");
    assert_eq!(v["annotations"]["served_fingerprint"], "sha256:old");
    assert_eq!(v["annotations"]["description"], full().message);
    let names: Vec<String> = Event::ALL.iter().map(|e| alertname(*e)).collect();
    assert_eq!(
        names,
        [
            "RekeyRenewalFailed",
            "RekeyHandoffFailed",
            "RekeyExpiring",
            "RekeyExpired",
            "RekeyTampered",
            "RekeyRecovered",
            "RekeyRetired",
            "RekeyUnreadable",
            "RekeyBudgetExhausted"
        ]
    );
}
