//! An open target directory, checked against its pin ([`super::dirs`]):
//! every file operation in it goes through its descriptor (`openat`,
//! `renameat`, `symlinkat`, `unlinkat`, `mkdirat`), never by path.

use std::fs::{File, Metadata};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;
use zeroize::Zeroizing;

use super::StoreError;
use crate::fs::ops;
use crate::fs::safefile::{self, ReadError};

/// Open `name` in `dir` as a directory, never through a symlink.
pub(super) fn open_sub(dir: &File, name: &Path) -> Result<File, Errno> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_DIRECTORY
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | OFlag::O_NONBLOCK;
    nix::fcntl::openat(dir.as_fd(), name, flags, Mode::empty()).map(File::from)
}

/// An open, checked target directory. Every operation is relative to it.
pub(super) struct Dir {
    file: File,
    path: PathBuf,
}

impl Dir {
    /// `file`, a directory already checked, known by its configured `path`.
    pub(super) fn new(file: File, path: PathBuf) -> Dir {
        Dir { file, path }
    }

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
    /// [`ops::write_new_file`], relative to this directory.
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
            max: ops::MAX_READ,
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
