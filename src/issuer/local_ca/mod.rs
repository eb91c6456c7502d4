//! The embedded local CA: a root created in the state dir on first use,
//! whose key never leaves it. Signs CSRs with an explicit validity, and
//! rolls itself over before it expires (see [`rollover`]): the next CA is
//! created, the trust bundle with both is delivered to every credential
//! with a `ca` file, then leaves are signed by the new CA, and the old one
//! leaves the bundle after the last leaf it signed has expired.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::CertificateDer;

use super::{IssueRequest, Issued, Issuer, IssuerError, Revocation, TrustBundle};
use crate::cert;
use crate::config::LocalCaConfig;

mod gens;
pub mod rollover;
mod shared;

use shared::Shared;

/// Certificates are backdated by this much (at most) against clock skew on
/// the clients that check them; capped at 5% of the lifetime so short-lived
/// test certificates keep most of their span.
const BACKDATE: Duration = Duration::from_secs(60);

/// The record of every certificate the CA issued (`issued.log` in its
/// directory) moves to `issued.log.1` past this size.
pub const ISSUED_LOG_MAX: u64 = 1 << 20;

/// The embedded CA. Every `LocalCa` opened on one directory in a process
/// shares its state (a config reload builds new issuer objects while
/// running tasks keep the old ones).
pub struct LocalCa {
    name: String,
    shared: Arc<Shared>,
    /// `issued.log`: one JSON line per certificate issued (time, credential,
    /// serial, names, not_after), like an OpenSSL CA's index: what the CA
    /// itself says it issued, whatever rekey's engine believes.
    issued_log: PathBuf,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").field("name", &self.name).finish()
    }
}

/// The CA directories open in this process.
static OPEN: Mutex<Vec<(PathBuf, Weak<Shared>)>> = Mutex::new(Vec::new());

impl LocalCa {
    /// Load the CA kept in `dir`, creating it (key 0600, dir 0700) on first
    /// use; a directory already open in this process is shared, with `cfg`
    /// applied to the generations it creates from now on.
    pub fn open(name: &str, dir: &Path, cfg: &LocalCaConfig) -> Result<LocalCa, IssuerError> {
        let setup = |message: String| IssuerError::Setup {
            issuer: name.to_string(),
            message,
        };
        // A poisoned lock only means a panic elsewhere; the list is still usable.
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(_, w)| w.strong_count() > 0);
        if let Some(shared) = open
            .iter()
            .find(|(d, _)| d == dir)
            .and_then(|(_, w)| w.upgrade())
        {
            shared.lock().cfg = cfg.clone();
            shared.poke();
            return Ok(LocalCa {
                name: name.to_string(),
                shared,
                issued_log: dir.join("issued.log"),
            });
        }
        let shared = Shared::open(name, dir, cfg).map_err(setup)?;
        open.push((dir.to_path_buf(), Arc::downgrade(&shared)));
        Ok(LocalCa {
            name: name.to_string(),
            shared,
            issued_log: dir.join("issued.log"),
        })
    }

    /// The trust bundle (every live root, oldest first), PEM.
    pub fn ca_pem(&self) -> String {
        self.shared.bundle().pem.clone()
    }

    /// Run the rollover steps due at `now` (the clock task does this on
    /// time; tests and tools call it directly).
    pub fn tick(&self, now: SystemTime) {
        self.shared.tick(now);
    }
}

/// The roots of the local CA kept in `dir`, without its keys (for `rekey
/// check`): what its certificates chain to, every live generation.
pub fn root_in(dir: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let found = gens::scan(dir)?;
    if found.is_empty() {
        return Err(format!(
            "the local CA does not exist yet ({} is missing); it is created at the first `rekey run`",
            dir.join("ca.pem").display()
        ));
    }
    let mut out = Vec::new();
    for g in found {
        let ders = cert::pem_certs(g.pem.as_bytes(), "the local CA certificate")
            .map_err(|e| e.to_string())?;
        out.extend(ders.into_iter().take(1));
    }
    Ok(out)
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
        // Only its own roots: a certificate from any other CA, however
        // valid, was not issued here.
        cert::pem_certs(self.ca_pem().as_bytes(), "the local CA certificate").map_err(|e| {
            IssuerError::Setup {
                issuer: self.name.clone(),
                message: e.to_string(),
            }
        })
    }

    fn trust(&self) -> Option<tokio::sync::watch::Receiver<Arc<TrustBundle>>> {
        Some(self.shared.subscribe())
    }

    fn trust_consumers(&self, credentials: Vec<String>) {
        self.shared.lock().consumers = Some(credentials.into_iter().collect());
        self.shared.poke();
    }

    fn trust_delivered(&self, credential: &str, digest: &[u8; 32]) {
        let mut inner = self.shared.lock();
        let hex = shared::hex(digest);
        if inner.state.delivered.get(credential) == Some(&hex) {
            return;
        }
        inner.state.delivered.insert(credential.to_string(), hex);
        self.shared.save(&mut inner);
        drop(inner);
        self.shared.poke();
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
        let asked = not_before + req.lifetime;
        let mut inner = self.shared.lock();
        self.shared.tick_locked(&mut inner, now);
        let Some((n, _)) = inner.signer.as_ref() else {
            return Err(fail("the local CA has no signing key".into()));
        };
        let n = *n;
        let ca_end = inner
            .gens
            .iter()
            .find(|g| g.n == n)
            .map_or(now, |g| g.not_after);
        let not_after = asked.min(ca_end);
        if not_after <= now {
            return Err(fail(format!(
                "the CA certificate expired at {}; remove its directory to create a new CA",
                crate::timestamp::rfc3339(ca_end)
            )));
        }
        let shortened = (not_after < asked).then(|| {
            format!(
                "the local CA \"{}\" (generation {n}) ends at {}, so the certificate ends then too instead of at {}; the next CA signs once every credential with a ca file has its trust bundle",
                self.name,
                crate::timestamp::rfc3339(ca_end),
                crate::timestamp::rfc3339(asked)
            )
        });
        // Recorded before the signature: the old CA stays in the bundle
        // until every leaf it may have signed has expired.
        let last = inner.state.last_leaf.entry(n).or_insert(not_after);
        *last = (*last).max(not_after);
        self.shared.save_or_fail(&inner).map_err(|e| {
            fail(format!(
                "cannot journal the certificate's end before signing it: {e}"
            ))
        })?;
        let p = &mut csr.params;
        p.not_before = not_before.into();
        p.not_after = not_after.into();
        let serial = random_serial();
        let serial_hex: String = serial.as_ref().iter().map(|b| format!("{b:02x}")).collect();
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
        let Some((_, signer)) = inner.signer.as_ref() else {
            return Err(fail("the local CA has no signing key".into()));
        };
        let leaf = csr
            .signed_by(signer)
            .map_err(|e| fail(format!("signing failed: {e}")))?;
        drop(inner);
        let record = serde_json::json!({
            "time": crate::timestamp::rfc3339(now),
            "credential": req.credential,
            "serial": serial_hex,
            "names": req.names.dns_names,
            "ips": req.names.ip_addresses,
            "not_after": crate::timestamp::rfc3339(not_after),
        });
        if let Err(e) =
            crate::fs::append_record(&self.issued_log, &record.to_string(), ISSUED_LOG_MAX)
        {
            // The certificate is issued all the same; only the record is missing.
            tracing::warn!(issuer = %self.name, error = %e, "cannot record the issued certificate in the CA's issued.log");
        }
        Ok(Issued {
            cert_pem: leaf.pem(),
            chain_pem: String::new(),
            ca_pem: Some(self.ca_pem()),
            server_key: None,
            shortened,
        })
    }
}

#[cfg(test)]
mod tests;
