//! Keystore encodings of a generation for apps that do not read PEM: a
//! password-protected PKCS#12 file (Java, .NET, anything that reads a
//! `.p12`/`.pfx`), and DER. PKCS#12 encoding is p12-keystore's (see
//! Cargo.toml for why that crate).
//!
//! A PKCS#12 file is encrypted with a fresh random salt and IV each time, so
//! two encodings of one generation never match byte for byte. The engine
//! therefore encodes once, when a generation is staged, keeps the bytes with
//! the generation, and publishes (and republishes, and rolls back to) those
//! very bytes; drift detection compares their digest like any other file's.

use std::path::Path;

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, Pkcs12Archive,
    PrivateKey, PrivateKeyChain,
};
use zeroize::Zeroizing;

use crate::cert;
use crate::config::Pkcs12Options;

/// Iterations of the password-based key derivation and of the MAC key
/// derivation: the JDK's defaults (keystore.pkcs12.*IterationCount).
const ITERATIONS: u32 = 10_000;
/// The iteration count of OpenSSL's legacy (pre-3.0) PKCS#12 writer, which
/// the readers that need `pkcs12_legacy` expect.
const LEGACY_ITERATIONS: u32 = 2048;

/// Why a keystore could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// The password file cannot be used.
    #[error("{key}: {reason}")]
    Password {
        /// The config key that names the file.
        key: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The generation's PEM does not convert (never for a validated one).
    #[error("cannot build the keystore: {0}")]
    Material(String),
    /// The PKCS#12 library refused to encode.
    #[error("cannot encode the PKCS#12 keystore: {0}")]
    Encode(String),
    /// A PKCS#12 file does not open with the password, or holds no key.
    #[error("the PKCS#12 keystore does not open: {0}")]
    Decode(String),
}

/// The config key of the password file, for messages.
pub const PASSWORD_KEY: &str = "files.pkcs12_password.file";

/// Read the keystore password from `path` (a secret file: refused when
/// others can write it, a WARN when others can read it), without a trailing
/// newline. `key` names the setting in messages.
pub fn read_password(path: &Path, key: &str) -> Result<Zeroizing<String>, KeystoreError> {
    // The rule lives in config, which checks the file at load and imports
    // nothing of rekey's.
    crate::config::read_keystore_password(path, key).map_err(|reason| KeystoreError::Password {
        key: key.to_string(),
        reason,
    })
}

/// The first certificate of `pem` as DER.
pub fn cert_der(pem: &str) -> Result<Vec<u8>, KeystoreError> {
    cert::pem_certs(pem.as_bytes(), "certificate")
        .map_err(|e| KeystoreError::Material(e.to_string()))?
        .into_iter()
        .next()
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| KeystoreError::Material("no certificate in the PEM".into()))
}

/// The private key in `pem` (PKCS#8, SEC1 or PKCS#1) as PKCS#8 DER.
pub fn key_der(pem: &str) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    let key = cert::load_key(pem, "the private key")
        .map_err(|e| KeystoreError::Material(e.to_string()))?;
    Ok(key.pkcs8_der())
}

/// A PKCS#12 keystore holding `key_pem` with the chain `cert_pem` +
/// `chain_pem` (leaf first) under `opts.alias`, encrypted with the password
/// read from `opts.password_file` now.
pub fn pkcs12(
    cert_pem: &str,
    chain_pem: &str,
    key_pem: &str,
    opts: &Pkcs12Options,
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    let password = read_password(&opts.password_file, PASSWORD_KEY)?;
    let material = |e: cert::CertError| KeystoreError::Material(e.to_string());
    let mut ders = cert::pem_certs(cert_pem.as_bytes(), "certificate").map_err(material)?;
    ders.extend(cert::pem_certs(chain_pem.as_bytes(), "chain").map_err(material)?);
    let certs = ders
        .iter()
        .map(|d| Certificate::from_der(d.as_ref()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KeystoreError::Material(e.to_string()))?;
    let leaf = ders
        .first()
        .ok_or_else(|| KeystoreError::Material("no certificate in the PEM".into()))?;
    let der = key_der(key_pem)?;
    // The library copies the key into a plain Vec it frees unzeroized (a
    // known limit, docs/configuration.md, "Keystores"); ours is zeroized on drop.
    let key = PrivateKey::from_der(&der).map_err(|e| KeystoreError::Material(e.to_string()))?;
    // The local key id ties the key to its certificate; Java and OpenSSL
    // use the SHA-1 of the certificate, here its SHA-256 prefix (any
    // value both bags share will do).
    // (aws-lc directly: the store depends on this module, not the other way.)
    let id = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref()).as_ref()[..20]
        .to_vec();
    let mut store = KeyStore::new();
    store.add_entry(
        &opts.alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(id, key, certs)),
    );
    let writer = store.writer(&password);
    let writer = if opts.legacy {
        writer
            .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .encryption_iterations(LEGACY_ITERATIONS)
            .mac_algorithm(MacAlgorithm::HmacSha1)
            .mac_iterations(LEGACY_ITERATIONS)
    } else {
        writer
            .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
            .encryption_iterations(ITERATIONS)
            .mac_algorithm(MacAlgorithm::HmacSha256)
            .mac_iterations(ITERATIONS)
    };
    writer
        .write()
        .map(Zeroizing::new)
        .map_err(|e| KeystoreError::Encode(e.to_string()))
}

/// What a PKCS#12 keystore holds: the key (PKCS#8 DER) and the
/// certificates of its chain, leaf first.
pub struct Opened {
    /// The private key, PKCS#8 DER.
    pub key: Zeroizing<Vec<u8>>,
    /// The leaf, then the rest of the certificates in the file.
    pub certs: Vec<Vec<u8>>,
}

/// Open `bytes` with `password`: the one private key and its certificates.
pub fn open_pkcs12(bytes: &[u8], password: &str) -> Result<Opened, KeystoreError> {
    let archive = Pkcs12Archive::from_pkcs12(bytes, password)
        .map_err(|e| KeystoreError::Decode(e.to_string()))?;
    let mut keys = archive.keys.into_iter();
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return Err(KeystoreError::Decode(
            "it must hold exactly one private key".into(),
        ));
    };
    // The leaf is the certificate bag that shares the key's local key id.
    let id = key.local_key_id.as_ref().map(|k| k.as_ref().to_vec());
    let mut certs: Vec<(bool, Vec<u8>)> = archive
        .certs
        .iter()
        .map(|c| {
            (
                c.local_key_id.is_some() && c.local_key_id == id,
                c.cert.as_der().to_vec(),
            )
        })
        .collect();
    certs.sort_by_key(|(leaf, _)| !leaf);
    Ok(Opened {
        key: Zeroizing::new(key.key.as_der().to_vec()),
        certs: certs.into_iter().map(|(_, d)| d).collect(),
    })
}

/// Whether `bytes` opens with the password in `opts.password_file` and
/// holds exactly the leaf of `cert_pem` and the key of `key_pem`: a staged
/// keystore still fits the generation and the password configured now.
pub fn pkcs12_holds(
    bytes: &[u8],
    cert_pem: &str,
    key_pem: &str,
    opts: &Pkcs12Options,
) -> Result<bool, KeystoreError> {
    let password = read_password(&opts.password_file, PASSWORD_KEY)?;
    let Ok(opened) = open_pkcs12(bytes, &password) else {
        return Ok(false);
    };
    let leaf = cert_der(cert_pem)?;
    let key = key_der(key_pem)?;
    Ok(opened.certs.first() == Some(&leaf) && *opened.key == *key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyType;

    fn opts(dir: &Path, legacy: bool) -> Pkcs12Options {
        let pw = dir.join("pw");
        std::fs::write(&pw, "s3cret-pass\n").unwrap();
        Pkcs12Options {
            password_file: pw,
            legacy,
            alias: "web".into(),
        }
    }

    fn pair() -> (String, Zeroizing<String>) {
        let key = cert::generate_key(KeyType::EcdsaP256).unwrap();
        let params = rcgen::CertificateParams::new(vec!["app.test".to_string()]).unwrap();
        let c = params.self_signed(key.pair()).unwrap();
        (c.pem(), key.pem().clone())
    }

    #[test]
    fn encodes_and_opens_in_both_modes_with_a_fresh_salt_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_pem, key_pem) = pair();
        for legacy in [false, true] {
            let o = opts(dir.path(), legacy);
            let a = pkcs12(&cert_pem, "", &key_pem, &o).unwrap();
            let b = pkcs12(&cert_pem, "", &key_pem, &o).unwrap();
            assert_ne!(*a, *b, "random salt and IV");
            let opened = open_pkcs12(&a, "s3cret-pass").unwrap();
            assert_eq!(opened.certs, vec![cert_der(&cert_pem).unwrap()]);
            assert_eq!(*opened.key, *key_der(&key_pem).unwrap());
            assert!(pkcs12_holds(&a, &cert_pem, &key_pem, &o).unwrap());
            assert!(open_pkcs12(&a, "wrong").is_err());
            // Another password configured now: the staged file no longer fits.
            std::fs::write(&o.password_file, "changed").unwrap();
            assert!(!pkcs12_holds(&a, &cert_pem, &key_pem, &o).unwrap());
        }
    }

    #[test]
    fn a_missing_or_empty_password_file_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_pem, key_pem) = pair();
        let mut o = opts(dir.path(), false);
        std::fs::write(&o.password_file, "\n").unwrap();
        let e = pkcs12(&cert_pem, "", &key_pem, &o).unwrap_err().to_string();
        assert!(e.contains(PASSWORD_KEY) && e.contains("is empty"), "{e}");
        o.password_file = dir.path().join("absent");
        let e = pkcs12(&cert_pem, "", &key_pem, &o).unwrap_err().to_string();
        assert!(e.contains(PASSWORD_KEY) && e.contains("absent"), "{e}");
    }
}
