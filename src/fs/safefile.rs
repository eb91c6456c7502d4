//! Reading a file whose path came from the config, on a host where someone
//! else may have put something unexpected at that path: the open never
//! blocks (O_NONBLOCK, so a FIFO cannot hang a worker), only a regular file
//! is read (not /dev/zero, a socket or a directory), and never more than a
//! cap (so a mistaken path cannot eat memory). The bytes come back in
//! zeroizing memory because many of these files hold secrets.
//!
//! Callers wrap [`ReadError`] in their own error with the config key that
//! named the path.
//!
//! Files that hold a secret (tokens, secret ids, header values, keys) or
//! decide what rekey trusts (the config, trust bundles) are read with
//! [`read_guarded`], which also applies the ownership rule on the very file
//! read: refused when other users can write it (anyone on the host could
//! swap the secret or the roots); for a secret, a WARN, once per path, when
//! other users can read it, its group can write it, or it belongs to a user
//! other than rekey's own or root.

use std::collections::BTreeSet;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use zeroize::Zeroizing;

/// No PEM, token, pid or password file rekey reads comes near this.
pub const MAX_READ: u64 = 4 * 1024 * 1024;

/// No token, secret id, JWT or header value comes near this.
pub const MAX_SECRET: u64 = 64 * 1024;

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
    /// Other users can write the file, so its contents cannot be trusted.
    #[error("refusing to read {}: mode {mode:04o} lets other users write it, so anyone on this host could replace what it holds; run `chmod o-w {}` (0600, or 0640 with a group, is right for a secret)", path.display(), path.display())]
    WritableByOthers {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl ReadError {
    /// What went wrong, without the path: for callers whose message names
    /// the path already.
    pub fn reason(&self) -> String {
        let full = self.to_string();
        let path = match self {
            ReadError::Io { path, .. }
            | ReadError::NotRegular { path, .. }
            | ReadError::TooLarge { path, .. }
            | ReadError::WritableByOthers { path, .. } => path,
        };
        // Every message is "<verb> <path>: <reason>".
        let head = format!("{}: ", path.display());
        match full.find(&head) {
            Some(at) => full[at + head.len()..].to_string(),
            None => full,
        }
    }

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

/// What a guarded file holds, which decides the rule [`read_guarded`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// A secret: refused when others can write it; a WARN when others can
    /// read it, the group can write it, or another user than rekey's or root
    /// owns it.
    Secret,
    /// Decides what rekey trusts (the config, a trust bundle): refused when
    /// others can write it.
    Trust,
}

/// Read `path` with the default options (follow symlinks, [`MAX_READ`]).
pub fn read(path: &Path) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    read_with(path, Options::default()).map(|(bytes, _)| bytes)
}

/// Read `path` as UTF-8 text with the default options.
pub fn read_to_string(path: &Path) -> Result<Zeroizing<String>, ReadError> {
    text(path, read(path)?)
}

/// `bytes` read from `path` as UTF-8 text, moved without a copy (a rejected
/// buffer is zeroized too).
pub fn text(path: &Path, mut bytes: Zeroizing<Vec<u8>>) -> Result<Zeroizing<String>, ReadError> {
    String::from_utf8(std::mem::take(&mut *bytes))
        .map(Zeroizing::new)
        .map_err(|e| {
            let utf8 = e.utf8_error();
            drop(Zeroizing::new(e.into_bytes()));
            ReadError::Io {
                path: path.into(),
                source: io::Error::new(io::ErrorKind::InvalidData, utf8),
            }
        })
}

/// Read `path` (following symlinks, at most `max` bytes) and apply
/// `guard`'s rule to the very file read. `key` is the config key that named
/// the path, for the WARN.
pub fn read_guarded(
    path: &Path,
    key: &str,
    guard: Guard,
    max: u64,
) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let (bytes, meta) = read_with(path, Options { follow: true, max })?;
    check_guard(path, key, guard, &meta)?;
    Ok(bytes)
}

/// The rule of `guard` on `meta` (the metadata of the file read).
fn check_guard(path: &Path, key: &str, guard: Guard, meta: &Metadata) -> Result<(), ReadError> {
    let mode = meta.mode() & 0o7777;
    if mode & 0o002 != 0 {
        return Err(ReadError::WritableByOthers {
            path: path.into(),
            mode,
        });
    }
    if guard == Guard::Trust {
        return Ok(());
    }
    let me = nix::unistd::geteuid().as_raw();
    let why = if mode & 0o004 != 0 {
        Some(format!(
            "mode {mode:04o} lets every user on this host read it"
        ))
    } else if mode & 0o020 != 0 {
        Some(format!("mode {mode:04o} lets its group write it"))
    } else if meta.uid() != me && meta.uid() != 0 {
        Some(format!(
            "it belongs to uid {}, not to rekey's user (uid {me}) or root, and that user can replace it",
            meta.uid()
        ))
    } else {
        None
    };
    if let Some(why) = why {
        warn_once(path, || {
            tracing::warn!(key, path = %path.display(), reason = %why, event = "insecure_secret_file", "a secret file is not private to rekey: {why}; run `chmod 600` (or 640 for a group rekey is in) and `chown` it to rekey's user");
        });
    }
    Ok(())
}

/// Run `warn` the first time `path` is seen: secret files are re-read at
/// every use, and one WARN a run says it.
fn warn_once(path: &Path, warn: impl FnOnce()) {
    static WARNED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    // A poisoned lock only means a panic elsewhere; the set is still usable.
    let mut seen = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if seen.insert(path.to_path_buf()) {
        warn();
    }
}

/// Open `path` as [`read_with`] does (never blocks, regular files only, at
/// most `opts.max` bytes when opened) and return it unread, for a caller
/// that streams a large file instead of holding it whole (the audit log).
pub fn open(path: &Path, opts: Options) -> Result<(File, Metadata), ReadError> {
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(flags(opts))
        .open(path)
        .map_err(|source| ReadError::Io {
            path: path.into(),
            source,
        })?;
    checked(file, path, opts)
}

/// [`read_with`] for `name` inside the open directory `dir` (openat): what
/// the store uses to read through a directory it has checked. `shown` is the
/// path messages name.
pub fn read_at(
    dir: BorrowedFd<'_>,
    name: &Path,
    shown: &Path,
    opts: Options,
) -> Result<(Zeroizing<Vec<u8>>, Metadata), ReadError> {
    let oflag = nix::fcntl::OFlag::from_bits_truncate(flags(opts) | nix::libc::O_RDONLY);
    let fd =
        nix::fcntl::openat(dir, name, oflag, nix::sys::stat::Mode::empty()).map_err(|errno| {
            ReadError::Io {
                path: shown.into(),
                source: errno.into(),
            }
        })?;
    let (file, meta) = checked(File::from(fd), shown, opts)?;
    read_all(&file, meta, shown, opts)
}

/// The open flags for `opts`: never block (a FIFO), close on exec.
fn flags(opts: Options) -> i32 {
    let mut flags = nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC;
    if !opts.follow {
        flags |= nix::libc::O_NOFOLLOW;
    }
    flags
}

/// Check an opened `file` (fstat on its descriptor): regular, within the cap.
fn checked(file: File, path: &Path, opts: Options) -> Result<(File, Metadata), ReadError> {
    let meta = file.metadata().map_err(|source| ReadError::Io {
        path: path.into(),
        source,
    })?;
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
    // O_NONBLOCK changes nothing for a regular file's reads.
    Ok((file, meta))
}

/// Read `path`, and return the metadata of the very file read (fstat on the
/// same descriptor, so a swap between stat and read cannot fool the caller).
pub fn read_with(path: &Path, opts: Options) -> Result<(Zeroizing<Vec<u8>>, Metadata), ReadError> {
    let (file, meta) = open(path, opts)?;
    read_all(&file, meta, path, opts)
}

/// The contents of a checked file, in zeroizing memory, at most `opts.max`.
fn read_all(
    file: &File,
    meta: Metadata,
    path: &Path,
    opts: Options,
) -> Result<(Zeroizing<Vec<u8>>, Metadata), ReadError> {
    // Sized up front so a buffer holding a key is not reallocated (leaving
    // an unzeroized copy); +1 to see EOF without growing.
    let cap = usize::try_from(meta.len()).unwrap_or(0) + 1;
    let mut buf = Zeroizing::new(Vec::with_capacity(cap));
    file.take(opts.max + 1)
        .read_to_end(&mut buf)
        .map_err(|source| ReadError::Io {
            path: path.into(),
            source,
        })?;
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

    #[test]
    fn guarded_files_writable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, b"s3cret\n").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o640, true),
            (0o644, true),
            (0o660, true),
            (0o666, false),
            (0o602, false),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            for guard in [Guard::Secret, Guard::Trust] {
                let r = read_guarded(&p, "daemon.admin_token_file", guard, MAX_SECRET);
                assert_eq!(r.is_ok(), ok, "{mode:o} {guard:?}");
                if let Err(e) = r {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("lets other users write it") && msg.contains("chmod o-w"),
                        "{msg}"
                    );
                    assert!(!msg.contains("s3cret"), "{msg}");
                }
            }
        }
        // The rule is checked on the file read, also behind a symlink.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(matches!(
            read_guarded(&link, "k", Guard::Secret, MAX_SECRET),
            Err(ReadError::WritableByOthers { mode: 0o602, .. })
        ));
    }

    #[test]
    fn reason_leaves_out_the_path() {
        let e = read(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(
            e.reason(),
            "it is a character device, not a regular file; point the setting at a regular file"
        );
        let e = read(Path::new("/nonexistent/x")).unwrap_err();
        assert!(e.reason().starts_with("No such file"), "{}", e.reason());
    }
}
