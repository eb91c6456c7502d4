//! Asking the issuer: the key made locally, only the CSR sent, and the
//! answer validated before anything touches the application (the budget
//! was checked by the shared driver, `engine/budget.rs`).

use std::time::SystemTime;

use super::Task;
use crate::cert::{self, CertInfo, IssuedPem};
use crate::engine::task::RotateError;
use crate::issuer::IssueRequest;
use crate::metrics;
use crate::store::Material;

impl Task {
    /// Generate the key locally, send only the CSR, validate the answer.
    pub(in crate::engine) async fn request(
        &self,
        g: u64,
    ) -> Result<(Material, CertInfo, Option<String>), RotateError> {
        let key_type = self.cfg.key_type;
        let cert_err = |source| RotateError::Cert {
            credential: self.cfg.name.clone(),
            source,
        };
        // RSA keys take up to a second or two: keep them off the async workers.
        failpoint!("keygen.before");
        let key = tokio::task::spawn_blocking(move || cert::generate_key(key_type))
            .await
            .map_err(|e| {
                cert_err(cert::CertError::KeyGen {
                    key_type: key_type.as_str(),
                    reason: e.to_string(),
                })
            })?
            .map_err(cert_err)?;
        failpoint!("keygen.after");
        let csr_der = cert::build_csr(&key, &self.names()).map_err(cert_err)?;
        let req = IssueRequest {
            credential: self.cfg.name.clone(),
            csr_der,
            names: self.names(),
            lifetime: self.cfg.lifetime,
        };
        failpoint!("issue.before");
        let issued = self.issuer.issue(&req).await;
        failpoint!("issue.after");
        let result = if issued.is_ok() {
            metrics::SUCCESS
        } else {
            metrics::FAILURE
        };
        self.metrics.issuer_request(self.issuer.name(), result);
        let issued = issued?;
        // server_keygen: the issuer made the key, so the certificate must
        // match that one, and that one is installed.
        let key = match &issued.server_key {
            Some(k) => cert::load_key(&k.0, "the issuer's private key").map_err(cert_err)?,
            None => key,
        };
        let pem = IssuedPem {
            cert_pem: &issued.cert_pem,
            chain_pem: &issued.chain_pem,
            ca_pem: issued.ca_pem.as_deref(),
        };
        failpoint!("validate.before");
        let info = cert::validate_issued(&pem, &key.public_key(), &self.names(), SystemTime::now())
            .map_err(|why| RotateError::Invalid {
                credential: self.cfg.name.clone(),
                issuer: self.issuer.name().to_string(),
                why,
            })?;
        failpoint!("validate.after");
        tracing::debug!(generation = g, fingerprint = %info.fingerprint, "issued and validated");
        if let Some(why) = &issued.shortened {
            tracing::warn!(generation = g, not_after = %crate::timestamp::rfc3339(info.not_after), reason = %why, event = "shortened_by_ca", "the certificate is shorter than asked");
        }
        Ok((
            Material {
                cert_pem: issued.cert_pem,
                chain_pem: issued.chain_pem,
                key_pem: key.pem().clone(),
                ca_pem: issued.ca_pem,
                pkcs12: None,
            },
            info,
            issued.shortened,
        ))
    }
}
