//! The store's error type: every variant names the path and says what to do.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while touching the disk.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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
    /// The state dir lets group or other users in.
    #[error("refusing state dir {}: mode {mode:04o} gives group/other access; run `chmod 700 {}`", path.display(), path.display())]
    InsecureStateDir {
        /// The state dir.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The state dir belongs to another user than the one rekey runs as.
    #[error("refusing state dir {}: it belongs to uid {owner}, not to uid {me} that rekey runs as, and its owner could read and replace the keys in it; run `chown -R {me} {}`, or run rekey as its owner", path.display(), path.display())]
    ForeignStateDir {
        /// The state dir.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective uid of this process.
        me: u32,
    },
    /// A stored key file lets group or other users in.
    #[error("refusing key file {}: mode {mode:04o} gives group/other access; run `chmod 600 {}`", path.display(), path.display())]
    InsecureKeyFile {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Another rekey holds the state dir's lock.
    #[error("state dir {} is locked by another rekey process; stop that process or give this one its own state_dir", path.display())]
    Locked {
        /// The state dir.
        path: PathBuf,
    },
    /// A path that must be a directory is something else.
    #[error("{} is not a directory; remove it or choose another path", path.display())]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },
    /// A publish target path is a directory; it is never removed for us.
    #[error("cannot publish to {}: it is a directory; remove it or change the file path in the config", path.display())]
    TargetIsDirectory {
        /// The target path.
        path: PathBuf,
    },
    /// A target's directory is not the one rekey loaded (see
    /// [`crate::store::Pins`]): nothing was written; the engine raises
    /// `tampered`.
    #[error("refusing to write into {}: {reason}; nothing was written there. Put the directory back, or restart rekey (or reload it with SIGHUP after changing the credential) to accept the new location", dir.display())]
    DirectoryReplaced {
        /// The configured directory.
        dir: PathBuf,
        /// What changed.
        reason: String,
    },
    /// A target path cannot be used (no file name, reserved name, ...).
    #[error("cannot publish to {}: {reason}", path.display())]
    BadTarget {
        /// The target path.
        path: PathBuf,
        /// Why, and what to do.
        reason: &'static str,
    },
    /// Symlink swap needs all targets in one directory.
    #[error("swap = \"symlink\" needs every file in one directory, but {} and {} are not; put them in one directory or use swap = \"rename\"", first.display(), other.display())]
    SymlinkSplit {
        /// The first target.
        first: PathBuf,
        /// A target in another directory.
        other: PathBuf,
    },
    /// A `ca` file was asked for but the issuer returned no CA certificate.
    #[error("cannot write the ca file: the issued material has no CA certificate; remove `ca` from files or use an issuer that returns its root")]
    NoCa,
    /// A `pkcs12` file was asked for but the generation holds no keystore
    /// (the engine encodes it before staging; see [`crate::keystore`]).
    #[error("cannot write the pkcs12 file: the generation has no keystore encoded; rotate it (`rekey rotate NAME`) to encode one")]
    NoKeystore,
    /// The generation's PEM does not convert to a DER file.
    #[error("cannot write the {kind} file: {source}")]
    Encode {
        /// `cert_der` or `key_der`.
        kind: &'static str,
        /// Why.
        source: crate::keystore::KeystoreError,
    },
    /// The journal exists but does not parse.
    #[error("journal {} is corrupt: {source}; move it aside and restart (rekey then re-adopts the published files)", path.display())]
    CorruptJournal {
        /// The journal file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The journal could not be serialized (a bug: journals are plain data).
    #[error("cannot encode the journal for {}: {source}; this is a bug in rekey, please report it", path.display())]
    EncodeJournal {
        /// The journal file.
        path: PathBuf,
        /// The serialization error.
        source: serde_json::Error,
    },
    /// A stored generation is missing a file or holds garbage.
    #[error("generation {} is unusable: {reason}; rekey will issue a new one", path.display())]
    BadGeneration {
        /// The generation directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The credential name cannot be a directory name.
    #[error("credential name {name:?} cannot be used as a directory name; use letters, digits, '-', '_' or '.' (not leading)")]
    InvalidName {
        /// The name as given.
        name: String,
    },
    /// A write was attempted through a read-only store.
    #[error("cannot modify {}: the store was opened read-only", path.display())]
    ReadOnly {
        /// What would have been written.
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

impl StoreError {
    /// Wrap an I/O error with the operation, the path and a hint chosen from both.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let hint = crate::fs::hint(op, &source);
        StoreError::Io {
            op,
            path: path.into(),
            source,
            hint,
        }
    }

    /// Whether the write was refused because a target's directory was
    /// replaced behind rekey's back: the engine raises `tampered` for it.
    pub fn is_tamper(&self) -> bool {
        matches!(self, StoreError::DirectoryReplaced { .. })
    }
}

/// The file helpers' errors keep their variant (and message) in the store's
/// own enum, so callers match one type.
impl From<crate::fs::FsError> for StoreError {
    fn from(e: crate::fs::FsError) -> Self {
        use crate::fs::FsError;
        match e {
            FsError::Io {
                op,
                path,
                source,
                hint,
            } => StoreError::Io {
                op,
                path,
                source,
                hint,
            },
            FsError::NotADirectory { path } => StoreError::NotADirectory { path },
            FsError::NotRegularFile { path, kind } => StoreError::NotRegularFile { path, kind },
            FsError::TooLarge { path, size } => StoreError::TooLarge { path, size },
        }
    }
}
