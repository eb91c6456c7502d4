//! File helpers every layer shares, named for what they do and importing
//! nothing of rekey's (config reads its files through them):
//!
//! - [`safefile`]: bounded, non-blocking, regular-file-only reads of every
//!   path the config names, and the secret/trust file ownership rule;
//! - [`ops`]: umask-proof creation, fsync, temp names, atomic replace (the
//!   store's publishing is built on them);
//! - the atomic writes below, for the issuers' own files (the local CA's
//!   generations, the ACME account, HTTP-01 tokens, the issued log).

mod error;
pub(crate) mod ops;
pub mod safefile;

use std::path::Path;

pub(crate) use error::hint;
pub use error::FsError;

/// Create `dir` (and parents) private to rekey: mode 0700.
pub fn write_private_dir(dir: &Path) -> Result<(), FsError> {
    ops::create_dir_all_mode(dir, 0o700)
}

/// Atomically replace `path` with `bytes` at `mode` (temp, fsync, rename, dir fsync).
pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FsError> {
    let dir = ops::parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    ops::replace_file(&dir, &name, bytes, mode)
}

/// Append one `line` (a newline is added) to the record file `path`, made
/// 0600 when new and never followed through a symlink; once it has grown
/// past `max_size` it is first moved to `PATH.1` (replacing the one there).
/// Not fsynced: such a record is for people and tests, and nothing that
/// decides what rekey does depends on it.
pub fn append_record(path: &Path, line: &str, max_size: u64) -> Result<(), FsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.len() > max_size) {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(path, &old).map_err(|e| FsError::io("rotate", path, e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| FsError::io("open", path, e))?;
    // One write of one line: records of concurrent issuances never interleave.
    f.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| FsError::io("append to", path, e))
}

/// Create directory `parent/name` (0700) holding `files` (name, bytes,
/// mode) complete or not at all: written and fsynced in a hidden temp
/// directory that is renamed into place, then `parent` is fsynced. Fails if
/// `parent/name` exists. For state-dir data that must never be seen half
/// written (the local CA's generations).
pub fn write_dir_atomic(
    parent: &Path,
    name: &str,
    files: &[(&str, &[u8], u32)],
) -> Result<(), FsError> {
    let tmp = ops::temp_path(parent, name);
    let mut cleanup = ops::Cleanup::default();
    ops::create_dir_all_mode(&tmp, 0o700)?;
    cleanup.add(tmp.clone());
    for (file, bytes, mode) in files {
        ops::write_new_file(&tmp.join(file), bytes, *mode, None, None)?;
    }
    ops::fsync_dir(&tmp)?;
    let dest = parent.join(name);
    if std::fs::symlink_metadata(&dest).is_ok() {
        return Err(FsError::io(
            "create",
            &dest,
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        ));
    }
    std::fs::rename(&tmp, &dest).map_err(|e| FsError::io("rename into place", &dest, e))?;
    cleanup.forget(&tmp);
    ops::fsync_dir(parent)
}

/// Remove `path` (a file or a directory tree) so that it is gone in one
/// step: a directory is first renamed to a hidden temp name (which
/// [`remove_temps`] finds after a crash), then deleted; `path`'s directory
/// is fsynced. A missing path is fine.
pub fn remove_atomic(path: &Path) -> Result<(), FsError> {
    let parent = ops::parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let aside = ops::temp_path(&parent, &name);
    match std::fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FsError::io("rename aside", path, e)),
    }
    ops::fsync_dir(&parent)?;
    ops::remove_any(&aside)
}

/// Remove the temp files and directories a crash left in `dir` (names made
/// by this module's atomic writes); best effort.
pub fn remove_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_str().is_some_and(ops::is_temp_name) {
            if let Err(err) = ops::remove_any(&e.path()) {
                tracing::warn!(error = %err, "cannot remove a leftover temp file");
            }
        }
    }
}
