//! The log's files themselves: opened for appending only when they are
//! regular files (never through a symlink, never blocking on a FIFO), and
//! read back line by line with a cap on each line, never whole.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{io_err, AuditError};

/// Open the log for appending. Never through a symlink (appending as root
/// through one planted at the path would write wherever it points), never
/// blocking on a FIFO, and only to a regular file.
pub(super) fn open_append(path: &Path) -> Result<File, AuditError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => AuditError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(
                    "it is a symlink; rekey appends to the log only in place: point daemon.audit_log at a regular file",
                ),
            },
            // What a non-blocking open for writing says of a FIFO nobody reads.
            Some(nix::libc::ENXIO) => AuditError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(
                    "it is a FIFO or a device, not a regular file; point daemon.audit_log at a regular file",
                ),
            },
            _ => io_err(path)(e),
        })?;
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(AuditError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(
                "not a regular file; point daemon.audit_log at a regular file",
            ),
        });
    }
    Ok(file)
}

/// The longest audit line read back (a record is a few hundred bytes).
pub(super) const MAX_LINE: usize = 64 * 1024;

/// An audit file opened for reading: never blocking on a FIFO, regular files
/// only, not through a symlink. Read by line (see [`Lines`]), never whole,
/// so a huge file costs no memory.
pub(super) fn open_read(path: &Path) -> Result<File, AuditError> {
    let opts = crate::fs::safefile::Options {
        follow: false,
        max: u64::MAX,
    };
    crate::fs::safefile::open(path, opts)
        .map(|(f, _)| f)
        .map_err(|e| match &e {
            crate::fs::safefile::ReadError::Io { source, .. }
                if source.raw_os_error() == Some(nix::libc::ELOOP) =>
            {
                AuditError::Io {
                    path: path.to_path_buf(),
                    source: std::io::Error::other(
                        "it is a symlink; rekey reads and appends to the log only in place: point daemon.audit_log at a regular file",
                    ),
                }
            }
            _ => AuditError::Read {
                path: path.to_path_buf(),
                source: e,
            },
        })
}

/// The lines of an audit file, each at most [`MAX_LINE`] bytes (a longer
/// one is cut there and reads as a damaged record), invalid UTF-8 replaced.
pub(super) struct Lines {
    path: PathBuf,
    reader: std::io::BufReader<std::io::Take<File>>,
    buf: Vec<u8>,
}

impl Lines {
    /// The lines of the audit file at `path`.
    pub(super) fn open(path: &Path) -> Result<Lines, AuditError> {
        use std::io::Read;
        Ok(Lines {
            path: path.to_path_buf(),
            reader: std::io::BufReader::new(open_read(path)?.take(u64::MAX)),
            buf: Vec::new(),
        })
    }
}

impl Iterator for Lines {
    type Item = Result<String, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::io::BufRead;
        self.buf.clear();
        // At most MAX_LINE + 1 bytes of this line; the rest is skipped.
        self.reader.get_mut().set_limit(MAX_LINE as u64 + 1);
        let n = match self.reader.read_until(b'\n', &mut self.buf) {
            Ok(n) => n,
            Err(e) => return Some(Err(io_err(&self.path)(e))),
        };
        self.reader.get_mut().set_limit(u64::MAX);
        if n == 0 {
            return None;
        }
        if self.buf.last() != Some(&b'\n') && self.buf.len() > MAX_LINE {
            // Skip the rest of an overlong line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                self.reader.get_mut().set_limit(MAX_LINE as u64);
                let m = self.reader.read_until(b'\n', &mut rest);
                self.reader.get_mut().set_limit(u64::MAX);
                match m {
                    Ok(0) => break,
                    Ok(_) if rest.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                    Err(e) => return Some(Err(io_err(&self.path)(e))),
                }
            }
            self.buf.truncate(MAX_LINE);
        }
        while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
            self.buf.pop();
        }
        Some(Ok(String::from_utf8_lossy(&self.buf).into_owned()))
    }
}
