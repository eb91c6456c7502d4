//! File helpers every layer shares, named for what they do and importing
//! nothing of rekey's (config reads its files through them):
//!
//! - [`safefile`]: bounded, non-blocking, regular-file-only reads of every
//!   path the config names, and the secret/trust file ownership rule;
//! - [`ops`]: umask-proof creation, fsync, temp names, atomic replace (the
//!   store's publishing is built on them);
//! - the atomic writes below, for the issuers' own files (local CA, ACME
//!   account, HTTP-01 tokens, the issued log).

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
