//! `VaultError`: what went wrong talking to Vault, with the path, the HTTP
//! status and Vault's own `errors` text. Never holds a token or secret.

use std::path::PathBuf;
use std::time::Duration;

use crate::net::httpc::{HttpError, SetupError};

/// How much of a non-JSON error body goes into a message.
const BODY_HEAD: usize = 200;

/// Why a Vault request failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// No connection, TLS failure, proxy failure, broken exchange or no
    /// answer in time.
    #[error("{method} {path}: {source}{}", reach_hint(source, address))]
    Unreachable {
        /// HTTP method.
        method: String,
        /// API path, e.g. `/v1/pki/sign/web`.
        path: String,
        /// The configured address.
        address: String,
        /// What failed.
        #[source]
        source: HttpError,
    },
    /// Vault answered with an error status.
    #[error("{method} {path} answered HTTP {status}: {errors}{}", hint(*status, errors, path))]
    Status {
        /// HTTP method.
        method: String,
        /// API path.
        path: String,
        /// HTTP status code.
        status: u16,
        /// Vault's `errors`, joined with "; " (or the start of the body).
        errors: String,
        /// The `Retry-After` of a 429 or 5xx answer.
        retry_after: Option<Duration>,
    },
    /// A 2xx answer without what the API promises.
    #[error("{method} {path}: unexpected answer: {why}")]
    Answer {
        /// HTTP method.
        method: String,
        /// API path.
        path: String,
        /// What is missing or malformed.
        why: String,
    },
    /// A file holding a secret (token, role id, secret id, JWT) is unusable.
    #[error("cannot use {what} {}: {reason}", path.display())]
    File {
        /// Which file (e.g. "secret_id_file").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The token from `token_file` was refused or has run out.
    #[error("the token in token_file {} {why}; write a valid token to it (rekey re-reads it when it changes)", path.display())]
    TokenFile {
        /// The token file.
        path: PathBuf,
        /// What is wrong with its token.
        why: String,
    },
    /// The HTTP client could not be set up (trust_bundle, proxy).
    #[error(transparent)]
    Setup(#[from] SetupError),
}

impl VaultError {
    /// The wait Vault asked for (429 and 5xx answers with `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            VaultError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The transport failure, when Vault was not reached or did not answer
    /// in full (to tell a timeout from a refused connection).
    pub fn transport(&self) -> Option<&HttpError> {
        match self {
            VaultError::Unreachable { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The HTTP status, when Vault answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            VaultError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What to check when no answer came.
fn reach_hint(e: &HttpError, address: &str) -> String {
    match e {
        HttpError::Tls { .. } => {
            format!("; does trust_bundle hold the CA that signed the certificate of {address}?")
        }
        // Its message already says what to check.
        HttpError::Proxy { .. } => String::new(),
        _ => format!("; is Vault running and reachable at {address}?"),
    }
}

/// What to do about common answers, appended to the message.
fn hint(status: u16, errors: &str, path: &str) -> String {
    let lower = errors.to_ascii_lowercase();
    match status {
        403 if path.contains("/auth/") && path.ends_with("/login") => {
            "; check the login credentials and the auth role".to_string()
        }
        403 => format!(
            "; the token's policies must allow this path (e.g. path \"{}\" {{ capabilities = [\"update\"] }})",
            path.trim_start_matches("/v1/")
        ),
        503 if lower.contains("sealed") => "; unseal Vault".to_string(),
        _ => String::new(),
    }
}

/// Vault's `{"errors": [...]}` joined with "; ", or the start of a non-JSON body.
pub(super) fn errors_text(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(list) = v.get("errors").and_then(|e| e.as_array()) {
            let parts: Vec<String> = list
                .iter()
                .filter_map(|e| e.as_str())
                .flat_map(multierror)
                .collect();
            if !parts.is_empty() {
                return parts.join("; ");
            }
            return "(no error text)".to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(BODY_HEAD)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_string()
    } else {
        text.to_string()
    }
}

/// The items of Go's multierror text ("2 errors occurred:\n\t* a\n\t* b\n\n"),
/// or the message itself, each on one line.
fn multierror(msg: &str) -> Vec<String> {
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let first = msg.lines().next().unwrap_or_default();
    if first.ends_with("occurred:") && first.contains("error") {
        let items: Vec<String> = msg
            .lines()
            .skip(1)
            .filter_map(|l| l.trim_start().strip_prefix("* "))
            .map(one_line)
            .filter(|s| !s.is_empty())
            .collect();
        if !items.is_empty() {
            return items;
        }
    }
    vec![one_line(msg)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_path_status_and_errors_with_a_hint() {
        let e = VaultError::Status {
            method: "POST".into(),
            path: "/v1/pki/sign/web".into(),
            status: 403,
            errors: errors_text(br#"{"errors":["1 error occurred:\n\t* permission denied\n\n"]}"#),
            retry_after: None,
        };
        let m = e.to_string();
        assert!(
            m.starts_with("POST /v1/pki/sign/web answered HTTP 403: permission denied; "),
            "{m}"
        );
        assert!(m.contains("path \"pki/sign/web\""), "{m}");
        let sealed = VaultError::Status {
            method: "POST".into(),
            path: "/v1/pki/sign/web".into(),
            status: 503,
            errors: errors_text(br#"{"errors":["Vault is sealed"]}"#),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            sealed.to_string(),
            "POST /v1/pki/sign/web answered HTTP 503: Vault is sealed; unseal Vault"
        );
        assert_eq!(sealed.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(
            errors_text(b"<html>\n502 Bad Gateway</html>"),
            "<html> 502 Bad Gateway</html>"
        );
        assert_eq!(errors_text(b""), "(empty body)");
        assert_eq!(
            errors_text(
                br#"{"errors":["2 errors occurred:\n\t* a\n\t* b  c\n\n", "plain\nline"]}"#
            ),
            "a; b c; plain line"
        );
    }
}
