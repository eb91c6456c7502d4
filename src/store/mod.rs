//! Every byte rekey writes to disk: staged generations and the journal in the
//! state dir, and the application's files, published atomically.
//!
//! The store knows nothing of the engine, issuers or config parsing; it takes
//! plain paths, modes and owners.
//!
//! # State dir layout
//!
//! ```text
//! <state_dir>/            0700, refused when group/other bits are set
//!   lock                  flock held while a `Store` lives (one rekey per state dir)
//!   ca/                   0700, for the embedded local CA
//!   certs/<name>/         0700, one per credential
//!     journal.json        replaced atomically (temp, fsync, rename, fsync dir)
//!     gen-<N>/            0700: cert.pem chain.pem key.pem [ca.pem] [keystore.p12], all 0600
//! ```
//!
//! A generation is written into a hidden temp directory, every file and the
//! directory fsynced, then renamed to `gen-<N>`: it is either complete or absent.
//!
//! # Publishing
//!
//! **Rename mode** (`SwapMode::Rename`): every target's bytes go to a temp file
//! in the target's directory (`.<basename>.rekey-<random>.tmp`, created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`), then `fchown` (when asked), `fchmod`
//! to the target mode (so the umask never matters, and modes are applied on
//! every write, not only on create), write, fsync. Only when *all* temp files
//! are written is each renamed over its target, in the order given (callers
//! pass ca, chain, cert, fullchain, key, bundle), then each distinct directory
//! is fsynced. Any failure before the renames removes the temp files and
//! leaves every old file untouched. A failure during the renames (rare: same
//! directory, same filesystem) can leave some files new and some old; the
//! engine then republishes a generation. Missing target directories are
//! created 0755. A target path is never opened for writing and a symlink at a
//! target is replaced itself, never written through. A target that is a
//! directory is an error and is left alone. Each file read is always one
//! complete version, but between two renames cert and key can be from
//! different generations: use symlink mode when the app may read during a swap.
//!
//! **Symlink mode** (`SwapMode::Symlink`, all targets in one directory), like
//! Kubernetes' AtomicWriter: the files are written (modes, owners, fsync) into
//! `..rekey-<id>.tmp`, which is fsynced and renamed to `..rekey-<id>`; a
//! temp symlink `..data_tmp -> ..rekey-<id>` is renamed over `..data` and the
//! directory fsynced. Each target `<basename>` is a symlink to
//! `..data/<basename>`; missing ones are created and a regular file or a
//! foreign symlink there is replaced atomically (temp symlink + rename). Then
//! old `..rekey-*` directories are removed except the new one and the one
//! `..data` pointed to before (kept for rollback and for readers mid-read).
//! Only `..data` flips, so at every instant all targets resolve into one
//! generation. A reader that needs a matching pair across two opens must not
//! straddle a flip: it can open both files through one resolved `..data`, or
//! check that `..data` did not change around its reads. (The engine reloads
//! the app only after `publish` returns, so an app never straddles one.)
//! The first symlink publish over pre-existing regular files converts them one
//! by one. One directory holds the files of one credential only: the `..data`
//! and `..rekey-*` names are per directory.
//!
//! **Directories** (both modes, and API key files): every write, drift
//! check and removal goes through [`Pins`], which opens each target's
//! directory, checks it is the one pinned when the credential was loaded,
//! and does everything relative to that open directory (`openat`), never by
//! path. A directory replaced since (or reached through a symlink swapped in
//! since) is refused with [`StoreError::DirectoryReplaced`].

mod dirfd;
mod dirs;
mod error;
mod publish;
mod state;
mod unpublish;

#[cfg(test)]
mod tests_dirs;
#[cfg(test)]
mod tests_publish;
#[cfg(test)]
mod tests_state;

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::fs::ops;

pub use crate::config::{FileKind, SwapMode};
pub use dirs::Pins;
pub use error::StoreError;
pub use publish::{diff_published, publish, read_published, sha256};
pub use state::{CredentialStore, Store};
pub use unpublish::unpublish;

/// One output file to publish.
#[derive(Clone, Debug)]
pub struct Target {
    /// Which content the file holds.
    pub kind: FileKind,
    /// Where the application reads it.
    pub path: PathBuf,
    /// Permission bits, applied on every write.
    pub mode: u32,
    /// Owner to set, if any.
    pub uid: Option<u32>,
    /// Group to set, if any.
    pub gid: Option<u32>,
}

/// One issued generation: leaf, intermediates, private key, optional CA
/// root (or trust bundle), and its PKCS#12 keystore when one is published.
/// Key and keystore zeroized on drop.
#[derive(Clone)]
pub struct Material {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The intermediates, PEM; may be "".
    pub chain_pem: String,
    /// The private key, PEM; zeroized on drop.
    pub key_pem: Zeroizing<String>,
    /// The CA root, PEM, when the issuer returns one.
    pub ca_pem: Option<String>,
    /// The PKCS#12 keystore, encoded once when the generation is staged
    /// (its salt is random, so it is kept, not re-encoded; see
    /// [`crate::keystore`]).
    pub pkcs12: Option<Zeroizing<Vec<u8>>>,
}

impl Material {
    /// The bytes a file of this kind holds: Cert=leaf, Key=key,
    /// Chain=chain, Fullchain=leaf+chain, Bundle=key+leaf+chain, Ca=ca
    /// (error if None), CertDer=the leaf's DER, KeyDer=the key's PKCS#8 DER,
    /// Pkcs12=the keystore staged with it (error if None).
    pub fn render(&self, kind: FileKind) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let encode = |kind: &'static str| move |source| StoreError::Encode { kind, source };
        let parts: Vec<&str> = match kind {
            FileKind::Cert => vec![&self.cert_pem],
            FileKind::Key => vec![&self.key_pem],
            FileKind::Chain => vec![&self.chain_pem],
            FileKind::Fullchain => vec![&self.cert_pem, &self.chain_pem],
            FileKind::Bundle => vec![&self.key_pem, &self.cert_pem, &self.chain_pem],
            FileKind::Ca => vec![self.ca_pem.as_deref().ok_or(StoreError::NoCa)?],
            FileKind::CertDer => {
                let der = crate::keystore::cert_der(&self.cert_pem).map_err(encode("cert_der"))?;
                return Ok(Zeroizing::new(der));
            }
            FileKind::KeyDer => {
                return crate::keystore::key_der(&self.key_pem).map_err(encode("key_der"))
            }
            FileKind::Pkcs12 => return self.pkcs12.clone().ok_or(StoreError::NoKeystore),
        };
        // Capacity reserved up front so a buffer holding the key is never
        // reallocated, which would leave an unzeroized copy behind.
        let cap = parts.iter().map(|p| p.len() + 1).sum();
        let mut out = Zeroizing::new(Vec::with_capacity(cap));
        for part in parts.iter().filter(|p| !p.is_empty()) {
            // PEM blocks must start on their own line.
            if out.last().is_some_and(|&b| b != b'\n') {
                out.push(b'\n');
            }
            out.extend_from_slice(part.as_bytes());
        }
        Ok(out)
    }
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("cert_pem", &self.cert_pem)
            .field("chain_pem", &self.chain_pem)
            .field("key_pem", &"<redacted>")
            .field("ca_pem", &self.ca_pem)
            .field("pkcs12", &self.pkcs12.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What each target of a committed generation must hold, as the SHA-256 of
/// the bytes a publish writes there. Drift detection compares against this,
/// so an idle credential keeps ~35 bytes a file instead of the PEM text, and
/// its private key is not resident between repairs (idle memory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected(Box<[(FileKind, Option<[u8; 32]>)]>);

impl Expected {
    /// The digests of `material` rendered for each target; `None` for a kind
    /// the material cannot fill (a `ca` file with no CA certificate).
    pub fn of(targets: &[Target], material: &Material) -> Expected {
        Expected(
            targets
                .iter()
                .map(|t| (t.kind, material.render(t.kind).ok().map(|b| sha256(&b))))
                .collect(),
        )
    }

    /// The digest a file of `kind` must have; `None` when there is nothing
    /// it could match.
    pub fn digest(&self, kind: FileKind) -> Option<&[u8; 32]> {
        self.0
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, d)| d.as_ref())
    }

    /// Whether `material` renders to exactly these bytes for every target:
    /// the check that a copy read back (state dir or published files) is the
    /// generation that was validated and committed, before it is published.
    /// A kind the committed material could not fill must be unfillable here
    /// too (publishing it then fails with [`StoreError::NoCa`], as before).
    pub fn matches(&self, material: &Material) -> bool {
        self.0.iter().all(|(kind, want)| {
            let have = material.render(*kind).ok().map(|b| sha256(&b));
            have == *want
        })
    }
}

/// A published file that does not match what rekey last wrote.
#[derive(Debug, Clone)]
pub struct Drift {
    /// Which file.
    pub kind: FileKind,
    /// Its path.
    pub path: PathBuf,
    /// What differs, short, for logs and alerts (never file contents).
    pub reason: String,
    /// The file's directory is not the one rekey loaded (see [`Pins`]):
    /// nothing is written there, so the file cannot be restored.
    pub directory_replaced: bool,
}

/// Run blocking disk I/O. An fsync can take seconds when the disk is busy;
/// on a multi-thread runtime, `block_in_place` hands this worker's other
/// tasks (the HTTP endpoint, other credentials) to another thread meanwhile,
/// so one slow disk never stalls `/healthz` (found by tests/it/load.rs). On a
/// current-thread runtime, or outside one, it simply runs.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Atomically replace the application's file `path` with `bytes`, owner
/// and mode set before any byte is written (temp, fsync, rename, dir fsync),
/// inside the directory `pins` holds (see [`Pins`]): for API key files.
pub fn publish_file(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
    pins: &Pins,
) -> Result<(), StoreError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or(StoreError::BadTarget {
            path: path.to_path_buf(),
            reason: "the path has no UTF-8 file name; give a file path",
        })?;
    blocking(|| {
        let dir = pins.open(&ops::parent_dir(path))?;
        if dir.is_dir(name)? {
            return Err(StoreError::TargetIsDirectory { path: path.into() });
        }
        let tmp = ops::temp_name(name);
        let result = dir
            .create_file(&tmp, bytes, mode, uid, gid)
            .and_then(|()| dir.rename(&tmp, name));
        if let Err(e) = result {
            let _ = dir.remove(&tmp); // best effort
            return Err(e);
        }
        dir.fsync()
    })
}

/// Remove the application's file `path` inside the directory `pins` holds;
/// `Ok(false)` when there was nothing to remove.
pub fn remove_file(path: &Path, pins: &Pins) -> Result<bool, StoreError> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(false);
    };
    blocking(|| {
        let Some(dir) = pins.open_existing(&ops::parent_dir(path))? else {
            return Ok(false);
        };
        if dir.lstat(name)?.is_none() || dir.is_dir(name)? {
            return Ok(false);
        }
        dir.unlink(name)?;
        dir.fsync()?;
        Ok(true)
    })
}

/// Atomically replace `path` with `bytes`, owner and mode set before any byte
/// is written (temp, fsync, rename, dir fsync): for files in the state dir.
pub fn write_secret_file(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<(), StoreError> {
    let dir = ops::parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = ops::temp_path(&dir, &name);
    let result = ops::write_new_file(&tmp, bytes, mode, uid, gid)
        .map_err(StoreError::from)
        .and_then(|()| {
            std::fs::rename(&tmp, path).map_err(|e| StoreError::io("rename into place", path, e))
        });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp); // best effort
        return Err(e);
    }
    Ok(ops::fsync_dir(&dir)?)
}
