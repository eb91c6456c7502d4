//! Certificates found in files or served by endpoints, described for people
//! and exporters: subject and issuer with their common names, serial, dates.
//! Used by watches, `rekey discover` and the compatibility metrics. Pure:
//! it parses bytes it is given and never reads anything itself.

use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::cert;
use crate::status::WatchedCert;
use crate::timestamp::Timestamp;

/// More certificates than this in one file is not a bundle anyone curates;
/// the cap also bounds the metric series a watch can create.
pub const MAX_CERTIFICATES: usize = 500;

/// Why bytes gave no certificates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// No PEM CERTIFICATE block and not a DER certificate either.
    #[error("holds no certificate (neither a PEM CERTIFICATE block nor a DER certificate)")]
    NoCertificate,
    /// A PEM CERTIFICATE block is malformed.
    #[error("bad PEM: {0}")]
    Pem(String),
    /// A certificate does not parse as X.509.
    #[error("certificate {index} does not parse: {reason}")]
    Parse {
        /// 1-based position in the file or chain.
        index: usize,
        /// x509-parser's reason.
        reason: String,
    },
    /// Over [`MAX_CERTIFICATES`].
    #[error("holds more than {MAX_CERTIFICATES} certificates; watch a smaller bundle")]
    TooMany,
}

/// One certificate: what `/status` shows plus the dates as times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// What `/status` shows.
    pub cert: WatchedCert,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The raw public key bits (to pair a key with it).
    pub public_key: Vec<u8>,
    /// Public key algorithm, as [`cert::CertInfo::key_type`] spells it.
    pub key_type: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<std::net::IpAddr>,
}

impl Seen {
    /// Lifetime from not_before to not_after.
    pub fn lifetime(&self) -> std::time::Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

/// Describe one DER certificate (`index` is its 1-based position, for errors).
pub fn describe(der: &[u8], index: usize) -> Result<Seen, ViewError> {
    let parse_err = |reason: String| ViewError::Parse { index, reason };
    let info = cert::parse_der(der).map_err(|e| parse_err(e.to_string()))?;
    let (_, x) = X509Certificate::from_der(der).map_err(|e| parse_err(e.to_string()))?;
    let cn = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string)
    };
    Ok(Seen {
        cert: WatchedCert {
            subject_cn: cn(x.subject()),
            issuer_cn: cn(x.issuer()),
            subject: info.subject,
            issuer: info.issuer,
            serial: info.serial,
            fingerprint: info.fingerprint,
            not_before: Timestamp::new(info.not_before),
            not_after: Timestamp::new(info.not_after),
            is_ca: info.is_ca,
        },
        not_before: info.not_before,
        not_after: info.not_after,
        public_key: info.public_key,
        key_type: info.key_type,
        dns_names: info.dns_names,
        ip_addresses: info.ip_addresses,
    })
}

/// Every certificate in `bytes`: the PEM CERTIFICATE blocks in order
/// (other blocks, private keys included, are skipped: never parsed, kept or
/// shown), or else the whole buffer as one DER certificate.
pub fn certificates(bytes: &[u8]) -> Result<Vec<Seen>, ViewError> {
    let ders = pem_or_der(bytes)?;
    chain(&ders)
}

/// Describe every certificate of a chain (as a server sent it).
pub fn chain(ders: &[CertificateDer<'_>]) -> Result<Vec<Seen>, ViewError> {
    if ders.is_empty() {
        return Err(ViewError::NoCertificate);
    }
    if ders.len() > MAX_CERTIFICATES {
        return Err(ViewError::TooMany);
    }
    ders.iter()
        .enumerate()
        .map(|(i, d)| describe(d, i + 1))
        .collect()
}

/// The DER certificates in `bytes` (PEM blocks, or one DER certificate).
pub fn pem_or_der(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, ViewError> {
    if is_pem(bytes) {
        let mut out = Vec::new();
        for item in CertificateDer::pem_slice_iter(bytes) {
            out.push(item.map_err(|e| ViewError::Pem(e.to_string()))?);
            if out.len() > MAX_CERTIFICATES {
                return Err(ViewError::TooMany);
            }
        }
        if out.is_empty() {
            return Err(ViewError::NoCertificate);
        }
        return Ok(out);
    }
    // DER: a certificate is one ASN.1 SEQUENCE filling the whole buffer.
    match X509Certificate::from_der(bytes) {
        Ok(([], _)) => Ok(vec![CertificateDer::from(bytes.to_vec())]),
        _ => Err(ViewError::NoCertificate),
    }
}

/// Whether `bytes` look like PEM text (a `-----BEGIN ` line somewhere).
pub fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// A hex serial ("0a:ff", "0AFF") in decimal, as x509-certificate-exporter
/// labels it (Go's `big.Int.String()`); `None` for anything that is not hex.
pub fn serial_decimal(hex: &str) -> Option<String> {
    let digits: Vec<u8> = hex
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_digit(16).map(|d| d as u8))
        .collect::<Option<_>>()?;
    if digits.is_empty() {
        return None;
    }
    // Base conversion by repeated division of the hex digit string by 10.
    let mut num = digits;
    let mut out = Vec::new();
    while !(num.is_empty() || num.len() == 1 && num[0] == 0) {
        let mut rem = 0u32;
        let mut next = Vec::with_capacity(num.len());
        for d in &num {
            let cur = rem * 16 + u32::from(*d);
            let q = (cur / 10) as u8;
            rem = cur % 10;
            if !(next.is_empty() && q == 0) {
                next.push(q);
            }
        }
        out.push(b'0' + rem as u8);
        num = next;
    }
    if out.is_empty() {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_convert_to_decimal_like_go_big_int() {
        assert_eq!(serial_decimal("00").as_deref(), Some("0"));
        assert_eq!(serial_decimal("0a").as_deref(), Some("10"));
        assert_eq!(serial_decimal("01:00").as_deref(), Some("256"));
        assert_eq!(serial_decimal("FF:FF").as_deref(), Some("65535"));
        // 20 bytes, the longest serial RFC 5280 allows: 2^160 - 1.
        let max = ["ff"; 20].join(":");
        assert_eq!(
            serial_decimal(&max).as_deref(),
            Some("1461501637330902918203684832716283019655932542975")
        );
        assert_eq!(serial_decimal("zz"), None);
        assert_eq!(serial_decimal(""), None);
    }

    fn self_signed(cn: &str) -> rcgen::Certificate {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, cn.to_string());
        p.self_signed(&key).unwrap()
    }

    #[test]
    fn pem_bundles_der_files_and_garbage() {
        let a = self_signed("one");
        let b = self_signed("two");
        let key = rcgen::KeyPair::generate().unwrap();
        // A bundle with a key between the certificates: the key is skipped.
        let pem = format!("{}{}{}", a.pem(), key.serialize_pem(), b.pem());
        let found = certificates(pem.as_bytes()).unwrap();
        let cns: Vec<_> = found.iter().map(|s| s.cert.subject_cn.clone()).collect();
        assert_eq!(cns, [Some("one".into()), Some("two".into())]);
        assert_eq!(found[0].cert.issuer_cn.as_deref(), Some("one"));
        assert_eq!(found[0].cert.fingerprint, cert::fingerprint(a.der()));

        let der = certificates(a.der()).unwrap();
        assert_eq!(der.len(), 1);
        assert_eq!(der[0].cert.subject_cn.as_deref(), Some("one"));

        assert_eq!(
            certificates(key.serialize_pem().as_bytes()),
            Err(ViewError::NoCertificate)
        );
        assert_eq!(certificates(b"hello"), Err(ViewError::NoCertificate));
        let mut trailing = a.der().to_vec();
        trailing.push(0);
        assert_eq!(certificates(&trailing), Err(ViewError::NoCertificate));
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            certificates(broken.as_bytes()),
            Err(ViewError::Pem(_))
        ));
    }
}
