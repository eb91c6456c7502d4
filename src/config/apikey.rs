//! `[[api_key]]` entries: an opaque secret with an id and a lifetime, minted
//! by a vault issuer, written to one file, handed over in two phases.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use toml::Spanned;

use super::convert::{resolve, value, MIN_LIFETIME};
use super::error::{line_col, ConfigError, Src};
use super::handoff::{self, OnFailure};
use super::raw::{RawApiKey, TableReader};
use super::{
    values, CertificateConfig, HeaderConfig, IssuerConfig, ReloadConfig, Share, VerifyConfig,
};

/// Default for `overlap`: the old key stays valid this long after a verified handoff.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(300);

/// How the key file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// The secret alone, no newline.
    Raw,
    /// One `NAME=secret` line.
    Env,
    /// `{"secret": ..., "id": ..., "expires_at": ...}`.
    Json,
}

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
    pub proxy: super::ProxyConfig,
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

/// One `[[api_key]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyConfig {
    /// Unique name (shared namespace with certificates).
    pub name: String,
    /// The issuer (a vault issuer).
    pub issuer: String,
    /// The file the app reads the key from.
    pub file: PathBuf,
    /// How it is written.
    pub format: KeyFormat,
    /// Variable name for `format = "env"`.
    pub env_var: String,
    /// Mode of the key file (default 0600).
    pub key_mode: u32,
    /// Owner uid, if set.
    pub uid: Option<u32>,
    /// Group gid, if set.
    pub gid: Option<u32>,
    /// Asked of the issuer (`{lifetime}` in the mint body).
    pub lifetime: Duration,
    /// When to renew, before expiry.
    pub renew_before: Share,
    /// How long the old key stays valid after a verified handoff.
    pub overlap: Duration,
    /// How a key is minted.
    pub mint: MintConfig,
    /// How a key is revoked; `None`: keys are left to expire.
    pub revoke: Option<RevokeConfig>,
    /// How the app is told.
    pub reload: ReloadConfig,
    /// The credentials it shares that reload with (see
    /// [`super::ReloadGroup`]); `None`: handed over alone.
    pub reload_group: Option<std::sync::Arc<super::ReloadGroup>>,
    /// How the handoff is proven.
    pub verify: VerifyConfig,
    /// Roll back or keep on a failed handoff.
    pub on_failure: OnFailure,
    /// What a config reload that drops this key does with it.
    pub on_remove: super::OnRemove,
}

/// Convert every `[[api_key]]`; names must be unique across credentials.
pub(super) fn api_keys(
    src: &Src<'_>,
    base: &Path,
    issuers: &BTreeMap<String, IssuerConfig>,
    certificates: &[std::sync::Arc<CertificateConfig>],
    groups: &mut super::reload_group::Resolver,
    raw: Vec<Spanned<RawApiKey>>,
) -> Result<Vec<ApiKeyConfig>, ConfigError> {
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, rk) in raw.into_iter().enumerate() {
        let at = format!("api_key[{i}]");
        let rk = rk.into_inner();
        let name = &rk.name;
        value(src, &format!("{at}.name"), name, values::cert_name)?;
        let line = line_col(src.text, name.span().start).0;
        if let Some(first) = names.get(name.get_ref()) {
            return Err(src.err(
                format!("{at}.name"),
                Some(name.span()),
                format!("duplicate api_key name \"{}\" (first defined on line {first}); names must be unique", name.get_ref()),
            ));
        }
        if certificates.iter().any(|c| &c.name == name.get_ref()) {
            return Err(src.err(
                format!("{at}.name"),
                Some(name.span()),
                format!(
                    "a certificate is already named \"{}\"; credential names must be unique",
                    name.get_ref()
                ),
            ));
        }
        names.insert(name.get_ref().clone(), line);
        let kind = match issuers.get(rk.issuer.get_ref()) {
            Some(i @ (IssuerConfig::Vault(_) | IssuerConfig::HttpKeys(_) | IssuerConfig::ExecKeys(_))) => i.type_name(),
            Some(other) => {
                return Err(src.err(
                    format!("{at}.issuer"),
                    Some(rk.issuer.span()),
                    format!(
                        "api_key \"{}\": issuer \"{}\" is of type {}, which cannot mint API keys; use a vault, http or exec issuer",
                        name.get_ref(),
                        rk.issuer.get_ref(),
                        other.type_name()
                    ),
                ))
            }
            None => {
                let defined: Vec<&str> = issuers.keys().map(String::as_str).collect();
                return Err(src.err(
                    format!("{at}.issuer"),
                    Some(rk.issuer.span()),
                    format!(
                        "api_key \"{}\": issuer \"{}\" is not defined; defined issuers: {}",
                        name.get_ref(),
                        rk.issuer.get_ref(),
                        if defined.is_empty() { "none".to_string() } else { defined.join(", ") }
                    ),
                ));
            }
        };
        out.push(api_key(src, base, &at, kind, groups, rk)?);
    }
    Ok(out)
}

fn api_key(
    src: &Src<'_>,
    base: &Path,
    at: &str,
    kind: &str,
    groups: &mut super::reload_group::Resolver,
    rk: RawApiKey,
) -> Result<ApiKeyConfig, ConfigError> {
    let k = |key: &str| format!("{at}.{key}");
    if rk.file.get_ref().is_empty() {
        return Err(src.err(k("file"), Some(rk.file.span()), "must not be empty"));
    }
    let file = resolve(base, rk.file.get_ref());
    let format = match &rk.format {
        Some(s) => value(src, &k("format"), s, |f| match f {
            "raw" => Ok(KeyFormat::Raw),
            "env" => Ok(KeyFormat::Env),
            "json" => Ok(KeyFormat::Json),
            _ => Err(format!("unknown format \"{f}\"; allowed: raw, env, json")),
        })?,
        None => KeyFormat::Raw,
    };
    let env_var = match &rk.env_var {
        Some(s) => value(src, &k("env_var"), s, |v| {
            let ok = !v.is_empty()
                && !v.starts_with(|c: char| c.is_ascii_digit())
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if ok {
                Ok(v.to_string())
            } else {
                Err(format!(
                    "\"{v}\" is not an environment variable name (letters, digits, _)"
                ))
            }
        })?,
        None => rk
            .name
            .get_ref()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect(),
    };
    let key_mode = match &rk.key_mode {
        Some(v) => {
            values::mode(v.get_ref()).map_err(|m| src.err(k("key_mode"), Some(v.span()), m))?
        }
        None => 0o600,
    };
    let uid = match &rk.owner {
        Some(s) => Some(value(src, &k("owner"), s, values::uid)?),
        None => None,
    };
    let gid = match &rk.group {
        Some(s) => Some(value(src, &k("group"), s, values::gid)?),
        None => None,
    };
    let lifetime = match &rk.lifetime {
        Some(s) => {
            let d = value(src, &k("lifetime"), s, values::duration)?;
            if d < MIN_LIFETIME {
                return Err(src.err(
                    k("lifetime"),
                    Some(s.span()),
                    format!("must be at least 10s, found \"{}\"", s.get_ref()),
                ));
            }
            d
        }
        None => Duration::from_secs(3600),
    };
    let renew_before = match &rk.renew_before {
        Some(s) => match value(src, &k("renew_before"), s, values::share)? {
            Share::Fraction(f) if !(f > 0.0 && f < 1.0) => {
                return Err(src.err(
                    k("renew_before"),
                    Some(s.span()),
                    format!(
                        "must be more than 0% and less than 100% of lifetime, found \"{}\"",
                        s.get_ref()
                    ),
                ));
            }
            Share::Duration(d) if d.is_zero() || d >= lifetime => {
                return Err(src.err(
                    k("renew_before"),
                    Some(s.span()),
                    format!(
                        "must be more than 0s and less than lifetime, found \"{}\"",
                        s.get_ref()
                    ),
                ));
            }
            share => share,
        },
        None => Share::Fraction(0.33),
    };
    let overlap = match &rk.overlap {
        Some(s) => value(src, &k("overlap"), s, values::duration)?,
        None => DEFAULT_OVERLAP,
    };
    let mint = mint(src, k("mint"), kind, rk.mint)?;
    let revoke = match rk.revoke {
        Some(t) => Some(revoke(src, k("revoke"), kind, t)?),
        None => None,
    };
    if revoke == Some(RevokeConfig::Lease) && mint.lease.is_none() {
        return Err(src.err(k("mint.lease"), None, "revoke = { lease = true } needs mint.lease, the field holding the lease id (like \"lease_id\")"));
    }
    let reload = match rk.reload {
        Some(t) => handoff::reload(src, base, k("reload"), t)?,
        None => ReloadConfig::None,
    };
    let reload_group =
        groups.resolve(src, &k("reload_group"), rk.reload_group.as_ref(), &reload)?;
    let verify = match rk.verify {
        Some(t) => handoff::verify(src, base, k("verify"), t, "localhost")?,
        None => VerifyConfig::default(),
    };
    let on_failure = match &rk.on_failure {
        Some(s) => value(src, &k("on_failure"), s, handoff::on_failure)?,
        None => OnFailure::Rollback,
    };
    let on_remove = match &rk.on_remove {
        Some(s) => value(src, &k("on_remove"), s, super::on_remove::on_remove)?,
        None => super::OnRemove::Keep,
    };
    Ok(ApiKeyConfig {
        name: rk.name.into_inner(),
        issuer: rk.issuer.into_inner(),
        file,
        format,
        env_var,
        key_mode,
        uid,
        gid,
        lifetime,
        renew_before,
        overlap,
        mint,
        revoke,
        reload,
        reload_group,
        verify,
        on_failure,
        on_remove,
    })
}

/// A `{ ... }` value as JSON (the request body).
fn body(t: &mut TableReader<'_, '_>) -> Result<Option<Value>, ConfigError> {
    let Some(v) = t.take("body") else {
        return Ok(None);
    };
    let span = v.span();
    if !v.get_ref().is_table() {
        return Err(t.err("body", Some(span), "must be a table, sent as a JSON object"));
    }
    serde_json::to_value(v.into_inner())
        .map(Some)
        .map_err(|e| t.err("body", Some(span), format!("cannot be sent as JSON: {e}")))
}

fn required(
    t: &mut TableReader<'_, '_>,
    key: &'static str,
    example: &str,
) -> Result<String, ConfigError> {
    let span = t.span.clone();
    match t.string(key)? {
        Some(s) if !s.get_ref().is_empty() => Ok(s.into_inner()),
        Some(s) => Err(t.err(key, Some(s.span()), "must not be empty")),
        None => Err(t.err(
            key,
            Some(span),
            format!("required key is missing; write it like {example}"),
        )),
    }
}

fn method(t: &mut TableReader<'_, '_>) -> Result<String, ConfigError> {
    match t.string("method")? {
        Some(m) => {
            let up = m.get_ref().to_ascii_uppercase();
            if ["GET", "POST", "PUT", "DELETE"].contains(&up.as_str()) {
                Ok(up)
            } else {
                Err(t.err(
                    "method",
                    Some(m.span()),
                    format!(
                        "unknown method \"{}\"; allowed: GET, POST, PUT, DELETE",
                        m.get_ref()
                    ),
                ))
            }
        }
        None => Ok("POST".into()),
    }
}

fn mint(
    src: &Src<'_>,
    path: String,
    kind: &str,
    table: Spanned<super::raw::RawTagged>,
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

/// Take `key` as a non-empty argv array.
fn argv(
    t: &mut TableReader<'_, '_>,
    key: &'static str,
) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(v) = t.take(key) else {
        return Ok(None);
    };
    let span = v.span();
    let items: Option<Vec<String>> = v
        .into_inner()
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
        })
        .unwrap_or(None);
    match items {
        Some(a) if !a.is_empty() && !a[0].is_empty() => Ok(Some(a)),
        _ => Err(t.err(
            key,
            Some(span),
            "must be a non-empty array of strings (argv, run without a shell)",
        )),
    }
}

/// Take `key` as a table of strings (request headers).
fn string_table(
    t: &mut TableReader<'_, '_>,
    key: &'static str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(v) = t.take(key) else {
        return Ok(Vec::new());
    };
    let span = v.span();
    let toml::Value::Table(map) = v.into_inner() else {
        return Err(t.err(key, Some(span), "must be a table like { X-Team = \"ops\" }"));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            toml::Value::String(s) => Ok((k, s)),
            _ => Err(t.err(
                key,
                Some(span.clone()),
                format!("header {k} must be a string"),
            )),
        })
        .collect()
}

/// `[issuer.NAME] type = "http" | "exec"`: key issuers.
pub(super) fn key_issuer(
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
    let proxy = super::proxy::key(t)?;
    let headers = super::alert::headers(t, base)?;
    Ok(IssuerConfig::HttpKeys(HttpKeysConfig {
        base_url,
        trust_bundle,
        proxy,
        headers,
        timeout,
    }))
}

fn revoke(
    src: &Src<'_>,
    path: String,
    kind: &str,
    table: Spanned<super::raw::RawTagged>,
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
