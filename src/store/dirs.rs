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
use std::fs::{File, Metadata};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;
use zeroize::Zeroizing;

use super::{fsutil, StoreError, Target};
use crate::safefile::{self, ReadError};

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
                let dir = fsutil::parent_dir(&t.path);
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
        let dir = fsutil::parent_dir(path);
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
        Ok(opened.map(|(file, _)| Dir {
            file,
            path: dir.to_path_buf(),
        }))
    }
}

/// Open a directory by path (following symlinks), never blocking.
fn open_dir(path: &Path) -> io::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    nix::fcntl::open(path, flags, Mode::empty())
        .map(File::from)
        .map_err(io::Error::from)
}

/// Open `name` in `dir` as a directory, never through a symlink.
fn open_sub(dir: &File, name: &Path) -> Result<File, Errno> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_DIRECTORY
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | OFlag::O_NONBLOCK;
    nix::fcntl::openat(dir.as_fd(), name, flags, Mode::empty()).map(File::from)
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

/// An open, checked target directory. Every operation is relative to it.
pub(super) struct Dir {
    file: File,
    path: PathBuf,
}

impl Dir {
    /// The configured path, for messages.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// `path/name`, for messages.
    pub(super) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// fsync the directory, so renames and creations in it are durable.
    pub(super) fn fsync(&self) -> Result<(), StoreError> {
        self.file
            .sync_all()
            .map_err(|e| StoreError::io("fsync", &self.path, e))
    }

    /// lstat of `name`; `Ok(None)` when it does not exist.
    pub(super) fn lstat(&self, name: &str) -> Result<Option<nix::sys::stat::FileStat>, StoreError> {
        match nix::sys::stat::fstatat(self.file.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(StoreError::io("stat", self.join(name), e.into())),
        }
    }

    /// Whether `name` is a directory (not following a symlink).
    pub(super) fn is_dir(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .lstat(name)?
            .is_some_and(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR))
    }

    /// Where the symlink `name` points; `None` when it is not a symlink or absent.
    pub(super) fn read_link(&self, name: &str) -> Option<PathBuf> {
        nix::fcntl::readlinkat(self.file.as_fd(), name)
            .ok()
            .map(PathBuf::from)
    }

    /// Create `name` (which must not exist; never through a symlink), set
    /// owner and mode on the descriptor, then write and fsync `bytes`:
    /// [`fsutil::write_new_file`], relative to this directory.
    pub(super) fn create_file(
        &self,
        name: &str,
        bytes: &[u8],
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), StoreError> {
        let path = self.join(name);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd: OwnedFd = nix::fcntl::openat(
            self.file.as_fd(),
            name,
            flags,
            Mode::from_bits_truncate(mode & 0o777),
        )
        .map_err(|e| StoreError::io("create", &path, e.into()))?;
        let mut file = File::from(fd);
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::fchown(&file, uid, gid)
                .map_err(|e| StoreError::io("set owner of", &path, e))?;
        }
        // After fchown: chown may clear set-id bits, and the umask narrowed the create mode.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| StoreError::io("set mode of", &path, e))?;
        file.write_all(bytes)
            .map_err(|e| StoreError::io("write", &path, e))?;
        file.sync_all()
            .map_err(|e| StoreError::io("fsync", &path, e))
    }

    /// Rename `from` to `to`, both in this directory. rename(2) replaces a
    /// symlink at `to` itself; it never writes through it.
    pub(super) fn rename(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let fd = self.file.as_fd();
        nix::fcntl::renameat(fd, from, fd, to)
            .map_err(|e| StoreError::io("rename into place", self.join(to), e.into()))
    }

    /// Create the symlink `name -> target`.
    pub(super) fn symlink(&self, target: &Path, name: &str) -> Result<(), StoreError> {
        nix::unistd::symlinkat(target, self.file.as_fd(), name)
            .map_err(|e| StoreError::io("create symlink", self.join(name), e.into()))
    }

    /// Create the directory `name` with exactly `mode` and open it.
    pub(super) fn mkdir(&self, name: &str, mode: u32) -> Result<Dir, StoreError> {
        let path = self.join(name);
        nix::sys::stat::mkdirat(self.file.as_fd(), name, Mode::from_bits_truncate(mode))
            .map_err(|e| StoreError::io("create directory", &path, e.into()))?;
        let file = open_sub(&self.file, Path::new(name))
            .map_err(|e| StoreError::io("open directory", &path, e.into()))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| StoreError::io("set mode of", &path, e))?;
        Ok(Dir { file, path })
    }

    /// Remove the file or symlink `name` (never a directory).
    pub(super) fn unlink(&self, name: &str) -> Result<(), StoreError> {
        match nix::unistd::unlinkat(self.file.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(StoreError::io("remove", self.join(name), e.into())),
        }
    }

    /// Remove `name`: a file, a symlink, or a whole directory tree (never
    /// following a symlink inside it). A missing name is fine.
    pub(super) fn remove(&self, name: &str) -> Result<(), StoreError> {
        remove_at(&self.file, Path::new(name), &self.join(name), 0)
    }

    /// The UTF-8 names in this directory (rekey's own names all are).
    pub(super) fn names(&self) -> Result<Vec<String>, StoreError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut d = nix::dir::Dir::openat(self.file.as_fd(), ".", flags, Mode::empty())
            .map_err(|e| StoreError::io("list", &self.path, e.into()))?;
        let mut out = Vec::new();
        for entry in d.iter() {
            let entry = entry.map_err(|e| StoreError::io("list", &self.path, e.into()))?;
            if let Ok(n) = entry.file_name().to_str() {
                if n != "." && n != ".." {
                    out.push(n.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Read `name` (bounded, never blocking, regular files only; a symlink
    /// at `name` is followed only when `follow`), with its metadata.
    pub(super) fn read(
        &self,
        name: &str,
        follow: bool,
    ) -> Result<(Zeroizing<Vec<u8>>, Metadata), ReadError> {
        let opts = safefile::Options {
            follow,
            max: fsutil::MAX_READ,
        };
        safefile::read_at(self.file.as_fd(), Path::new(name), &self.join(name), opts)
    }
}

/// Remove `name` in `dir`, recursing into a directory (a generation
/// directory holds files only; the depth is bounded all the same).
fn remove_at(dir: &File, name: &Path, shown: &Path, depth: u8) -> Result<(), StoreError> {
    let fd = dir.as_fd();
    match nix::unistd::unlinkat(fd, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) if depth < 8 => {}
        Err(e) => return Err(StoreError::io("remove", shown, e.into())),
    }
    let sub = match open_sub(dir, name) {
        Ok(f) => f,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(StoreError::io("remove", shown, e.into())),
    };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut d = nix::dir::Dir::openat(sub.as_fd(), ".", flags, Mode::empty())
        .map_err(|e| StoreError::io("list", shown, e.into()))?;
    let names: Vec<std::ffi::OsString> = d
        .iter()
        .flatten()
        .map(|e| std::ffi::OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect();
    for n in names {
        remove_at(&sub, Path::new(&n), &shown.join(&n), depth + 1)?;
    }
    match nix::unistd::unlinkat(fd, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(StoreError::io("remove", shown, e.into())),
    }
}
