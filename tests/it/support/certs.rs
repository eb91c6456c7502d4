//! Certificates with chosen dates for the watch and discover tests, made
//! with rcgen (independent of rekey's own CA).

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use time::OffsetDateTime;

/// A certificate and its key.
pub struct Made {
    pub pem: String,
    pub der: Vec<u8>,
    pub key: KeyPair,
    pub params: CertificateParams,
}

impl Made {
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }
    /// `sha256:` of the DER, as rekey prints fingerprints.
    pub fn fingerprint(&self) -> String {
        rekey::cert::fingerprint(&self.der)
    }
    /// `not_after` as /status prints it.
    pub fn not_after(&self) -> String {
        rekey::status::Timestamp::new(self.params.not_after.into()).to_string()
    }
}

fn params(
    cn: &str,
    names: &[&str],
    from: OffsetDateTime,
    until: OffsetDateTime,
) -> CertificateParams {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = from;
    p.not_after = until;
    p
}

/// A self-signed certificate for `cn` valid from `from` (relative to now, may
/// be negative) for `life`.
pub fn self_signed(cn: &str, from: i64, life: Duration) -> Made {
    let now = OffsetDateTime::now_utc();
    let from = now + time::Duration::seconds(from);
    let p = params(cn, &[cn], from, from + life);
    let key = KeyPair::generate().unwrap();
    let c = p.self_signed(&key).unwrap();
    Made {
        pem: c.pem(),
        der: c.der().to_vec(),
        key,
        params: p,
    }
}

/// A CA valid for `life` from an hour ago.
pub fn ca(cn: &str, life: Duration) -> Made {
    let from = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let mut p = params(cn, &[], from, from + life);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let c = p.self_signed(&key).unwrap();
    Made {
        pem: c.pem(),
        der: c.der().to_vec(),
        key,
        params: p,
    }
}

/// An intermediate CA issued by `ca`, valid for `life` from an hour ago.
pub fn sub_ca(ca: &Made, cn: &str, life: Duration) -> Made {
    let from = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let mut p = params(cn, &[], from, from + life);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let c = p.signed_by(&key, &issuer).unwrap();
    Made {
        pem: c.pem(),
        der: c.der().to_vec(),
        key,
        params: p,
    }
}

/// A leaf for `names` issued by `ca`, valid for `life` from an hour ago.
pub fn leaf(ca: &Made, cn: &str, names: &[&str], life: Duration) -> Made {
    let from = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let p = params(cn, names, from, from + life);
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let c = p.signed_by(&key, &issuer).unwrap();
    Made {
        pem: c.pem(),
        der: c.der().to_vec(),
        key,
        params: p,
    }
}

/// Replace `path` atomically (temp file + rename), as a careful pipeline does.
pub fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub const DAY: Duration = Duration::from_secs(86400);
