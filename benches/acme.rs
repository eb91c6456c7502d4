//! Full ACME issuance latency against a CA that scripts/bench-acme starts
//! (local Pebble, no validation sleeps): key + CSR + new order + http-01
//! validation + finalize + download + validation of the answer.
//! Reads REKEY_BENCH_DIRECTORY, REKEY_BENCH_BUNDLE, REKEY_BENCH_LISTEN,
//! REKEY_BENCH_DOMAIN and REKEY_BENCH_N; prints one line per figure.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use rekey::cert::{build_csr, generate_key, validate_issued, IssuedPem, Names};
use rekey::config::{Config, IssuerConfig, KeyType};
use rekey::issuer::acme::Acme;
use rekey::issuer::{IssueRequest, Issuer};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set; run scripts/bench-acme"))
}

fn open(state: &Path, directory: &str, bundle: &str, listen: &str) -> Acme {
    let text = format!(
        "[daemon]\nstate_dir = \"{}\"\n[issuer.bench]\ntype = \"acme\"\ndirectory = \"{directory}\"\ntrust_bundle = \"{bundle}\"\nchallenge = {{ type = \"http-01\", listen = \"{listen}\" }}\n",
        state.display()
    );
    let cfg = Config::parse(&text, &state.join("rekey.toml")).unwrap();
    let Some(IssuerConfig::Acme(a)) = cfg.issuers.get("bench") else {
        panic!("no acme issuer")
    };
    Acme::open("bench", state, a).unwrap()
}

async fn once(acme: &Acme, domain: &str) -> Duration {
    let t = Instant::now();
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let names = Names {
        common_name: domain.to_string(),
        dns_names: vec![domain.to_string()],
        ip_addresses: vec![],
    };
    let req = IssueRequest {
        credential: "bench".into(),
        csr_der: build_csr(&key, &names).unwrap(),
        names: names.clone(),
        lifetime: Duration::from_secs(86400),
    };
    let issued = acme.issue(&req).await.unwrap();
    let pem = IssuedPem {
        cert_pem: &issued.cert_pem,
        chain_pem: &issued.chain_pem,
        ca_pem: None,
    };
    validate_issued(&pem, &key.public_key(), &names, SystemTime::now()).unwrap();
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (directory, bundle, listen, domain) = (
        env("REKEY_BENCH_DIRECTORY"),
        env("REKEY_BENCH_BUNDLE"),
        env("REKEY_BENCH_LISTEN"),
        env("REKEY_BENCH_DOMAIN"),
    );
    let n: usize = env("REKEY_BENCH_N").parse().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        state.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    // The account is created here, outside the figures.
    let acme = open(state.path(), &directory, &bundle, &listen);
    once(&acme, &domain).await;

    // Daemon steady state: one issuer, directory cached, connection reused.
    let mut warm = Vec::with_capacity(n);
    for _ in 0..n {
        warm.push(once(&acme, &domain).await);
    }
    // Like a fresh process: new issuer object (directory fetch, new TLS connection).
    let mut cold = Vec::with_capacity(n);
    for _ in 0..n {
        let acme = open(state.path(), &directory, &bundle, &listen);
        cold.push(once(&acme, &domain).await);
    }
    let (min, max) = (warm.iter().min().copied(), warm.iter().max().copied());
    println!("rekey_warm_median_ms {}", ms(median(warm)));
    println!("rekey_warm_min_ms {}", ms(min.unwrap_or_default()));
    println!("rekey_warm_max_ms {}", ms(max.unwrap_or_default()));
    println!("rekey_cold_median_ms {}", ms(median(cold)));
}
