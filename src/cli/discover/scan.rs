//! Walking the given paths and reading what looks like certificates and
//! keys. Only what lies under the given paths is read: symlinks are followed
//! only to files inside them, never to directories, and never out.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::DiscoverError;
use crate::certview::{self, Seen};
use crate::fs::safefile;

/// Deeper directory trees are not walked (a loop of bind mounts must end).
pub const MAX_DEPTH: usize = 32;
/// Files examined at most per run; more is reported as truncated.
pub const MAX_FILES: usize = 20_000;
/// Larger files are not certificates or keys (a system CA bundle is ~200 KiB).
pub const MAX_SIZE: u64 = 1 << 20;

/// A private key found in a file: only what pairing needs, never the key.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// The public half, to match a certificate's.
    pub public_key: Vec<u8>,
    /// `ecdsa-p256`, `ed25519`, `rsa`… (the certificate gives RSA's size).
    pub algorithm: String,
}

/// One file that holds certificates, a key, or both.
#[derive(Debug, Clone)]
pub struct Found {
    /// The path as found under a given root.
    pub path: PathBuf,
    /// The certificates in it, in order.
    pub certs: Vec<Seen>,
    /// Its private key, when it holds one that could be loaded.
    pub key: Option<KeyInfo>,
    /// A key that cannot be used without a passphrase.
    pub encrypted_key: bool,
    /// Permission bits.
    pub mode: u32,
    /// A Kubernetes-style link `NAME -> ..data/NAME` (atomic symlink swap).
    pub data_link: bool,
}

/// What the walk found, plus what it passed over and why.
#[derive(Debug, Default)]
pub struct Scan {
    /// Files with certificates or keys, in path order.
    pub found: Vec<Found>,
    /// Paths not read, with the reason (symlinks leaving the given paths…).
    pub skipped: Vec<(PathBuf, String)>,
    /// The walk stopped at [`MAX_FILES`].
    pub truncated: bool,
}

/// Walk `paths` and read every candidate file once.
pub fn scan(paths: &[PathBuf]) -> Result<Scan, DiscoverError> {
    let mut roots = Vec::new();
    for p in paths {
        let real = std::fs::canonicalize(p).map_err(|source| DiscoverError::Path {
            path: p.clone(),
            source,
        })?;
        roots.push((p.clone(), real));
    }
    let reals: Vec<PathBuf> = roots.iter().map(|(_, r)| r.clone()).collect();
    let mut walk = Walk {
        roots: reals,
        files: BTreeMap::new(),
        scan: Scan::default(),
        seen: 0,
    };
    for (given, real) in &roots {
        // A given path that is itself a link to a directory is walked as its target.
        let is_dir_link =
            std::fs::symlink_metadata(given).is_ok_and(|m| m.is_symlink()) && real.is_dir();
        walk.visit(if is_dir_link { real } else { given }, 0);
    }
    let Walk {
        files, mut scan, ..
    } = walk;
    // One entry per real file: a regular file's own path wins over links to it.
    for (real, (path, _)) in files {
        if let Some(f) = read(&path, &real) {
            scan.found.push(f);
        }
    }
    scan.found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(scan)
}

struct Walk {
    roots: Vec<PathBuf>,
    /// Real path → (path as found, found through a symlink).
    files: BTreeMap<PathBuf, (PathBuf, bool)>,
    scan: Scan,
    seen: usize,
}

impl Walk {
    fn inside(&self, real: &Path) -> bool {
        self.roots.iter().any(|r| real.starts_with(r))
    }

    fn visit(&mut self, path: &Path, depth: usize) {
        if self.seen >= MAX_FILES {
            self.scan.truncated = true;
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            if depth >= MAX_DEPTH {
                self.scan.skipped.push((
                    path.to_path_buf(),
                    format!("deeper than {MAX_DEPTH} levels"),
                ));
                return;
            }
            let Ok(entries) = std::fs::read_dir(path) else {
                self.scan
                    .skipped
                    .push((path.to_path_buf(), "directory not readable".into()));
                return;
            };
            let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            names.sort();
            for p in names {
                // Kubernetes' AtomicWriter keeps the real files in `..data`
                // and `..2024_…` directories; the visible names link into them.
                let hidden = p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".."));
                if !hidden {
                    self.visit(&p, depth + 1);
                }
            }
        } else if ft.is_symlink() {
            let Ok(real) = std::fs::canonicalize(path) else {
                return;
            };
            if !self.inside(&real) {
                self.scan.skipped.push((
                    path.to_path_buf(),
                    "a symlink leading outside the given paths; not followed".into(),
                ));
                return;
            }
            // Only files: a directory link could loop or re-enter the walk.
            if std::fs::metadata(&real).is_ok_and(|m| m.is_file() && m.len() <= MAX_SIZE) {
                self.seen += 1;
                self.files
                    .entry(real)
                    .or_insert_with(|| (path.to_path_buf(), true));
            }
        } else if ft.is_file() && meta.len() <= MAX_SIZE && meta.len() > 0 {
            self.seen += 1;
            let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            let entry = self
                .files
                .entry(real)
                .or_insert_with(|| (path.to_path_buf(), false));
            if entry.1 {
                *entry = (path.to_path_buf(), false);
            }
        }
    }
}

/// Read one candidate (its real path, without following links again) and
/// keep it when it holds certificates or a key.
fn read(path: &Path, real: &Path) -> Option<Found> {
    let opts = safefile::Options {
        follow: false,
        max: MAX_SIZE,
    };
    let (bytes, meta) = safefile::read_with(real, opts).ok()?;
    let certs = certview::certificates(&bytes).unwrap_or_default();
    let pem = certview::is_pem(&bytes);
    let key = if pem { key_info(&bytes) } else { None };
    let encrypted_key = pem && bytes.windows(21).any(|w| w == b"ENCRYPTED PRIVATE KEY");
    if certs.is_empty() && key.is_none() && !encrypted_key {
        return None;
    }
    Some(Found {
        path: path.to_path_buf(),
        certs,
        key,
        encrypted_key,
        mode: meta.permissions().mode() & 0o7777,
        data_link: data_link(path),
    })
}

/// The public half and algorithm of the first private key in a PEM text.
fn key_info(bytes: &[u8]) -> Option<KeyInfo> {
    let pem = crate::cert::pem_private_key(bytes)?;
    let key = crate::cert::load_key(&pem, "discovered key").ok()?;
    let alg = key.pair().algorithm();
    let algorithm = if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        "ecdsa-p256"
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        "ecdsa-p384"
    } else if alg == &rcgen::PKCS_ED25519 {
        "ed25519"
    } else {
        "rsa"
    };
    Some(KeyInfo {
        public_key: key.public_key(),
        algorithm: algorithm.to_string(),
    })
}

/// Whether `path` is a symlink `NAME -> ..data/NAME`.
fn data_link(path: &Path) -> bool {
    let (Ok(target), Some(name)) = (std::fs::read_link(path), path.file_name()) else {
        return false;
    };
    target == Path::new("..data").join(name)
}
