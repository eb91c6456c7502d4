//! Certificate and key handling that touches no disk: key generation, CSRs,
//! parsing, fingerprints, and the validation of what an issuer returns
//! (the rotation's validation step). Pure functions, so every check is unit-testable.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData, RsaKeySize, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use zeroize::Zeroizing;

use crate::config::KeyType;
use crate::timestamp::rfc3339;

/// How far in the future an issuer may put `not_before` (clock skew between
/// us and the CA) before we call the certificate "not yet valid".
pub const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// Errors from key generation, CSR building and parsing.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The crypto library could not generate a key.
    #[error("cannot generate a {key_type} key: {reason}")]
    KeyGen {
        /// Requested key type.
        key_type: &'static str,
        /// Library message.
        reason: String,
    },
    /// The CSR could not be built (usually a name the library rejects).
    #[error("cannot build a certificate request for {names}: {reason}")]
    Csr {
        /// Names asked for.
        names: String,
        /// Library message.
        reason: String,
    },
    /// A PEM or DER object did not parse.
    #[error("{what}: {reason}")]
    Parse {
        /// What was being parsed (a file name or "issuer response").
        what: String,
        /// What was wrong.
        reason: String,
    },
}

/// Why an issued certificate (or one found on disk) is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Nothing parsed as a certificate.
    #[error("the certificate does not parse: {0}")]
    Unparsable(String),
    /// The private key does not parse.
    #[error("the private key does not parse: {0}")]
    BadKey(String),
    /// The certificate is for another key.
    #[error("the certificate's public key is not the one we generated (key mismatch)")]
    KeyMismatch,
    /// Names or addresses we asked for are missing.
    #[error("the certificate does not cover {0}")]
    MissingNames(String),
    /// Not yet valid.
    #[error("the certificate is not valid before {0}")]
    NotYetValid(String),
    /// Expired.
    #[error("the certificate expired at {0}")]
    Expired(String),
    /// The chain does not link up.
    #[error("the chain is broken: {0}")]
    BrokenChain(String),
}

/// What a certificate says about itself; never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject DN as text.
    pub subject: String,
    /// Issuer DN as text.
    pub issuer: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Serial number, lowercase hex with colons.
    pub serial: String,
    /// `sha256:` + lowercase hex of the DER.
    pub fingerprint: String,
    /// Public key algorithm, human-readable.
    pub key_type: String,
    /// The raw public key bits, for matching against a private key.
    pub public_key: Vec<u8>,
    /// Whether this is a CA certificate.
    pub is_ca: bool,
}

impl CertInfo {
    /// Lifetime from not_before to not_after.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

/// A freshly generated private key; the PEM is zeroized on drop.
pub struct PrivateKey {
    pair: KeyPair,
    pem: Zeroizing<String>,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl PrivateKey {
    /// The PKCS#8 PEM of the key.
    pub fn pem(&self) -> &Zeroizing<String> {
        &self.pem
    }
    /// The raw public key bits (compared with a certificate's).
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.der_bytes().to_vec()
    }
    /// The key pair, for signing (CSR, local CA).
    pub fn pair(&self) -> &KeyPair {
        &self.pair
    }
    /// The PKCS#8 DER of the key (the `key_der` file, PKCS#12 key bags).
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.pair.serialize_der())
    }
}

/// Generate a private key of the given type, locally.
pub fn generate_key(key_type: KeyType) -> Result<PrivateKey, CertError> {
    let pair = match key_type {
        KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyType::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
        KeyType::Rsa2048 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048),
        KeyType::Rsa3072 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072),
        KeyType::Rsa4096 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096),
    }
    .map_err(|e| CertError::KeyGen {
        key_type: key_type.as_str(),
        reason: e.to_string(),
    })?;
    let pem = Zeroizing::new(pair.serialize_pem());
    Ok(PrivateKey { pair, pem })
}

/// Load a private key from PEM (PKCS#8, SEC1 or PKCS#1).
pub fn load_key(pem: &str, what: &str) -> Result<PrivateKey, CertError> {
    let pair = KeyPair::from_pem(pem).map_err(|e| CertError::Parse {
        what: what.to_string(),
        reason: format!("not a supported private key ({e})"),
    })?;
    let pem = Zeroizing::new(pair.serialize_pem());
    Ok(PrivateKey { pair, pem })
}

/// The subject and names a certificate is requested for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Subject common name.
    pub common_name: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
}

impl Names {
    /// "a.example, b.example, 127.0.0.1" for messages.
    pub fn describe(&self) -> String {
        self.dns_names
            .iter()
            .cloned()
            .chain(self.ip_addresses.iter().map(|ip| ip.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    }
    /// Certificate parameters carrying these names (used for CSRs and by the local CA).
    pub fn params(&self) -> Result<CertificateParams, CertError> {
        let err = |e: rcgen::Error| CertError::Csr {
            names: self.describe(),
            reason: e.to_string(),
        };
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.common_name.as_str());
        params.distinguished_name = dn;
        for name in &self.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.clone().try_into().map_err(err)?));
        }
        for ip in &self.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        Ok(params)
    }
}

/// Build a DER CSR for `names`, signed by `key`.
pub fn build_csr(key: &PrivateKey, names: &Names) -> Result<Vec<u8>, CertError> {
    let csr = names
        .params()?
        .serialize_request(&key.pair)
        .map_err(|e| CertError::Csr {
            names: names.describe(),
            reason: e.to_string(),
        })?;
    Ok(csr.der().to_vec())
}

/// `sha256:` + lowercase hex of `der`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    format!("sha256:{}", hex(digest.as_ref()))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// All certificates in a PEM text, in order.
pub fn pem_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        out.push(item.map_err(|e| CertError::Parse {
            what: what.to_string(),
            reason: format!("bad PEM ({e})"),
        })?);
    }
    Ok(out)
}

/// The first private key section of a PEM text (for bundles), as PEM again.
pub fn pem_private_key(pem: &[u8]) -> Option<Zeroizing<String>> {
    let text = std::str::from_utf8(pem).ok()?;
    for label in ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"] {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        if let (Some(b), Some(e)) = (text.find(&begin), text.find(&end)) {
            if e > b {
                return Some(Zeroizing::new(format!("{}\n", &text[b..e + end.len()])));
            }
        }
    }
    None
}

/// Parse one DER certificate into [`CertInfo`].
pub fn parse_der(der: &[u8]) -> Result<CertInfo, Invalid> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| Invalid::Unparsable(e.to_string()))?;
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        ip_addresses.push(IpAddr::from(a));
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        ip_addresses.push(IpAddr::from(a));
                    }
                }
                _ => {}
            }
        }
    }
    let spki = cert.public_key();
    let key_type = match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::EC(ec)) => format!("ecdsa ({} bits)", ec.key_size()),
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
            format!("rsa ({} bits)", rsa.key_size())
        }
        _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => "ed25519".to_string(),
        _ => spki.algorithm.algorithm.to_id_string(),
    };
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        dns_names,
        ip_addresses,
        not_before: cert.validity().not_before.to_datetime().into(),
        not_after: cert.validity().not_after.to_datetime().into(),
        serial: cert.raw_serial_as_string(),
        fingerprint: fingerprint(der),
        key_type,
        public_key: spki.subject_public_key.data.to_vec(),
        is_ca: cert.is_ca(),
    })
}

/// Which of `names` the certificate does not cover (wildcards honoured one label deep).
pub fn missing_names(info: &CertInfo, names: &Names) -> Vec<String> {
    let covers = |want: &str| {
        info.dns_names.iter().any(|have| {
            have.eq_ignore_ascii_case(want)
                || have.strip_prefix("*.").is_some_and(|suffix| {
                    want.split_once('.')
                        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(suffix))
                })
        })
    };
    let mut missing: Vec<String> = names
        .dns_names
        .iter()
        .filter(|n| !covers(n))
        .cloned()
        .collect();
    missing.extend(
        names
            .ip_addresses
            .iter()
            .filter(|ip| !info.ip_addresses.contains(ip))
            .map(|ip| ip.to_string()),
    );
    missing
}

/// Whether a certificate's key is of the configured type (a changed
/// `key_type` makes the committed certificate due at once).
pub fn key_type_matches(info: &CertInfo, key_type: KeyType) -> bool {
    let want = match key_type {
        KeyType::EcdsaP256 => "ecdsa (256 bits)",
        KeyType::EcdsaP384 => "ecdsa (384 bits)",
        KeyType::Ed25519 => "ed25519",
        KeyType::Rsa2048 => "rsa (2048 bits)",
        KeyType::Rsa3072 => "rsa (3072 bits)",
        KeyType::Rsa4096 => "rsa (4096 bits)",
    };
    info.key_type == want
}

/// What an issuer handed back, before it is accepted.
#[derive(Debug, Clone)]
pub struct IssuedPem<'a> {
    /// The leaf, PEM.
    pub cert_pem: &'a str,
    /// Intermediates, PEM (may be empty).
    pub chain_pem: &'a str,
    /// The root, PEM, if the issuer provides one.
    pub ca_pem: Option<&'a str>,
}

/// DESIGN step 3: accept an issued certificate only if it parses, is for our
/// key, covers every requested name, is valid at `now`, and its chain links
/// up (each certificate signed by the next; the last by the root when given).
pub fn validate_issued(
    issued: &IssuedPem<'_>,
    public_key: &[u8],
    names: &Names,
    now: SystemTime,
) -> Result<CertInfo, Invalid> {
    let leaf_ders = pem_certs(issued.cert_pem.as_bytes(), "certificate")
        .map_err(|e| Invalid::Unparsable(e.to_string()))?;
    let leaf_der = leaf_ders
        .first()
        .ok_or_else(|| Invalid::Unparsable("no CERTIFICATE block in the response".into()))?;
    let info = parse_der(leaf_der)?;
    check_usable(&info, public_key, names, now)?;
    let chain = pem_certs(issued.chain_pem.as_bytes(), "chain")
        .map_err(|e| Invalid::BrokenChain(e.to_string()))?;
    let mut links: Vec<CertificateDer<'static>> = Vec::with_capacity(chain.len() + 2);
    links.push(leaf_der.clone());
    links.extend(leaf_ders.iter().skip(1).cloned());
    links.extend(chain);
    if let Some(ca) = issued.ca_pem {
        let roots =
            pem_certs(ca.as_bytes(), "ca").map_err(|e| Invalid::BrokenChain(e.to_string()))?;
        if roots.is_empty() {
            return Err(Invalid::BrokenChain(
                "the CA bundle holds no certificate".into(),
            ));
        }
        // A trust bundle may hold several roots (a CA rollover): the chain
        // must end in one of them.
        let mut first_err = None;
        for root in &roots {
            let mut with_root = links.clone();
            with_root.push(root.clone());
            match check_chain(&with_root) {
                Ok(()) => return Ok(info),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        return Err(first_err.unwrap_or_else(|| Invalid::BrokenChain("no root".into())));
    }
    // Neither intermediates nor a root: the leaf's issuer is unknown, and an
    // app serving the leaf alone fails every client that lacks it. Only a
    // self-issued leaf stands on its own (CAs never sign leaves from a root).
    if links.len() == 1 && info.issuer != info.subject {
        return Err(Invalid::BrokenChain(format!(
            "no chain: the response lacks the certificate of the leaf's issuer \"{}\"",
            info.issuer
        )));
    }
    check_chain(&links)?;
    Ok(info)
}

/// Key match, names and validity; shared by issuance and the on-disk check.
pub fn check_usable(
    info: &CertInfo,
    public_key: &[u8],
    names: &Names,
    now: SystemTime,
) -> Result<(), Invalid> {
    if info.public_key != public_key {
        return Err(Invalid::KeyMismatch);
    }
    let missing = missing_names(info, names);
    if !missing.is_empty() {
        return Err(Invalid::MissingNames(missing.join(", ")));
    }
    if info.not_before > now + CLOCK_SKEW {
        return Err(Invalid::NotYetValid(rfc3339(info.not_before)));
    }
    if info.not_after <= now {
        return Err(Invalid::Expired(rfc3339(info.not_after)));
    }
    Ok(())
}

/// Each certificate must be issued and signed by the next one.
fn check_chain(links: &[CertificateDer<'static>]) -> Result<(), Invalid> {
    let parsed: Vec<X509Certificate<'_>> = links
        .iter()
        .enumerate()
        .map(|(i, der)| {
            X509Certificate::from_der(der)
                .map(|(_, c)| c)
                .map_err(|e| Invalid::BrokenChain(format!("certificate #{i} does not parse: {e}")))
        })
        .collect::<Result<_, _>>()?;
    for (i, pair) in parsed.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        if child.issuer() != parent.subject() {
            return Err(Invalid::BrokenChain(format!(
                "certificate #{i} ({}) names issuer \"{}\" but the next one is \"{}\"",
                child.subject(),
                child.issuer(),
                parent.subject()
            )));
        }
        child
            .verify_signature(Some(parent.public_key()))
            .map_err(|e| {
                Invalid::BrokenChain(format!(
                    "certificate #{i} ({}) is not signed by \"{}\": {e}",
                    child.subject(),
                    parent.subject()
                ))
            })?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "cert_tests.rs"]
mod tests;
