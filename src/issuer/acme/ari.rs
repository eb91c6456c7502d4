//! ACME Renewal Information (RFC 9773): the certificate's ARI id and the
//! suggested window fetched from the directory's `renewalInfo`.

use std::time::SystemTime;

use base64::prelude::{Engine, BASE64_URL_SAFE_NO_PAD as B64};
use serde::Deserialize;
use x509_parser::extensions::ParsedExtension;

use super::http::{take_hints, Http};
use super::{AcmeError, Ctx};
use crate::issuer::RenewalWindow;

/// `base64url(AKI keyIdentifier) "." base64url(serial DER content)`.
pub(super) fn cert_id(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let aki = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })
        .ok_or("the certificate has no authority key identifier, so it has no ARI id")?;
    Ok(format!(
        "{}.{}",
        B64.encode(aki.0),
        B64.encode(cert.tbs_certificate.raw_serial())
    ))
}

/// The ARI id of the first certificate in `pem`.
pub(super) fn cert_id_pem(pem: &str) -> Result<String, String> {
    let certs = crate::cert::pem_certs(pem.as_bytes(), "certificate").map_err(|e| e.to_string())?;
    let first = certs.first().ok_or("no certificate in the PEM text")?;
    cert_id(first)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RenewalInfo {
    suggested_window: Window,
}

#[derive(Deserialize)]
struct Window {
    start: String,
    end: String,
}

fn rfc3339(s: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("\"{s}\" is not an RFC 3339 time: {e}"))
}

/// GET `base/id` and read the suggested window and `Retry-After`.
pub(super) async fn fetch(
    http: &Http,
    base: &str,
    id: &str,
    ctx: &Ctx<'_>,
) -> Result<RenewalWindow, AcmeError> {
    let url = format!("{}/{id}", base.trim_end_matches('/'));
    let (result, hints) = super::http::with_hints(async {
        let r = http.get(&url).await;
        (r, take_hints())
    })
    .await;
    let (status, body) = result.map_err(|e| ctx.unreachable(e))?;
    if status != 200 {
        let detail = format!("renewal info for {id} answered HTTP {status}");
        return Err(if status == 429 || status >= 500 {
            AcmeError::Busy {
                directory: ctx.directory.to_string(),
                step: "renewalInfo",
                detail,
                retry_after: hints.retry_after,
            }
        } else {
            ctx.protocol("renewalInfo", detail)
        });
    }
    let info: RenewalInfo = serde_json::from_slice(&body)
        .map_err(|e| ctx.protocol("renewalInfo", format!("not a renewal info object: {e}")))?;
    let start =
        rfc3339(&info.suggested_window.start).map_err(|e| ctx.protocol("renewalInfo", e))?;
    let end = rfc3339(&info.suggested_window.end).map_err(|e| ctx.protocol("renewalInfo", e))?;
    Ok(RenewalWindow {
        start,
        end,
        retry_after: hints.retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{build_csr, generate_key, Names};
    use crate::config::{KeyType, LocalCaConfig};
    use crate::issuer::local_ca::LocalCa;
    use crate::issuer::{IssueRequest, Issuer};

    #[tokio::test]
    async fn cert_id_is_aki_dot_serial() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = LocalCa::open("dev", tmp.path(), &LocalCaConfig::default()).unwrap();
        let names = Names {
            common_name: "a.test".into(),
            dns_names: vec!["a.test".into()],
            ip_addresses: vec![],
        };
        let key = generate_key(KeyType::EcdsaP256).unwrap();
        let issued = ca
            .issue(&IssueRequest {
                credential: "c".into(),
                csr_der: build_csr(&key, &names).unwrap(),
                names,
                lifetime: std::time::Duration::from_secs(600),
            })
            .await
            .unwrap();
        let id = cert_id_pem(&issued.cert_pem).unwrap();
        let (aki, serial) = id.split_once('.').unwrap();
        // SHA-1-sized key id and a 16-byte positive serial.
        assert_eq!(B64.decode(aki).unwrap().len(), 20);
        assert_eq!(B64.decode(serial).unwrap().len(), 16);
        assert!(cert_id_pem("garbage").is_err());
    }

    #[test]
    fn rfc3339_times() {
        let t = rfc3339("2025-01-02T03:04:05Z").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_735_787_045
        );
        assert!(rfc3339("yesterday").is_err());
    }
}
