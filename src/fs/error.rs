//! The file helpers' error type: every variant names the path and says what to do.

use std::io;
use std::path::PathBuf;

/// What can go wrong in a file helper (the store converts it into its own
/// variant of the same name and message).
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A filesystem call failed; `op` is what we tried, `hint` what the operator can do.
    #[error("cannot {op} {}: {source}; {hint}", path.display())]
    Io {
        /// What was attempted, e.g. "write", "rename into place".
        op: &'static str,
        /// The path the operation was on.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// A path that must be a directory is something else.
    #[error("{} is not a directory; remove it or choose another path", path.display())]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },
    /// A file to read is not a regular file (FIFO, device, directory, ...).
    #[error("cannot read {}: it is a {kind}, not a regular file; point the path at a PEM file", path.display())]
    NotRegularFile {
        /// The path.
        path: PathBuf,
        /// What it is instead, in words ("FIFO", "directory"...).
        kind: &'static str,
    },
    /// A file to read is far larger than any PEM file.
    #[error("refusing to read {}: {size} bytes is too large for a PEM file; check the path", path.display())]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

impl FsError {
    /// Wrap an I/O error with the operation, the path and a hint chosen from both.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let hint = hint(op, &source);
        FsError::Io {
            op,
            path: path.into(),
            source,
            hint,
        }
    }
}

/// Pick advice for the operator: most failures are permissions, space or a missing path.
pub(crate) fn hint(op: &'static str, err: &io::Error) -> &'static str {
    let reading = matches!(op, "read" | "open" | "read symlink" | "list" | "stat");
    match err.kind() {
        io::ErrorKind::PermissionDenied if op == "set owner of" => {
            "setting owner/group needs root or CAP_CHOWN; run rekey with it or drop owner/group from the config"
        }
        io::ErrorKind::PermissionDenied if reading => "make it readable by rekey's user",
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            "make the directory writable by rekey's user"
        }
        io::ErrorKind::NotFound if reading => "check that the path exists",
        io::ErrorKind::NotFound => "check that the parent directory exists",
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => "free space on that filesystem",
        _ if err.raw_os_error() == Some(nix::libc::ELOOP) => {
            "it is a symlink where rekey expects a regular file; remove the symlink"
        }
        _ => "check the path and the filesystem",
    }
}
