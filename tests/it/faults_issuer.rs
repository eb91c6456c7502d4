//! Issuer faults. Certificate-content faults go through a fake `Issuer`
//! around an rcgen CA (root + intermediate) inside the real engine, because
//! no real CA can be made to sign for the wrong key or with a broken chain.
//! Transport faults go through the real ACME issuer in the real daemon,
//! against an in-test HTTPS server that misbehaves on purpose (a real CA
//! cannot be told to stall mid-body). Every time: nothing is installed, the
//! task backs off (honouring Retry-After), exactly one `renewal_failed`
//! alert reaches a webhook, the old credential stays, and it recovers once
//! the issuer behaves.

use crate::support as common;
use crate::support::alert as support;
use crate::support::pebble as acme_support;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rcgen::{CertificateParams, CertifiedIssuer, KeyPair};
use rekey::config::Config;
use rekey::engine::{Credential, Engine, Settings};
use rekey::issuer::{IssueRequest, Issued, Issuer, IssuerError};
use rekey::status::RotateResult;
use rekey::store::Store;

use common::fake_http;
use common::fake_issuer::{ca_params, rotations_fail, Pki};
use common::invariants::Cred;
use common::scorecard::Scenario;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    OtherKey,
    MissingName,
    Expired,
    NotYetValid,
    BrokenChain,
    EmptyChainWithRoot,
    EmptyChainNoRoot,
    NotPem,
    RateLimited,
}

/// A CA with an intermediate, like a public one, that misbehaves on demand.
struct FakeCa {
    pki: Pki,
    fault: Mutex<Fault>,
}

impl FakeCa {
    fn new() -> FakeCa {
        FakeCa {
            pki: Pki::new("fault"),
            fault: Mutex::new(Fault::None),
        }
    }
    fn set(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }
}

#[async_trait]
impl Issuer for FakeCa {
    fn name(&self) -> &str {
        "fake"
    }
    async fn issue(&self, req: &IssueRequest) -> Result<Issued, IssuerError> {
        let fault = *self.fault.lock().unwrap();
        let csr =
            rcgen::CertificateSigningRequestParams::from_der(&req.csr_der.clone().into()).unwrap();
        let mut p = csr.params;
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::seconds(60);
        p.not_after = now + time::Duration::hours(1);
        let hours = time::Duration::hours;
        match fault {
            Fault::Expired => (p.not_before, p.not_after) = (now - hours(2), now - hours(1)),
            Fault::NotYetValid => (p.not_before, p.not_after) = (now + hours(1), now + hours(2)),
            Fault::MissingName => p
                .subject_alt_names
                .retain(|n| !matches!(n, rcgen::SanType::DnsName(d) if d.as_str() == "app.test")),
            Fault::RateLimited => {
                return Err(IssuerError::Issue {
                    source: None,
                    issuer: "fake".into(),
                    credential: req.credential.clone(),
                    message: "rate limited (HTTP 429)".into(),
                    retry_after: Some(Duration::from_secs(300)),
                })
            }
            _ => {}
        }
        let leaf = if fault == Fault::OtherKey {
            p.signed_by(&KeyPair::generate().unwrap(), &self.pki.inter)
        } else {
            p.signed_by(&csr.public_key, &self.pki.inter)
        }
        .unwrap()
        .pem();
        let stranger = CertifiedIssuer::self_signed(
            ca_params("fault intermediate"),
            KeyPair::generate().unwrap(),
        )
        .unwrap()
        .pem();
        let (chain, ca) = match fault {
            Fault::BrokenChain => (stranger, Some(self.pki.root.pem())),
            Fault::EmptyChainWithRoot => (String::new(), Some(self.pki.root.pem())),
            Fault::EmptyChainNoRoot => (String::new(), None),
            _ => (self.pki.inter.pem(), Some(self.pki.root.pem())),
        };
        let cert = if fault == Fault::NotPem {
            "<html><body>503 Service Unavailable</body></html>".to_string()
        } else {
            leaf
        };
        Ok(Issued {
            cert_pem: cert,
            chain_pem: chain,
            ca_pem: ca,
            server_key: None,
            shortened: None,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_are_never_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let hook = support::Receiver::start(Some(200));
    let text = format!(
        "[daemon]\nstate_dir = \"{s}\"\n[issuer.fake]\ntype = \"local-ca\"\n[[certificate]]\nname = \"web\"\nissuer = \"fake\"\n\
         dns_names = [\"localhost\", \"app.test\"]\nlifetime = \"1h\"\n\
         files = {{ cert = \"{t}/cert.pem\", key = \"{t}/key.pem\", fullchain = \"{t}/fullchain.pem\" }}\n\
         [[alert]]\ntype = \"webhook\"\nurl = \"{u}\"\n",
        s = d.join("state").display(),
        t = d.join("tls/web").display(),
        u = hook.url("/hook"),
    );
    let config = Config::parse(&text, &d.join("rekey.toml")).unwrap();
    let alerter = rekey::alert::build(&config.alerts).unwrap();
    let store = Arc::new(Store::open(&config.daemon.state_dir).unwrap());
    let ca = Arc::new(FakeCa::new());
    let cred = Credential {
        config: config.certificates[0].clone(),
        issuer: ca.clone(),
        reload: Arc::new(rekey::handoff::reload::NoReload),
        probes: vec![],
        audit: rekey::audit::Audit::none(),
        // Every case rotates again and again: the budget is not under test here.
        budget: rekey::config::IssuanceBudgets::UNLIMITED,
    };
    let engine = Engine::start(
        store,
        vec![cred],
        Settings {
            max_concurrent_rotations: 1,
            backstop: Duration::from_secs(3600),
        },
        alerter.clone(),
        rekey::metrics::Metrics::new("test"),
    );
    let h = engine.handle();
    // No `ca` file: an issuer that returns no root must still be caught.
    let mut c = Cred::under(d, "web");
    c.ca = None;
    c.dns_names = vec!["localhost".into(), "app.test".into()];
    support::wait_for(Duration::from_secs(10), "first issuance", || {
        h.snapshot().get("web").and_then(|s| s.generation)
    })
    .await;
    let cases = [
        (
            Fault::OtherKey,
            "certificate for another key",
            "key mismatch",
        ),
        (
            Fault::MissingName,
            "certificate missing a requested name",
            "does not cover app.test",
        ),
        (Fault::Expired, "expired certificate", "expired at"),
        (
            Fault::NotYetValid,
            "certificate not yet valid",
            "not valid before",
        ),
        (Fault::BrokenChain, "broken chain", "chain is broken"),
        (
            Fault::EmptyChainWithRoot,
            "empty chain where a chain is required (root given)",
            "chain is broken",
        ),
        (
            Fault::EmptyChainNoRoot,
            "empty chain where a chain is required (no root)",
            "no chain",
        ),
        (Fault::NotPem, "body that is not PEM", "does not parse"),
        (
            Fault::RateLimited,
            "429 with Retry-After (issuer error)",
            "rate limited",
        ),
    ];
    for (fault, name, why) in cases {
        let mut sc = Scenario::new("faults_issuer", &format!("engine: {name}"));
        let files = c.snapshot();
        let old = h.snapshot()["web"].clone();
        let alerts_before = hook.events("renewal_failed");
        ca.set(fault);
        for _ in 0..2 {
            sc.round();
            let out = h.rotate("web").await.unwrap();
            sc.check(
                "rotation reported failed",
                out.result == RotateResult::Failed,
                || format!("{out:?}"),
            );
        }
        let s = h.snapshot()["web"].clone();
        sc.check("nothing installed", c.snapshot() == files, || {
            "published files changed".into()
        });
        sc.check(
            "old credential kept",
            s.fingerprint.as_deref() == Some(old.fingerprint.as_deref().unwrap_or("-")),
            || format!("{:?} -> {:?}", old.fingerprint, s.fingerprint),
        );
        sc.check("backoff", s.consecutive_failures >= 2, || format!("{s:?}"));
        let min_wait = if fault == Fault::RateLimited { 290 } else { 0 };
        sc.check(
            "next renewal in the future (Retry-After honoured)",
            s.next_renewal.map_or(SystemTime::UNIX_EPOCH, |t| t.time())
                > SystemTime::now() + Duration::from_secs(min_wait),
            || format!("next_renewal {:?}", s.next_renewal),
        );
        let err = s.last_error.as_deref().unwrap_or_default().to_string();
        sc.check("error names the fault", err.contains(why), || err.clone());
        alerter.flush(Duration::from_secs(5)).await;
        let n = hook.events("renewal_failed") - alerts_before;
        sc.check("exactly one renewal_failed alert", n == 1, || {
            format!("{n} alerts")
        });
        // The issuer behaves again: the next rotation installs and recovers.
        ca.set(Fault::None);
        let recovered_before = hook.events("recovered");
        let out = h.rotate("web").await.unwrap();
        sc.check(
            "recovers once fixed",
            out.result == RotateResult::Success,
            || format!("{out:?}"),
        );
        alerter.flush(Duration::from_secs(5)).await;
        sc.check(
            "recovered alert",
            hook.events("recovered") == recovered_before + 1,
            || "no recovered alert".into(),
        );
        sc.check_ok(
            "published passes validation",
            common::invariants::published_valid(&c),
        );
        sc.finish();
    }
    engine.shutdown().await;
}

// ---- Transport faults: the real ACME issuer in the real daemon ----

/// How the fake ACME server misbehaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Acme {
    /// Nothing listens.
    Refused,
    /// Headers and half a body, then silence.
    StallMidBody,
    /// The directory is down: 503 with an HTML page and Retry-After.
    Unavailable,
    /// newAccount is rate limited: 429, a problem document, Retry-After.
    RateLimited,
    /// The directory answers 200 with a body that is not JSON.
    NotJson,
}

/// Serve one request per connection on `tls` per `mode`; the directory and
/// newNonce are well-formed unless the mode breaks them.
fn acme_server(mode: Acme, tls: &acme_support::TestTls) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    if mode == Acme::Refused {
        return addr; // dropped: the port is closed
    }
    let config = fake_http::tls_config(&tls.cert_pem, &tls.key_pem);
    let base = format!("https://{addr}");
    let dir = format!(
        "{{\"newNonce\":\"{base}/nonce\",\"newAccount\":\"{base}/account\",\"newOrder\":\"{base}/order\",\"revokeCert\":\"{base}/revoke\",\"keyChange\":\"{base}/key\"}}"
    );
    let json = "Content-Type: application/json\r\n";
    fake_http::serve(
        listener,
        Some(config),
        Arc::new(move |req, s| {
            match (mode, req.path.as_str()) {
            // The directory and a nonce come fine (start-up's ARI check is
            // quick); newAccount stalls mid-body.
            (Acme::StallMidBody, p) if p != "/dir" && p != "/nonce" => {
                let _ = write!(s, "HTTP/1.1 200 OK\r\n{json}Content-Length: 1000\r\n\r\n{{\"newNonce\":");
                let _ = s.flush();
                std::thread::sleep(Duration::from_secs(90));
            }
            (Acme::Unavailable, _) => fake_http::respond(
                s,
                "503 Service Unavailable",
                "Retry-After: 120\r\nContent-Type: text/html\r\n",
                b"<html>maintenance</html>",
            ),
            (Acme::NotJson, _) => fake_http::respond(s, "200 OK", json, b"<html>maintenance</html>"),
            (_, "/dir") => fake_http::respond(s, "200 OK", json, dir.as_bytes()),
            (_, "/nonce") => fake_http::respond(
                s,
                "200 OK",
                "Replay-Nonce: bm9uY2U\r\nCache-Control: no-store\r\n",
                b"",
            ),
            _ => fake_http::respond(
                s,
                "429 Too Many Requests",
                "Retry-After: 120\r\nReplay-Nonce: bm9uY2U\r\nContent-Type: application/problem+json\r\n",
                br#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new accounts","status":429}"#,
            ),
        }
        }),
    );
    addr
}

/// A valid pair published before rekey starts, which it adopts (it chains
/// to the CA whose certificate is returned: the caller adds it to the
/// issuer's trust_bundle). Returns that CA's PEM.
fn publish_valid_pair(env: &common::Env) -> String {
    let ca = CertifiedIssuer::self_signed(ca_params("earlier CA"), KeyPair::generate().unwrap())
        .unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(1);
    p.not_after = now + time::Duration::hours(24);
    let leaf = p.signed_by(&key, &ca).unwrap();
    let d = env.path("tls/web");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(d.join("key.pem"), key.serialize_pem()).unwrap();
    ca.pem()
}

fn acme_fault(mode: Acme, name: &str, why: &str, min_wait: u64, attempts: usize) {
    let env = common::Env::new();
    let mut sc = Scenario::new("faults_issuer", &format!("ACME daemon: {name}"));
    let tls = acme_support::test_tls(env.dir.path());
    let addr = acme_server(mode, &tls);
    let hook = support::Receiver::start(Some(200));
    // The bundle trusts the test TLS CA (for the server) and the CA of the
    // pair already published (so rekey may adopt it).
    let earlier_ca = publish_valid_pair(&env);
    let bundle = env.path("bundle.pem");
    let tls_ca = std::fs::read_to_string(&tls.ca_pem).unwrap();
    std::fs::write(&bundle, format!("{tls_ca}{earlier_ca}")).unwrap();
    let d = env.path("tls/web");
    env.write_config(&format!(
        "[issuer.le]\ntype = \"acme\"\ndirectory = \"https://{addr}/dir\"\ntrust_bundle = \"{b}\"\n\
         challenge = {{ type = \"http-01\", listen = \"{l}\" }}\n\n\
         [[certificate]]\nname = \"web\"\nissuer = \"le\"\ndns_names = [\"localhost\"]\n\
         files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\" }}\n\n\
         [[alert]]\ntype = \"webhook\"\nurl = \"{u}\"\n",
        b = bundle.display(),
        l = common::free_addr(),
        d = d.display(),
        u = hook.url("/hook"),
    ));
    let c = Cred {
        fullchain: None,
        ca: None,
        ..Cred::under(env.dir.path(), "web")
    };
    let daemon = env.start();
    rotations_fail(&mut sc, &daemon, &c, attempts, min_wait, why);
    let n = common::wait_for(Duration::from_secs(10), "the renewal_failed alert", || {
        let n = hook.events("renewal_failed");
        (n > 0).then_some(n)
    });
    // A repeat would arrive within moments; give it the chance to.
    std::thread::sleep(Duration::from_millis(500));
    let n = hook.events("renewal_failed").max(n);
    sc.check("exactly one renewal_failed alert", n == 1, || {
        format!("{n} alerts")
    });
    sc.finish();
}

#[test]
fn acme_connection_refused() {
    acme_fault(
        Acme::Refused,
        "connection refused",
        "cannot reach the ACME CA",
        0,
        2,
    );
}

#[test]
fn acme_timeout_mid_response() {
    // One attempt: each waits out the 30 s request deadline.
    acme_fault(
        Acme::StallMidBody,
        "timeout mid-response",
        "no complete answer within 30s",
        0,
        1,
    );
}

#[test]
fn acme_5xx_with_retry_after() {
    acme_fault(
        Acme::Unavailable,
        "5xx (directory down, HTML body, Retry-After)",
        "HTTP 503",
        110,
        2,
    );
}

#[test]
fn acme_429_with_retry_after() {
    acme_fault(
        Acme::RateLimited,
        "429 rateLimited with Retry-After",
        "too many new accounts",
        110,
        2,
    );
}

#[test]
fn acme_body_not_json() {
    acme_fault(
        Acme::NotJson,
        "body that is not JSON",
        "not an ACME directory",
        0,
        2,
    );
}
