use super::*;
use std::time::Duration;

const NOW: &str = "2030-01-01T00:00:00Z";

fn now() -> SystemTime {
    Timestamp::parse(NOW).unwrap().time()
}

fn cred(state: State, not_after: Option<&str>, handoff: Handoff) -> CredentialStatus {
    let mut c = CredentialStatus::starting("web", "certificate", "dev");
    c.state = state;
    // What does not parse is no time: read as absent.
    c.not_after = not_after.and_then(Timestamp::parse);
    c.handoff = handoff;
    c.generation = Some(3);
    c
}

/// Every state × expiry × handoff combination that matters, with the
/// verdict and a word the reason must contain.
#[test]
fn readiness_table() {
    let future = Some("2030-01-01T01:00:00Z");
    let past = Some("2029-12-31T23:00:00Z");
    let exactly_now = Some(NOW);
    use Handoff::*;
    use State::*;
    let table: &[(State, Option<&str>, Handoff, Option<&str>)] = &[
        (Valid, future, Unverified, None),
        (Valid, future, Verified, None),
        (Valid, future, Pending, None),
        (Renewing, future, Verified, None),
        (Backoff, future, Unverified, None),
        // A rolled-back handoff leaves a valid credential the app serves.
        (Valid, future, Failed, None),
        (Backoff, future, Failed, None),
        (Backoff, future, Pending, None),
        (Valid, past, Verified, Some("expired")),
        (Valid, exactly_now, Verified, Some("expired")),
        (Backoff, past, Unverified, Some("expired")),
        (
            Renewing,
            None,
            Pending,
            Some("no certificate is published yet"),
        ),
        (Valid, Some("not a date"), Verified, Some("no certificate")),
        (Starting, None, Pending, Some("starting")),
        (Missing, None, Pending, Some("no usable credential")),
        (Expired, past, Unverified, Some("expired")),
    ];
    for (state, not_after, handoff, want) in table {
        let c = cred(*state, *not_after, *handoff);
        let got = readiness([&c], now());
        match want {
            None => assert!(
                got.is_empty(),
                "{state:?} {not_after:?} {handoff:?}: {got:?}"
            ),
            Some(word) => {
                assert!(
                    got.iter()
                        .any(|r| r.reason.contains(word) && r.credential == "web"),
                    "{state:?} {not_after:?} {handoff:?}: want {word:?}, got {got:?}"
                )
            }
        }
    }
}

/// The strict rule adds only "the handoff did not fail".
#[test]
fn strict_readiness_also_wants_the_handoff_not_failed() {
    let future = Some("2030-01-01T01:00:00Z");
    let strict = |c: &CredentialStatus| readiness_with([c], now(), Strictness::HandoffOk);
    let mut failed = cred(State::Backoff, future, Handoff::Failed);
    failed.last_error = Some("app still serves sha256:old".into());
    let got = strict(&failed);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].reason.contains("handoff failed")
            && got[0].reason.contains("generation 3")
            && got[0].reason.contains("still serves"),
        "{got:?}"
    );
    assert!(readiness([&failed], now()).is_empty());
    for h in [Handoff::Verified, Handoff::Unverified, Handoff::Pending] {
        assert!(strict(&cred(State::Valid, future, h)).is_empty(), "{h:?}");
    }
    // Whatever is not ready stays not ready.
    let expired = cred(
        State::Expired,
        Some("2029-01-01T00:00:00Z"),
        Handoff::Failed,
    );
    assert_eq!(strict(&expired).len(), 2);
    assert_eq!(readiness([&expired], now()).len(), 1);
}

#[test]
fn every_reason_of_every_credential_is_listed() {
    let ok = cred(
        State::Valid,
        Some("2030-01-02T00:00:00Z"),
        Handoff::Verified,
    );
    let mut bad = cred(
        State::Expired,
        Some("2029-01-01T00:00:00Z"),
        Handoff::Failed,
    );
    bad.name = "api".into();
    let mut missing = cred(State::Missing, None, Handoff::Pending);
    missing.name = "db".into();
    missing.last_error = Some("issuer down".into());
    let got = readiness([&ok, &bad, &missing], now());
    let names: Vec<&str> = got.iter().map(|r| r.credential.as_str()).collect();
    assert_eq!(names, ["api", "db"], "{got:?}");
    assert!(got[1].reason.contains("issuer down"));
    let got = readiness_with([&ok, &bad, &missing], now(), Strictness::HandoffOk);
    let names: Vec<&str> = got.iter().map(|r| r.credential.as_str()).collect();
    assert_eq!(names, ["api", "api", "db"], "{got:?}");
    assert!(readiness([], now()).is_empty(), "no credentials: ready");
}

#[test]
fn watches_never_count_for_readiness() {
    let mut w = cred(
        State::Expired,
        Some("2029-01-01T00:00:00Z"),
        Handoff::Unmanaged,
    );
    w.kind = KIND_WATCH.into();
    w.name = "partner".into();
    let mut u = w.clone();
    u.state = State::Unreadable;
    assert!(readiness([&w, &u], now()).is_empty());
    // The same objects as credentials would not be ready.
    w.kind = "certificate".into();
    assert!(!readiness([&w], now()).is_empty());
}

/// Times are kept as times and written as before: RFC 3339 UTC to the
/// second, `Z`; what `/status` and `rekey status --json` print.
#[test]
fn times_are_written_as_rfc3339_to_the_second() {
    let mut c = cred(State::Backoff, Some(NOW), Handoff::Failed);
    let t = now() + Duration::from_millis(1_250);
    c.next_renewal = Some(Timestamp::new(t));
    c.failing_since = failing_since(None, 1, t);
    c.last_rotation = Some(LastRotation {
        at: Timestamp::new(t),
        result: RotateResult::RolledBack,
        duration_ms: 5,
        handoff_ms: None,
    });
    let json = serde_json::to_string(&c).unwrap();
    for want in [
        r#""not_after":"2030-01-01T00:00:00Z""#,
        r#""next_renewal":"2030-01-01T00:00:01Z""#,
        r#""failing_since":"2030-01-01T00:00:01Z""#,
        r#""last_rotation":{"at":"2030-01-01T00:00:01Z","result":"rolled_back","#,
        r#""not_before":null"#,
    ] {
        assert!(json.contains(want), "{want} not in {json}");
    }
    let back: CredentialStatus = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
    // A run of failures keeps the time it began.
    let later = failing_since(Some(&c), 2, t + Duration::from_secs(60));
    assert_eq!(later, c.failing_since);
}

#[test]
fn expiry_is_judged_at_the_given_instant() {
    let c = cred(State::Valid, Some(NOW), Handoff::Verified);
    assert!(readiness([&c], now() - Duration::from_secs(1)).is_empty());
    assert!(!readiness([&c], now()).is_empty());
}
