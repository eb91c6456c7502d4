//! Reading back the binary files (`cert_der`, `key_der`, `pkcs12`): what
//! they hold, as the PEM the rest of the engine works with, for a config
//! that publishes the certificate or the key in no PEM file (adoption,
//! `rekey check`, restoring a lost state dir from the published files).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use zeroize::Zeroizing;

use super::DiskState;
use crate::config::Files;
use crate::keystore;
use crate::store;

/// What the binary files hold.
#[derive(Default)]
pub struct Binary {
    /// The certificates, leaf first (the DER file's leaf, else the keystore's chain).
    pub certs: Option<Vec<CertificateDer<'static>>>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: Option<Zeroizing<String>>,
    /// The keystore file's bytes, as published.
    pub pkcs12: Option<Zeroizing<Vec<u8>>>,
}

/// Read `path`: missing and unreadable told apart.
pub(super) fn read(p: &Path) -> Result<Zeroizing<Vec<u8>>, DiskState> {
    if std::fs::symlink_metadata(p).is_err() {
        return Err(DiskState::Missing(p.to_path_buf()));
    }
    store::read_published(p).map_err(|e| DiskState::Unreadable(p.to_path_buf(), e.to_string()))
}

/// Read the binary files of `files`. The DER files win over the keystore;
/// the keystore is opened with the password configured now.
pub fn read_binary(files: &Files) -> Result<Binary, DiskState> {
    let mut out = Binary::default();
    let mut opened = None;
    if let Some(p) = &files.pkcs12 {
        let bytes = read(p)?;
        if let Some(o) = &files.pkcs12_options {
            let bad = |why: String| DiskState::Unreadable(p.clone(), why);
            let pw = keystore::read_password(&o.password_file, keystore::PASSWORD_KEY)
                .map_err(|e| bad(e.to_string()))?;
            opened = Some(keystore::open_pkcs12(&bytes, &pw).map_err(|e| {
                bad(format!(
                    "{e} (with the password in {})",
                    o.password_file.display()
                ))
            })?);
        }
        out.pkcs12 = Some(bytes);
    }
    out.certs = match &files.cert_der {
        Some(p) => Some(vec![CertificateDer::from(read(p)?.to_vec())]),
        None => opened.as_ref().map(|o| {
            o.certs
                .iter()
                .map(|d| CertificateDer::from(d.clone()))
                .collect()
        }),
    };
    out.key_pem = match &files.key_der {
        Some(p) => Some(key_pem(&read(p)?)),
        None => opened.as_ref().map(|o| key_pem(&o.key)),
    };
    Ok(out)
}

/// PKCS#8 DER as PEM, in zeroizing buffers sized up front (no reallocation
/// leaves a copy of the key behind).
pub fn key_pem(der: &[u8]) -> Zeroizing<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut body = Zeroizing::new(String::with_capacity(der.len().div_ceil(3) * 4));
    b64.encode_string(der, &mut body);
    let (head, tail) = (
        "-----BEGIN PRIVATE KEY-----\n",
        "-----END PRIVATE KEY-----\n",
    );
    let mut out = Zeroizing::new(String::with_capacity(
        head.len() + body.len() + body.len() / 64 + 1 + tail.len(),
    ));
    out.push_str(head);
    for line in body.as_bytes().chunks(64) {
        // Base64 is ASCII: every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(tail);
    out
}

/// The path a binary file of `files` holding the certificate is read from, for messages.
pub(super) fn cert_source(files: &Files) -> PathBuf {
    files
        .cert_der
        .clone()
        .or(files.pkcs12.clone())
        .unwrap_or_default()
}

/// The path a binary file of `files` holding the key is read from, for messages.
pub(super) fn key_source(files: &Files) -> PathBuf {
    files
        .key_der
        .clone()
        .or(files.pkcs12.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_pem_round_trips_through_the_pem_reader() {
        let key = crate::cert::generate_key(crate::config::KeyType::EcdsaP384).unwrap();
        let der = key.pkcs8_der();
        let pem = key_pem(&der);
        assert_eq!(pem.as_str(), key.pem().as_str());
    }
}
