//! `[[api_key]]` entries: an opaque secret with an id and a lifetime, minted
//! by a key issuer, written to one file, handed over in two phases.
//!
//! This file holds the entry and its own keys; the `mint` and `revoke`
//! tables are read in `mint.rs` and `revoke.rs` (with the readers they
//! share in `fields.rs`), the `http` and `exec` issuers in `issuer.rs`.

mod fields;
mod issuer;
mod mint;
mod revoke;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::convert::{optional, resolve, value, MIN_LIFETIME};
use super::error::{line_col, ConfigError, Src};
use super::handoff::{self, OnFailure};
use super::raw::RawApiKey;
use super::{values, CertificateConfig, IssuerConfig, ReloadConfig, Share, VerifyConfig};

pub(super) use issuer::key_issuer;
pub use issuer::{ExecKeysConfig, HttpKeysConfig};
pub use mint::MintConfig;
pub use revoke::RevokeConfig;

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
        let line = unique_name(src, &at, &rk.name, &names, certificates)?;
        names.insert(rk.name.get_ref().clone(), line);
        let kind = issuer_kind(src, &at, &rk, issuers)?;
        out.push(api_key(src, base, &at, kind, groups, rk)?);
    }
    Ok(out)
}

/// Check `name` is valid and taken by no other key (`names`: name → line)
/// or certificate; its line.
fn unique_name(
    src: &Src<'_>,
    at: &str,
    name: &Spanned<String>,
    names: &HashMap<String, usize>,
    certificates: &[std::sync::Arc<CertificateConfig>],
) -> Result<usize, ConfigError> {
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
    Ok(line)
}

/// The type of the key's issuer (`vault`, `http` or `exec`): it must be
/// defined and able to mint keys.
fn issuer_kind(
    src: &Src<'_>,
    at: &str,
    rk: &RawApiKey,
    issuers: &BTreeMap<String, IssuerConfig>,
) -> Result<&'static str, ConfigError> {
    match issuers.get(rk.issuer.get_ref()) {
        Some(i @ (IssuerConfig::Vault(_) | IssuerConfig::HttpKeys(_) | IssuerConfig::ExecKeys(_))) => Ok(i.type_name()),
        Some(other) => Err(src.err(
            format!("{at}.issuer"),
            Some(rk.issuer.span()),
            format!(
                "api_key \"{}\": issuer \"{}\" is of type {}, which cannot mint API keys; use a vault, http or exec issuer",
                rk.name.get_ref(),
                rk.issuer.get_ref(),
                other.type_name()
            ),
        )),
        None => {
            let defined: Vec<&str> = issuers.keys().map(String::as_str).collect();
            Err(src.err(
                format!("{at}.issuer"),
                Some(rk.issuer.span()),
                format!(
                    "api_key \"{}\": issuer \"{}\" is not defined; defined issuers: {}",
                    rk.name.get_ref(),
                    rk.issuer.get_ref(),
                    if defined.is_empty() { "none".to_string() } else { defined.join(", ") }
                ),
            ))
        }
    }
}

/// One `[[api_key]]` at `at`, whose issuer is of type `kind`.
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
        Some(s) => value(src, &k("format"), s, key_format)?,
        None => KeyFormat::Raw,
    };
    let env_var = match &rk.env_var {
        Some(s) => value(src, &k("env_var"), s, env_var_name)?,
        None => default_env_var(rk.name.get_ref()),
    };
    let (key_mode, uid, gid) = ownership(src, at, &rk)?;
    let lifetime = lifetime(src, at, rk.lifetime.as_ref())?;
    let renew_before = renew_before(src, at, rk.renew_before.as_ref(), lifetime)?;
    let overlap = match &rk.overlap {
        Some(s) => value(src, &k("overlap"), s, values::duration)?,
        None => DEFAULT_OVERLAP,
    };
    let mint = mint::mint(src, k("mint"), kind, rk.mint)?;
    let revoke = match rk.revoke {
        Some(t) => Some(revoke::revoke(src, k("revoke"), kind, t)?),
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

/// The key file's `key_mode` (0600 when absent), `owner` and `group`.
fn ownership(
    src: &Src<'_>,
    at: &str,
    rk: &RawApiKey,
) -> Result<(u32, Option<u32>, Option<u32>), ConfigError> {
    let k = |key: &str| format!("{at}.{key}");
    let key_mode = match &rk.key_mode {
        Some(v) => {
            values::mode(v.get_ref()).map_err(|m| src.err(k("key_mode"), Some(v.span()), m))?
        }
        None => 0o600,
    };
    let uid = optional(src, &k("owner"), rk.owner.as_ref(), values::uid)?;
    let gid = optional(src, &k("group"), rk.group.as_ref(), values::gid)?;
    Ok((key_mode, uid, gid))
}

/// `format`: raw, env or json.
fn key_format(f: &str) -> Result<KeyFormat, String> {
    match f {
        "raw" => Ok(KeyFormat::Raw),
        "env" => Ok(KeyFormat::Env),
        "json" => Ok(KeyFormat::Json),
        _ => Err(format!("unknown format \"{f}\"; allowed: raw, env, json")),
    }
}

/// `env_var`: letters, digits and `_`, not starting with a digit.
fn env_var_name(v: &str) -> Result<String, String> {
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
}

/// The default `env_var`: the key's name upper-cased, other characters `_`.
fn default_env_var(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `lifetime`: at least [`MIN_LIFETIME`]; an hour when absent.
fn lifetime(
    src: &Src<'_>,
    at: &str,
    raw: Option<&Spanned<String>>,
) -> Result<Duration, ConfigError> {
    let Some(s) = raw else {
        return Ok(Duration::from_secs(3600));
    };
    let key = format!("{at}.lifetime");
    let d = value(src, &key, s, values::duration)?;
    if d < MIN_LIFETIME {
        return Err(src.err(
            key,
            Some(s.span()),
            format!("must be at least 10s, found \"{}\"", s.get_ref()),
        ));
    }
    Ok(d)
}

/// `renew_before`: a share strictly inside the lifetime; a third when absent.
fn renew_before(
    src: &Src<'_>,
    at: &str,
    raw: Option<&Spanned<String>>,
    lifetime: Duration,
) -> Result<Share, ConfigError> {
    let Some(s) = raw else {
        return Ok(Share::Fraction(0.33));
    };
    let key = format!("{at}.renew_before");
    match value(src, &key, s, values::share)? {
        Share::Fraction(f) if !(f > 0.0 && f < 1.0) => Err(src.err(
            key,
            Some(s.span()),
            format!(
                "must be more than 0% and less than 100% of lifetime, found \"{}\"",
                s.get_ref()
            ),
        )),
        Share::Duration(d) if d.is_zero() || d >= lifetime => Err(src.err(
            key,
            Some(s.span()),
            format!(
                "must be more than 0s and less than lifetime, found \"{}\"",
                s.get_ref()
            ),
        )),
        share => Ok(share),
    }
}
