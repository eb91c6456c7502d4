//! Hostile input on stable, in CI, for a bounded time: the cargo-fuzz
//! target bodies (fuzz/targets.rs) over seeds and mutations of them (bit
//! flips, interesting bytes, dictionary tokens, splices, truncation), plus
//! proptest over arbitrary text and bytes. No input may panic or take more
//! than a second. `REKEY_FUZZ_SECONDS` sets the budget per target (default
//! 6 s); the long runs are `scripts/fuzz` (cargo-fuzz; docs/development.md).

use crate::support as common;
#[path = "../../fuzz/targets.rs"]
mod targets;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use common::scorecard::Scenario;
use proptest::prelude::*;

const CONFIG_TOKENS: &[&str] = &[
    "[daemon]\n",
    "[[certificate]]\n",
    "[issuer.x]\n",
    "[[alert]]\n",
    "name = ",
    "issuer = ",
    "type = \"local-ca\"\n",
    "type = \"acme\"\n",
    "files = { cert = \"/a\", key = \"/b\" }\n",
    "dns_names = [\"a\", \"*.b\"]\n",
    "ip_addresses = [\"::1\", \"300.1.1.1\"]\n",
    "lifetime = ",
    "renew_before = ",
    "\"33%\"",
    "\"-1%\"",
    "\"1e309%\"",
    "\"18446744073709551616s\"",
    "\"0s\"",
    "\"9999999999d\"",
    "jitter = ",
    "key_mode = \"0777\"",
    "swap = \"symlink\"\n",
    "reload = ",
    "verify = [",
    "{ type = \"tls\", connect = \"[::1]:99999\" }",
    "]",
    "{",
    "}",
    "=",
    "\"",
    "'''",
    "\n",
    "\\u0000",
    "#",
    "on_failure = ",
    "headers = { a = { file = \"\" } }",
    "events = [\"x\"]",
];

const PEM_TOKENS: &[&str] = &[
    "-----BEGIN CERTIFICATE-----\n",
    "-----END CERTIFICATE-----\n",
    "-----BEGIN PRIVATE KEY-----\n",
    "-----END PRIVATE KEY-----\n",
    "-----BEGIN EC PRIVATE KEY-----\n",
    "-----END EC PRIVATE KEY-----\n",
    "-----BEGIN RSA PRIVATE KEY-----\n",
    "MII",
    "AAAA",
    "====",
    "\n",
    "\r\n",
    "\u{ff}",
    "\x00",
];

const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "\"committed\":",
    "\"previous\":",
    "\"next_generation\":",
    "\"pending\":",
    "\"generation\":",
    "\"step\":\"rolling_back\"",
    "\"jitter_draw\":",
    "18446744073709551615",
    "-1",
    "1e400",
    "null",
    "\"ari\":",
    "{\"window\":[{\"secs_since_epoch\":18446744073709551615,\"nanos_since_epoch\":4000000000}",
    ",",
];

fn budget() -> Duration {
    let secs = std::env::var("REKEY_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6.0);
    Duration::from_secs_f64(secs)
}

fn mutate(rng: &mut fastrand::Rng, input: &[u8], corpus: &[Vec<u8>], tokens: &[&str]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.usize(1..=4) {
        let len = out.len();
        let at = if len == 0 { 0 } else { rng.usize(..=len) };
        match rng.u8(..8) {
            0 if len > 0 => {
                let i = rng.usize(..len);
                out[i] ^= 1 << rng.u8(..8);
            }
            1 if len > 0 => {
                let i = rng.usize(..len);
                out[i] = *[0u8, 0xff, b'\n', b'"', b'[', b'=', b'-', b'9', 0x80]
                    .get(rng.usize(..9))
                    .unwrap_or(&0);
            }
            2 => {
                let t = tokens[rng.usize(..tokens.len())].as_bytes();
                out.splice(at..at, t.iter().copied());
            }
            3 if len > 0 => {
                let end = (at + rng.usize(..64)).min(len);
                out.drain(at.min(end)..end);
            }
            4 if len > 0 => {
                let start = rng.usize(..len);
                let end = (start + rng.usize(..256)).min(len);
                let chunk: Vec<u8> = out[start..end].to_vec();
                out.splice(at..at, chunk);
            }
            5 => {
                let other = &corpus[rng.usize(..corpus.len())];
                if !other.is_empty() {
                    let s = rng.usize(..other.len());
                    out.splice(at..at, other[s..].iter().copied().take(512));
                }
            }
            6 => out.truncate(at),
            _ => out.insert(at.min(out.len()), rng.u8(..)),
        }
    }
    out.truncate(64 * 1024);
    out
}

/// Run `target` on seeds and mutations until the budget is spent.
fn fuzz(name: &str, target: fn(&[u8]), seeds: Vec<Vec<u8>>, tokens: &[&str]) {
    let mut sc = Scenario::new(
        "hostile_input",
        &format!("{name}: seeds and mutations, bounded time"),
    );
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let deadline = Instant::now() + budget();
    let mut corpus = seeds;
    let mut slowest = Duration::ZERO;
    let mut i = 0usize;
    while Instant::now() < deadline || i < corpus.len() {
        let input = if i < corpus.len() {
            corpus[i].clone()
        } else {
            let base = &corpus[rng.usize(..corpus.len())];
            mutate(&mut rng, base, &corpus, tokens)
        };
        i += 1;
        sc.round();
        let t = Instant::now();
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| target(&input)));
        let took = t.elapsed();
        slowest = slowest.max(took);
        let keep = std::env::temp_dir().join(format!("rekey-hostile-{name}-{seed}-{i}.bin"));
        if !sc.check("no panic", r.is_ok(), || {
            let _ = std::fs::write(&keep, &input);
            format!("input saved to {}", keep.display())
        }) {
            break;
        }
        sc.check("under 1 s per input", took < Duration::from_secs(1), || {
            let _ = std::fs::write(&keep, &input);
            format!("{took:?}; input saved to {}", keep.display())
        });
        // Keep some mutants as new bases, so mutations compound.
        if i > corpus.len() && rng.u8(..16) == 0 && corpus.len() < 512 {
            corpus.push(input);
        }
    }
    sc.note(format!("{i} inputs, slowest {slowest:?}, seed {seed}"));
    sc.finish();
}

fn config_seeds() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(root.join("config"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    out.push(b"[daemon]\nstate_dir = \"/tmp/x\"\n[issuer.d]\ntype = \"local-ca\"\n[[certificate]]\nname = \"w\"\nissuer = \"d\"\ndns_names = [\"a.test\"]\nfiles = { bundle = \"/tmp/b.pem\" }\nreload = { type = \"signal\", signal = \"HUP\", pid = 1 }\nverify = [{ type = \"http\", url = \"http://127.0.0.1/{fingerprint}\" }]\n".to_vec());
    out.push(Vec::new());
    out
}

fn pem_seeds() -> Vec<Vec<u8>> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["app.test".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let sep = |parts: &[&[u8]]| parts.join(&0xffu8);
    vec![
        sep(&[
            leaf.pem().as_bytes(),
            ca.pem().as_bytes(),
            ca.pem().as_bytes(),
        ]),
        sep(&[leaf.pem().as_bytes(), b"", ca.pem().as_bytes()]),
        sep(&[
            format!("{}{}", key.serialize_pem(), leaf.pem()).as_bytes(),
            b"",
        ]),
        rsa.serialize_pem().into_bytes(),
        leaf.der().to_vec(),
    ]
}

fn journal_seeds() -> Vec<Vec<u8>> {
    let mut j = rekey::engine::journal::Journal::default();
    let mut out = vec![serde_json::to_vec(&j).unwrap()];
    let g = j.allocate();
    j.commit(g, 0.3);
    j.pending = Some(rekey::engine::journal::Pending {
        generation: j.allocate(),
        step: rekey::engine::journal::Step::Publishing,
    });
    j.ari = Some(Box::new(rekey::engine::journal::Ari {
        window: Some((std::time::SystemTime::now(), std::time::SystemTime::now())),
        recheck_at: std::time::SystemTime::now(),
    }));
    out.push(serde_json::to_vec_pretty(&j).unwrap());
    out
}

#[test]
fn config_parsing_survives_hostile_text() {
    fuzz(
        "config (Config::parse)",
        targets::config,
        config_seeds(),
        CONFIG_TOKENS,
    );
}

#[test]
fn issuer_answers_survive_hostile_bytes() {
    fuzz(
        "pem (pem_certs, parse_der, load_key, validate_issued)",
        targets::pem,
        pem_seeds(),
        PEM_TOKENS,
    );
}

#[test]
fn journal_survives_hostile_bytes() {
    fuzz(
        "journal (read back, recovery, allocate)",
        targets::journal,
        journal_seeds(),
        JSON_TOKENS,
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn config_any_text(s in "\\PC{0,600}") {
        targets::config(s.as_bytes());
    }

    #[test]
    fn pem_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..2048)) {
        targets::pem(&b);
    }

    #[test]
    fn journal_any_json_numbers(c in any::<u64>(), p in any::<u64>(), n in any::<u64>(), g in any::<u64>()) {
        let text = format!("{{\"committed\":{c},\"previous\":{p},\"next_generation\":{n},\"pending\":{{\"generation\":{g},\"step\":\"handoff\"}},\"jitter_draw\":0.5}}");
        targets::journal(text.as_bytes());
    }
}

/// Generation numbers at the top of u64 (a corrupted or hand-edited
/// journal) must not overflow when the next one is allocated.
#[test]
fn journal_at_u64_max() {
    let max = u64::MAX;
    for text in [
        format!("{{\"committed\":{max},\"previous\":null,\"next_generation\":1,\"pending\":null,\"jitter_draw\":0.5}}"),
        format!("{{\"committed\":1,\"previous\":{max},\"next_generation\":{max},\"pending\":null,\"jitter_draw\":0.5}}"),
    ] {
        targets::journal(text.as_bytes());
    }
}
