//! Rotation latency on the local CA, per key type: keygen + CSR + sign +
//! validate + stage + publish + commit, through the real engine and store.
//! `cargo bench --bench rotation` (scripts/bench runs it and records figures).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rekey::config::{
    CertificateConfig, Files, KeyType, LocalCaConfig, ReloadConfig, Share, SwapMode, VerifyConfig,
};
use rekey::engine::{Credential, Engine, Settings};
use rekey::issuer::local_ca::LocalCa;
use rekey::store::Store;

fn cred(dir: &std::path::Path, kt: KeyType, swap: SwapMode) -> CertificateConfig {
    let d = dir.join(kt.as_str());
    CertificateConfig {
        name: kt.as_str().to_string(),
        issuer: "dev".into(),
        common_name: "localhost".into(),
        dns_names: vec!["localhost".into()],
        ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        key_type: kt,
        lifetime: Duration::from_secs(86400),
        renew_before: Share::Fraction(0.33),
        jitter: Share::Fraction(0.05),
        swap,
        files: Files {
            cert: Some(d.join("cert.pem")),
            key: Some(d.join("key.pem")),
            fullchain: Some(d.join("fullchain.pem")),
            ..Files::default()
        },
        key_mode: 0o600,
        cert_mode: 0o644,
        owner: None,
        group: None,
        uid: None,
        gid: None,
        reload: ReloadConfig::None,
        reload_group: None,
        verify: VerifyConfig::default(),
        on_failure: rekey::config::OnFailure::Rollback,
        on_remove: rekey::config::OnRemove::Keep,
        team: None,
        labels: Default::default(),
        policy_waiver: None,
        policy_max_lifetime: None,
    }
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&tmp.path().join("state")).unwrap());
        let ca_cfg = LocalCaConfig {
            key_type: KeyType::EcdsaP256,
            common_name: "bench CA".into(),
            ca_lifetime: Duration::from_secs(86400 * 365),
            ..LocalCaConfig::default()
        };
        let ca: Arc<dyn rekey::issuer::Issuer> =
            Arc::new(LocalCa::open("dev", &store.ca_dir().unwrap().join("dev"), &ca_cfg).unwrap());
        let creds = KeyType::ALL
            .iter()
            .map(|kt| Credential {
                config: cred(tmp.path(), *kt, SwapMode::Rename).into(),
                issuer: ca.clone(),
                reload: Arc::new(rekey::handoff::reload::NoReload),
                probes: vec![],
                audit: rekey::audit::Audit::none(),
                // Hundreds of rotations of one credential: no budget.
                budget: rekey::config::IssuanceBudgets::UNLIMITED,
            })
            .collect();
        let engine = Engine::start(
            store.clone(),
            creds,
            Settings {
                max_concurrent_rotations: 1,
                backstop: Duration::from_secs(3600),
            },
            rekey::alert::Alerter::noop(),
            rekey::metrics::Metrics::new("bench"),
        );
        assert!(engine.wait_started(Duration::from_secs(60)).await);
        let h = engine.handle();
        println!("| key type | rounds | median | p99 |");
        println!("|---|---|---|---|");
        for kt in KeyType::ALL {
            // RSA key generation dominates and is slow: fewer rounds.
            let n = match kt {
                KeyType::Rsa3072 => rounds / 10,
                KeyType::Rsa4096 => rounds / 20,
                _ => rounds,
            }
            .max(5);
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let out = h.rotate(kt.as_str()).await.unwrap();
                assert_eq!(out.result.as_str(), "success", "{out:?}");
                times.push(t.elapsed());
            }
            times.sort();
            let p = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
            println!(
                "| {} | {} | {:.2} ms | {:.2} ms |",
                kt.as_str(),
                n,
                ms(p(0.5)),
                ms(p(0.99))
            );
        }
        engine.shutdown().await;
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
