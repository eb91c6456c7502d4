//! `mint = { ... }` of an `[[api_key]]`: how a key is minted.

use serde_json::Value;
use toml::Spanned;

use super::fields::{argv, body, method, required, string_table};
use crate::config::error::{ConfigError, Src};
use crate::config::raw::{RawTagged, TableReader};

/// How a key is minted (`mint = { ... }`).
#[derive(Debug, Clone, PartialEq)]
pub struct MintConfig {
    /// HTTP method (default POST).
    pub method: String,
    /// API path (under `/v1/` for vault, under `base_url` for http); empty for exec.
    pub path: String,
    /// Extra request headers (http issuers).
    pub headers: Vec<(String, String)>,
    /// JSON body; string leaves may hold `{lifetime}`.
    pub body: Option<Value>,
    /// argv printing `{"secret", "id", "expires_at"}` (exec issuers).
    pub command: Vec<String>,
    /// Dotted field path of the secret in the answer.
    pub secret: String,
    /// Dotted field path of the key id.
    pub id: String,
    /// Dotted field path of the TTL in seconds, if the answer has one.
    pub ttl: Option<String>,
    /// Dotted field path of an RFC 3339 expiry, if the answer has one.
    pub expires: Option<String>,
    /// Dotted field path of the lease id (for `revoke = { lease = true }`).
    pub lease: Option<String>,
}

/// Read `mint = { ... }` at `path` for an issuer of type `kind`.
pub(super) fn mint(
    src: &Src<'_>,
    path: String,
    kind: &str,
    table: Spanned<RawTagged>,
) -> Result<MintConfig, ConfigError> {
    let mut t = TableReader::new(src, path, table);
    let span = t.span.clone();
    let m = if kind == "exec" {
        let command = argv(&mut t, "command")?.ok_or_else(|| {
            t.err("command", Some(span.clone()), "required key is missing; write it like [\"/usr/local/bin/mint-key\"]; it prints {\"secret\", \"id\", \"expires_at\"} as JSON")
        })?;
        MintConfig {
            method: String::new(),
            path: String::new(),
            headers: Vec::new(),
            body: None,
            command,
            secret: "secret".into(),
            id: "id".into(),
            ttl: None,
            expires: Some("expires_at".into()),
            lease: None,
        }
    } else {
        let method = method(&mut t)?;
        let path = required(&mut t, "path", "\"auth/token/create\"")?;
        let headers = if kind == "http" {
            string_table(&mut t, "headers")?
        } else {
            Vec::new()
        };
        MintConfig {
            method,
            path,
            headers,
            body: body(&mut t)?,
            command: Vec::new(),
            secret: required(&mut t, "secret", "\"auth.client_token\"")?,
            id: required(&mut t, "id", "\"auth.accessor\"")?,
            ttl: t.string("ttl")?.map(Spanned::into_inner),
            expires: t.string("expires")?.map(Spanned::into_inner),
            lease: if kind == "vault" {
                t.string("lease")?.map(Spanned::into_inner)
            } else {
                None
            },
        }
    };
    t.finish()?;
    Ok(m)
}
