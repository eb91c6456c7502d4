//! The Vault / OpenBao PKI issuer: `POST /v1/<pki_mount>/sign/<pki_role>`
//! with our CSR, so the private key never leaves the host. `pki/issue`
//! (Vault makes the key and sends it back over the network) only with
//! `server_keygen = true`.
//!
//! Submodules: `client` (the reusable `VaultClient`), `auth` (rekey's own
//! token: login, renew-self, re-login), `error`.

mod auth;
mod client;
mod error;

use async_trait::async_trait;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Map, Value};
use x509_parser::prelude::{FromDer, X509Certificate, X509CertificationRequest};
use zeroize::Zeroizing;

pub use client::VaultClient;
pub use error::VaultError;

use super::{BoxError, IssueRequest, Issued, Issuer, IssuerError, Revocation, ServerKey};
use crate::config::VaultConfig;

/// The Vault PKI issuer.
#[derive(Debug)]
pub struct VaultIssuer {
    name: String,
    client: VaultClient,
    pki_mount: String,
    pki_role: String,
    server_keygen: bool,
    /// Extra roots: what a certificate found on disk must chain to (with
    /// the platform's) to be adopted without a journal.
    trust_bundle: Option<std::path::PathBuf>,
}

impl VaultIssuer {
    /// Set up the issuer `name` (checks the secret files; contacts nobody).
    pub fn new(name: &str, cfg: &VaultConfig) -> Result<VaultIssuer, IssuerError> {
        let client = VaultClient::new(name, cfg).map_err(|e| IssuerError::Setup {
            issuer: name.to_string(),
            message: e.to_string(),
        })?;
        if cfg.server_keygen {
            tracing::warn!(issuer = %name, "server_keygen = true: Vault generates the private keys and sends them over the network (pki/issue)");
        }
        Ok(VaultIssuer {
            name: name.to_string(),
            client,
            pki_mount: cfg.pki_mount.clone(),
            pki_role: cfg.pki_role.clone(),
            server_keygen: cfg.server_keygen,
            trust_bundle: cfg.trust_bundle.clone(),
        })
    }

    /// The client, for other Vault-backed credentials on the same server.
    pub fn client(&self) -> &VaultClient {
        &self.client
    }

    /// The API path (under `/v1/`) and JSON body for `req`.
    fn request_for(&self, req: &IssueRequest) -> Result<(String, Value), String> {
        let names = &req.names;
        let mut body = Map::new();
        body.insert("common_name".into(), json!(names.common_name));
        if !names.dns_names.is_empty() {
            body.insert("alt_names".into(), json!(names.dns_names.join(",")));
        }
        if !names.ip_addresses.is_empty() {
            let ips: Vec<String> = names.ip_addresses.iter().map(|ip| ip.to_string()).collect();
            body.insert("ip_sans".into(), json!(ips.join(",")));
        }
        // Vault caps it at the role's max_ttl (with a warning, logged below).
        body.insert(
            "ttl".into(),
            json!(format!("{}s", req.lifetime.as_secs().max(1))),
        );
        body.insert("format".into(), json!("pem"));
        let verb = if self.server_keygen {
            let (key_type, key_bits) = key_params(&req.csr_der)?;
            body.insert("key_type".into(), json!(key_type));
            body.insert("key_bits".into(), json!(key_bits));
            body.insert("private_key_format".into(), json!("pkcs8"));
            "issue"
        } else {
            let pem = pem_lf("CERTIFICATE REQUEST", &req.csr_der);
            body.insert("csr".into(), json!(pem));
            "sign"
        };
        Ok((
            format!("{}/{verb}/{}", self.pki_mount, self.pki_role),
            Value::Object(body),
        ))
    }
}

#[async_trait]
impl Issuer for VaultIssuer {
    fn name(&self) -> &str {
        &self.name
    }

    fn trust_anchors(&self) -> Result<Vec<CertificateDer<'static>>, IssuerError> {
        // Offline: the platform's roots and trust_bundle (put the PKI
        // mount's root there to have its certificates adopted).
        crate::net::tls::anchors(self.trust_bundle.as_deref()).map_err(|e| IssuerError::Setup {
            issuer: self.name.clone(),
            message: e.to_string(),
        })
    }

    async fn issue(&self, req: &IssueRequest) -> Result<Issued, IssuerError> {
        let fail = |message: String, retry_after| IssuerError::Issue {
            issuer: self.name.clone(),
            credential: req.credential.clone(),
            message,
            retry_after,
            source: None,
        };
        let (path, body) = self.request_for(req).map_err(|m| fail(m, None))?;
        let mut answer = self
            .client
            .request("POST", &path, Some(&body))
            .await
            .map_err(|e| IssuerError::Issue {
                issuer: self.name.clone(),
                credential: req.credential.clone(),
                message: e.to_string(),
                retry_after: e.retry_after(),
                source: Some(Box::new(e)),
            })?;
        if let Some(warnings) = answer.get("warnings").and_then(Value::as_array) {
            for w in warnings.iter().filter_map(Value::as_str) {
                // Roles that take names from the CSR (the default) warn on
                // every request that we sent them too: expected, so quiet.
                if w.contains("use_csr_") {
                    tracing::debug!(issuer = %self.name, warning = %w, "Vault warning");
                } else {
                    tracing::info!(issuer = %self.name, warning = %w, "Vault warning");
                }
            }
        }
        let mut issued = parse_issued(&mut answer)
            .map_err(|why| fail(format!("POST /v1/{path}: unexpected answer: {why}"), None))?;
        if self.server_keygen {
            issued.server_key = Some(take_private_key(&mut answer).ok_or_else(|| {
                fail(
                    format!("POST /v1/{path}: the answer holds no data.private_key"),
                    None,
                )
            })?);
        }
        Ok(issued)
    }

    async fn revoke(&self, credential: &str, cert_pem: &str) -> Result<Revocation, IssuerError> {
        let fail = |message: String, source: Option<BoxError>| IssuerError::Revoke {
            issuer: self.name.clone(),
            credential: credential.to_string(),
            message,
            source,
        };
        let serial = serial_of(cert_pem).map_err(|m| fail(m, None))?;
        let path = format!("{}/revoke", self.pki_mount);
        self.client
            .request("POST", &path, Some(&json!({ "serial_number": serial })))
            .await
            .map_err(|e| {
                fail(format!(
                    "{e}; the certificate (serial {serial}) stays valid until it expires unless revoked by hand (needs the \"update\" capability on {path})"
                ), Some(Box::new(e)))
            })?;
        tracing::info!(issuer = %self.name, serial = %serial, event = "revoked", "revoked the retired certificate in Vault");
        Ok(Revocation::Revoked(format!(
            "POST /v1/{path} serial {serial}"
        )))
    }
}

/// The leaf's serial as Vault spells it: lowercase hex bytes joined by colons.
fn serial_of(cert_pem: &str) -> Result<String, String> {
    let certs = crate::cert::pem_certs(cert_pem.as_bytes(), "the published certificate")
        .map_err(|e| e.to_string())?;
    let leaf = certs
        .first()
        .ok_or("the published certificate holds no certificate")?;
    let (_, c) = X509Certificate::from_der(leaf)
        .map_err(|e| format!("the published certificate does not parse: {e}"))?;
    // Vault formats the serial from its big-integer bytes, which drop the
    // leading zero byte DER adds to keep a serial positive.
    let bytes = c.tbs_certificate.serial.to_bytes_be();
    Ok(bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// `key_type` and `key_bits` for `pki/issue`, read from the CSR's key so
/// the server makes the key the config asks for.
fn key_params(csr_der: &[u8]) -> Result<(&'static str, u32), String> {
    use x509_parser::public_key::PublicKey;
    let (_, csr) = X509CertificationRequest::from_der(csr_der)
        .map_err(|e| format!("the CSR does not parse: {e}"))?;
    let spki = &csr.certification_request_info.subject_pki;
    match spki.parsed() {
        Ok(PublicKey::EC(ec)) => Ok(("ec", ec.key_size() as u32)),
        Ok(PublicKey::RSA(rsa)) => Ok(("rsa", rsa.key_size() as u32)),
        _ if spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 => {
            Ok(("ed25519", 0))
        }
        _ => Err("server_keygen: unsupported key type in the CSR".to_string()),
    }
}

/// `data.private_key` of a `pki/issue` answer, moved out (not copied).
fn take_private_key(answer: &mut Value) -> Option<ServerKey> {
    match answer.get_mut("data")?.get_mut("private_key")?.take() {
        Value::String(s) if !s.is_empty() => Some(ServerKey(Zeroizing::new(s))),
        _ => None,
    }
}

/// Leaf, chain and root from a sign/issue answer. Vault lists the CA chain
/// issuing CA first; a self-signed certificate at its end is the root and
/// goes to `ca_pem`, the rest are intermediates. A chain that stops below
/// its root (the root lives outside this Vault) has no `ca_pem`: writing an
/// intermediate as "the CA" would break the chain check and mislead users.
fn parse_issued(answer: &mut Value) -> Result<Issued, String> {
    let data = answer.get("data").ok_or("no data block")?;
    let cert_pem = data
        .get("certificate")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or("no data.certificate")?
        .trim()
        .to_string();
    let mut ca_pems: Vec<String> = match data.get("ca_chain").and_then(Value::as_array) {
        Some(list) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    if ca_pems.is_empty() {
        // Older servers answer with issuing_ca only.
        if let Some(ca) = data.get("issuing_ca").and_then(Value::as_str) {
            ca_pems.push(ca.to_string());
        }
    }
    let mut certs: Vec<CertificateDer<'static>> = Vec::new();
    for pem in &ca_pems {
        certs.extend(
            crate::cert::pem_certs(pem.as_bytes(), "data.ca_chain").map_err(|e| e.to_string())?,
        );
    }
    let leaf = crate::cert::pem_certs(cert_pem.as_bytes(), "data.certificate")
        .map_err(|e| e.to_string())?;
    // Some setups list the leaf in the chain too; it must not appear twice.
    certs.retain(|c| !leaf.contains(c));
    let ca_pem = match certs.last() {
        Some(last) if self_signed(last) => Some(to_pem(last)),
        _ => None,
    };
    if ca_pem.is_some() {
        certs.pop();
    }
    let chain_pem: String = certs.iter().map(to_pem).collect();
    Ok(Issued {
        cert_pem: format!("{cert_pem}\n"),
        chain_pem,
        ca_pem,
        server_key: None,
        shortened: None,
    })
}

/// Subject equals issuer and the certificate verifies with its own key.
fn self_signed(der: &CertificateDer<'_>) -> bool {
    match X509Certificate::from_der(der) {
        Ok((_, c)) => c.subject() == c.issuer() && c.verify_signature(None).is_ok(),
        Err(_) => false,
    }
}

fn to_pem(der: &CertificateDer<'_>) -> String {
    pem_lf("CERTIFICATE", der)
}

/// PEM with Unix line endings (the `pem` crate defaults to CRLF).
fn pem_lf(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der.to_vec()), config)
}

#[cfg(test)]
mod tests;
