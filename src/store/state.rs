//! The state dir: lock, CA dir, per-credential journal and staged generations.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use zeroize::Zeroizing;

use super::{Material, StoreError};
use crate::fs::ops::{self, Cleanup};

/// Mode of every directory rekey creates in the state dir.
const DIR_MODE: u32 = 0o700;
/// Mode of every file in a generation (the key is one of them).
const GEN_FILE_MODE: u32 = 0o600;
/// The journal file's name in a credential's directory.
const JOURNAL: &str = "journal.json";

/// The owner of a state dir that does not belong to the user rekey runs as
/// (`None` when it does). Even root refuses one: whoever owns it can read
/// and replace the keys rekey would write into it.
fn foreign_owner(meta: &fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    (meta.uid() != me).then_some(meta.uid())
}

/// The state dir, locked against a second rekey for as long as this lives.
pub struct Store {
    root: PathBuf,
    readonly: bool,
    /// Held for its Drop (unlock); `None` in read-only mode.
    _lock: Option<Flock<File>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .field("readonly", &self.readonly)
            .finish()
    }
}

impl Store {
    /// Open (create with 0700 if missing, parents too) the state dir; refuse one whose mode has group/other bits; take an exclusive non-blocking flock on `<state_dir>/lock` held as long as the Store lives (error StoreError::Locked naming the dir if another rekey holds it).
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        ops::create_dir_all_mode(state_dir, DIR_MODE)?;
        let meta = fs::metadata(state_dir).map_err(|e| StoreError::io("stat", state_dir, e))?;
        if !meta.is_dir() {
            return Err(StoreError::NotADirectory {
                path: state_dir.into(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StoreError::InsecureStateDir {
                path: state_dir.into(),
                mode,
            });
        }
        if let Some(owner) = foreign_owner(&meta) {
            return Err(StoreError::ForeignStateDir {
                path: state_dir.into(),
                owner,
                me: nix::unistd::geteuid().as_raw(),
            });
        }
        let lock_path = state_dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| StoreError::io("open", &lock_path, e))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(StoreError::Locked {
                    path: state_dir.into(),
                })
            }
            Err((_, errno)) => {
                return Err(StoreError::io("lock", lock_path, io::Error::from(errno)))
            }
        };
        Ok(Store {
            root: state_dir.into(),
            readonly: false,
            _lock: Some(lock),
        })
    }

    /// Open without creating or locking (for `rekey check`, read-only).
    pub fn open_readonly(state_dir: &Path) -> Store {
        Store {
            root: state_dir.into(),
            readonly: true,
            _lock: None,
        }
    }

    /// The state dir.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<state_dir>/ca`, created 0700 when missing (not in read-only mode).
    pub fn ca_dir(&self) -> Result<PathBuf, StoreError> {
        let dir = self.root.join("ca");
        if !self.readonly {
            ops::create_dir_all_mode(&dir, DIR_MODE)?;
        }
        Ok(dir)
    }

    /// The per-credential area `<state_dir>/certs/<name>` (created 0700 on first write).
    pub fn credential(&self, name: &str) -> CredentialStore {
        CredentialStore {
            dir: self.root.join("certs").join(name),
            invalid_name: invalid_name(name),
            readonly: self.readonly,
        }
    }

    /// The per-issuer area `<state_dir>/issuers/<name>` (created 0700 on
    /// first write): its journal holds what is kept about the issuer as a
    /// whole (the issuance ledger of `max_issuances_total`).
    pub fn issuer(&self, name: &str) -> CredentialStore {
        CredentialStore {
            dir: self.root.join("issuers").join(name),
            invalid_name: invalid_name(name),
            readonly: self.readonly,
        }
    }
}

/// One credential's journal and staged generations.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    dir: PathBuf,
    /// The name as given, kept only when it could escape `certs/` (the
    /// first write refuses it): a valid name is already in `dir`.
    invalid_name: Option<Box<str>>,
    readonly: bool,
}

impl CredentialStore {
    /// `<state_dir>/certs/<name>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Load `journal.json` into T; Ok(None) when absent. A corrupt journal is an error naming the file.
    pub fn load_journal<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, StoreError> {
        super::blocking(|| self.load_journal_now())
    }

    // The blocking body of the function above.
    fn load_journal_now<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, StoreError> {
        self.check_name()?;
        let path = self.dir.join(JOURNAL);
        let bytes = match ops::read_file(&path, false) {
            Ok(b) => b,
            Err(crate::fs::FsError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::CorruptJournal { path, source })
    }

    /// Atomically replace journal.json (temp in same dir, fsync, rename, fsync dir).
    pub fn save_journal<T: serde::Serialize>(&self, journal: &T) -> Result<(), StoreError> {
        super::blocking(|| self.save_journal_now(journal))
    }

    // The blocking body of the function above.
    fn save_journal_now<T: serde::Serialize>(&self, journal: &T) -> Result<(), StoreError> {
        self.ensure_dir()?;
        let mut bytes =
            serde_json::to_vec_pretty(journal).map_err(|source| StoreError::EncodeJournal {
                path: self.dir.join(JOURNAL),
                source,
            })?;
        bytes.push(b'\n');
        Ok(ops::replace_file(&self.dir, JOURNAL, &bytes, 0o600)?)
    }

    /// Write generation N (`gen-N/` dir 0700 with cert.pem, chain.pem, key.pem 0600, ca.pem and keystore.p12 if any), fsync every file and the dir, via a temp dir renamed into place, so a staged generation is either complete or absent.
    pub fn stage(&self, generation: u64, material: &Material) -> Result<(), StoreError> {
        super::blocking(|| self.stage_now(generation, material))
    }

    // The blocking body of the function above.
    fn stage_now(&self, generation: u64, material: &Material) -> Result<(), StoreError> {
        self.ensure_dir()?;
        let name = gen_name(generation);
        let final_dir = self.dir.join(&name);
        let tmp = ops::temp_path(&self.dir, &name);
        let mut cleanup = Cleanup::default();
        fs::create_dir(&tmp).map_err(|e| StoreError::io("create directory", &tmp, e))?;
        cleanup.add(tmp.clone());
        ops::set_mode(&tmp, DIR_MODE)?;
        let mut files: Vec<(&str, &[u8])> = vec![
            ("cert.pem", material.cert_pem.as_bytes()),
            ("chain.pem", material.chain_pem.as_bytes()),
            ("key.pem", material.key_pem.as_bytes()),
        ];
        if let Some(ca) = &material.ca_pem {
            files.push(("ca.pem", ca.as_bytes()));
        }
        if let Some(p12) = &material.pkcs12 {
            files.push((KEYSTORE, p12.as_slice()));
        }
        for (file, bytes) in files {
            failpoint!("stage.file");
            ops::write_new_file(&tmp.join(file), bytes, GEN_FILE_MODE, None, None)?;
        }
        ops::fsync_dir(&tmp)?;
        // Re-staging a generation (after a crash mid-rotation): move the old
        // one aside first, since rename cannot replace a non-empty directory,
        // and gen-N must never be seen half-removed.
        if fs::symlink_metadata(&final_dir).is_ok() {
            let aside = self
                .dir
                .join(format!(".{name}.rekey-old-{}.tmp", ops::random_suffix()));
            fs::rename(&final_dir, &aside)
                .map_err(|e| StoreError::io("rename aside", &final_dir, e))?;
            cleanup.add(aside);
        }
        failpoint!("stage.rename");
        fs::rename(&tmp, &final_dir)
            .map_err(|e| StoreError::io("rename into place", &final_dir, e))?;
        cleanup.forget(&tmp);
        // On return `cleanup` removes only the moved-aside old copy, if any.
        Ok(ops::fsync_dir(&self.dir)?)
    }

    /// Read generation N back.
    pub fn load_generation(&self, generation: u64) -> Result<Material, StoreError> {
        super::blocking(|| self.load_generation_now(generation))
    }

    // The blocking body of the function above.
    fn load_generation_now(&self, generation: u64) -> Result<Material, StoreError> {
        self.check_name()?;
        let dir = self.dir.join(gen_name(generation));
        let read_text = |file: &str| -> Result<Zeroizing<String>, StoreError> {
            let path = dir.join(file);
            let mut bytes = ops::read_file(&path, false)?;
            // Move the bytes out (no copy); a rejected buffer is zeroized explicitly.
            String::from_utf8(std::mem::take(&mut *bytes))
                .map(Zeroizing::new)
                .map_err(|e| {
                    drop(Zeroizing::new(e.into_bytes()));
                    StoreError::BadGeneration {
                        path: dir.clone(),
                        reason: "a file is not valid UTF-8 PEM",
                    }
                })
        };
        let key_path = dir.join("key.pem");
        let key_mode = fs::symlink_metadata(&key_path)
            .map_err(|e| StoreError::io("read", &key_path, e))?
            .permissions()
            .mode()
            & 0o7777;
        if key_mode & 0o077 != 0 {
            return Err(StoreError::InsecureKeyFile {
                path: key_path,
                mode: key_mode,
            });
        }
        let absent = |e: &StoreError| matches!(e, StoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound);
        let ca_pem = match read_text("ca.pem") {
            Ok(ca) => Some(ca.to_string()),
            Err(e) if absent(&e) => None,
            Err(e) => return Err(e),
        };
        let pkcs12 = match ops::read_file(&dir.join(KEYSTORE), false).map_err(StoreError::from) {
            Ok(bytes) => Some(bytes),
            Err(e) if absent(&e) => None,
            Err(e) => return Err(e),
        };
        Ok(Material {
            cert_pem: read_text("cert.pem")?.to_string(),
            chain_pem: read_text("chain.pem")?.to_string(),
            key_pem: read_text("key.pem")?,
            ca_pem,
            pkcs12,
        })
    }

    /// Read only generation N's leaf certificate (cert.pem): what an issuer
    /// needs for ARI, `replaced` and `revoke`, without touching the key.
    pub fn load_cert_pem(&self, generation: u64) -> Result<String, StoreError> {
        super::blocking(|| {
            self.check_name()?;
            let path = self.dir.join(gen_name(generation)).join("cert.pem");
            let bytes = ops::read_file(&path, false)?;
            String::from_utf8(bytes.to_vec()).map_err(|_| StoreError::BadGeneration {
                path,
                reason: "a file is not valid UTF-8 PEM",
            })
        })
    }

    /// Whether gen-N exists complete.
    pub fn has_generation(&self, generation: u64) -> bool {
        if self.check_name().is_err() {
            return false;
        }
        let dir = self.dir.join(gen_name(generation));
        let is_dir = fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
        is_dir
            && ["cert.pem", "chain.pem", "key.pem"]
                .iter()
                .all(|f| fs::symlink_metadata(dir.join(f)).is_ok_and(|m| m.is_file()))
    }

    /// Delete every gen-* (and leftover temp dirs) not in `keep`.
    pub fn prune(&self, keep: &[u64]) -> Result<(), StoreError> {
        super::blocking(|| self.prune_now(keep))
    }

    // The blocking body of the function above.
    fn prune_now(&self, keep: &[u64]) -> Result<(), StoreError> {
        if self.readonly {
            return Err(StoreError::ReadOnly {
                path: self.dir.clone(),
            });
        }
        self.check_name()?;
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io("list", &self.dir, e)),
        };
        let mut removed = false;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list", &self.dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue; // not a name we create
            };
            let doomed = match parse_gen_name(&name) {
                Some(n) => !keep.contains(&n),
                None => ops::is_temp_name(&name),
            };
            if doomed {
                ops::remove_any(&entry.path())?;
                removed = true;
            }
        }
        if removed {
            ops::fsync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Create `certs/<name>` (0700) before a write; refuse in read-only mode.
    fn ensure_dir(&self) -> Result<(), StoreError> {
        if self.readonly {
            return Err(StoreError::ReadOnly {
                path: self.dir.clone(),
            });
        }
        self.check_name()?;
        Ok(ops::create_dir_all_mode(&self.dir, DIR_MODE)?)
    }

    /// The name becomes a path component: refuse anything that could escape `certs/`.
    fn check_name(&self) -> Result<(), StoreError> {
        match &self.invalid_name {
            Some(n) => Err(StoreError::InvalidName {
                name: n.to_string(),
            }),
            None => Ok(()),
        }
    }
}

/// `name`, when it could escape `certs/` as a path component.
fn invalid_name(name: &str) -> Option<Box<str>> {
    let bad = name.is_empty() || name.starts_with('.') || name.contains('/') || name.contains('\0');
    bad.then(|| name.into())
}

/// A generation's PKCS#12 keystore, when it has one.
const KEYSTORE: &str = "keystore.p12";

/// `gen-N`.
fn gen_name(generation: u64) -> String {
    format!("gen-{generation}")
}

/// N from a canonical `gen-N` (so "gen-007" or "gen-x" are not ours and are left alone).
fn parse_gen_name(name: &str) -> Option<u64> {
    let n: u64 = name.strip_prefix("gen-")?.parse().ok()?;
    (gen_name(n) == name).then_some(n)
}
