//! Tests of Store and CredentialStore: lock, modes, generations, journal.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::tests_publish::mat;
use super::*;

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A state dir inside a fresh tempdir (which itself is 0700).
fn state() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("state")).unwrap();
    (tmp, store)
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Journal {
    generation: u64,
    step: String,
}

#[test]
fn open_creates_parents_0700_and_locks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/state");
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.root(), dir);
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(mode_of(&tmp.path().join("a")), 0o700);
    let err = Store::open(&dir).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains(dir.to_str().unwrap()), "{err}");
    drop(store);
    Store::open(&dir).unwrap();
}

#[test]
fn open_refuses_a_state_dir_others_can_enter() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let err = Store::open(&dir).unwrap_err();
    assert!(
        matches!(err, StoreError::InsecureStateDir { mode: 0o755, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 700"), "{err}");
}

#[test]
fn open_refuses_a_state_dir_another_user_owns() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to give the state dir to another user");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let err = Store::open(&dir).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::ForeignStateDir {
                owner: 65534,
                me: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("chown -R 0"), "{err}");
    // Nothing was written into it.
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn ca_dir_is_created_0700() {
    let (_tmp, store) = state();
    let ca = store.ca_dir().unwrap();
    assert_eq!(ca, store.root().join("ca"));
    assert_eq!(mode_of(&ca), 0o700);
}

#[test]
fn stage_and_load_round_trip() {
    let (_tmp, store) = state();
    let cred = store.credential("web");
    assert!(!cred.has_generation(1));
    cred.stage(1, &mat(1)).unwrap();
    let no_ca = Material {
        ca_pem: None,
        ..mat(2)
    };
    cred.stage(2, &no_ca).unwrap();
    assert!(cred.has_generation(1) && cred.has_generation(2));
    let gen1 = cred.load_generation(1).unwrap();
    assert_eq!(gen1.cert_pem, mat(1).cert_pem);
    assert_eq!(gen1.chain_pem, mat(1).chain_pem);
    assert_eq!(*gen1.key_pem, *mat(1).key_pem);
    assert_eq!(gen1.ca_pem, mat(1).ca_pem);
    assert_eq!(cred.load_generation(2).unwrap().ca_pem, None);
    assert_eq!(gen1.pkcs12, None);
    // A keystore is kept with its generation, byte for byte, key mode.
    let with_p12 = Material {
        pkcs12: Some(Zeroizing::new(b"\x30\x82keystore".to_vec())),
        ..mat(3)
    };
    cred.stage(3, &with_p12).unwrap();
    assert_eq!(cred.load_generation(3).unwrap().pkcs12, with_p12.pkcs12);
    let dir = store.root().join("certs/web");
    assert_eq!(mode_of(&dir.join("gen-3/keystore.p12")), 0o600);
    fs::remove_dir_all(dir.join("gen-3")).unwrap();
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(mode_of(&dir.join("gen-1")), 0o700);
    assert_eq!(mode_of(&dir.join("gen-1/key.pem")), 0o600);
    // Re-staging replaces the generation whole; no temp dirs remain.
    cred.stage(1, &mat(7)).unwrap();
    assert_eq!(cred.load_generation(1).unwrap().cert_pem, mat(7).cert_pem);
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn incomplete_or_missing_generations_are_not_there() {
    let (_tmp, store) = state();
    let cred = store.credential("web");
    cred.stage(1, &mat(1)).unwrap();
    fs::remove_file(store.root().join("certs/web/gen-1/chain.pem")).unwrap();
    assert!(!cred.has_generation(1));
    let err = cred.load_generation(3).unwrap_err();
    assert!(err.to_string().contains("gen-3"), "{err}");
}

#[test]
fn load_refuses_a_key_others_can_read() {
    let (_tmp, store) = state();
    let cred = store.credential("web");
    cred.stage(1, &mat(1)).unwrap();
    let key = store.root().join("certs/web/gen-1/key.pem");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = cred.load_generation(1).unwrap_err();
    assert!(matches!(err, StoreError::InsecureKeyFile { .. }), "{err}");
}

#[test]
fn prune_keeps_only_the_given_generations_and_removes_temps() {
    let (_tmp, store) = state();
    let cred = store.credential("web");
    for n in 1..=4 {
        cred.stage(n, &mat(n as u32)).unwrap();
    }
    let dir = store.root().join("certs/web");
    fs::create_dir(dir.join(".gen-5.rekey-dead.tmp")).unwrap();
    fs::write(dir.join(".journal.json.rekey-dead.tmp"), "{").unwrap();
    fs::create_dir(dir.join("unrelated")).unwrap();
    cred.save_journal(&Journal {
        generation: 4,
        step: "x".into(),
    })
    .unwrap();
    cred.prune(&[2, 4]).unwrap();
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["gen-2", "gen-4", "journal.json", "unrelated"]);
    assert!(cred.has_generation(2) && cred.has_generation(4) && !cred.has_generation(1));
    // A credential never written is nothing to prune.
    store.credential("other").prune(&[]).unwrap();
}

#[test]
fn journal_round_trip_absent_and_corrupt() {
    let (_tmp, store) = state();
    let cred = store.credential("web");
    assert_eq!(cred.load_journal::<Journal>().unwrap(), None);
    let j = Journal {
        generation: 3,
        step: "publish".into(),
    };
    cred.save_journal(&j).unwrap();
    assert_eq!(cred.load_journal::<Journal>().unwrap(), Some(j));
    let path = store.root().join("certs/web/journal.json");
    assert_eq!(mode_of(&path), 0o600);
    fs::write(&path, "{\"generation\": 3,").unwrap();
    let err = cred.load_journal::<Journal>().unwrap_err();
    assert!(matches!(err, StoreError::CorruptJournal { .. }), "{err}");
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
}

#[test]
fn readonly_store_reads_but_never_writes() {
    let (tmp, store) = state();
    store.credential("web").stage(1, &mat(1)).unwrap();
    let ro = Store::open_readonly(store.root()); // no lock: works while the daemon runs
    let cred = ro.credential("web");
    assert!(cred.has_generation(1));
    assert_eq!(cred.load_journal::<Journal>().unwrap(), None);
    assert!(matches!(
        cred.stage(2, &mat(2)),
        Err(StoreError::ReadOnly { .. })
    ));
    assert!(matches!(
        cred.save_journal(&1),
        Err(StoreError::ReadOnly { .. })
    ));
    assert!(matches!(cred.prune(&[]), Err(StoreError::ReadOnly { .. })));
    assert!(!ro.ca_dir().unwrap().exists());
    let absent = Store::open_readonly(&tmp.path().join("nowhere"));
    assert!(!absent.root().exists());
    assert_eq!(
        absent.credential("web").load_journal::<Journal>().unwrap(),
        None
    );
}

#[test]
fn credential_names_cannot_escape_the_state_dir() {
    let (_tmp, store) = state();
    for name in ["", "..", ".hidden", "a/b", "../../etc"] {
        let err = store.credential(name).stage(1, &mat(1)).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidName { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_generation_read_back_matches_the_committed_digests() {
    let (_tmp, store) = state();
    let cs = store.credential("web");
    cs.stage(1, &mat(1)).unwrap();
    let targets: Vec<Target> = [FileKind::Fullchain, FileKind::Key, FileKind::Ca]
        .iter()
        .map(|&kind| Target {
            kind,
            path: Path::new("/nonexistent").join(kind.as_str()),
            mode: 0o600,
            uid: None,
            gid: None,
        })
        .collect();
    let e = Expected::of(&targets, &mat(1));
    assert!(e.matches(&cs.load_generation(1).unwrap()));
    assert_eq!(cs.load_cert_pem(1).unwrap(), mat(1).cert_pem);
    assert!(!e.matches(&mat(2)));
    // One byte of the key differs: not the committed generation.
    let mut other_key = mat(1);
    other_key.key_pem.push('\n');
    assert!(!e.matches(&other_key));
    let key = mat(1).render(FileKind::Key).unwrap();
    assert_eq!(e.digest(FileKind::Key), Some(&sha256(&key)));
    assert_eq!(e.digest(FileKind::Cert), None, "no such target");
    // A CA file the material cannot fill has no digest, and only a copy
    // that cannot fill it either is the same generation.
    let no_ca = Material {
        ca_pem: None,
        ..mat(1)
    };
    let e = Expected::of(&targets, &no_ca);
    assert_eq!(e.digest(FileKind::Ca), None);
    assert!(e.matches(&no_ca) && !e.matches(&mat(1)));
}
