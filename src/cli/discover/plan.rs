//! From what the walk found to a starter config: each key paired with the
//! files that hold its certificate becomes a `[[certificate]]` rekey could
//! manage (names, key type, lifetime and file layout as found); every other
//! certificate file becomes a `[[watch]]`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::scan::Scan;
use crate::certview::Seen;
use crate::config::{FileKind, KeyType, SwapMode};

/// A certificate rekey could manage.
#[derive(Debug, Clone)]
pub struct CertPlan {
    /// Proposed `name`.
    pub name: String,
    /// The leaf as found.
    pub leaf: Seen,
    /// `key_type`, from the leaf's key.
    pub key_type: KeyType,
    /// `lifetime`, the leaf's, rounded.
    pub lifetime: Duration,
    /// `swap`: symlink when the files are `..data` links.
    pub swap: SwapMode,
    /// `files`, in the order ca, chain, cert, fullchain, key, bundle.
    pub files: Vec<(FileKind, PathBuf)>,
    /// Mode of the file holding the key.
    pub key_mode: u32,
    /// Mode of the certificate file.
    pub cert_mode: u32,
}

/// A certificate file to watch.
#[derive(Debug, Clone)]
pub struct WatchPlan {
    /// Proposed `name`.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Certificates in it.
    pub count: usize,
    /// The one that expires first.
    pub soonest: Seen,
    /// Why it is not managed, when there was a key for it.
    pub why: Option<String>,
}

/// A key that goes with no manageable certificate.
#[derive(Debug, Clone)]
pub struct LoneKey {
    /// The file.
    pub path: PathBuf,
    /// Why nothing was proposed for it.
    pub why: String,
}

/// The proposal.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// `[[certificate]]` entries.
    pub certificates: Vec<CertPlan>,
    /// `[[watch]]` entries.
    pub watches: Vec<WatchPlan>,
    /// Keys left over.
    pub lone_keys: Vec<LoneKey>,
}

/// The `key_type` of a certificate whose key [`crate::cert::CertInfo`]
/// describes as `found` (`None`: not one rekey makes, e.g. RSA-1024).
pub fn key_type(found: &str) -> Option<KeyType> {
    Some(match found {
        "ecdsa (256 bits)" => KeyType::EcdsaP256,
        "ecdsa (384 bits)" => KeyType::EcdsaP384,
        "ed25519" => KeyType::Ed25519,
        "rsa (2048 bits)" => KeyType::Rsa2048,
        "rsa (3072 bits)" => KeyType::Rsa3072,
        "rsa (4096 bits)" => KeyType::Rsa4096,
        _ => return None,
    })
}

/// Pair keys with certificates and propose entries.
pub fn plan(scan: &Scan) -> Plan {
    let f = &scan.found;
    let mut claimed: BTreeSet<usize> = BTreeSet::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut out = Plan::default();
    for (k, kf) in f.iter().enumerate() {
        let Some(key) = &kf.key else { continue };
        // Files whose leaf is this key's certificate, the key's own directory first.
        let mut cands: Vec<usize> = (0..f.len())
            .filter(|j| !claimed.contains(j))
            .filter(|&j| {
                f[j].certs
                    .first()
                    .is_some_and(|c| c.public_key == key.public_key)
            })
            .collect();
        cands.sort_by_key(|&j| (dir(&f[j].path) != dir(&kf.path), f[j].path.clone()));
        let Some(&first) = cands.first() else {
            let why = if claimed.contains(&k) {
                continue;
            } else {
                "no certificate for this key under the given paths".to_string()
            };
            out.lone_keys.push(LoneKey {
                path: kf.path.clone(),
                why,
            });
            continue;
        };
        let leaf = f[first].certs[0].clone();
        let Some(kt) = key_type(&leaf.key_type) else {
            out.lone_keys.push(LoneKey {
                path: kf.path.clone(),
                why: format!(
                    "its certificate's key ({}) is not a key type rekey makes; the certificate is watched instead",
                    leaf.key_type
                ),
            });
            continue;
        };
        let cert_dir = dir(&f[first].path).to_path_buf();
        let same_dir: Vec<usize> = cands
            .iter()
            .copied()
            .filter(|&j| dir(&f[j].path) == cert_dir)
            .collect();
        let mut files: Vec<(FileKind, usize)> = Vec::new();
        if same_dir.contains(&k) {
            files.push((FileKind::Bundle, k));
        } else {
            files.push((FileKind::Key, k));
            if let Some(&j) = same_dir.iter().find(|&&j| f[j].certs.len() == 1) {
                files.push((FileKind::Cert, j));
            }
            if let Some(&j) = same_dir.iter().find(|&&j| f[j].certs.len() > 1) {
                files.push((FileKind::Fullchain, j));
            }
        }
        let chosen: Vec<usize> = files.iter().map(|(_, j)| *j).collect();
        let chain_of = |fc: Option<usize>| fc.map(|j| f[j].certs[1..].to_vec());
        let fullchain = files
            .iter()
            .find(|(kind, _)| matches!(kind, FileKind::Fullchain | FileKind::Bundle))
            .map(|(_, j)| *j);
        let intermediates = chain_of(fullchain).unwrap_or_default();
        let is_free =
            |j: usize| !claimed.contains(&j) && !chosen.contains(&j) && dir(&f[j].path) == cert_dir;
        // Where several files fit a role, the one named for it wins (chain.pem, ca.pem).
        let by_name = |words: &'static [&'static str]| {
            let mut order: Vec<usize> = (0..f.len()).filter(|&j| is_free(j)).collect();
            order.sort_by_key(|&j| {
                let n = stem(&f[j].path).to_ascii_lowercase();
                (!words.iter().any(|w| n.contains(w)), f[j].path.clone())
            });
            order
        };
        // `chain`: the intermediates of the fullchain, or the leaf's issuer.
        let chain = by_name(&["chain"]).into_iter().find(|&j| {
            let c = &f[j].certs;
            !c.is_empty()
                && f[j].key.is_none()
                && if intermediates.is_empty() {
                    c[0].cert.subject == leaf.cert.issuer
                        && !self_signed(&c[0])
                        && c.iter().all(|x| x.cert.is_ca)
                } else {
                    fingerprints(c) == fingerprints(&intermediates)
                }
        });
        if let Some(j) = chain {
            files.push((FileKind::Chain, j));
        }
        // `ca`: the self-signed root above the top of the chain.
        let top = chain
            .and_then(|j| f[j].certs.last().cloned())
            .or_else(|| intermediates.last().cloned())
            .unwrap_or_else(|| leaf.clone());
        let ca = by_name(&["ca", "root"])
            .into_iter()
            .filter(|&j| Some(j) != chain)
            .find(|&j| {
                let c = &f[j].certs;
                c.len() == 1
                    && f[j].key.is_none()
                    && c[0].cert.is_ca
                    && self_signed(&c[0])
                    && c[0].cert.subject == top.cert.issuer
            });
        if let Some(j) = ca {
            files.push((FileKind::Ca, j));
        }
        let order = |kind: &FileKind| match kind {
            FileKind::Ca => 0,
            FileKind::Chain => 1,
            FileKind::Cert => 2,
            FileKind::Fullchain => 3,
            FileKind::Key => 4,
            FileKind::Bundle => 5,
            // Discovery finds PEM files only.
            FileKind::CertDer | FileKind::KeyDer | FileKind::Pkcs12 => 6,
        };
        files.sort_by_key(|(kind, _)| order(kind));
        // A symlink swap flips one directory: all files there, all `..data` links.
        let swap = if files
            .iter()
            .all(|(_, j)| f[*j].data_link && dir(&f[*j].path) == cert_dir)
        {
            SwapMode::Symlink
        } else {
            SwapMode::Rename
        };
        let mode_of = |kinds: &[FileKind], default| {
            files
                .iter()
                .find(|(kind, _)| kinds.contains(kind))
                .map_or(default, |(_, j)| f[*j].mode & 0o777)
        };
        for (_, j) in &files {
            claimed.insert(*j);
        }
        let base = leaf
            .cert
            .subject_cn
            .clone()
            .or_else(|| leaf.dns_names.first().cloned())
            .unwrap_or_else(|| stem(&f[first].path));
        out.certificates.push(CertPlan {
            name: unique(&mut names, &base),
            key_type: kt,
            lifetime: round_lifetime(leaf.lifetime()),
            swap,
            key_mode: mode_of(&[FileKind::Key, FileKind::Bundle], 0o600),
            cert_mode: mode_of(&[FileKind::Cert, FileKind::Fullchain], 0o644),
            files: files
                .into_iter()
                .map(|(kind, j)| (kind, f[j].path.clone()))
                .collect(),
            leaf,
        });
    }
    let unmanaged_key_types: Vec<(PathBuf, String)> = out
        .lone_keys
        .iter()
        .filter(|l| l.why.contains("not a key type"))
        .map(|l| (dir(&l.path).to_path_buf(), l.why.clone()))
        .collect();
    for (j, fj) in f.iter().enumerate() {
        if claimed.contains(&j) || fj.certs.is_empty() {
            continue;
        }
        let soonest = fj
            .certs
            .iter()
            .min_by_key(|s| s.not_after)
            .cloned()
            .unwrap_or_else(|| fj.certs[0].clone());
        let why = unmanaged_key_types
            .iter()
            .find(|(d, _)| d == dir(&fj.path) && fj.key.is_some())
            .map(|(_, w)| w.clone());
        out.watches.push(WatchPlan {
            name: unique(&mut names, &stem(&fj.path)),
            path: fj.path.clone(),
            count: fj.certs.len(),
            soonest,
            why,
        });
    }
    for (j, fj) in f.iter().enumerate() {
        if fj.encrypted_key && fj.key.is_none() && !claimed.contains(&j) {
            out.lone_keys.push(LoneKey {
                path: fj.path.clone(),
                why: "an encrypted key (needs a passphrase); rekey writes keys unencrypted with key_mode".into(),
            });
        }
    }
    out
}

fn dir(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new(""))
}

fn self_signed(s: &Seen) -> bool {
    s.cert.subject == s.cert.issuer
}

fn fingerprints(certs: &[Seen]) -> Vec<&str> {
    certs.iter().map(|c| c.cert.fingerprint.as_str()).collect()
}

/// The file name without its extension.
fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cert".into())
}

/// `base` made a valid, unused name (`[A-Za-z0-9._-]`, not starting with '.').
fn unique(taken: &mut BTreeSet<String>, base: &str) -> String {
    let base = base
        .strip_prefix("*.")
        .map_or_else(|| base.to_string(), |b| format!("wildcard.{b}"));
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.').to_string();
    let clean = if clean.is_empty() {
        "cert".to_string()
    } else {
        clean
    };
    let mut name = clean.clone();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{clean}-{n}");
        n += 1;
    }
    name
}

/// A lifetime as a CA sets it (`not_after` is often one second short of a
/// whole day or hour, and local CAs backdate): nearest hour from 2 days up,
/// nearest minute below, at least 10 s (rekey's minimum).
pub fn round_lifetime(d: Duration) -> Duration {
    let secs = d.as_secs();
    let unit = if secs >= 2 * 86400 {
        3600
    } else if secs >= 600 {
        60
    } else {
        1
    };
    Duration::from_secs((((secs + unit / 2) / unit) * unit).max(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_types_map_back_from_certificates() {
        use crate::cert;
        for kt in [
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Ed25519,
            KeyType::Rsa2048,
        ] {
            let key = cert::generate_key(kt).unwrap();
            let names = cert::Names {
                common_name: "a.test".into(),
                dns_names: vec!["a.test".into()],
                ip_addresses: vec![],
            };
            let c = names.params().unwrap().self_signed(key.pair()).unwrap();
            let info = cert::parse_der(c.der()).unwrap();
            assert!(cert::key_type_matches(&info, kt));
            assert_eq!(key_type(&info.key_type), Some(kt), "{}", info.key_type);
        }
        assert_eq!(key_type("rsa (1024 bits)"), None);
    }

    #[test]
    fn lifetimes_round_like_cas_set_them() {
        let d = |s: u64| Duration::from_secs(s);
        assert_eq!(round_lifetime(d(90 * 86400 - 1)), d(90 * 86400));
        assert_eq!(round_lifetime(d(86400 + 60 * 60)), d(90000));
        assert_eq!(round_lifetime(d(2 * 60 + 1)), d(2 * 60 + 1));
        assert_eq!(round_lifetime(d(3600 - 3)), d(3600));
        assert_eq!(round_lifetime(d(3)), d(10));
    }

    #[test]
    fn names_are_valid_and_unique() {
        let mut t = BTreeSet::new();
        assert_eq!(unique(&mut t, "app.internal"), "app.internal");
        assert_eq!(unique(&mut t, "app.internal"), "app.internal-2");
        assert_eq!(unique(&mut t, "*.example.com"), "wildcard.example.com");
        assert_eq!(unique(&mut t, "Partner CA/1"), "Partner-CA-1");
        assert_eq!(unique(&mut t, ".hidden"), "hidden");
        assert_eq!(unique(&mut t, ""), "cert");
    }
}
