//! `[issuer.NAME] type = "http"` and `type = "exec"`: the key issuers that
//! are not Vault (a generic key service, or mint and revoke commands).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::convert::{resolve, value};
use crate::config::error::{ConfigError, Src};
use crate::config::raw::TableReader;
use crate::config::{values, HeaderConfig, IssuerConfig};

/// Default deadline of one key service request or command.
pub const DEFAULT_KEY_TIMEOUT: Duration = Duration::from_secs(30);

/// `[issuer.NAME] type = "http"`: a generic key service.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpKeysConfig {
    /// `http://` or `https://` base; mint and revoke paths are relative to it.
    pub base_url: String,
    /// Extra roots for an https service.
    pub trust_bundle: Option<PathBuf>,
    /// How the service is reached: the environment's proxies, none, or one proxy.
    pub proxy: crate::config::ProxyConfig,
    /// Sent with every request (values inline or from files).
    pub headers: Vec<HeaderConfig>,
    /// Deadline of one request.
    pub timeout: Duration,
}

/// `[issuer.NAME] type = "exec"`: mint and revoke commands (set per key).
#[derive(Debug, Clone, PartialEq)]
pub struct ExecKeysConfig {
    /// Deadline of one command; it is killed (with its process group) after.
    pub timeout: Duration,
    /// Extra environment of the mint and revoke commands (`env = { ... }`).
    pub env: Vec<(String, String)>,
}

/// `[issuer.NAME] type = "http" | "exec"`: key issuers.
pub(in crate::config) fn key_issuer(
    src: &Src<'_>,
    base: &Path,
    t: &mut TableReader<'_, '_>,
    kind: &str,
) -> Result<IssuerConfig, ConfigError> {
    let timeout = match t.string("timeout")? {
        Some(s) => {
            let d = value(src, &t.key_path("timeout"), &s, values::duration)?;
            if d.is_zero() {
                return Err(t.err("timeout", Some(s.span()), "must be longer than 0s"));
            }
            d
        }
        None => DEFAULT_KEY_TIMEOUT,
    };
    if kind == "exec" {
        let env = t.env("env")?;
        return Ok(IssuerConfig::ExecKeys(ExecKeysConfig { timeout, env }));
    }
    let span = t.span.clone();
    let base_url = match t.string("base_url")? {
        Some(u) if u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://") => {
            u.get_ref().trim_end_matches('/').to_string()
        }
        Some(u) => {
            return Err(t.err(
                "base_url",
                Some(u.span()),
                format!("\"{}\" is not an http:// or https:// URL", u.get_ref()),
            ))
        }
        None => {
            return Err(t.err(
                "base_url",
                Some(span),
                "required key is missing; write it like \"https://keys.internal\"",
            ))
        }
    };
    let trust_bundle = t
        .string("trust_bundle")?
        .map(|s| resolve(base, s.get_ref()));
    let proxy = crate::config::proxy::key(t)?;
    let headers = crate::config::alert::headers(t, base)?;
    Ok(IssuerConfig::HttpKeys(HttpKeysConfig {
        base_url,
        trust_bundle,
        proxy,
        headers,
        timeout,
    }))
}
