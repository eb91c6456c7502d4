//! Publishing to the application's paths (rename or symlink swap), drift
//! detection and reading back. The semantics are documented on the module
//! [`crate::store`].

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use super::dirs::{Dir, Pins, TARGET_DIR_MODE};
use super::{Drift, Expected, Material, StoreError, SwapMode, Target};
use crate::fs::ops;
use crate::fs::safefile::ReadError;

/// The symlink that selects the live generation in symlink mode.
pub(super) const DATA: &str = "..data";
/// Its temp name while being replaced.
pub(super) const DATA_TMP: &str = "..data_tmp";
/// Prefix of generation directories in symlink mode.
pub(super) const GEN_PREFIX: &str = "..rekey-";

/// Publish `material` to `targets` atomically per `swap`, writing only into
/// the directories `pins` holds (see [`Pins`]).
pub fn publish(
    targets: &[Target],
    swap: SwapMode,
    material: &Material,
    pins: &Pins,
) -> Result<(), StoreError> {
    super::blocking(|| publish_now(targets, swap, material, pins))
}

// The blocking body of the function above.
fn publish_now(
    targets: &[Target],
    swap: SwapMode,
    material: &Material,
    pins: &Pins,
) -> Result<(), StoreError> {
    match swap {
        SwapMode::Rename => publish_rename(targets, material, pins),
        SwapMode::Symlink => publish_symlink(targets, material, pins),
    }
}

/// The file name of a target, as UTF-8 (config paths are UTF-8).
pub(super) fn base_name(t: &Target) -> Result<&str, StoreError> {
    t.path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or(StoreError::BadTarget {
            path: t.path.clone(),
            reason: "the path has no UTF-8 file name; give a file path",
        })
}

/// Refuse a directory at a target path, before anything is written.
fn refuse_directory(dir: &Dir, t: &Target, name: &str) -> Result<(), StoreError> {
    if dir.is_dir(name)? {
        return Err(StoreError::TargetIsDirectory {
            path: t.path.clone(),
        });
    }
    Ok(())
}

/// Temp entries to remove (relative to their directory) unless forgotten:
/// cleanup on every early return.
struct Temps<'a> {
    dirs: &'a [Dir],
    names: Vec<(usize, String)>,
}

impl<'a> Temps<'a> {
    fn new(dirs: &'a [Dir]) -> Temps<'a> {
        Temps {
            dirs,
            names: Vec::new(),
        }
    }

    fn add(&mut self, dir: usize, name: &str) {
        self.names.push((dir, name.to_string()));
    }

    fn forget(&mut self, dir: usize, name: &str) {
        self.names.retain(|(d, n)| !(*d == dir && n == name));
    }
}

impl Drop for Temps<'_> {
    fn drop(&mut self) {
        for (d, n) in &self.names {
            if let Err(e) = self.dirs[*d].remove(n) {
                tracing::warn!(error = %e, "cannot remove temporary file");
            }
        }
    }
}

/// Per-file temp + fsync, then all renames, then directory fsyncs.
fn publish_rename(targets: &[Target], material: &Material, pins: &Pins) -> Result<(), StoreError> {
    // Validate and render everything before the first byte hits the disk.
    let mut rendered = Vec::with_capacity(targets.len());
    for t in targets {
        rendered.push((t, base_name(t)?, material.render(t.kind)?));
    }
    // Each distinct directory, opened and checked against its pin once.
    let mut dirs: Vec<Dir> = Vec::new();
    let mut at = Vec::with_capacity(rendered.len());
    for (t, name, _) in &rendered {
        let path = ops::parent_dir(&t.path);
        let i = match dirs.iter().position(|d| d.path() == path) {
            Some(i) => i,
            None => {
                dirs.push(pins.open(&path)?);
                dirs.len() - 1
            }
        };
        refuse_directory(&dirs[i], t, name)?;
        at.push(i);
    }
    let mut temps = Temps::new(&dirs);
    let mut staged = Vec::with_capacity(rendered.len());
    for ((t, name, bytes), &i) in rendered.iter().zip(&at) {
        let tmp = ops::temp_name(name);
        temps.add(i, &tmp);
        dirs[i].create_file(&tmp, bytes, t.mode, t.uid, t.gid)?;
        failpoint!("publish.file");
        staged.push((i, tmp, *name));
    }
    for (i, tmp, name) in &staged {
        // rename(2) replaces a symlink at the target itself; it never writes through it.
        failpoint!("publish.rename");
        dirs[*i].rename(tmp, name)?;
        temps.forget(*i, tmp);
    }
    drop(temps);
    failpoint!("publish.fsync");
    for d in &dirs {
        d.fsync()?;
    }
    for ((_, name, _), &i) in rendered.iter().zip(&at) {
        remove_stale_temps(&dirs[i], name);
    }
    Ok(())
}

/// Best effort: remove `.<name>.rekey-*.tmp` files a crash left next to a target.
fn remove_stale_temps(dir: &Dir, name: &str) {
    let prefix = format!(".{name}.rekey-");
    let Ok(names) = dir.names() else {
        return;
    };
    for file in names {
        if file.starts_with(&prefix) && file.ends_with(".tmp") {
            if let Err(e) = dir.remove(&file) {
                tracing::warn!(error = %e, "cannot remove a stale temp file");
            }
        }
    }
}

/// Kubernetes-style `..data` swap in the targets' common directory.
fn publish_symlink(targets: &[Target], material: &Material, pins: &Pins) -> Result<(), StoreError> {
    let Some(first) = targets.first() else {
        return Ok(());
    };
    let dir_path = ops::parent_dir(&first.path);
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
        if ops::parent_dir(&t.path) != dir_path {
            return Err(StoreError::SymlinkSplit {
                first: first.path.clone(),
                other: t.path.clone(),
            });
        }
        rendered.push((t, name, material.render(t.kind)?));
    }
    let dirs = [pins.open(&dir_path)?];
    let dir = &dirs[0];
    for (t, name, _) in &rendered {
        refuse_directory(dir, t, name)?;
    }

    // 1. The new generation directory, complete and durable under its final name.
    let gen = format!("{GEN_PREFIX}{}", ops::random_suffix());
    let gen_tmp = format!("{gen}.tmp");
    let mut temps = Temps::new(&dirs);
    let sub = dir.mkdir(&gen_tmp, TARGET_DIR_MODE)?;
    temps.add(0, &gen_tmp);
    for (t, name, bytes) in &rendered {
        sub.create_file(name, bytes, t.mode, t.uid, t.gid)?;
    }
    sub.fsync()?;
    drop(sub);
    dir.rename(&gen_tmp, &gen)?;
    temps.forget(0, &gen_tmp);
    temps.add(0, &gen);
    dir.fsync()?;

    failpoint!("publish.gen_dir");
    // 2. Flip `..data`: the single atomic step that switches every file at once.
    let previous = dir
        .read_link(DATA)
        .and_then(|p| p.to_str().map(str::to_owned))
        .filter(|p| p.starts_with(GEN_PREFIX) && !p.contains('/'));
    dir.remove(DATA_TMP)?; // left by a crash mid-flip
    dir.symlink(Path::new(&gen), DATA_TMP)?;
    failpoint!("publish.swap.before");
    if let Err(e) = dir.rename(DATA_TMP, DATA) {
        let _ = dir.remove(DATA_TMP); // best effort; the next publish removes it too
        return Err(e);
    }
    failpoint!("publish.swap.after");
    temps.forget(0, &gen);
    drop(temps);
    dir.fsync()?;

    failpoint!("publish.link");
    // 3. Each target must be our symlink into `..data`.
    for (_, name, _) in &rendered {
        let want = Path::new(DATA).join(name);
        if dir.read_link(name).is_some_and(|p| p == want) {
            continue;
        }
        let tmp = ops::temp_name(name);
        dir.symlink(&want, &tmp)?;
        if let Err(e) = dir.rename(&tmp, name) {
            let _ = dir.remove(&tmp);
            return Err(e);
        }
    }
    dir.fsync()?;

    // 4. Old generations: keep the new one and the previous (rollback, readers mid-read).
    remove_old_generations(dir, &gen, previous.as_deref());
    Ok(())
}

/// Best effort: a leftover directory wastes space but breaks nothing, so a
/// failure here must not turn a successful swap into a reported failure.
fn remove_old_generations(dir: &Dir, current: &str, previous: Option<&str>) {
    let names = match dir.names() {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(dir = %dir.path().display(), error = %e, "cannot list old generations");
            return;
        }
    };
    for name in names {
        let stale_temp = ops::is_temp_name(&name);
        let old_gen =
            name.starts_with(GEN_PREFIX) && name != current && Some(name.as_str()) != previous;
        if stale_temp || old_gen {
            if let Err(e) = dir.remove(&name) {
                tracing::warn!(error = %e, "cannot remove an old generation");
            }
        }
    }
}

/// Compare what is at the targets with what a publish of the committed
/// material wrote (`expected`, see [`Expected::of`]): the targets that differ
/// or are missing/unreadable, with a short reason; empty = all match. For
/// symlink mode also report a target that is not our symlink into `..data`.
/// A target whose directory is not the pinned one is reported as such, and
/// nothing in that directory is read.
pub fn diff_published(
    targets: &[Target],
    swap: SwapMode,
    expected: &Expected,
    pins: &Pins,
) -> Vec<Drift> {
    super::blocking(|| diff_published_now(targets, swap, expected, pins))
}

// The blocking body of the function above.
fn diff_published_now(
    targets: &[Target],
    swap: SwapMode,
    expected: &Expected,
    pins: &Pins,
) -> Vec<Drift> {
    // Per directory: opened, absent, or (why it is) refused.
    type Opened = Result<Option<Dir>, (String, bool)>;
    let mut dirs: Vec<(std::path::PathBuf, Opened)> = Vec::new();
    let mut out = Vec::new();
    for t in targets {
        let path = ops::parent_dir(&t.path);
        let i = match dirs.iter().position(|(p, _)| *p == path) {
            Some(i) => i,
            None => {
                let opened = pins.open_existing(&path).map_err(|e| match e {
                    StoreError::DirectoryReplaced { reason, .. } => {
                        (format!("its directory was replaced: {reason}"), true)
                    }
                    other => (format!("unreadable: {other}"), false),
                });
                dirs.push((path, opened));
                dirs.len() - 1
            }
        };
        let verdict = match &dirs[i].1 {
            Err(why) => Err(why.clone()),
            Ok(None) => Err(("missing".to_string(), false)),
            Ok(Some(dir)) => check_target(dir, t, swap, expected).map_err(|r| (r, false)),
        };
        if let Err((reason, directory_replaced)) = verdict {
            out.push(Drift {
                kind: t.kind,
                path: t.path.clone(),
                reason,
                directory_replaced,
            });
        }
    }
    out
}

/// Ok when the target holds exactly the bytes whose digest is expected.
fn check_target(dir: &Dir, t: &Target, swap: SwapMode, expected: &Expected) -> Result<(), String> {
    let name = base_name(t).map_err(|e| e.to_string())?;
    let link = match dir.lstat(name) {
        Ok(Some(st)) => st,
        Ok(None) => return Err("missing".into()),
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    let is_link = link.st_mode & nix::libc::S_IFMT == nix::libc::S_IFLNK;
    match swap {
        SwapMode::Rename if is_link => return Err("is a symlink, not a regular file".into()),
        SwapMode::Rename => {}
        SwapMode::Symlink => {
            let want = Path::new(DATA).join(name);
            if !is_link {
                return Err("not rekey's symlink into ..data (replaced by a file?)".into());
            }
            match dir.read_link(name) {
                Some(p) if p == want => {}
                Some(p) => {
                    return Err(format!(
                        "symlink points to {}, not {}",
                        p.display(),
                        want.display()
                    ))
                }
                None => return Err("unreadable symlink".into()),
            }
        }
    }
    let want = expected
        .digest(t.kind)
        .ok_or("no content to compare: the committed generation cannot fill this file")?;
    let (have, meta) = dir
        .read(name, swap == SwapMode::Symlink)
        .map_err(|e| match e {
            ReadError::Io { source, .. } => format!("unreadable: {source}"),
            ReadError::NotRegular { .. } => "not a regular file".into(),
            ReadError::TooLarge { size, .. } => format!("unexpectedly large ({size} bytes)"),
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
    Ok(ops::read_file(path, true)?)
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
