//! TLS client plumbing shared by the handoff probes and the HTTP client:
//! a verifier that accepts any server certificate (for probing the local app,
//! whose certificate is the very thing being checked by fingerprint),
//! client-certificate loading, and the verified config (platform roots plus
//! a `trust_bundle`) used to talk to issuers and alert receivers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::fs::safefile::{self, Guard, MAX_READ};

/// Accepts any server certificate but still checks handshake signatures, so
/// the peer proves it holds the key of the certificate it shows.
#[derive(Debug)]
pub struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The aws-lc-rs provider (the only one in the tree).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client config that accepts any server certificate, optionally
/// presenting a client certificate (mTLS).
pub fn probe_config(client: Option<(&Path, &Path)>) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)));
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let cert_pem = safefile::read_guarded(cert, "client_cert", Guard::Trust, MAX_READ)
                .map_err(|e| format!("client_cert: {e}"))?;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("bad PEM in client_cert {}: {e}", cert.display()))?;
            let key_pem = safefile::read_guarded(key, "client_key", Guard::Secret, MAX_READ)
                .map_err(|e| format!("client_key: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| format!("bad PEM in client_key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("unusable client certificate: {e}"))
        }
    }
}

/// Why a verified client config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The `trust_bundle` file is unreadable or holds no usable root.
    #[error("trust_bundle {}: {reason}", path.display())]
    Bundle {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither the platform nor a bundle provides a root.
    #[error("no trusted CA certificates for https: install the ca-certificates package or set trust_bundle")]
    NoRoots,
    /// rustls refused the settings.
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The platform's roots, loaded once per process.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "while loading the platform's CA certificates");
        }
        found.certs
    })
}

/// A client config that verifies servers against the platform roots plus
/// the PEM certificates in `trust_bundle`. There is deliberately no way to
/// turn verification off.
pub fn verified_config(trust_bundle: Option<&Path>) -> Result<ClientConfig, TrustError> {
    verified_config_with(root_store(trust_bundle)?)
}

/// A client config that verifies servers against `roots`.
pub fn verified_config_with(roots: rustls::RootCertStore) -> Result<ClientConfig, TrustError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The platform roots plus the PEM certificates in `trust_bundle`, each a
/// usable root (the bundle's certificates are checked like
/// [`verified_config`] checks them).
fn root_store(trust_bundle: Option<&Path>) -> Result<rustls::RootCertStore, TrustError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(native_roots().iter().cloned());
    for c in bundle(trust_bundle)? {
        roots.add(c).map_err(|e| TrustError::Bundle {
            path: trust_bundle.unwrap_or(Path::new("")).to_path_buf(),
            reason: format!("a certificate is not a usable root: {e}"),
        })?;
    }
    if roots.is_empty() {
        return Err(TrustError::NoRoots);
    }
    Ok(roots)
}

/// The certificates of `trust_bundle` (none without one).
fn bundle(trust_bundle: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let Some(path) = trust_bundle else {
        return Ok(Vec::new());
    };
    let err = |reason: String| TrustError::Bundle {
        path: path.to_path_buf(),
        reason,
    };
    // It decides whom rekey trusts: refused when other users can write it.
    let pem = safefile::read_guarded(path, "trust_bundle", Guard::Trust, MAX_READ)
        .map_err(|e| err(e.reason()))?;
    let certs = crate::cert::pem_certs(&pem, "trust_bundle").map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("holds no PEM certificate".to_string()));
    }
    Ok(certs)
}

/// The anchors a certificate from an issuer with `trust_bundle` must chain
/// to: the platform's roots plus the bundle's certificates.
pub fn anchors(trust_bundle: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let mut out = native_roots().to_vec();
    out.extend(bundle(trust_bundle)?);
    Ok(out)
}

/// Whether `chain` (the leaf, then whatever intermediates came with it)
/// chains to one of `anchors` and is valid for `name` at `now`: full path
/// validation (signatures, validity, CA constraints, server-auth use) by
/// rustls' own verifier on aws-lc-rs.
pub fn verify_chain(
    chain: &[CertificateDer<'static>],
    anchors: &[CertificateDer<'static>],
    name: ServerName<'static>,
    now: std::time::SystemTime,
) -> Result<(), String> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err("no certificate".into());
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(anchors.iter().cloned());
    if roots.is_empty() {
        return Err("there is no trust anchor to check it against".into());
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(
            leaf,
            intermediates,
            &name,
            &[],
            UnixTime::since_unix_epoch(since),
        )
        .map(drop)
        .map_err(|e| e.to_string())
}
