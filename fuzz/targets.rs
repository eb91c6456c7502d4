//! The bodies of the fuzz targets, shared by cargo-fuzz (`fuzz_targets/`)
//! and the bounded stable run in CI (`tests/it/hostile_input.rs`). Each takes
//! arbitrary bytes and must return without panicking, whatever they are.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// `Config::parse` on any text: Ok or a located error, never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = rekey::config::Config::parse(text, Path::new("/etc/rekey/rekey.toml")) {
            // Rendering the message walks spans and suggestions: it must not panic either.
            let _ = e.to_string();
        }
    }
}

/// An issuer's answer: bytes split at 0xff into leaf, chain and CA, then
/// every parser and `validate_issued`, as the engine runs them.
pub fn pem(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0xff);
    let leaf = parts.next().unwrap_or_default();
    let chain = parts.next().unwrap_or_default();
    let ca = parts.next();
    for part in [Some(leaf), Some(chain), ca].into_iter().flatten() {
        if let Ok(ders) = rekey::cert::pem_certs(part, "fuzz") {
            for der in ders {
                let _ = rekey::cert::parse_der(&der);
            }
        }
        let _ = rekey::cert::parse_der(part);
        if let Some(key) = rekey::cert::pem_private_key(part) {
            let _ = rekey::cert::load_key(&key, "fuzz");
        }
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (leaf, chain, ca) = (text(leaf), text(chain), ca.map(text));
    let issued = rekey::cert::IssuedPem {
        cert_pem: &leaf,
        chain_pem: &chain,
        ca_pem: ca.as_deref(),
    };
    let names = rekey::cert::Names {
        common_name: "app.test".into(),
        dns_names: vec!["app.test".into(), "*.app.test".into()],
        ip_addresses: vec!["127.0.0.1"
            .parse()
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into())],
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let _ = rekey::cert::validate_issued(&issued, &[4; 65], &names, now);
}

/// A journal read back after a crash or by hand-editing: Ok or an error.
pub fn journal(data: &[u8]) {
    if let Ok(j) = serde_json::from_slice::<rekey::engine::journal::Journal>(data) {
        let _ = rekey::engine::journal::recovery(&j, true);
        let _ = rekey::engine::journal::recovery(&j, false);
        let mut j = j;
        // Numbers near u64::MAX must not overflow when allocating or committing.
        let g = j.allocate();
        j.commit(g, 0.5);
        let _ = j.keep();
    }
}
