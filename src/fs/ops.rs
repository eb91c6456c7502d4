//! Low-level file helpers: umask-proof creation, fsync, bounded reads, temp names.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::safefile::{self, ReadError};
use super::FsError;

pub(crate) use super::safefile::MAX_READ;

/// A random suffix for temp names; collisions are also caught by O_EXCL.
pub(crate) fn random_suffix() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// The directory holding `path`; "." for a bare file name.
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The temp name for a file about to replace `dir/name`, hidden and recognisable for cleanup.
pub(crate) fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(temp_name(name))
}

/// The temp name (no directory) for a file about to replace `name`.
pub(crate) fn temp_name(name: &str) -> String {
    format!(".{name}.rekey-{}.tmp", random_suffix())
}

/// Whether `name` is one of our temp names (left behind by a crash).
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp") && name.contains(".rekey-")
}

/// Create `path` and any missing parents; every directory we create gets exactly
/// `mode` (chmod after mkdir, so the umask cannot weaken or widen it) and its
/// parent is fsynced so the new entry survives a crash.
pub(crate) fn create_dir_all_mode(path: &Path, mode: u32) -> Result<(), FsError> {
    let mut missing = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        match fs::metadata(&cur) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(FsError::NotADirectory { path: cur }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(cur.clone());
                match cur.parent() {
                    Some(p) if !p.as_os_str().is_empty() => cur = p.to_path_buf(),
                    _ => break,
                }
            }
            Err(e) => return Err(FsError::io("stat", cur, e)),
        }
    }
    for dir in missing.iter().rev() {
        match fs::DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => {
                set_mode(dir, mode)?;
                fsync_dir(&parent_dir(dir))?;
            }
            // Someone else created it in between: fine if it is a directory.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(FsError::io("create directory", dir, e)),
        }
    }
    Ok(())
}

/// chmod by path (for directories we just created).
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), FsError> {
    fs::set_permissions(path, Permissions::from_mode(mode))
        .map_err(|e| FsError::io("set mode of", path, e))
}

/// fsync a directory so renames and creations inside it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), FsError> {
    // O_DIRECTORY: something else swapped in at `dir` (a FIFO would block
    // a plain open forever) is an error, not a hang.
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::io("fsync", dir, e))
}

/// Create a new file at `path` (which must not exist; never follows a symlink),
/// set owner and mode on the descriptor, then write and fsync `bytes`.
/// Owner and mode are set before any byte is written, so a secret is never
/// readable under looser permissions. The caller removes `path` on error.
pub(crate) fn write_new_file(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<(), FsError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true) // O_CREAT|O_EXCL: never an existing file, never through a symlink
        .mode(mode & 0o777)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| FsError::io("create", path, e))?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(&file, uid, gid)
            .map_err(|e| FsError::io("set owner of", path, e))?;
    }
    // After fchown: chown may clear set-id bits, and the umask narrowed the create mode.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|e| FsError::io("set mode of", path, e))?;
    file.write_all(bytes)
        .map_err(|e| FsError::io("write", path, e))?;
    file.sync_all().map_err(|e| FsError::io("fsync", path, e))
}

/// Atomically replace `dir/name` with `bytes`: temp file, fsync, rename, fsync dir.
pub(crate) fn replace_file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), FsError> {
    let tmp = temp_path(dir, name);
    let target = dir.join(name);
    let result = write_new_file(&tmp, bytes, mode, None, None).and_then(|()| {
        failpoint!("replace.rename");
        fs::rename(&tmp, &target).map_err(|e| FsError::io("rename into place", &target, e))
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp); // best effort; prune also removes leftovers
        return Err(e);
    }
    fsync_dir(dir)
}

/// Read a regular file of at most [`MAX_READ`] bytes into zeroizing memory.
/// With `follow == false` a symlink at `path` is an error (O_NOFOLLOW).
pub(crate) fn read_file(path: &Path, follow: bool) -> Result<Zeroizing<Vec<u8>>, FsError> {
    read_file_meta(path, follow).map(|(bytes, _)| bytes)
}

/// [`read_file`], plus the metadata of the very file read (fstat on the same descriptor).
pub(crate) fn read_file_meta(
    path: &Path,
    follow: bool,
) -> Result<(Zeroizing<Vec<u8>>, fs::Metadata), FsError> {
    let opts = safefile::Options {
        follow,
        max: MAX_READ,
    };
    safefile::read_with(path, opts).map_err(|e| match e {
        ReadError::Io { source, .. } => FsError::io("read", path, source),
        ReadError::NotRegular { kind, .. } => FsError::NotRegularFile {
            path: path.into(),
            kind,
        },
        ReadError::TooLarge { size, .. } => FsError::TooLarge {
            path: path.into(),
            size,
        },
        // Only read_guarded applies that rule.
        e @ ReadError::WritableByOthers { .. } => {
            FsError::io("read", path, io::Error::other(e.to_string()))
        }
    })
}

/// Remove a file or a whole directory tree; a missing path is fine.
pub(crate) fn remove_any(path: &Path) -> Result<(), FsError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::io("remove", path, e)),
    }
}

/// Removes the paths it holds when dropped, unless disarmed: cleanup of temp
/// files and directories on every early return.
#[derive(Default)]
pub(crate) struct Cleanup {
    paths: Vec<PathBuf>,
}

impl Cleanup {
    /// Remember `path` for removal on drop.
    pub(crate) fn add(&mut self, path: PathBuf) {
        self.paths.push(path);
    }

    /// Forget `path` (it was renamed into place or is otherwise wanted).
    pub(crate) fn forget(&mut self, path: &Path) {
        self.paths.retain(|p| p != path);
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.paths {
            if let Err(e) = remove_any(p) {
                tracing::warn!(error = %e, "cannot remove temporary file");
            }
        }
    }
}
