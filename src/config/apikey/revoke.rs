//! `revoke = { ... }` of an `[[api_key]]`: how an old or unused key is revoked.

use serde_json::Value;
use toml::Spanned;

use super::fields::{argv, body, method};
use crate::config::error::{ConfigError, Src};
use crate::config::raw::{RawTagged, TableReader};

/// How an old or unused key is revoked (`revoke = { ... }`).
#[derive(Debug, Clone, PartialEq)]
pub enum RevokeConfig {
    /// `sys/leases/revoke` with the key's lease id.
    Lease,
    /// A request with `{id}` (and `{lease}`) filled in.
    Request {
        /// HTTP method (default POST).
        method: String,
        /// API path under `/v1/`.
        path: String,
        /// JSON body.
        body: Option<Value>,
    },
    /// A command (exec issuers); `REKEY_KEY_ID` in its environment.
    Command(Vec<String>),
}

/// Read `revoke = { ... }` at `path` for an issuer of type `kind`.
pub(super) fn revoke(
    src: &Src<'_>,
    path: String,
    kind: &str,
    table: Spanned<RawTagged>,
) -> Result<RevokeConfig, ConfigError> {
    let mut t = TableReader::new(src, path, table);
    let span = t.span.clone();
    if kind == "exec" {
        let command = argv(&mut t, "command")?.ok_or_else(|| {
            t.err(
                "command",
                Some(span.clone()),
                "required key is missing; the command gets the key id as REKEY_KEY_ID",
            )
        })?;
        t.finish()?;
        return Ok(RevokeConfig::Command(command));
    }
    let lease = if kind == "vault" {
        match t.take("lease") {
            Some(v) => {
                let s = v.span();
                Some(
                    v.into_inner()
                        .as_bool()
                        .ok_or_else(|| t.err("lease", Some(s), "must be true or false"))?,
                )
            }
            None => None,
        }
    } else {
        None
    };
    let r = if lease == Some(true) {
        RevokeConfig::Lease
    } else {
        let method = method(&mut t)?;
        let Some(p) = t.string("path")? else {
            return Err(t.err("path", Some(span), "required key is missing; write it like \"auth/token/revoke-accessor\" (vault: or set lease = true)"));
        };
        let body = body(&mut t)?;
        RevokeConfig::Request {
            method,
            path: p.into_inner(),
            body,
        }
    };
    t.finish()?;
    Ok(r)
}
