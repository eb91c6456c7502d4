//! Publishing to the application's paths (rename or symlink swap), drift
//! detection and reading back. The semantics are documented on the module
//! [`crate::store`].

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use super::fsutil::{self, Cleanup};
use super::{Drift, Expected, Material, StoreError, SwapMode, Target};

/// Mode of target directories rekey creates: the app must traverse them.
const TARGET_DIR_MODE: u32 = 0o755;
/// The symlink that selects the live generation in symlink mode.
pub(super) const DATA: &str = "..data";
/// Its temp name while being replaced.
pub(super) const DATA_TMP: &str = "..data_tmp";
/// Prefix of generation directories in symlink mode.
pub(super) const GEN_PREFIX: &str = "..rekey-";

/// Publish `material` to `targets` atomically per `swap`.
pub fn publish(targets: &[Target], swap: SwapMode, material: &Material) -> Result<(), StoreError> {
    super::blocking(|| publish_now(targets, swap, material))
}

// The blocking body of the function above.
fn publish_now(targets: &[Target], swap: SwapMode, material: &Material) -> Result<(), StoreError> {
    match swap {
        SwapMode::Rename => publish_rename(targets, material),
        SwapMode::Symlink => publish_symlink(targets, material),
    }
}

/// The file name of a target, as UTF-8 (config paths are UTF-8).
fn base_name(t: &Target) -> Result<&str, StoreError> {
    t.path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or(StoreError::BadTarget {
            path: t.path.clone(),
            reason: "the path has no UTF-8 file name; give a file path",
        })
}

/// Refuse a directory at a target path up front, before anything is written.
fn refuse_directory(path: &Path) -> Result<(), StoreError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(StoreError::TargetIsDirectory { path: path.into() }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("stat", path, e)),
    }
}

/// Per-file temp + fsync, then all renames, then directory fsyncs.
fn publish_rename(targets: &[Target], material: &Material) -> Result<(), StoreError> {
    // Validate and render everything before the first byte hits the disk.
    let mut rendered = Vec::with_capacity(targets.len());
    for t in targets {
        let name = base_name(t)?;
        refuse_directory(&t.path)?;
        rendered.push((t, name, material.render(t.kind)?));
    }
    let mut cleanup = Cleanup::default();
    let mut staged = Vec::with_capacity(targets.len());
    let mut dirs = BTreeSet::new();
    for (t, name, bytes) in &rendered {
        let dir = fsutil::parent_dir(&t.path);
        fsutil::create_dir_all_mode(&dir, TARGET_DIR_MODE)?;
        let tmp = fsutil::temp_path(&dir, name);
        cleanup.add(tmp.clone());
        fsutil::write_new_file(&tmp, bytes, t.mode, t.uid, t.gid)?;
        failpoint!("publish.file");
        staged.push((tmp, &t.path));
        dirs.insert(dir);
    }
    for (tmp, path) in &staged {
        // rename(2) replaces a symlink at `path` itself; it never writes through it.
        failpoint!("publish.rename");
        fs::rename(tmp, path).map_err(|e| StoreError::io("rename into place", *path, e))?;
        cleanup.forget(tmp);
    }
    failpoint!("publish.fsync");
    for dir in &dirs {
        fsutil::fsync_dir(dir)?;
    }
    for (t, name, _) in &rendered {
        remove_stale_temps(&fsutil::parent_dir(&t.path), name);
    }
    Ok(())
}

/// Best effort: remove `.<name>.rekey-*.tmp` files a crash left next to a target.
fn remove_stale_temps(dir: &Path, name: &str) {
    let prefix = format!(".{name}.rekey-");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        if file.starts_with(&prefix) && file.ends_with(".tmp") {
            if let Err(e) = fsutil::remove_any(&entry.path()) {
                tracing::warn!(error = %e, "cannot remove a stale temp file");
            }
        }
    }
}

/// Kubernetes-style `..data` swap in the targets' common directory.
fn publish_symlink(targets: &[Target], material: &Material) -> Result<(), StoreError> {
    let Some(first) = targets.first() else {
        return Ok(());
    };
    let dir = fsutil::parent_dir(&first.path);
    let mut rendered = Vec::with_capacity(targets.len());
    for t in targets {
        let name = base_name(t)?;
        if name.starts_with("..") {
            return Err(StoreError::BadTarget {
                path: t.path.clone(),
                reason:
                    "names starting with '..' are reserved for the symlink swap; rename the file",
            });
        }
        if fsutil::parent_dir(&t.path) != dir {
            return Err(StoreError::SymlinkSplit {
                first: first.path.clone(),
                other: t.path.clone(),
            });
        }
        refuse_directory(&t.path)?;
        rendered.push((t, name, material.render(t.kind)?));
    }
    fsutil::create_dir_all_mode(&dir, TARGET_DIR_MODE)?;

    // 1. The new generation directory, complete and durable under its final name.
    let gen = format!("{GEN_PREFIX}{}", fsutil::random_suffix());
    let gen_tmp = dir.join(format!("{gen}.tmp"));
    let gen_dir = dir.join(&gen);
    let mut cleanup = Cleanup::default();
    fs::create_dir(&gen_tmp).map_err(|e| StoreError::io("create directory", &gen_tmp, e))?;
    cleanup.add(gen_tmp.clone());
    fsutil::set_mode(&gen_tmp, TARGET_DIR_MODE)?;
    for (t, name, bytes) in &rendered {
        fsutil::write_new_file(&gen_tmp.join(name), bytes, t.mode, t.uid, t.gid)?;
    }
    fsutil::fsync_dir(&gen_tmp)?;
    fs::rename(&gen_tmp, &gen_dir).map_err(|e| StoreError::io("rename into place", &gen_dir, e))?;
    cleanup.forget(&gen_tmp);
    cleanup.add(gen_dir.clone());
    fsutil::fsync_dir(&dir)?;

    failpoint!("publish.gen_dir");
    // 2. Flip `..data`: the single atomic step that switches every file at once.
    let data = dir.join(DATA);
    let previous = fs::read_link(&data)
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
        .filter(|p| p.starts_with(GEN_PREFIX) && !p.contains('/'));
    let data_tmp = dir.join(DATA_TMP);
    fsutil::remove_any(&data_tmp)?; // left by a crash mid-flip
    symlink(&gen, &data_tmp).map_err(|e| StoreError::io("create symlink", &data_tmp, e))?;
    failpoint!("publish.swap.before");
    if let Err(e) = fs::rename(&data_tmp, &data) {
        let _ = fs::remove_file(&data_tmp); // best effort; the next publish removes it too
        return Err(StoreError::io("rename into place", &data, e));
    }
    failpoint!("publish.swap.after");
    cleanup.forget(&gen_dir);
    fsutil::fsync_dir(&dir)?;

    failpoint!("publish.link");
    // 3. Each target must be our symlink into `..data`.
    for (t, name, _) in &rendered {
        let want = Path::new(DATA).join(name);
        if fs::read_link(&t.path).is_ok_and(|p| p == want) {
            continue;
        }
        let tmp = fsutil::temp_path(&dir, name);
        symlink(&want, &tmp).map_err(|e| StoreError::io("create symlink", &tmp, e))?;
        if let Err(e) = fs::rename(&tmp, &t.path) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io("rename into place", &t.path, e));
        }
    }
    fsutil::fsync_dir(&dir)?;

    // 4. Old generations: keep the new one and the previous (rollback, readers mid-read).
    remove_old_generations(&dir, &gen, previous.as_deref());
    Ok(())
}

/// Best effort: a leftover directory wastes space but breaks nothing, so a
/// failure here must not turn a successful swap into a reported failure.
fn remove_old_generations(dir: &Path, current: &str, previous: Option<&str>) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list old generations");
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale_temp = fsutil::is_temp_name(name);
        let old_gen = name.starts_with(GEN_PREFIX) && name != current && Some(name) != previous;
        if stale_temp || old_gen {
            if let Err(e) = fsutil::remove_any(&entry.path()) {
                tracing::warn!(error = %e, "cannot remove an old generation");
            }
        }
    }
}

/// Compare what is at the targets with what a publish of the committed
/// material wrote (`expected`, see [`Expected::of`]): the targets that differ
/// or are missing/unreadable, with a short reason; empty = all match. For
/// symlink mode also report a target that is not our symlink into `..data`.
pub fn diff_published(targets: &[Target], swap: SwapMode, expected: &Expected) -> Vec<Drift> {
    super::blocking(|| diff_published_now(targets, swap, expected))
}

// The blocking body of the function above.
fn diff_published_now(targets: &[Target], swap: SwapMode, expected: &Expected) -> Vec<Drift> {
    targets
        .iter()
        .filter_map(|t| {
            check_target(t, swap, expected).err().map(|reason| Drift {
                kind: t.kind,
                path: t.path.clone(),
                reason,
            })
        })
        .collect()
}

/// Ok when the target holds exactly the bytes whose digest is expected.
fn check_target(t: &Target, swap: SwapMode, expected: &Expected) -> Result<(), String> {
    let link = match fs::symlink_metadata(&t.path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err("missing".into()),
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    let is_link = link.file_type().is_symlink();
    match swap {
        SwapMode::Rename if is_link => return Err("is a symlink, not a regular file".into()),
        SwapMode::Rename => {}
        SwapMode::Symlink => {
            let name = t.path.file_name().unwrap_or_default();
            let want = Path::new(DATA).join(name);
            if !is_link {
                return Err("not rekey's symlink into ..data (replaced by a file?)".into());
            }
            match fs::read_link(&t.path) {
                Ok(p) if p == want => {}
                Ok(p) => {
                    return Err(format!(
                        "symlink points to {}, not {}",
                        p.display(),
                        want.display()
                    ))
                }
                Err(e) => return Err(format!("unreadable symlink: {e}")),
            }
        }
    }
    let want = expected
        .digest(t.kind)
        .ok_or("no content to compare: the material has no CA certificate")?;
    let (have, meta) =
        fsutil::read_file_meta(&t.path, swap == SwapMode::Symlink).map_err(|e| match e {
            StoreError::Io { source, .. } => format!("unreadable: {source}"),
            StoreError::NotRegularFile { .. } => "not a regular file".into(),
            StoreError::TooLarge { size, .. } => format!("unexpectedly large ({size} bytes)"),
            other => other.to_string(),
        })?;
    if sha256(&have) != *want {
        return Err("contents differ".into());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode != t.mode {
        return Err(format!("mode {mode:04o}, expected {:04o}", t.mode));
    }
    if let Some(uid) = t.uid.filter(|&u| u != meta.uid()) {
        return Err(format!("owner uid {}, expected {uid}", meta.uid()));
    }
    if let Some(gid) = t.gid.filter(|&g| g != meta.gid()) {
        return Err(format!("group gid {}, expected {gid}", meta.gid()));
    }
    Ok(())
}

/// Read the bytes at a published path (following our own symlinks), for adoption/inspection.
pub fn read_published(path: &Path) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    // Following any symlink is harmless for a read, and adoption must read
    // files other tools manage through symlinks (certbot's live/ dir).
    fsutil::read_file(path, true)
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
