//! A state dir written before certificates and API keys shared one engine
//! is adopted as it is: nothing is issued or minted again, for either kind.
//!
//! The journals below are the exact text the earlier rekey wrote (taken
//! from a state dir it made: the committed generation of a certificate and
//! of an API key, with their issuance ledgers). The test makes real
//! generations with this rekey, stops it, writes those texts over its
//! journals (with this run's numbers), and starts it again.

use std::time::Duration;

use crate::support::*;

/// A certificate's journal as the earlier rekey wrote it.
const CERT_JOURNAL: &str = r#"{
  "committed": 1,
  "previous": null,
  "next_generation": 2,
  "pending": null,
  "jitter_draw": 0.8671100990700525,
  "ari": null,
  "issuances": [
    ISSUED
  ]
}"#;

/// An API key's journal as the earlier rekey wrote it.
const KEY_JOURNAL: &str = r#"{
  "committed": {
    "generation": 1,
    "id": "exec-1",
    "lease": null,
    "minted_at": MINTED,
    "expires_at": 4070908800,
    "hash": "HASH"
  },
  "next_generation": 2,
  "pending": null,
  "revokes": [],
  "jitter_draw": 0.5011238569820902,
  "issuances": [
    MINTED
  ]
}"#;

/// Mints counted by the key script (its counter file).
fn minted(count: &std::path::Path) -> usize {
    std::fs::read_to_string(count)
        .map(|t| t.trim().parse().unwrap_or(0))
        .unwrap_or(0)
}

/// Certificates the local CA issued.
fn ca_issued(env: &Env) -> usize {
    std::fs::read_to_string(env.path("state/ca/dev/issued.log"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_state_dir_from_before_the_shared_engine_is_adopted_without_reissue() {
    let env = Env::new();
    let (mint, count) = env.mint_script();
    let key = env.path("app/svc.env");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    env.write_config(&format!(
        "{cert}\n[issuer.cmd]\ntype = \"exec\"\n\n[[api_key]]\nname = \"svc\"\nissuer = \"cmd\"\nfile = \"{key}\"\nformat = \"env\"\n\
         mint = {{ command = [\"{mint}\"] }}\n",
        cert = env.cert_section("web", ""),
        key = key.display(),
        mint = mint.display(),
    ));
    let d = env.start();
    let web = wait_valid(env.addr, "web", Duration::from_secs(20));
    let svc = wait_valid(env.addr, "svc", Duration::from_secs(20));
    assert_eq!(d.terminate(), Some(0));
    assert_eq!((web.generation, svc.generation), (Some(1), Some(1)));
    assert_eq!((ca_issued(&env), minted(&count)), (1, 1));

    // This run's numbers, in the earlier rekey's text.
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(env.path(p)).unwrap()).unwrap()
    };
    let cert_path = "state/certs/web/journal.json";
    let key_path = "state/certs/svc/journal.json";
    let issued = read(cert_path)["issuances"][0].to_string();
    let k = read(key_path);
    let minted_at = k["committed"]["minted_at"].to_string();
    let hash = k["committed"]["hash"].as_str().unwrap().to_string();
    std::fs::write(env.path(cert_path), CERT_JOURNAL.replace("ISSUED", &issued)).unwrap();
    std::fs::write(
        env.path(key_path),
        KEY_JOURNAL
            .replace("MINTED", &minted_at)
            .replace("HASH", &hash),
    )
    .unwrap();

    let _d = env.start();
    let web2 = wait_valid(env.addr, "web", Duration::from_secs(20));
    let svc2 = wait_valid(env.addr, "svc", Duration::from_secs(20));
    assert_eq!(web2.generation, Some(1), "{web2:?}");
    assert_eq!(web2.fingerprint, web.fingerprint, "the certificate changed");
    assert_eq!(svc2.generation, Some(1), "{svc2:?}");
    assert_eq!(svc2.serial.as_deref(), Some("exec-1"), "the key changed");
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        "SVC=s3cret-1\n",
        "the key file changed"
    );
    assert_eq!(ca_issued(&env), 1, "a certificate was issued again");
    assert_eq!(minted(&count), 1, "a key was minted again");
    // Both budgets still count the one issuance the earlier journal holds.
    for s in [&web2, &svc2] {
        let b = s.issuance_budget.as_ref().expect("a budget in status");
        assert_eq!(b.used, 1, "{}: {b:?}", s.name);
    }
}
