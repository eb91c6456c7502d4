//! The engine follows a CA's ARI renewal window over `renew_before`: a
//! near window renews early, a passed one renews at once, an invalid one is
//! ignored. The issuer wraps the real local CA and only adds the window
//! answer (a real CA cannot be made to return these windows on demand).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rekey::config::{Config, KeyType, LocalCaConfig};
use rekey::engine::{Credential, Engine, Settings};
use rekey::issuer::local_ca::LocalCa;
use rekey::issuer::{IssueRequest, Issued, Issuer, IssuerError, RenewalWindow};
use rekey::store::Store;

/// What window to report for the first certificate; later ones get none.
#[derive(Clone, Copy)]
enum First {
    In(Duration, Duration),
    Passed,
    Invalid,
}

struct AriCa {
    ca: LocalCa,
    first: First,
    asked: AtomicUsize,
}

#[async_trait]
impl Issuer for AriCa {
    fn name(&self) -> &str {
        "ari"
    }
    async fn issue(&self, req: &IssueRequest) -> Result<Issued, IssuerError> {
        self.ca.issue(req).await
    }
    async fn renewal_window(&self, _pem: &str) -> Result<Option<RenewalWindow>, IssuerError> {
        if self.asked.fetch_add(1, Ordering::SeqCst) > 0 {
            return Ok(None);
        }
        let now = SystemTime::now();
        let (start, end) = match self.first {
            First::In(a, b) => (now + a, now + b),
            First::Passed => (
                now - Duration::from_secs(7200),
                now - Duration::from_secs(3600),
            ),
            First::Invalid => (now + Duration::from_secs(20), now + Duration::from_secs(10)),
        };
        Ok(Some(RenewalWindow {
            start,
            end,
            retry_after: None,
        }))
    }
}

async fn run(first: First) -> (Engine, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let text = format!(
        "[daemon]\nstate_dir = \"{s}\"\n[issuer.dev]\ntype = \"local-ca\"\n[[certificate]]\nname = \"web\"\nissuer = \"dev\"\n\
         dns_names = [\"localhost\"]\nlifetime = \"1h\"\nfiles = {{ cert = \"{t}/cert.pem\", key = \"{t}/key.pem\" }}\n",
        s = d.join("state").display(),
        t = d.join("tls").display()
    );
    let config = Config::parse(&text, &d.join("rekey.toml")).unwrap();
    let store = Arc::new(Store::open(&config.daemon.state_dir).unwrap());
    let cfg = LocalCaConfig {
        key_type: KeyType::EcdsaP256,
        common_name: "t".into(),
        ca_lifetime: Duration::from_secs(86400),
        ..LocalCaConfig::default()
    };
    let ca = LocalCa::open("dev", &store.ca_dir().unwrap().join("dev"), &cfg).unwrap();
    let issuer = Arc::new(AriCa {
        ca,
        first,
        asked: AtomicUsize::new(0),
    });
    let cred = Credential {
        config: config.certificates[0].clone(),
        issuer,
        reload: Arc::new(rekey::handoff::reload::NoReload),
        probes: vec![],
        audit: rekey::audit::Audit::none(),
        budget: rekey::config::IssuanceBudgets::default(),
    };
    let engine = Engine::start(
        store,
        vec![cred],
        Settings {
            max_concurrent_rotations: 1,
            backstop: Duration::from_secs(3600),
        },
        rekey::alert::Alerter::noop(),
        rekey::metrics::Metrics::new("test"),
    );
    (engine, tmp)
}

async fn generation_reaches(engine: &Engine, g: u64, within: Duration) -> bool {
    let mut rx = engine.handle().subscribe();
    let reached = tokio::time::timeout(
        within,
        rx.wait_for(|s| {
            s.get("web")
                .and_then(|c| c.generation)
                .is_some_and(|x| x >= g)
        }),
    )
    .await
    .is_ok();
    reached
}

#[tokio::test]
async fn a_near_window_renews_long_before_renew_before_would() {
    // renew_before (33% of 1h) would wait 40 minutes; the window says 1-2 s.
    let (engine, _tmp) = run(First::In(Duration::from_secs(1), Duration::from_secs(2))).await;
    assert!(generation_reaches(&engine, 1, Duration::from_secs(10)).await);
    assert!(
        generation_reaches(&engine, 2, Duration::from_secs(10)).await,
        "did not renew inside the window"
    );
    let s = engine.handle().snapshot()["web"].clone();
    assert_eq!(s.generation, Some(2));
    engine.shutdown().await;
}

#[tokio::test]
async fn a_passed_window_renews_at_once() {
    let (engine, _tmp) = run(First::Passed).await;
    assert!(
        generation_reaches(&engine, 2, Duration::from_secs(10)).await,
        "a passed window did not renew"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn an_invalid_window_is_ignored() {
    let (engine, _tmp) = run(First::Invalid).await;
    assert!(generation_reaches(&engine, 1, Duration::from_secs(10)).await);
    // renew_before applies: nothing happens for a long while. Absence can
    // only be checked by waiting; 1.5 s is far past where a bad pick would land.
    assert!(
        !generation_reaches(&engine, 2, Duration::from_millis(1500)).await,
        "an invalid window moved the renewal"
    );
    engine.shutdown().await;
}
