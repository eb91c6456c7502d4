use super::*;
use crate::status::{CredentialStatus, Handoff, Timestamp};

fn snap(entries: &[(&str, State, Option<&str>, Option<&str>)]) -> Snapshot {
    entries
        .iter()
        .map(|(name, state, not_after, next)| {
            let mut c = CredentialStatus::starting(name, "certificate", "dev");
            c.state = *state;
            c.not_after = not_after.map(|t| Timestamp::parse(t).unwrap());
            c.next_renewal = next.map(|t| Timestamp::parse(t).unwrap());
            c.handoff = Handoff::Unverified;
            (name.to_string(), Box::new(c))
        })
        .collect()
}

fn now() -> SystemTime {
    Timestamp::parse("2030-01-01T00:00:00Z").unwrap().time()
}

#[test]
fn summary_counts_states_and_names_the_next_renewal() {
    let later = Some("2030-02-01T00:00:00Z");
    let s = snap(&[
        ("web", State::Valid, later, Some("2030-01-20T00:00:00Z")),
        ("api", State::Valid, later, Some("2030-01-10T00:00:00Z")),
        ("db", State::Backoff, later, Some("2030-01-15T00:00:00Z")),
    ]);
    assert_eq!(
        summary(&s, now()),
        "3 credentials: 1 backoff, 2 valid; ready; next renewal api at 2030-01-10T00:00:00Z"
    );
}

#[test]
fn summary_says_why_it_is_not_ready_on_one_line() {
    let s = snap(&[
        ("web", State::Expired, Some("2029-01-01T00:00:00Z"), None),
        ("api", State::Missing, None, None),
    ]);
    let line = summary(&s, now());
    assert!(line.starts_with("2 credentials: 1 expired, 1 missing; not ready (api: no usable credential is published, and 1 more)"), "{line}");
    assert!(!line.contains('\n'));
    assert_eq!(summary(&Snapshot::new(), now()), "0 credentials; ready");
}

/// A reload that cannot be delivered shows in the line even while ready.
#[test]
fn summary_names_a_stuck_handoff_and_why() {
    let later = Some("2030-02-01T00:00:00Z");
    let mut s = snap(&[
        ("nginx", State::Valid, later, Some("2030-01-20T00:00:00Z")),
        ("api", State::Backoff, later, None),
    ]);
    let nginx = s.get_mut("nginx").unwrap();
    nginx.handoff = Handoff::Pending;
    nginx.handoff_reason = Some("reload of nginx: reload.pid_file /run/nginx.pid: names process 59, which exists but /proc/59 is hidden".into());
    let line = summary(&s, now());
    assert_eq!(
        line,
        "2 credentials: 1 backoff, 1 valid; ready; handoff pending (reload of nginx: reload.pid_file /run/nginx.pid: names process 59, which exists but /proc/59 is hidden); next renewal nginx at 2030-01-20T00:00:00Z"
    );
    // A failed (rolled back) handoff: ready, and the line says why.
    let api = s.get_mut("api").unwrap();
    api.handoff = Handoff::Failed;
    api.last_error =
        Some("api: handoff of generation 4 failed: app still serves sha256:old".into());
    let line = summary(&s, now());
    assert!(
        line.contains("; ready; handoff failed (api: handoff of generation 4 failed: app still serves sha256:old, and 1 more)"),
        "{line}"
    );
    // Pending without a reason (waiting quietly) is not called stuck.
    let s = {
        let mut s = snap(&[("web", State::Valid, later, None)]);
        s.get_mut("web").unwrap().handoff = Handoff::Pending;
        s
    };
    assert_eq!(summary(&s, now()), "1 credential: 1 valid; ready");
}

#[test]
fn watchdog_interval_is_half_of_watchdog_usec_and_only_for_us() {
    let half = Some(Duration::from_millis(100));
    assert_eq!(watchdog_interval(Some("200000"), None, 7), half);
    assert_eq!(watchdog_interval(Some("200000"), Some("7"), 7), half);
    assert_eq!(watchdog_interval(Some("200000"), Some("8"), 7), None);
    assert_eq!(watchdog_interval(Some("0"), None, 7), None);
    assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
    assert_eq!(watchdog_interval(None, Some("7"), 7), None);
}

#[test]
fn datagrams_reach_path_and_abstract_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let abstract_name = format!("@rekey-test-{}", std::process::id());
    let listeners = [
        (
            path.display().to_string(),
            UnixDatagram::bind(&path).unwrap(),
        ),
        (abstract_name.clone(), {
            use std::os::linux::net::SocketAddrExt;
            let a = SocketAddr::from_abstract_name(&abstract_name.as_bytes()[1..]).unwrap();
            UnixDatagram::bind_addr(&a).unwrap()
        }),
    ];
    for (spec, listener) in listeners {
        let (sock, addr) = open(&spec).unwrap();
        sock.send_to_addr(b"READY=1", &addr).unwrap();
        let mut buf = [0u8; 64];
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1", "{spec}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_stop_when_the_engine_is_gone() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "[daemon]\nstate_dir = \"{d}/state\"\nlisten = \"\"\n[issuer.dev]\ntype = \"local-ca\"\n\
         [[certificate]]\nname = \"web\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\n\
         files = {{ cert = \"{d}/tls/cert.pem\", key = \"{d}/tls/key.pem\" }}\n",
        d = tmp.path().display()
    );
    let config = crate::config::Config::parse(&text, &tmp.path().join("rekey.toml")).unwrap();
    let store = Arc::new(crate::store::Store::open(&config.daemon.state_dir).unwrap());
    let issuers = crate::daemon::build_issuers(&config, &store).unwrap();
    let credentials = vec![crate::engine::Credential {
        config: config.certificates[0].clone(),
        issuer: issuers["dev"].clone(),
        reload: Arc::new(crate::handoff::reload::NoReload),
        probes: vec![],
        audit: crate::audit::Audit::none(),
        budget: config.budget("dev"),
    }];
    let engine = crate::engine::Engine::start(
        store,
        credentials,
        crate::engine::Settings {
            max_concurrent_rotations: 1,
            backstop: Duration::from_secs(3600),
        },
        crate::alert::Alerter::noop(),
        crate::metrics::Metrics::new("test"),
    );
    let pings = Arc::new(AtomicUsize::new(0));
    let counter = pings.clone();
    let (_stop, stop_rx) = watch::channel(false);
    tokio::spawn(watchdog_loop(
        engine.handle(),
        Duration::from_millis(10),
        stop_rx,
        move || {
            counter.fetch_add(1, Ordering::SeqCst);
            true
        },
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pings.load(Ordering::SeqCst) < 5 {
        assert!(std::time::Instant::now() < deadline, "no pings while alive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    engine.shutdown().await;
    // A ping already past its check may still land; after that, none.
    // Proving an absence takes a wait: ten periods.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let after = pings.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        pings.load(Ordering::SeqCst),
        after,
        "pinged for a dead engine"
    );
}
