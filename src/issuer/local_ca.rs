//! The embedded local CA: a root created in the state dir on first use, whose
//! key never leaves it. Signs CSRs with an explicit validity.

use std::path::Path;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use zeroize::Zeroizing;

use super::{IssueRequest, Issued, Issuer, IssuerError, Revocation};
use crate::cert;
use crate::config::LocalCaConfig;
use crate::store;

/// Certificates are backdated by this much (at most) against clock skew on
/// the clients that check them; capped at 5% of the lifetime so short-lived
/// test certificates keep most of their span.
const BACKDATE: Duration = Duration::from_secs(60);

/// The record of every certificate the CA issued (`issued.log` in its
/// directory) moves to `issued.log.1` past this size.
pub const ISSUED_LOG_MAX: u64 = 1 << 20;

/// The embedded CA.
pub struct LocalCa {
    name: String,
    ca_pem: String,
    ca_not_after: SystemTime,
    issuer: rcgen::Issuer<'static, KeyPair>,
    /// `issued.log`: one JSON line per certificate issued (time, credential,
    /// serial, names, not_after), like an OpenSSL CA's index: what the CA
    /// itself says it issued, whatever rekey's engine believes.
    issued_log: std::path::PathBuf,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").field("name", &self.name).finish()
    }
}

impl LocalCa {
    /// Load the CA kept in `dir`, creating it (key 0600, dir 0700) on first use.
    pub fn open(name: &str, dir: &Path, cfg: &LocalCaConfig) -> Result<LocalCa, IssuerError> {
        let setup = |message: String| IssuerError::Setup {
            issuer: name.to_string(),
            message,
        };
        let key_path = dir.join("ca.key");
        let cert_path = dir.join("ca.pem");
        if !key_path.exists() {
            Self::create(dir, cfg).map_err(setup)?;
        }
        let key_pem = read_own(&key_path).map_err(|e| {
            setup(format!(
                "the CA key: {e}; restore it or remove {} to create a new CA",
                dir.display()
            ))
        })?;
        let ca_pem = read_own(&cert_path)
            .map_err(|e| setup(format!("the CA certificate: {e}")))?
            .to_string();
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| setup(format!("{} is not a usable key: {e}", key_path.display())))?;
        let ca_der = cert::pem_certs(ca_pem.as_bytes(), &cert_path.display().to_string())
            .map_err(|e| setup(e.to_string()))?;
        let first = ca_der
            .first()
            .ok_or_else(|| setup(format!("{} holds no certificate", cert_path.display())))?;
        let info = cert::parse_der(first).map_err(|e| setup(e.to_string()))?;
        if info.public_key != key.public_key_raw() {
            return Err(setup(format!(
                "{} and {} do not belong together; restore the pair or remove {}",
                key_path.display(),
                cert_path.display(),
                dir.display()
            )));
        }
        let issuer = rcgen::Issuer::from_ca_cert_der(first, key)
            .map_err(|e| setup(format!("cannot use {}: {e}", cert_path.display())))?;
        Ok(LocalCa {
            name: name.to_string(),
            ca_pem,
            ca_not_after: info.not_after,
            issuer,
            issued_log: dir.join("issued.log"),
        })
    }

    /// The root certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn create(dir: &Path, cfg: &LocalCaConfig) -> Result<(), String> {
        let key = cert::generate_key(cfg.key_type).map_err(|e| e.to_string())?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cfg.common_name.as_str());
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + cfg.ca_lifetime;
        params.serial_number = Some(random_serial());
        let ca = params
            .self_signed(key.pair())
            .map_err(|e| format!("cannot create the CA certificate: {e}"))?;
        store::write_private_dir(dir).map_err(|e| e.to_string())?;
        // Certificate first: a crash between the two writes leaves no key, and
        // the next start creates a fresh pair instead of a mismatched one.
        store::write_file_atomic(&dir.join("ca.pem"), ca.pem().as_bytes(), 0o644)
            .map_err(|e| e.to_string())?;
        store::write_file_atomic(&dir.join("ca.key"), key.pem().as_bytes(), 0o600)
            .map_err(|e| e.to_string())?;
        tracing::info!(dir = %dir.display(), "created the local CA");
        Ok(())
    }
}

/// The root certificate of the local CA kept in `dir`, without its key
/// (for `rekey check`): what its certificates chain to.
pub fn root_in(dir: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let path = dir.join("ca.pem");
    let pem = read_own(&path).map_err(|e| match e.io_kind() {
        Some(std::io::ErrorKind::NotFound) => format!(
            "the local CA does not exist yet ({} is missing); it is created at the first `rekey run`",
            path.display()
        ),
        _ => e.to_string(),
    })?;
    let certs =
        cert::pem_certs(pem.as_bytes(), &path.display().to_string()).map_err(|e| e.to_string())?;
    match certs.into_iter().next() {
        Some(c) => Ok(vec![c]),
        None => Err(format!("{} holds no certificate", path.display())),
    }
}

/// A file of the CA's own, in the state dir: bounded, never blocking, and a
/// symlink is not followed (rekey writes none there).
fn read_own(path: &Path) -> Result<Zeroizing<String>, crate::safefile::ReadError> {
    use crate::safefile;
    let opts = safefile::Options {
        follow: false,
        max: safefile::MAX_READ,
    };
    let (bytes, _) = safefile::read_with(path, opts)?;
    safefile::text(path, bytes)
}

/// 16 random bytes, high bit clear so the DER integer stays positive.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    fastrand::fill(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

#[async_trait]
impl Issuer for LocalCa {
    fn name(&self) -> &str {
        &self.name
    }

    fn trust_anchors(&self) -> Result<Vec<CertificateDer<'static>>, IssuerError> {
        // Only its own root: a certificate from any other CA, however valid,
        // was not issued here.
        let ders =
            cert::pem_certs(self.ca_pem.as_bytes(), "the local CA certificate").map_err(|e| {
                IssuerError::Setup {
                    issuer: self.name.clone(),
                    message: e.to_string(),
                }
            })?;
        Ok(ders.into_iter().take(1).collect())
    }

    async fn revoke(&self, _credential: &str, _cert_pem: &str) -> Result<Revocation, IssuerError> {
        // Revocation means nothing without a CRL or OCSP responder that
        // clients consult, and the embedded CA runs neither.
        Ok(Revocation::Unsupported(format!(
            "the local CA \"{}\" publishes no CRL or OCSP, so it cannot revoke; the certificate stays valid until it expires (remove the CA from the clients' trust to cut it off sooner)",
            self.name
        )))
    }

    async fn issue(&self, req: &IssueRequest) -> Result<Issued, IssuerError> {
        let fail = |message: String| IssuerError::Issue {
            source: None,
            issuer: self.name.clone(),
            credential: req.credential.clone(),
            message,
            retry_after: None,
        };
        let mut csr = CertificateSigningRequestParams::from_der(&req.csr_der.clone().into())
            .map_err(|e| fail(format!("the CSR does not parse or verify: {e}")))?;
        let now = SystemTime::now();
        let backdate = BACKDATE.min(req.lifetime / 20);
        let not_before = now - backdate;
        let not_after = (not_before + req.lifetime).min(self.ca_not_after);
        if not_after <= now {
            return Err(fail(format!(
                "the CA certificate expired at {}; remove its directory to create a new CA",
                cert::rfc3339(self.ca_not_after)
            )));
        }
        let serial = random_serial();
        let serial_hex: String = serial.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let p = &mut csr.params;
        p.not_before = not_before.into();
        p.not_after = not_after.into();
        p.serial_number = Some(serial);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if csr.public_key.algorithm() == &rcgen::PKCS_RSA_SHA256 {
            p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        let leaf = csr
            .signed_by(&self.issuer)
            .map_err(|e| fail(format!("signing failed: {e}")))?;
        let record = serde_json::json!({
            "time": cert::rfc3339(now),
            "credential": req.credential,
            "serial": serial_hex,
            "names": req.names.dns_names,
            "ips": req.names.ip_addresses,
            "not_after": cert::rfc3339(not_after),
        });
        if let Err(e) = store::append_record(&self.issued_log, &record.to_string(), ISSUED_LOG_MAX)
        {
            // The certificate is issued all the same; only the record is missing.
            tracing::warn!(issuer = %self.name, error = %e, "cannot record the issued certificate in the CA's issued.log");
        }
        Ok(Issued {
            cert_pem: leaf.pem(),
            chain_pem: String::new(),
            ca_pem: Some(self.ca_pem.clone()),
            server_key: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{build_csr, generate_key, validate_issued, IssuedPem, Names};
    use crate::config::KeyType;
    use std::os::unix::fs::PermissionsExt;

    fn cfg() -> LocalCaConfig {
        LocalCaConfig {
            key_type: KeyType::EcdsaP256,
            common_name: "test CA".into(),
            ca_lifetime: Duration::from_secs(86400),
        }
    }

    #[tokio::test]
    async fn creates_once_signs_every_key_type_and_chains_to_root() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca").join("dev");
        let ca = LocalCa::open("dev", &dir, &cfg()).unwrap();
        let mode = std::fs::metadata(dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let names = Names {
            common_name: "app.test".into(),
            dns_names: vec!["app.test".into()],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        };
        for kt in KeyType::ALL {
            let key = generate_key(kt).unwrap();
            let req = IssueRequest {
                credential: "web".into(),
                csr_der: build_csr(&key, &names).unwrap(),
                names: names.clone(),
                lifetime: Duration::from_secs(600),
            };
            let issued = ca.issue(&req).await.unwrap();
            let pem = IssuedPem {
                cert_pem: &issued.cert_pem,
                chain_pem: &issued.chain_pem,
                ca_pem: issued.ca_pem.as_deref(),
            };
            let info = validate_issued(&pem, &key.public_key(), &names, SystemTime::now())
                .unwrap_or_else(|e| panic!("{kt:?}: {e}"));
            let span = info.lifetime().as_secs();
            assert!((599..=601).contains(&span), "{kt:?}: lifetime {span}");
        }
        // Reopening keeps the same root.
        let again = LocalCa::open("dev", &dir, &cfg()).unwrap();
        assert_eq!(again.ca_pem(), ca.ca_pem());
        // Every certificate is on record at the CA, private to rekey.
        let log = std::fs::read_to_string(dir.join("issued.log")).unwrap();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), KeyType::ALL.len());
        assert_eq!(lines[0]["credential"], "web");
        assert_eq!(lines[0]["names"], serde_json::json!(["app.test"]));
        assert_eq!(lines[0]["serial"].as_str().unwrap().len(), 32);
        let mode = std::fs::metadata(dir.join("issued.log"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn revoke_says_the_local_ca_cannot_and_why() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = LocalCa::open("dev", &tmp.path().join("dev"), &cfg()).unwrap();
        match ca.revoke("web", "unused").await.unwrap() {
            Revocation::Unsupported(why) => {
                assert!(why.contains("\"dev\"") && why.contains("no CRL"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mismatched_ca_files_are_refused_with_a_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dev");
        LocalCa::open("dev", &dir, &cfg()).unwrap();
        let other = generate_key(KeyType::EcdsaP256).unwrap();
        std::fs::write(dir.join("ca.key"), other.pem().as_bytes()).unwrap();
        let err = LocalCa::open("dev", &dir, &cfg()).unwrap_err().to_string();
        assert!(
            err.contains("do not belong together") && err.contains("dev"),
            "{err}"
        );
    }
}
