//! What is published on disk now, judged against what the config asks for.
//! Used at start (adopt a valid pair instead of reissuing) and by
//! `rekey check`. A pair no journal committed must also chain to the issuer
//! and pass `[policy]` ([`vouch`]) before it is adopted.

use std::path::PathBuf;
use std::time::SystemTime;

use rustls_pki_types::{CertificateDer, ServerName};
use zeroize::Zeroizing;

use crate::cert::{self, CertInfo, Invalid, Names};
use crate::config::{CertificateConfig, FileKind};
use crate::store::{self, Material};

pub mod binary;

/// The state of a credential's published files.
#[derive(Debug, Clone)]
pub enum DiskState {
    /// A file the key or certificate is read from does not exist.
    Missing(PathBuf),
    /// A file exists but cannot be read or parsed.
    Unreadable(PathBuf, String),
    /// Parsed, but not usable (key mismatch, wrong names, expired...).
    Unusable(Box<CertInfo>, Invalid),
    /// Valid now for the configured names, with a matching key.
    Valid(Box<CertInfo>),
    /// Valid-looking, but no journal committed it and it does not chain to
    /// the issuer or breaks `[policy]`: never adopted, reissued at start.
    Untrusted(Box<CertInfo>, String),
}

impl DiskState {
    /// One line for `rekey check` and logs.
    pub fn describe(&self) -> String {
        match self {
            DiskState::Missing(p) => format!("missing ({})", p.display()),
            DiskState::Unreadable(p, why) => format!("unreadable ({}: {why})", p.display()),
            DiskState::Unusable(_, Invalid::KeyMismatch) => "key mismatch".to_string(),
            DiskState::Unusable(_, Invalid::Expired(t)) => format!("expired at {t}"),
            DiskState::Unusable(_, Invalid::MissingNames(n)) => format!("wrong names (lacks {n})"),
            DiskState::Unusable(_, other) => other.to_string(),
            DiskState::Valid(info) => {
                format!("valid until {}", crate::timestamp::rfc3339(info.not_after))
            }
            DiskState::Untrusted(_, why) => {
                format!("NOT trusted, will be reissued at start: {why}")
            }
        }
    }
}

/// Whether a valid pair found on disk that no journal committed may be
/// adopted: it must chain to `anchors` (the issuer's, see
/// [`crate::issuer::Issuer::trust_anchors`]) through the chain published
/// with it, and live no longer than `[policy] max_lifetime`. `Err` says why
/// not, for the WARN, the audit record and `rekey check`.
pub fn vouch(
    cfg: &CertificateConfig,
    material: &Material,
    info: &CertInfo,
    anchors: &[CertificateDer<'static>],
    now: SystemTime,
) -> Result<(), String> {
    let mut chain =
        cert::pem_certs(material.cert_pem.as_bytes(), "certificate").map_err(|e| e.to_string())?;
    chain.extend(
        cert::pem_certs(material.chain_pem.as_bytes(), "chain").map_err(|e| e.to_string())?,
    );
    let names = names_of(cfg);
    let name = names
        .dns_names
        .first()
        .and_then(|d| ServerName::try_from(d.clone()).ok())
        .or_else(|| names.ip_addresses.first().map(|ip| ServerName::from(*ip)))
        .ok_or("the certificate config names no DNS name or IP address")?;
    crate::net::tls::verify_chain(&chain, anchors, name, now).map_err(|e| {
        format!(
            "it does not chain to issuer \"{}\" ({e}); a certificate rekey did not record is adopted only when it verifies against the issuer",
            cfg.issuer
        )
    })?;
    if let Some(max) = cfg.policy_max_lifetime.filter(|m| info.lifetime() > *m) {
        return Err(format!(
            "it lives {}, longer than [policy] max_lifetime {}",
            humantime::format_duration(std::time::Duration::from_secs(info.lifetime().as_secs())),
            humantime::format_duration(max)
        ));
    }
    Ok(())
}

/// The requested names of a certificate credential.
pub fn names_of(cfg: &CertificateConfig) -> Names {
    Names {
        common_name: cfg.common_name.clone(),
        dns_names: cfg.dns_names.clone(),
        ip_addresses: cfg.ip_addresses.clone(),
    }
}

/// Read back the published material and judge it. Returns the material too
/// when it parsed, so a valid pair can be adopted. The certificate and the
/// key come from a PEM file when one holds them (cert, fullchain, bundle;
/// key, bundle), else from the DER files or the PKCS#12 keystore. A
/// keystore that does not hold the very pair found is not adopted.
pub fn assess(cfg: &CertificateConfig, now: SystemTime) -> (DiskState, Option<Material>) {
    match read_pair(cfg) {
        Ok((info, key, material)) => {
            match cert::check_usable(&info, &key.public_key(), &names_of(cfg), now) {
                Ok(()) => (DiskState::Valid(Box::new(info)), Some(material)),
                Err(why) => (DiskState::Unusable(Box::new(info), why), Some(material)),
            }
        }
        Err(state) => (state, None),
    }
}

/// The leaf, the key and the material found on disk.
fn read_pair(cfg: &CertificateConfig) -> Result<(CertInfo, cert::PrivateKey, Material), DiskState> {
    let f = &cfg.files;
    let cert_pem_file = f.cert.clone().or(f.fullchain.clone()).or(f.bundle.clone());
    let key_pem_file = f.key.clone().or(f.bundle.clone());
    let bin = if cert_pem_file.is_none() || key_pem_file.is_none() || f.pkcs12.is_some() {
        binary::read_binary(f)?
    } else {
        binary::Binary::default()
    };
    let (ders, cert_path) = match cert_pem_file {
        Some(p) => {
            let bytes = binary::read(&p)?;
            let ders = cert::pem_certs(&bytes, &p.display().to_string())
                .map_err(|e| DiskState::Unreadable(p.clone(), e.to_string()))?;
            (ders, p)
        }
        None => (bin.certs.unwrap_or_default(), binary::cert_source(f)),
    };
    if ders.is_empty() {
        return Err(DiskState::Unreadable(
            cert_path,
            "no certificate in it".into(),
        ));
    }
    let info = cert::parse_der(&ders[0])
        .map_err(|e| DiskState::Unreadable(cert_path.clone(), e.to_string()))?;
    let (key_pem, key_path) = match key_pem_file {
        Some(p) => {
            let bytes = binary::read(&p)?;
            let pem = cert::pem_private_key(&bytes)
                .ok_or_else(|| DiskState::Unreadable(p.clone(), "no PRIVATE KEY block".into()))?;
            (pem, p)
        }
        None => {
            let p = binary::key_source(f);
            let pem = bin
                .key_pem
                .ok_or_else(|| DiskState::Unreadable(p.clone(), "no private key in it".into()))?;
            (pem, p)
        }
    };
    let key = cert::load_key(&key_pem, &key_path.display().to_string())
        .map_err(|e| DiskState::Unreadable(key_path, e.to_string()))?;
    let mut material = material_from(cfg, &ders, key_pem);
    if let (Some(bytes), Some(opts), Some(p)) = (bin.pkcs12, &f.pkcs12_options, &f.pkcs12) {
        let holds =
            crate::keystore::pkcs12_holds(&bytes, &material.cert_pem, &material.key_pem, opts)
                .map_err(|e| DiskState::Unreadable(p.clone(), e.to_string()))?;
        if !holds {
            return Err(DiskState::Unreadable(
                p.clone(),
                "the keystore does not hold the certificate and key of the other files".into(),
            ));
        }
        material.pkcs12 = Some(bytes);
    }
    Ok((info, key, material))
}

/// Rebuild a [`Material`] from what is on disk: the leaf, the rest of the
/// chain (from the fullchain/bundle, else the chain file) and the CA file.
fn material_from(
    cfg: &CertificateConfig,
    ders: &[rustls_pki_types::CertificateDer<'static>],
    key_pem: Zeroizing<String>,
) -> Material {
    let pem_of = |der: &[u8]| pem_encode("CERTIFICATE", der);
    let cert_pem = pem_of(&ders[0]);
    let mut chain_pem: String = ders[1..].iter().map(|d| pem_of(d)).collect();
    if chain_pem.is_empty() {
        if let Some(p) = &cfg.files.chain {
            if let Ok(b) = store::read_published(p) {
                chain_pem = String::from_utf8_lossy(&b).into_owned();
            }
        }
    }
    // The leaf came from `cert` alone: the intermediates are in the
    // fullchain (or the bundle) after its leaf.
    for p in [&cfg.files.fullchain, &cfg.files.bundle]
        .into_iter()
        .flatten()
    {
        if !chain_pem.is_empty() {
            break;
        }
        let rest = store::read_published(p)
            .ok()
            .and_then(|b| cert::pem_certs(&b, &p.display().to_string()).ok())
            .filter(|all| all.first() == ders.first());
        if let Some(all) = rest {
            chain_pem = all[1..].iter().map(|d| pem_of(d)).collect();
        }
    }
    let ca_pem = cfg
        .files
        .ca
        .as_ref()
        .and_then(|p| store::read_published(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    Material {
        cert_pem,
        chain_pem,
        key_pem,
        ca_pem,
        pkcs12: None,
    }
}

/// PEM-encode one DER object.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

/// Whether a target kind can be rendered from `m` (a CA file needs a
/// root, a keystore file an encoded keystore).
pub fn renderable(m: &Material, kind: FileKind) -> bool {
    match kind {
        FileKind::Ca => m.ca_pem.is_some(),
        FileKind::Pkcs12 => m.pkcs12.is_some(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip() {
        let der: Vec<u8> = (0..300u32).map(|i| (i * 7 % 256) as u8).collect();
        let back = cert::pem_certs(pem_encode("CERTIFICATE", &der).as_bytes(), "t").unwrap();
        assert_eq!(back[0].as_ref(), der.as_slice());
    }
}
