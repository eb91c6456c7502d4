//! The backstop: one engine task re-checks every credential's published
//! files once per period (no timer per credential), so a change that no file
//! event reported is still repaired. Here the engine runs without the file
//! watcher, so only the backstop can notice.

use std::sync::Arc;
use std::time::Duration;

use rekey::config::{Config, KeyType, LocalCaConfig};
use rekey::engine::{backstop_pace, Credential, Engine, Settings, BACKSTOP_MIN_TICK};
use rekey::issuer::local_ca::LocalCa;
use rekey::store::Store;

#[test]
fn the_pace_covers_every_credential_once_per_period_without_waking_more_than_once_a_tick() {
    let five_min = Duration::from_secs(300);
    assert_eq!(backstop_pace(0, five_min), (five_min, 0));
    assert_eq!(backstop_pace(1, five_min), (five_min, 1));
    assert_eq!(backstop_pace(10, five_min), (Duration::from_secs(30), 1));
    assert_eq!(backstop_pace(10_000, five_min), (BACKSTOP_MIN_TICK, 34));
    for n in [1usize, 2, 7, 299, 300, 301, 10_000, 1_000_000] {
        for period in [
            Duration::from_secs(60),
            five_min,
            Duration::from_secs(86_400),
        ] {
            let (tick, batch) = backstop_pace(n, period);
            assert!(tick >= BACKSTOP_MIN_TICK, "{n} {period:?}");
            assert!((1..=n).contains(&batch), "{n} {period:?}");
            // A whole round fits in the period (one tick of slack for rounding).
            let ticks = n.div_ceil(batch) as u32;
            assert!(
                tick * ticks <= period + tick,
                "{n} {period:?}: {tick:?} x {ticks}"
            );
        }
    }
}

#[tokio::test]
async fn files_changed_behind_its_back_are_restored_by_the_backstop_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut text = format!(
        "[daemon]\nstate_dir = \"{}\"\n[issuer.dev]\ntype = \"local-ca\"\n",
        d.join("state").display()
    );
    let names = ["a", "b", "c"];
    for n in names {
        text.push_str(&format!(
            "[[certificate]]\nname = \"{n}\"\nissuer = \"dev\"\ndns_names = [\"{n}.localhost\"]\n\
             files = {{ cert = \"{t}/{n}/cert.pem\", key = \"{t}/{n}/key.pem\" }}\n",
            t = d.join("tls").display()
        ));
    }
    let config = Config::parse(&text, &d.join("rekey.toml")).unwrap();
    let store = Arc::new(Store::open(&config.daemon.state_dir).unwrap());
    let ca_cfg = LocalCaConfig {
        key_type: KeyType::EcdsaP256,
        common_name: "t".into(),
        ca_lifetime: Duration::from_secs(86400),
        ..LocalCaConfig::default()
    };
    let ca: Arc<dyn rekey::issuer::Issuer> =
        Arc::new(LocalCa::open("dev", &store.ca_dir().unwrap().join("dev"), &ca_cfg).unwrap());
    let creds = config
        .certificates
        .iter()
        .map(|c| Credential {
            config: c.clone(),
            issuer: ca.clone(),
            reload: Arc::new(rekey::handoff::reload::NoReload),
            probes: vec![],
            audit: rekey::audit::Audit::none(),
            budget: rekey::config::IssuanceBudgets::default(),
        })
        .collect();
    let engine = Engine::start(
        store,
        creds,
        Settings {
            max_concurrent_rotations: 1,
            // Two credentials per one-second tick: a round takes two ticks.
            backstop: Duration::from_secs(2),
        },
        rekey::alert::Alerter::noop(),
        rekey::metrics::Metrics::new("test"),
    );
    let mut rx = engine.handle().subscribe();
    tokio::time::timeout(
        Duration::from_secs(30),
        rx.wait_for(|s| {
            s.len() == names.len() && s.values().all(|c| c.state == rekey::status::State::Valid)
        }),
    )
    .await
    .expect("issuance")
    .unwrap();
    let cert = |n: &str| d.join("tls").join(n).join("cert.pem");
    let issued: Vec<String> = names
        .iter()
        .map(|n| std::fs::read_to_string(cert(n)).unwrap())
        .collect();
    for n in names {
        std::fs::write(cert(n), "tampered").unwrap();
    }
    let restored = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let now: Vec<String> = names
                .iter()
                .map(|n| std::fs::read_to_string(cert(n)).unwrap_or_default())
                .collect();
            if now == issued {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        restored.is_ok(),
        "the backstop did not restore every tampered file"
    );
    engine.shutdown().await;
}
