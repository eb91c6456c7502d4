//! The local CA's generations on disk. Generation 1 is the pair every
//! version of rekey has kept at the top of the CA's directory (`ca.pem`,
//! `ca.key`); each later one lives in a directory named by its number
//! (`2/ca.pem`, `2/ca.key`), written complete or not at all (temp dir,
//! fsync, rename). A generation is removed when it leaves the trust bundle.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use super::random_serial;
use crate::cert;
use crate::config::LocalCaConfig;

const CERT: &str = "ca.pem";
const KEY: &str = "ca.key";

/// One CA generation: its number, certificate and dates (the key stays on
/// disk until it is needed to sign).
#[derive(Debug, Clone)]
pub struct Gen {
    /// 1, 2, ...
    pub n: u64,
    /// The certificate, PEM.
    pub pem: String,
    /// Its validity.
    pub not_before: SystemTime,
    /// Its end: no leaf it signs outlives it.
    pub not_after: SystemTime,
}

/// Where generation `n` lives in `dir`.
fn gen_dir(dir: &Path, n: u64) -> PathBuf {
    if n == 1 {
        dir.to_path_buf()
    } else {
        dir.join(n.to_string())
    }
}

/// A file of the CA's own, in the state dir: bounded, never blocking, and
/// a symlink is not followed (rekey writes none there).
pub(super) fn read_own(
    path: &Path,
) -> Result<zeroize::Zeroizing<String>, crate::fs::safefile::ReadError> {
    use crate::fs::safefile;
    let opts = safefile::Options {
        follow: false,
        max: safefile::MAX_READ,
    };
    let (bytes, _) = safefile::read_with(path, opts)?;
    safefile::text(path, bytes)
}

/// Every complete generation in `dir`, oldest first, without touching
/// anything (for `rekey check` too). A generation whose key is missing is
/// not complete: the key is written last and removed first.
pub fn scan(dir: &Path) -> Result<Vec<Gen>, String> {
    let mut numbers = Vec::new();
    if dir.join(KEY).exists() && dir.join(CERT).exists() {
        numbers.push(1);
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    for e in entries.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        // Only canonical numbers of 2 and up are generations ("02" is not).
        let Ok(n) = name.parse::<u64>() else { continue };
        if n >= 2 && n.to_string() == name && e.path().join(KEY).exists() {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    numbers.into_iter().map(|n| load(dir, n)).collect()
}

/// Generation `n`'s certificate and dates.
fn load(dir: &Path, n: u64) -> Result<Gen, String> {
    let path = gen_dir(dir, n).join(CERT);
    let pem = read_own(&path)
        .map_err(|e| format!("the CA certificate: {e}"))?
        .to_string();
    let ders =
        cert::pem_certs(pem.as_bytes(), &path.display().to_string()).map_err(|e| e.to_string())?;
    let der = ders
        .first()
        .ok_or_else(|| format!("{} holds no certificate", path.display()))?;
    let info = cert::parse_der(der).map_err(|e| e.to_string())?;
    Ok(Gen {
        n,
        pem,
        not_before: info.not_before,
        not_after: info.not_after,
    })
}

/// Generation `gen`'s signing key, checked against its certificate.
pub fn signer(dir: &Path, gen: &Gen) -> Result<rcgen::Issuer<'static, KeyPair>, String> {
    let at = gen_dir(dir, gen.n);
    let (key_path, cert_path) = (at.join(KEY), at.join(CERT));
    let key_pem = read_own(&key_path).map_err(|e| {
        format!(
            "the CA key: {e}; restore it or remove {} to create a new CA",
            dir.display()
        )
    })?;
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|e| format!("{} is not a usable key: {e}", key_path.display()))?;
    let ders =
        cert::pem_certs(gen.pem.as_bytes(), "the CA certificate").map_err(|e| e.to_string())?;
    let der = ders.first().ok_or("the CA certificate is empty")?;
    let info = cert::parse_der(der).map_err(|e| e.to_string())?;
    if info.public_key != key.public_key_raw() {
        return Err(format!(
            "{} and {} do not belong together; restore the pair or remove {} to create a new CA",
            key_path.display(),
            cert_path.display(),
            dir.display()
        ));
    }
    rcgen::Issuer::from_ca_cert_der(der, key)
        .map_err(|e| format!("cannot use {}: {e}", cert_path.display()))
}

/// Create generation `n`, valid for `cfg.ca_lifetime` from now.
/// Generation 1 keeps the name every earlier version gave the CA; later
/// ones end in " G<n>" so that no two live roots share a subject and every
/// TLS stack finds the right one at once.
pub fn create(dir: &Path, n: u64, cfg: &LocalCaConfig) -> Result<Gen, String> {
    let key = cert::generate_key(cfg.key_type).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let cn = if n == 1 {
        cfg.common_name.clone()
    } else {
        format!("{} G{n}", cfg.common_name)
    };
    dn.push(DnType::CommonName, cn.as_str());
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    // Backdated against clock skew, at most an hour and at most 5% of its
    // life, so a short-lived test CA keeps its renewal point ahead of it.
    let backdate = Duration::from_secs(3600).min(cfg.ca_lifetime / 20);
    params.not_before = now - backdate;
    params.not_after = now + cfg.ca_lifetime;
    params.serial_number = Some(random_serial());
    let ca = params
        .self_signed(key.pair())
        .map_err(|e| format!("cannot create the CA certificate: {e}"))?;
    let pem = ca.pem();
    crate::fs::write_private_dir(dir).map_err(|e| e.to_string())?;
    if n == 1 {
        // Certificate first: a crash between the two writes leaves no key,
        // and the next start creates a fresh pair instead of a mismatched one.
        crate::fs::write_file_atomic(&dir.join(CERT), pem.as_bytes(), 0o644)
            .map_err(|e| e.to_string())?;
        crate::fs::write_file_atomic(&dir.join(KEY), key.pem().as_bytes(), 0o600)
            .map_err(|e| e.to_string())?;
    } else {
        let files: [(&str, &[u8], u32); 2] = [
            (CERT, pem.as_bytes(), 0o644),
            (KEY, key.pem().as_bytes(), 0o600),
        ];
        crate::fs::write_dir_atomic(dir, &n.to_string(), &files).map_err(|e| e.to_string())?;
    }
    load(dir, n)
}

/// Remove generation `n` (its key first, so a crash midway leaves an
/// incomplete generation that [`scan`] ignores and [`tidy`] removes).
pub fn remove(dir: &Path, n: u64) -> Result<(), String> {
    if n == 1 {
        for f in [KEY, CERT] {
            crate::fs::remove_atomic(&dir.join(f)).map_err(|e| e.to_string())?;
        }
        Ok(())
    } else {
        crate::fs::remove_atomic(&gen_dir(dir, n)).map_err(|e| e.to_string())
    }
}

/// Remove what a crash left: temp files and directories, and generation
/// 1's certificate when its key is gone and later generations exist.
pub fn tidy(dir: &Path, gens: &[Gen]) {
    crate::fs::remove_temps(dir);
    let orphan = !dir.join(KEY).exists() && dir.join(CERT).exists();
    if orphan && !gens.is_empty() {
        if let Err(e) = crate::fs::remove_atomic(&dir.join(CERT)) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the certificate of a removed CA generation");
        }
    }
}
