//! The ACME issuer against a real Pebble (Debian `pebble`): every challenge
//! type, hostile nonces, validation delays, external account binding, CA
//! errors, and ARI against an in-test directory. Skipped under a bare
//! `cargo test` when Pebble is missing; required under `scripts/test`.

use crate::support as common;
use crate::support::pebble as support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rekey::cert::{build_csr, generate_key, validate_issued, CertInfo, IssuedPem, Names};
use rekey::config::{Config, IssuerConfig, KeyType};
use rekey::issuer::acme::Acme;
use rekey::issuer::{pick_in_window, IssueRequest, Issuer};
use support::{have_pebble, Opts, Pebble};

/// An ACME issuer built from TOML, as `rekey run` would build it.
fn issuer(state: &Path, issuer_toml: &str) -> Acme {
    let text = format!(
        "[daemon]\nstate_dir = \"{}\"\n\n{issuer_toml}",
        state.display()
    );
    let cfg = Config::parse(&text, &state.join("rekey.toml")).unwrap();
    let Some(IssuerConfig::Acme(a)) = cfg.issuers.values().next() else {
        panic!("no acme issuer in {text}");
    };
    Acme::open("pebble", state, a).unwrap()
}

/// Issue for `names` with a fresh local key and validate the answer.
async fn issue(acme: &Acme, names: &[&str]) -> Result<CertInfo, String> {
    issue_pem(acme, names).await.map(|(info, _)| info)
}

/// Like [`issue`], also returning the leaf PEM.
async fn issue_pem(acme: &Acme, names: &[&str]) -> Result<(CertInfo, String), String> {
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let names = Names {
        common_name: names[0].to_string(),
        dns_names: names.iter().map(|n| n.to_string()).collect(),
        ip_addresses: vec![],
    };
    let req = IssueRequest {
        credential: "web".into(),
        csr_der: build_csr(&key, &names).unwrap(),
        names: names.clone(),
        lifetime: Duration::from_secs(86400),
    };
    let issued = acme.issue(&req).await.map_err(|e| e.to_string())?;
    assert!(!issued.chain_pem.is_empty(), "Pebble sends an intermediate");
    let pem = IssuedPem {
        cert_pem: &issued.cert_pem,
        chain_pem: &issued.chain_pem,
        ca_pem: None,
    };
    validate_issued(&pem, &key.public_key(), &names, SystemTime::now())
        .map(|info| (info, issued.cert_pem.clone()))
        .map_err(|e| e.to_string())
}

fn state() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_listen_issues_and_reuses_the_account() {
    let Some(()) = have_pebble() else { return };
    let p = Pebble::start(Opts::default());
    let st = state();
    let acme = issuer(
        st.path(),
        &p.issuer_toml("pebble", &p.listen_challenge(), ""),
    );
    let t = Instant::now();
    let info = issue(&acme, &["a.rekey.test", "b.rekey.test"])
        .await
        .unwrap();
    eprintln!("first issuance (with account creation): {:?}", t.elapsed());
    assert!(info.not_after > SystemTime::now());
    let key = std::fs::read(st.path().join("acme/pebble/account.key")).unwrap();
    let reg = std::fs::read_to_string(st.path().join("acme/pebble/account.json")).unwrap();
    assert_eq!(
        common::mode(&st.path().join("acme/pebble/account.key")),
        0o600
    );
    // The responder listens only while a challenge is pending.
    let port = p.http_port;
    common::wait_for(Duration::from_secs(2), "the responder to close", || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });

    // A second issuer object on the same state dir (a restart) reuses the account.
    drop(acme);
    let acme = issuer(
        st.path(),
        &p.issuer_toml("pebble", &p.listen_challenge(), ""),
    );
    issue(&acme, &["c.rekey.test"]).await.unwrap();
    assert_eq!(
        std::fs::read(st.path().join("acme/pebble/account.key")).unwrap(),
        key
    );
    assert_eq!(
        std::fs::read_to_string(st.path().join("acme/pebble/account.json")).unwrap(),
        reg
    );
    // Debian's Pebble has no renewalInfo: no ARI window, no error.
    let cert = local_ca_cert(st.path()).await;
    assert_eq!(acme.renewal_window(&cert).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_replaced_revokes_only_when_configured() {
    let Some(()) = have_pebble() else { return };
    let p = Pebble::start(Opts::default());
    let st = state();
    let off = issuer(
        st.path(),
        &p.issuer_toml("pebble", &p.listen_challenge(), ""),
    );
    let (_, old) = issue_pem(&off, &["old.rekey.test"]).await.unwrap();
    // Off by default: a no-op, nothing is sent.
    off.replaced("web", &old).await.unwrap();
    drop(off);
    let on = issuer(
        st.path(),
        &p.issuer_toml("pebble", &p.listen_challenge(), "revoke_replaced = true"),
    );
    on.replaced("web", &old).await.unwrap();
    // Revoking it twice: the CA's problem comes back, naming the step.
    let err = on.replaced("web", &old).await.unwrap_err().to_string();
    assert!(
        err.contains("revokeCert") && err.contains("alreadyRevoked"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_webroot_writes_tokens_and_removes_them() {
    let Some(()) = have_pebble() else { return };
    let p = Pebble::start(Opts::default());
    let st = state();
    let root = st.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let (_srv, seen) = support::webroot_server(
        format!("127.0.0.1:{}", p.http_port).parse().unwrap(),
        root.clone(),
    );
    let ch = format!("{{ type = \"http-01\", webroot = \"{}\" }}", root.display());
    let acme = issuer(st.path(), &p.issuer_toml("pebble", &ch, ""));
    issue(&acme, &["web.rekey.test"]).await.unwrap();
    let asked = seen.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .any(|a| a.starts_with("/.well-known/acme-challenge/")),
        "Pebble never fetched a token: {asked:?}"
    );
    let left: Vec<_> = std::fs::read_dir(root.join(".well-known/acme-challenge"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "token files left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns01_hook_presents_and_cleans_up_through_challtestsrv() {
    let Some(()) = have_pebble() else { return };
    let p = Pebble::start(Opts::default());
    let st = state();
    let (hook, log) = support::dns_hook(st.path(), p.mgmt);
    let ch = format!(
        "{{ type = \"dns-01\", command = [\"{}\"], propagation_wait = \"0s\" }}",
        hook.display()
    );
    let acme = issuer(st.path(), &p.issuer_toml("pebble", &ch, ""));
    issue(&acme, &["*.dns.rekey.test", "dns.rekey.test"])
        .await
        .unwrap();
    let calls = std::fs::read_to_string(&log).unwrap();
    let presents = calls
        .lines()
        .filter(|l| l.starts_with("present _acme-challenge.dns.rekey.test dns.rekey.test "))
        .count();
    let cleanups = calls
        .lines()
        .filter(|l| l.starts_with("cleanup _acme-challenge.dns.rekey.test "))
        .count();
    // Pebble may reuse one of the two authorizations (PEBBLE_AUTHZREUSE), so 1 or 2.
    assert!(
        (1..=2).contains(&presents) && presents == cleanups,
        "{calls}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_of_all_nonces_rejected_still_issues() {
    let Some(()) = have_pebble() else { return };
    let p = Pebble::start(Opts {
        nonce_reject: 50,
        ..Opts::default()
    });
    let st = state();
    let acme = issuer(
        st.path(),
        &p.issuer_toml("pebble", &p.listen_challenge(), ""),
    );
    for i in 0..3 {
        issue(&acme, &[&format!("n{i}.rekey.test")]).await.unwrap();
    }
    // Pebble does not log each rejection; it does confirm the mode. At 50%,
    // about one request in eight exhausts instant-acme's own three tries, so
    // three issuances (~30 signed requests) exercise rekey's resend too.
    assert!(p.log().contains("reject 50% of good nonces"), "{}", p.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_delays_are_polled_not_slept() {
    let Some(()) = have_pebble() else { return };
    // Delays on (no PEBBLE_VA_NOSLEEP), bounded at 3 s to keep the suite short.
    let p = Pebble::start(Opts {
        sleep: Some(3),
        ..Opts::default()
    });
    let st = state();
    let acme = issuer(
        st.path(),
        &p.issuer_toml("pebble", &p.listen_challenge(), ""),
    );
    let t = Instant::now();
    issue(&acme, &["slow.rekey.test"]).await.unwrap();
    // At most the 3 s sleep, plus one capped (1 s) poll interval, plus work.
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eab_required_refuses_without_and_accepts_the_right_key() {
    let Some(()) = have_pebble() else { return };
    let secret = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let p = Pebble::start(Opts {
        eab: Some(("kid-1".into(), secret.into())),
        ..Opts::default()
    });
    let ch = p.listen_challenge();

    let st = state();
    let acme = issuer(st.path(), &p.issuer_toml("pebble", &ch, ""));
    let err = issue(&acme, &["eab.rekey.test"]).await.unwrap_err();
    eprintln!("error: {err}");
    assert!(
        err.contains("externalAccountRequired") && err.contains(&p.url),
        "{err}"
    );

    let st = state();
    let wrong = st.path().join("wrong-hmac");
    std::fs::write(
        &wrong,
        "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH\n",
    )
    .unwrap();
    let extra = format!(
        "eab = {{ kid = \"kid-1\", hmac_key_file = \"{}\" }}",
        wrong.display()
    );
    let acme = issuer(st.path(), &p.issuer_toml("pebble", &ch, &extra));
    let err = issue(&acme, &["eab.rekey.test"]).await.unwrap_err();
    eprintln!("error: {err}");
    assert!(err.contains("refused newAccount"), "{err}");
    assert!(
        !err.contains("b10lLJs8"),
        "the HMAC key leaked into an error: {err}"
    );

    let st = state();
    let right = st.path().join("hmac");
    std::fs::write(&right, format!("{secret}\n")).unwrap();
    let extra = format!(
        "eab = {{ kid = \"kid-1\", hmac_key_file = \"{}\" }}",
        right.display()
    );
    let acme = issuer(st.path(), &p.issuer_toml("pebble", &ch, &extra));
    issue(&acme, &["eab.rekey.test"]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_validation_names_the_identifier_and_the_problem() {
    let Some(()) = have_pebble() else { return };
    let p = Pebble::start(Opts::default());
    let st = state();
    // A webroot nobody serves: Pebble's validation request is refused.
    let ch = format!(
        "{{ type = \"http-01\", webroot = \"{}\" }}",
        st.path().join("www").display()
    );
    let acme = issuer(st.path(), &p.issuer_toml("pebble", &ch, ""));
    let err = issue(&acme, &["nobody.rekey.test"]).await.unwrap_err();
    eprintln!("error: {err}");
    assert!(
        err.contains("nobody.rekey.test") && err.contains("validation") && err.contains(&p.url),
        "{err}"
    );
    assert!(
        err.contains("connection") || err.contains("unauthorized"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_ca_is_a_retryable_error_naming_the_directory() {
    let st = state();
    let tls = support::test_tls(st.path());
    let addr = common::free_addr();
    let toml = format!(
        "[issuer.pebble]\ntype = \"acme\"\ndirectory = \"https://{addr}/dir\"\ntrust_bundle = \"{}\"\nchallenge = {{ type = \"http-01\", listen = \"127.0.0.1:0\" }}\n",
        tls.ca_pem.display()
    );
    let acme = issuer(st.path(), &toml);
    let err = issue(&acme, &["x.rekey.test"]).await.unwrap_err();
    eprintln!("error: {err}");
    assert!(
        err.contains("cannot reach the ACME CA") && err.contains(&addr.to_string()),
        "{err}"
    );
}

/// What the in-test ARI server answers.
#[derive(Clone, Copy)]
enum Ari {
    Future,
    Passed,
    Invalid,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ari_window_is_fetched_and_picked() {
    let st = state();
    let tls = support::test_tls(st.path());
    let mode = Arc::new(Mutex::new(Ari::Future));
    let asked = Arc::new(Mutex::new(Vec::<String>::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (m, a) = (mode.clone(), asked.clone());
    let handler: support::Handler = Arc::new(move |_method, path| {
        a.lock().unwrap().push(path.to_string());
        let base = format!("https://{addr}");
        if path == "/dir" {
            let d = serde_json::json!({"newNonce": format!("{base}/nonce"), "newAccount": format!("{base}/acct"),
                "newOrder": format!("{base}/order"), "renewalInfo": format!("{base}/ari")});
            return (200, vec![], d.to_string().into_bytes());
        }
        let now = time::OffsetDateTime::now_utc();
        let (s, e) = match *m.lock().unwrap() {
            Ari::Future => (
                now + time::Duration::hours(10),
                now + time::Duration::hours(20),
            ),
            Ari::Passed => (
                now - time::Duration::hours(20),
                now - time::Duration::hours(10),
            ),
            Ari::Invalid => (
                now + time::Duration::hours(20),
                now + time::Duration::hours(10),
            ),
        };
        let f = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let body = serde_json::json!({"suggestedWindow": {"start": f(s), "end": f(e)}});
        (
            200,
            vec![("Retry-After".into(), "3600".into())],
            body.to_string().into_bytes(),
        )
    });
    let _srv = support::Server::serve(listener, Some(&tls), handler);
    let toml = format!(
        "[issuer.ari]\ntype = \"acme\"\ndirectory = \"https://{addr}/dir\"\ntrust_bundle = \"{}\"\nchallenge = {{ type = \"http-01\", listen = \"127.0.0.1:0\" }}\n",
        tls.ca_pem.display()
    );
    let acme = issuer(st.path(), &toml);
    // Any certificate with an AKI will do: one from the local CA.
    let cert_pem = local_ca_cert(st.path()).await;
    let now = SystemTime::now();

    let w = acme.renewal_window(&cert_pem).await.unwrap().unwrap();
    assert_eq!(w.retry_after, Some(Duration::from_secs(3600)));
    let at = pick_in_window(&w, 0.5, now).unwrap();
    assert!(at >= w.start && at <= w.end && at > now);
    let path = asked.lock().unwrap().last().cloned().unwrap();
    let (aki, serial) = path.trim_start_matches("/ari/").split_once('.').unwrap();
    assert!(!aki.is_empty() && !serial.is_empty(), "{path}");

    *mode.lock().unwrap() = Ari::Passed;
    let w = acme.renewal_window(&cert_pem).await.unwrap().unwrap();
    assert_eq!(
        pick_in_window(&w, 0.5, now),
        Some(now),
        "a passed window means renew now"
    );

    *mode.lock().unwrap() = Ari::Invalid;
    let w = acme.renewal_window(&cert_pem).await.unwrap().unwrap();
    assert_eq!(
        pick_in_window(&w, 0.5, now),
        None,
        "an invalid window is ignored"
    );
}

async fn local_ca_cert(dir: &Path) -> String {
    let ca = rekey::issuer::local_ca::LocalCa::open("dev", &dir.join("ca"), &Default::default())
        .unwrap();
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let names = Names {
        common_name: "ari.rekey.test".into(),
        dns_names: vec!["ari.rekey.test".into()],
        ip_addresses: vec![],
    };
    ca.issue(&IssueRequest {
        credential: "c".into(),
        csr_der: build_csr(&key, &names).unwrap(),
        names,
        lifetime: Duration::from_secs(3600),
    })
    .await
    .unwrap()
    .cert_pem
}
