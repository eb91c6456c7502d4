//! Tests of the directory rule (dirs.rs): writes go only into the
//! directories pinned at load, never through a symlink or a directory
//! swapped in later.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::tests_publish::{all_targets, mat};
use super::*;

const BOTH: [SwapMode; 2] = [SwapMode::Rename, SwapMode::Symlink];

/// A directory that must never be written into: a `key.pem` holding VICTIM.
fn victim(root: &Path) -> std::path::PathBuf {
    let v = root.join("victim");
    fs::create_dir(&v).unwrap();
    fs::write(v.join("key.pem"), b"VICTIM").unwrap();
    v
}

fn untouched(v: &Path) -> bool {
    fs::read(v.join("key.pem")).unwrap() == b"VICTIM" && fs::read_dir(v).unwrap().count() == 1
}

#[test]
fn a_target_dir_replaced_by_a_symlink_is_refused_and_named() {
    for swap in BOTH {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("tls");
        let v = victim(root.path());
        let targets = all_targets(&dir);
        let pins = Pins::default();
        pins.pin(&targets);
        publish(&targets, swap, &mat(1), &pins).unwrap();
        // Moved away, and a symlink to another directory in its place.
        fs::rename(&dir, root.path().join("moved")).unwrap();
        symlink(&v, &dir).unwrap();
        let err = publish(&targets, swap, &mat(2), &pins).unwrap_err();
        assert!(err.is_tamper(), "{swap:?}: {err}");
        assert!(
            err.to_string().contains(&dir.display().to_string())
                && err
                    .to_string()
                    .contains("no longer the directory rekey loaded"),
            "{err}"
        );
        assert!(untouched(&v), "{swap:?}: the victim directory was written");
        // Drift detection says so without reading the victim's files.
        let drift = diff_published(&targets, swap, &Expected::of(&targets, &mat(1)), &pins);
        assert_eq!(drift.len(), targets.len(), "{drift:?}");
        assert!(drift.iter().all(|d| d.directory_replaced), "{drift:?}");
        assert!(unpublish(&targets, swap, &pins).unwrap_err().is_tamper());
        assert!(untouched(&v));
        // Put back: writes work again.
        fs::remove_file(&dir).unwrap();
        fs::rename(root.path().join("moved"), &dir).unwrap();
        publish(&targets, swap, &mat(3), &pins).unwrap();
    }
}

#[test]
fn a_component_above_turned_into_a_symlink_or_another_directory_is_refused() {
    for swap in BOTH {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("app/tls");
        let targets = all_targets(&dir);
        let pins = Pins::default();
        pins.pin(&targets);
        publish(&targets, swap, &mat(1), &pins).unwrap();
        // app/ swapped for a symlink to a look-alike tree.
        let other = root.path().join("other");
        fs::create_dir_all(other.join("tls")).unwrap();
        fs::rename(root.path().join("app"), root.path().join("app.old")).unwrap();
        symlink(&other, root.path().join("app")).unwrap();
        let err = publish(&targets, swap, &mat(2), &pins).unwrap_err();
        assert!(err.is_tamper(), "{err}");
        assert_eq!(fs::read_dir(other.join("tls")).unwrap().count(), 0);
        // A real directory put in its place is refused too.
        fs::remove_file(root.path().join("app")).unwrap();
        fs::create_dir_all(root.path().join("app/tls")).unwrap();
        assert!(publish(&targets, swap, &mat(2), &pins)
            .unwrap_err()
            .is_tamper());
        assert_eq!(
            fs::read_dir(root.path().join("app/tls")).unwrap().count(),
            0
        );
    }
}

#[test]
fn symlinks_present_at_load_are_part_of_the_configured_path() {
    let root = tempfile::tempdir().unwrap();
    let real = root.path().join("usr/share/ssl");
    fs::create_dir_all(&real).unwrap();
    symlink(&real, root.path().join("ssl")).unwrap();
    let targets = all_targets(&root.path().join("ssl"));
    let pins = Pins::default();
    pins.pin(&targets);
    for n in 1..=2 {
        publish(&targets, SwapMode::Rename, &mat(n), &pins).unwrap();
    }
    assert_eq!(
        fs::read(real.join("key.pem")).unwrap(),
        *mat(2).render(FileKind::Key).unwrap()
    );
}

#[test]
fn a_removed_directory_is_created_again_in_the_same_parent_only() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tls");
    let targets = all_targets(&dir);
    let pins = Pins::default();
    pins.pin(&targets);
    publish(&targets, SwapMode::Rename, &mat(1), &pins).unwrap();
    fs::remove_dir_all(&dir).unwrap();
    assert!(diff_published(
        &targets,
        SwapMode::Rename,
        &Expected::of(&targets, &mat(1)),
        &pins
    )
    .iter()
    .all(|d| d.reason == "missing" && !d.directory_replaced));
    publish(&targets, SwapMode::Rename, &mat(2), &pins).unwrap();
    assert!(dir.join("key.pem").is_file());
    // Removed again, and its parent swapped: refused.
    let v = victim(root.path());
    let sub = root.path().join("sub");
    fs::create_dir(&sub).unwrap();
    let targets = all_targets(&sub.join("tls"));
    let pins = Pins::default();
    pins.pin(&targets);
    publish(&targets, SwapMode::Rename, &mat(1), &pins).unwrap();
    fs::rename(&sub, root.path().join("sub.old")).unwrap();
    symlink(&v, &sub).unwrap();
    assert!(publish(&targets, SwapMode::Rename, &mat(2), &pins)
        .unwrap_err()
        .is_tamper());
    assert!(untouched(&v));
}

#[test]
fn directories_missing_at_load_are_created_without_following_a_planted_symlink() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/b/tls");
    let targets = all_targets(&dir);
    let pins = Pins::default();
    pins.pin(&targets);
    // Planted before the first write, where rekey will create `a/b`.
    let v = victim(root.path());
    fs::create_dir(root.path().join("a")).unwrap();
    symlink(&v, root.path().join("a/b")).unwrap();
    let err = publish(&targets, SwapMode::Rename, &mat(1), &pins).unwrap_err();
    assert!(
        err.is_tamper() && err.to_string().contains("a/b is a symlink"),
        "{err}"
    );
    assert!(untouched(&v));
    fs::remove_file(root.path().join("a/b")).unwrap();
    publish(&targets, SwapMode::Rename, &mat(1), &pins).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(root.path().join("a/b"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    // From now on the created directory is the pinned one.
    fs::rename(root.path().join("a/b"), root.path().join("a/b.old")).unwrap();
    fs::create_dir_all(&dir).unwrap();
    assert!(publish(&targets, SwapMode::Rename, &mat(2), &pins)
        .unwrap_err()
        .is_tamper());
}

#[test]
fn an_api_key_file_is_written_and_removed_only_in_its_pinned_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("keys");
    fs::create_dir(&dir).unwrap();
    let file = dir.join("key.pem");
    let pins = Pins::default();
    pins.pin_file(&file);
    publish_file(&file, b"k1", 0o600, None, None, &pins).unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"k1");
    let v = victim(root.path());
    fs::rename(&dir, root.path().join("keys.old")).unwrap();
    symlink(&v, &dir).unwrap();
    assert!(publish_file(&file, b"k2", 0o600, None, None, &pins)
        .unwrap_err()
        .is_tamper());
    assert!(remove_file(&file, &pins).unwrap_err().is_tamper());
    assert!(untouched(&v));
}
