//! Reading a file whose path came from the config, on a host where someone
//! else may have put something unexpected at that path: the open never
//! blocks (O_NONBLOCK, so a FIFO cannot hang a worker), only a regular file
//! is read (not /dev/zero, a socket or a directory), and never more than a
//! cap (so a mistaken path cannot eat memory). The bytes come back in
//! zeroizing memory because many of these files hold secrets.
//!
//! Callers wrap [`ReadError`] in their own error with the config key that
//! named the path.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// No PEM, token, pid or password file rekey reads comes near this.
pub const MAX_READ: u64 = 4 * 1024 * 1024;

/// Why a file could not be read. Messages name the path; callers add the key.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The open, stat or read failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The path is a FIFO, device, socket or directory.
    #[error("refusing to read {}: it is a {kind}, not a regular file; point the setting at a regular file", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is instead, in words.
        kind: &'static str,
    },
    /// Larger than the caller's cap.
    #[error("refusing to read {}: {size} bytes is more than the {max} this file may hold; check the path", path.display())]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// How much was there (at least).
        size: u64,
        /// The cap.
        max: u64,
    },
}

impl ReadError {
    /// The OS error, when there was one (for callers that tell ENOENT apart).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            ReadError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// How to open the file.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Follow a symlink at the last component (false: O_NOFOLLOW, a symlink is an error).
    pub follow: bool,
    /// At most this many bytes.
    pub max: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            follow: true,
            max: MAX_READ,
        }
    }
}

/// Read `path` with the default options (follow symlinks, [`MAX_READ`]).
pub fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    read_with(path, Options::default()).map(|(bytes, _)| bytes)
}

/// Read `path` as UTF-8 text with the default options.
pub fn read_to_string(path: &Path) -> Result<Zeroizing<String>, ReadError> {
    let bytes = read(path)?;
    match std::str::from_utf8(&bytes) {
        Ok(s) => Ok(Zeroizing::new(s.to_owned())),
        Err(e) => Err(ReadError::Io {
            path: path.into(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        }),
    }
}

/// Read `path`, and return the metadata of the very file read (fstat on the
/// same descriptor, so a swap between stat and read cannot fool the caller).
pub fn read_with(path: &Path, opts: Options) -> Result<(Zeroizing<Vec<u8>>, Metadata), ReadError> {
    let io_err = |source| ReadError::Io {
        path: path.into(),
        source,
    };
    let mut flags = nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC;
    if !opts.follow {
        flags |= nix::libc::O_NOFOLLOW;
    }
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular {
            path: path.into(),
            kind: kind_of(&meta),
        });
    }
    if meta.len() > opts.max {
        return Err(ReadError::TooLarge {
            path: path.into(),
            size: meta.len(),
            max: opts.max,
        });
    }
    // Sized up front so a buffer holding a key is not reallocated (leaving
    // an unzeroized copy); +1 to see EOF without growing.
    let cap = usize::try_from(meta.len()).unwrap_or(0) + 1;
    let mut buf = Zeroizing::new(Vec::with_capacity(cap));
    (&file)
        .take(opts.max + 1)
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    if buf.len() as u64 > opts.max {
        return Err(ReadError::TooLarge {
            path: path.into(),
            size: buf.len() as u64,
            max: opts.max,
        });
    }
    Ok((buf, meta))
}

fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(&read(&p).unwrap()[..], b"hello");
        assert_eq!(&*read_to_string(&p).unwrap(), "hello");
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read(&p).unwrap_err();
        assert!(
            matches!(e, ReadError::NotRegular { kind: "FIFO", .. }),
            "{e}"
        );
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn devices_and_directories_are_refused() {
        let e = read(Path::new("/dev/zero")).unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::NotRegular {
                    kind: "character device",
                    ..
                }
            ),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(
            read(&link).unwrap_err(),
            ReadError::NotRegular { .. }
        ));
        assert!(matches!(
            read(dir.path()).unwrap_err(),
            ReadError::NotRegular {
                kind: "directory",
                ..
            }
        ));
    }

    #[test]
    fn size_is_capped_and_symlinks_refused_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'x'; 100]).unwrap();
        let e = read_with(
            &p,
            Options {
                follow: true,
                max: 10,
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::TooLarge {
                    size: 100,
                    max: 10,
                    ..
                }
            ),
            "{e}"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let e = read_with(
            &link,
            Options {
                follow: false,
                max: MAX_READ,
            },
        )
        .unwrap_err();
        assert!(matches!(e, ReadError::Io { .. }), "{e}");
        assert!(read_with(&link, Options::default()).is_ok());
    }
}
