//! Target directories, pinned: the rule that keeps a write from following a
//! symlink (or a directory) swapped into a target's path.
//!
//! When a credential is loaded, [`Pins::pin`] opens the directory of each of
//! its files, following the symlinks its path has then (`/etc/ssl` on some
//! systems), and remembers which directory that is (device and inode) and
//! its parent. Every write later goes through [`Pins::open`]: the directory
//! is opened again by path and must be that same directory, and every file
//! in it is then created, renamed, linked or removed relative to that open
//! directory (`openat` and friends), never by path, so nothing swapped in
//! during the write can redirect it. A directory that was replaced (moved
//! away and another directory or a symlink put at its path, or a component
//! of its path turned into a symlink that leads elsewhere) is refused with
//! [`StoreError::DirectoryReplaced`], which the engine reports as
//! `tampered`. A directory that was removed is created again inside the same
//! parent; one that did not exist when pinned is created component by
//! component inside the nearest one that did, each new component opened
//! with `O_NOFOLLOW`, so none of them can be a symlink either.

use std::fmt;
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::dirfd::open_sub;
pub(super) use super::dirfd::Dir;
use super::{StoreError, Target};
use crate::fs::ops;

/// Mode of target directories rekey creates: the app must traverse them.
pub(super) const TARGET_DIR_MODE: u32 = 0o755;

/// A directory's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DirId {
    dev: u64,
    ino: u64,
}

impl DirId {
    /// No directory (no real one has inode 0): kept instead of an `Option`,
    /// which would cost 8 bytes a credential more.
    const NONE: DirId = DirId { dev: 0, ino: 0 };

    fn of(f: &File) -> io::Result<DirId> {
        let m = f.metadata()?;
        Ok(DirId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

impl fmt::Display for DirId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device {} inode {}", self.dev, self.ino)
    }
}

/// What is remembered of one target directory.
#[derive(Clone, Copy, Debug)]
struct DirPin {
    /// The directory, or (when it did not exist yet) its nearest existing ancestor.
    id: DirId,
    /// The directory's parent, so a removed directory is created again in
    /// the same place; [`DirId::NONE`] while `missing > 0`.
    parent: DirId,
    /// Trailing components of the path that did not exist when pinned.
    missing: u16,
}

/// The pinned directories of one credential's files. Cheap to keep: six
/// words a directory, no path (the config has it), held exactly (a boxed
/// slice, not a growable Vec: this is kept for every credential).
#[derive(Debug, Default)]
pub struct Pins {
    slots: Mutex<Box<[(u64, DirPin)]>>,
}

/// A configured directory's key in [`Pins`].
fn key(dir: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    dir.hash(&mut h);
    h.finish()
}

impl Pins {
    /// Pin (again) the directories of `targets` as they are now: at start,
    /// and when a reload loads a changed credential. A directory that cannot
    /// be opened now is pinned at its first write instead.
    pub fn pin(&self, targets: &[Target]) {
        super::blocking(|| {
            let mut seen: Vec<PathBuf> = Vec::with_capacity(1);
            for t in targets {
                let dir = ops::parent_dir(&t.path);
                if seen.contains(&dir) {
                    continue;
                }
                seen.push(dir.clone());
                match take(&dir) {
                    Ok(pin) => self.set(&dir, pin),
                    Err(e) => {
                        tracing::debug!(dir = %dir.display(), error = %e, "cannot pin the directory yet")
                    }
                }
            }
        })
    }

    /// Pin the directory of `path` (an API key file) as it is now.
    pub fn pin_file(&self, path: &Path) {
        let dir = ops::parent_dir(path);
        if let Ok(pin) = super::blocking(|| take(&dir)) {
            self.set(&dir, pin);
        }
    }

    fn get(&self, dir: &Path) -> Option<DirPin> {
        let k = key(dir);
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.iter().find(|(h, _)| *h == k).map(|(_, p)| *p)
    }

    fn set(&self, dir: &Path, pin: DirPin) {
        let k = key(dir);
        // A poisoned lock only means a panic elsewhere; the pins are still valid.
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.iter_mut().find(|(h, _)| *h == k) {
            Some(slot) => slot.1 = pin,
            None => {
                let mut grown = std::mem::take(&mut *slots).into_vec();
                grown.push((k, pin));
                *slots = grown.into_boxed_slice();
            }
        }
    }

    /// Open `dir` for writing: the pinned directory, created (0755, and its
    /// missing parents) when it does not exist. Refused with
    /// [`StoreError::DirectoryReplaced`] when it is not the pinned one.
    pub(super) fn open(&self, dir: &Path) -> Result<Dir, StoreError> {
        match self.open_with(dir, true)? {
            Some(d) => Ok(d),
            // Unreachable with create = true; said plainly all the same.
            None => Err(StoreError::io(
                "create directory",
                dir,
                io::Error::from(io::ErrorKind::NotFound),
            )),
        }
    }

    /// Open `dir` for reading or removing: `Ok(None)` when it does not exist.
    pub(super) fn open_existing(&self, dir: &Path) -> Result<Option<Dir>, StoreError> {
        self.open_with(dir, false)
    }

    fn open_with(&self, dir: &Path, create: bool) -> Result<Option<Dir>, StoreError> {
        let pin = match self.get(dir) {
            Some(p) => p,
            None => {
                // Not pinned yet (nothing could be opened at load): the
                // directory as it is at its first use is the one.
                let p = take(dir).map_err(|e| StoreError::io("open directory", dir, e))?;
                self.set(dir, p);
                p
            }
        };
        let opened = open_pinned(dir, &pin, create)?;
        if let Some((_, Some(new))) = &opened {
            self.set(dir, *new);
        }
        Ok(opened.map(|(file, _)| Dir::new(file, dir.to_path_buf())))
    }
}

/// Open a directory by path (following symlinks), never blocking.
fn open_dir(path: &Path) -> io::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    nix::fcntl::open(path, flags, Mode::empty())
        .map(File::from)
        .map_err(io::Error::from)
}

/// `dir` without its last `n` components.
fn strip(dir: &Path, n: u16) -> &Path {
    let mut p = dir;
    for _ in 0..n {
        p = p.parent().unwrap_or(p);
    }
    p
}

/// The pin of `dir` as it is now.
fn take(dir: &Path) -> io::Result<DirPin> {
    let mut anchor = dir;
    let mut missing: u16 = 0;
    loop {
        match open_dir(anchor) {
            Ok(f) => {
                let parent = if missing == 0 {
                    open_sub(&f, Path::new(".."))
                        .ok()
                        .and_then(|p| DirId::of(&p).ok())
                        .unwrap_or(DirId::NONE)
                } else {
                    DirId::NONE
                };
                return Ok(DirPin {
                    id: DirId::of(&f)?,
                    parent,
                    missing,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match anchor.parent() {
                Some(p) if p != anchor && missing < u16::MAX => {
                    anchor = p;
                    missing += 1;
                }
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

fn replaced(dir: &Path, reason: String) -> StoreError {
    StoreError::DirectoryReplaced {
        dir: dir.to_path_buf(),
        reason,
    }
}

/// The opened directory, and its new pin when it changed (created, or
/// first reached through components that were missing).
type Opened = Option<(File, Option<DirPin>)>;

/// Open `dir` and check it against `pin`; see the module docs.
fn open_pinned(dir: &Path, pin: &DirPin, create: bool) -> Result<Opened, StoreError> {
    let anchor = strip(dir, pin.missing);
    let rest: Vec<&std::ffi::OsStr> = dir
        .strip_prefix(anchor)
        .map(|r| r.iter().collect())
        .unwrap_or_default();
    match open_dir(anchor) {
        Ok(f) => {
            let now = DirId::of(&f).map_err(|e| StoreError::io("stat", anchor, e))?;
            if now != pin.id {
                return Err(replaced(
                    dir,
                    format!(
                        "{} is no longer the directory rekey loaded ({}, now {now}): it was moved or replaced, or a component of its path became a symlink that leads elsewhere",
                        anchor.display(),
                        pin.id
                    ),
                ));
            }
            if rest.is_empty() {
                return Ok(Some((f, None)));
            }
            walk(dir, f, DirId::NONE, &rest, create)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && pin.missing == 0 => {
            // The pinned directory is gone: create it again, but only inside
            // the very parent it had.
            let (parent_id, Some(parent), Some(name)) = (pin.parent, dir.parent(), dir.file_name())
            else {
                return Err(replaced(dir, "it was removed".into()));
            };
            if parent_id == DirId::NONE {
                return Err(replaced(dir, "it was removed".into()));
            }
            let pf = match open_dir(parent) {
                Ok(pf) => pf,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(replaced(
                        dir,
                        "it was removed, and so was its parent".into(),
                    ))
                }
                Err(e) => return Err(StoreError::io("open directory", parent, e)),
            };
            let now = DirId::of(&pf).map_err(|e| StoreError::io("stat", parent, e))?;
            if now != parent_id {
                return Err(replaced(
                    dir,
                    format!(
                        "it was removed, and its parent {} is no longer the directory rekey loaded ({parent_id}, now {now})",
                        parent.display()
                    ),
                ));
            }
            walk(dir, pf, DirId::NONE, &[name], create)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(replaced(
            dir,
            format!(
                "{}, the directory rekey would create it in, was removed",
                anchor.display()
            ),
        )),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) => Err(replaced(
            dir,
            "a component of its path is no longer a directory".into(),
        )),
        Err(e) => Err(StoreError::io("open directory", dir, e)),
    }
}

/// Walk `rest` down from the checked directory `start`, never through a
/// symlink, creating missing components (0755) when `create`.
fn walk(
    dir: &Path,
    start: File,
    mut parent: DirId,
    rest: &[&std::ffi::OsStr],
    create: bool,
) -> Result<Opened, StoreError> {
    let mut cur = start;
    let mut at = strip(dir, rest.len() as u16).to_path_buf();
    for name in rest {
        at.push(name);
        let mut created = false;
        if create {
            match nix::sys::stat::mkdirat(
                cur.as_fd(),
                *name,
                Mode::from_bits_truncate(TARGET_DIR_MODE),
            ) {
                Ok(()) => created = true,
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(StoreError::io("create directory", &at, e.into())),
            }
        }
        let next = match open_sub(&cur, Path::new(name)) {
            Ok(f) => f,
            Err(Errno::ENOENT) if !create => return Ok(None),
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                return Err(replaced(
                    dir,
                    format!(
                        "{} is a symlink or not a directory, and rekey made no such thing there",
                        at.display()
                    ),
                ))
            }
            Err(e) => return Err(StoreError::io("open directory", &at, e.into())),
        };
        if created {
            // Exactly 0755 whatever the umask; the new entry made durable.
            next.set_permissions(std::fs::Permissions::from_mode(TARGET_DIR_MODE))
                .map_err(|e| StoreError::io("set mode of", &at, e))?;
            cur.sync_all()
                .map_err(|e| StoreError::io("fsync", strip(&at, 1), e))?;
        }
        parent = DirId::of(&cur).map_err(|e| StoreError::io("stat", &at, e))?;
        cur = next;
    }
    let pin = DirPin {
        id: DirId::of(&cur).map_err(|e| StoreError::io("stat", dir, e))?,
        parent,
        missing: 0,
    };
    Ok(Some((cur, Some(pin))))
}
