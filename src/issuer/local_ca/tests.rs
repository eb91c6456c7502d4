//! The local CA: creation, signing, and the rollover through its steps
//! (time is passed to `tick`, so no test waits for a CA to age).

use super::*;
use crate::cert::{build_csr, generate_key, validate_issued, IssuedPem, Names};
use crate::config::KeyType;
use std::os::unix::fs::PermissionsExt;

fn cfg() -> LocalCaConfig {
    LocalCaConfig {
        key_type: KeyType::EcdsaP256,
        common_name: "test CA".into(),
        ca_lifetime: Duration::from_secs(86400),
        ..LocalCaConfig::default()
    }
}

#[tokio::test]
async fn creates_once_signs_every_key_type_and_chains_to_root() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca").join("dev");
    let ca = LocalCa::open("dev", &dir, &cfg()).unwrap();
    let mode = std::fs::metadata(dir.join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let names = Names {
        common_name: "app.test".into(),
        dns_names: vec!["app.test".into()],
        ip_addresses: vec!["127.0.0.1".parse().unwrap()],
    };
    for kt in KeyType::ALL {
        let key = generate_key(kt).unwrap();
        let req = IssueRequest {
            credential: "web".into(),
            csr_der: build_csr(&key, &names).unwrap(),
            names: names.clone(),
            lifetime: Duration::from_secs(600),
        };
        let issued = ca.issue(&req).await.unwrap();
        let pem = IssuedPem {
            cert_pem: &issued.cert_pem,
            chain_pem: &issued.chain_pem,
            ca_pem: issued.ca_pem.as_deref(),
        };
        let info = validate_issued(&pem, &key.public_key(), &names, SystemTime::now())
            .unwrap_or_else(|e| panic!("{kt:?}: {e}"));
        let span = info.lifetime().as_secs();
        assert!((599..=601).contains(&span), "{kt:?}: lifetime {span}");
    }
    // Reopening keeps the same root.
    let again = LocalCa::open("dev", &dir, &cfg()).unwrap();
    assert_eq!(again.ca_pem(), ca.ca_pem());
    // Every certificate is on record at the CA, private to rekey.
    let log = std::fs::read_to_string(dir.join("issued.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), KeyType::ALL.len());
    assert_eq!(lines[0]["credential"], "web");
    assert_eq!(lines[0]["names"], serde_json::json!(["app.test"]));
    assert_eq!(lines[0]["serial"].as_str().unwrap().len(), 32);
    let mode = std::fs::metadata(dir.join("issued.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn revoke_says_the_local_ca_cannot_and_why() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = LocalCa::open("dev", &tmp.path().join("dev"), &cfg()).unwrap();
    match ca.revoke("web", "unused").await.unwrap() {
        Revocation::Unsupported(why) => {
            assert!(why.contains("\"dev\"") && why.contains("no CRL"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn mismatched_ca_files_are_refused_with_a_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    LocalCa::open("dev", &dir, &cfg()).unwrap();
    let other = generate_key(KeyType::EcdsaP256).unwrap();
    std::fs::write(dir.join("ca.key"), other.pem().as_bytes()).unwrap();
    let err = LocalCa::open("dev", &dir, &cfg()).unwrap_err().to_string();
    assert!(
        err.contains("do not belong together") && err.contains("dev"),
        "{err}"
    );
}

fn names() -> Names {
    Names {
        common_name: "app.test".into(),
        dns_names: vec!["app.test".into()],
        ip_addresses: vec![],
    }
}

/// Issue a leaf living `lifetime` from `ca`.
async fn leaf(ca: &LocalCa, lifetime: Duration) -> Issued {
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let req = IssueRequest {
        credential: "web".into(),
        csr_der: build_csr(&key, &names()).unwrap(),
        names: names(),
        lifetime,
    };
    ca.issue(&req).await.unwrap()
}

/// Which of `roots` (PEM bundle) signed `issued`'s leaf: its position.
fn signed_by(issued: &Issued, roots: &str) -> usize {
    let key_of =
        |pem: &str| cert::parse_der(&cert::pem_certs(pem.as_bytes(), "c").unwrap()[0]).unwrap();
    let leaf = key_of(&issued.cert_pem);
    let all = cert::pem_certs(roots.as_bytes(), "roots").unwrap();
    all.iter()
        .position(|r| {
            let root = crate::store::Material {
                cert_pem: issued.cert_pem.clone(),
                chain_pem: String::new(),
                key_pem: Default::default(),
                ca_pem: Some(crate::engine::disk::pem_encode("CERTIFICATE", r)),
                pkcs12: None,
            };
            let pem = IssuedPem {
                cert_pem: &root.cert_pem,
                chain_pem: "",
                ca_pem: root.ca_pem.as_deref(),
            };
            validate_issued(&pem, &leaf.public_key, &names(), SystemTime::now()).is_ok()
        })
        .expect("signed by none of the roots")
}

fn short_cfg() -> LocalCaConfig {
    LocalCaConfig {
        ca_lifetime: Duration::from_secs(100),
        ca_renew_before: crate::config::Share::Fraction(0.5),
        ..cfg()
    }
}

#[tokio::test]
async fn a_rollover_publishes_both_roots_switches_after_delivery_and_drops_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let ca = LocalCa::open("dev", &dir, &short_cfg()).unwrap();
    ca.trust_consumers(vec!["web".into()]);
    let mut rx = ca.trust().unwrap();
    let one = rx.borrow_and_update().clone();
    assert_eq!(cert::pem_certs(one.pem.as_bytes(), "b").unwrap().len(), 1);
    let now = SystemTime::now();

    // Not yet half way: nothing changes.
    ca.tick(now + Duration::from_secs(30));
    assert!(!rx.has_changed().unwrap());
    // Past its renewal point: the next CA, and a bundle with both.
    ca.tick(now + Duration::from_secs(60));
    assert!(rx.has_changed().unwrap());
    let both = rx.borrow_and_update().clone();
    assert_eq!(cert::pem_certs(both.pem.as_bytes(), "b").unwrap().len(), 2);
    assert!(both.pem.starts_with(&one.pem), "oldest first");
    assert!(dir.join("2/ca.key").exists());
    // Until web delivered the bundle, the old CA signs.
    let before = leaf(&ca, Duration::from_secs(20)).await;
    assert_eq!(signed_by(&before, &both.pem), 0);
    assert_eq!(before.ca_pem.as_deref(), Some(both.pem.as_str()));
    assert!(before.shortened.is_none());
    // A delivery of another bundle does not count.
    ca.trust_delivered("web", &one.digest);
    assert_eq!(
        signed_by(&leaf(&ca, Duration::from_secs(20)).await, &both.pem),
        0
    );
    ca.trust_delivered("web", &both.digest);
    let after = leaf(&ca, Duration::from_secs(20)).await;
    assert_eq!(signed_by(&after, &both.pem), 1);

    // A restart keeps the step reached.
    drop(ca);
    let ca = LocalCa::open("dev", &dir, &short_cfg()).unwrap();
    ca.trust_consumers(vec!["web".into()]);
    assert_eq!(
        signed_by(&leaf(&ca, Duration::from_secs(20)).await, &both.pem),
        1
    );
    let mut rx = ca.trust().unwrap();
    // The old CA leaves once its last leaf (20s from now) has expired.
    ca.tick(SystemTime::now() + Duration::from_secs(10));
    assert!(!rx.has_changed().unwrap());
    ca.tick(SystemTime::now() + Duration::from_secs(25));
    assert!(rx.has_changed().unwrap());
    let two = rx.borrow_and_update().clone();
    assert_eq!(cert::pem_certs(two.pem.as_bytes(), "b").unwrap().len(), 1);
    assert!(both.pem.ends_with(&two.pem));
    assert!(!dir.join("ca.key").exists() && !dir.join("ca.pem").exists());
    // Its roots are what `rekey check` and adoption trust.
    assert_eq!(root_in(&dir).unwrap().len(), 1);
    assert_eq!(ca.trust_anchors().unwrap().len(), 1);
}

#[tokio::test]
async fn a_leaf_the_ca_would_outlive_is_shortened_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = LocalCa::open("dev", &tmp.path().join("dev"), &short_cfg()).unwrap();
    let issued = leaf(&ca, Duration::from_secs(3600)).await;
    let why = issued.shortened.expect("shortened");
    assert!(why.contains("\"dev\"") && why.contains("ends at"), "{why}");
}

#[tokio::test]
async fn opens_of_one_directory_share_the_rollover_and_crash_leftovers_are_tidied() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let a = LocalCa::open("dev", &dir, &short_cfg()).unwrap();
    let b = LocalCa::open("dev", &dir, &short_cfg()).unwrap();
    a.tick(SystemTime::now() + Duration::from_secs(60));
    assert_eq!(a.ca_pem(), b.ca_pem(), "one rollover for both");
    drop((a, b));
    // A generation being written when the process died, and generation
    // 1's certificate left after its key was removed.
    let junk = dir.join(".3.rekey-0123456789abcdef.tmp");
    std::fs::create_dir(&junk).unwrap();
    let c = LocalCa::open("dev", &dir, &short_cfg()).unwrap();
    assert!(!junk.exists());
    assert_eq!(
        cert::pem_certs(c.ca_pem().as_bytes(), "b").unwrap().len(),
        2
    );
}

#[tokio::test]
async fn a_deleted_ca_directory_still_signs_from_memory_but_an_unwritable_journal_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca").join("dev");
    let ca = LocalCa::open("dev", &dir, &cfg()).unwrap();
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let req = IssueRequest {
        credential: "web".into(),
        csr_der: build_csr(&key, &names()).unwrap(),
        names: names(),
        lifetime: Duration::from_secs(600),
    };
    // A journal that cannot be replaced (a directory in its place, even for
    // root): no signature without the certificate's end on record.
    let journal = dir.join("rollover.json");
    let _ = std::fs::remove_file(&journal);
    std::fs::create_dir(journal.join("")).unwrap();
    std::fs::write(journal.join("x"), "").unwrap();
    let err = ca.issue(&req).await.unwrap_err().to_string();
    assert!(err.contains("cannot journal"), "{err}");
    // Gone altogether (the state dir deleted): the CA in memory signs on.
    std::fs::remove_dir_all(tmp.path().join("ca")).unwrap();
    let issued = ca.issue(&req).await.unwrap();
    assert_eq!(signed_by(&issued, &ca.ca_pem()), 0);
}
