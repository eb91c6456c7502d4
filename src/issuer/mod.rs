//! Issuers mint certificates from a CSR. One file per backend behind
//! [`Issuer`]; backends never import the engine.

use std::time::Duration;

use async_trait::async_trait;

use crate::cert::Names;

pub mod acme;
pub mod local_ca;
mod window;

pub use window::{pick_in_window, RenewalWindow};

/// What the engine asks an issuer for. The private key never leaves the host:
/// only the CSR is handed over.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// Credential name, for messages.
    pub credential: String,
    /// DER CSR, signed by the locally generated key.
    pub csr_der: Vec<u8>,
    /// The names the CSR carries.
    pub names: Names,
    /// Lifetime asked for; the issuer may shorten it.
    pub lifetime: Duration,
}

/// What an issuer returned, before validation.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// Intermediates, PEM, leaf's issuer first; may be empty.
    pub chain_pem: String,
    /// The root, PEM, when the issuer knows it (written to `files.ca`).
    pub ca_pem: Option<String>,
}

/// Why an issuer could not issue.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// The issuer's own state (e.g. the local CA's key) could not be used.
    #[error("issuer {issuer}: {message}")]
    Setup {
        /// Issuer name from the config.
        issuer: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// The request was refused or failed.
    #[error("issuer {issuer} could not issue for {credential}: {message}")]
    Issue {
        /// Issuer name from the config.
        issuer: String,
        /// Credential name.
        credential: String,
        /// What went wrong.
        message: String,
        /// When the issuer asked us to come back, if it did.
        retry_after: Option<Duration>,
    },
    /// A question that is not an issuance (e.g. ARI renewal info) failed;
    /// the caller keeps its own schedule.
    #[error("issuer {issuer}: {message}")]
    Query {
        /// Issuer name from the config.
        issuer: String,
        /// What went wrong.
        message: String,
        /// When the issuer asked us to come back, if it did.
        retry_after: Option<Duration>,
    },
}

impl IssuerError {
    /// The issuer's requested wait before retrying, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            IssuerError::Issue { retry_after, .. } | IssuerError::Query { retry_after, .. } => {
                *retry_after
            }
            IssuerError::Setup { .. } => None,
        }
    }
}

/// A certificate authority rekey can ask for certificates.
#[async_trait]
pub trait Issuer: Send + Sync {
    /// Config name of this issuer.
    fn name(&self) -> &str;
    /// Sign the CSR in `req`.
    async fn issue(&self, req: &IssueRequest) -> Result<Issued, IssuerError>;

    /// The CA's suggested renewal window for `cert_pem` (ACME ARI), or `None`
    /// when the issuer has no such notion; the engine then keeps `renew_before`.
    async fn renewal_window(&self, _cert_pem: &str) -> Result<Option<RenewalWindow>, IssuerError> {
        Ok(None)
    }

    /// Called once a verified handoff replaced `cert_pem` for `credential`,
    /// so the issuer can retire it (ACME revokes it with `revoke_replaced`).
    async fn replaced(&self, _credential: &str, _cert_pem: &str) -> Result<(), IssuerError> {
        Ok(())
    }
}
