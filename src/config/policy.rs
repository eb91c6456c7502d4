//! `[policy]`: guardrails every credential must satisfy. Parsed here with the
//! rest of the config; evaluated by [`evaluate`] so `rekey check` can list
//! every violation at once (`rekey run` and SIGHUP refuse a violating config).

use std::fmt;
use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, Src};
use super::raw::{RawTagged, TableReader};
use super::{values, ApiKeyConfig, CertificateConfig, Config, IssuerConfig, KeyType};

/// The `[policy]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Longest certificate `lifetime` allowed.
    pub max_lifetime: Option<Duration>,
    /// Smallest RSA key allowed, in bits.
    pub min_rsa_bits: u32,
    /// Names of the `[issuer.NAME]` tables credentials may use; `None` allows all.
    pub allowed_issuers: Option<Vec<String>>,
    /// Key and bundle files must not be group/world readable (`key_mode & 0o077 == 0`).
    pub key_files_private: bool,
    /// `verify = none` only with a `policy_waiver`.
    pub require_verify: bool,
    /// Longest API key `lifetime` allowed.
    pub api_key_max_lifetime: Option<Duration>,
    /// Every API key must expire at its issuer: the mint request passes
    /// `{lifetime}`, or the answer's expiry is read (`mint.ttl`/`mint.expires`).
    pub api_keys_must_expire: bool,
}

/// Default for `policy.min_rsa_bits` (rsa-2048 is the smallest key type anyway).
pub const DEFAULT_MIN_RSA_BITS: u32 = 2048;

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            max_lifetime: None,
            min_rsa_bits: DEFAULT_MIN_RSA_BITS,
            allowed_issuers: None,
            key_files_private: false,
            require_verify: false,
            api_key_max_lifetime: None,
            api_keys_must_expire: false,
        }
    }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The credential (or `issuer.NAME`) at fault.
    pub credential: String,
    /// The dotted config key, e.g. `certificate[0].lifetime`.
    pub key: String,
    /// The `[policy]` rule, e.g. `max_lifetime`.
    pub rule: &'static str,
    /// What is wrong and what to do.
    pub fix: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} breaks policy.{}: {}",
            self.credential, self.key, self.rule, self.fix
        )
    }
}

/// Bits of an RSA key type; `None` for the others.
fn rsa_bits(k: KeyType) -> Option<u32> {
    match k {
        KeyType::Rsa2048 => Some(2048),
        KeyType::Rsa3072 => Some(3072),
        KeyType::Rsa4096 => Some(4096),
        _ => None,
    }
}

/// Every violation of the config's policy, in file order; empty without `[policy]`.
pub fn evaluate(config: &Config) -> Vec<Violation> {
    let Some(p) = &config.policy else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, ic) in &config.issuers {
        if let IssuerConfig::LocalCa(ca) = ic {
            if rsa_bits(ca.key_type).is_some_and(|b| b < p.min_rsa_bits) {
                out.push(Violation {
                    credential: format!("issuer.{name}"),
                    key: format!("issuer.{name}.key_type"),
                    rule: "min_rsa_bits",
                    fix: format!(
                        "{} is below {} bits; use rsa-{} or larger, or ecdsa-p256",
                        ca.key_type,
                        p.min_rsa_bits,
                        p.min_rsa_bits.max(2048)
                    ),
                });
            }
        }
    }
    for (i, c) in config.certificates.iter().enumerate() {
        certificate(p, i, c, &mut out);
    }
    for (i, k) in config.api_keys.iter().enumerate() {
        api_key(p, i, k, &mut out);
    }
    out
}

/// Whether anything makes `k`'s keys expire at the issuer: the mint asks
/// for `{lifetime}`, or rekey reads the expiry the issuer answers with.
fn key_expires(k: &ApiKeyConfig) -> bool {
    fn mentions_lifetime(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains("{lifetime}"),
            serde_json::Value::Array(a) => a.iter().any(mentions_lifetime),
            serde_json::Value::Object(m) => m.values().any(mentions_lifetime),
            _ => false,
        }
    }
    k.mint.ttl.is_some()
        || k.mint.expires.is_some()
        || k.mint.path.contains("{lifetime}")
        || k.mint.body.as_ref().is_some_and(mentions_lifetime)
}

fn api_key(p: &PolicyConfig, i: usize, k: &ApiKeyConfig, out: &mut Vec<Violation>) {
    let mut push = |key: &str, rule: &'static str, fix: String| {
        out.push(Violation {
            credential: k.name.clone(),
            key: format!("api_key[{i}].{key}"),
            rule,
            fix,
        })
    };
    if let Some(max) = p.api_key_max_lifetime.filter(|m| k.lifetime > *m) {
        push(
            "lifetime",
            "api_key_max_lifetime",
            format!(
                "lifetime {} is longer than {}; set lifetime = \"{}\" or less",
                humantime::format_duration(k.lifetime),
                humantime::format_duration(max),
                humantime::format_duration(max)
            ),
        );
    }
    if p.api_keys_must_expire && !key_expires(k) {
        push(
            "mint",
            "api_keys_must_expire",
            "nothing makes the key expire at the issuer: pass the lifetime in the mint request (e.g. body = { ttl = \"{lifetime}\" }) or read the expiry from the answer (mint.ttl or mint.expires)".to_string(),
        );
    }
}

fn certificate(p: &PolicyConfig, i: usize, c: &CertificateConfig, out: &mut Vec<Violation>) {
    let at = |key: &str| format!("certificate[{i}].{key}");
    let mut push = |key: &str, rule: &'static str, fix: String| {
        out.push(Violation {
            credential: c.name.clone(),
            key: at(key),
            rule,
            fix,
        })
    };
    if let Some(max) = p.max_lifetime.filter(|m| c.lifetime > *m) {
        push(
            "lifetime",
            "max_lifetime",
            format!(
                "lifetime {} is longer than {}; set lifetime = \"{}\" or less",
                humantime::format_duration(c.lifetime),
                humantime::format_duration(max),
                humantime::format_duration(max)
            ),
        );
    }
    if rsa_bits(c.key_type).is_some_and(|b| b < p.min_rsa_bits) {
        push(
            "key_type",
            "min_rsa_bits",
            format!(
                "{} is below {} bits; use key_type = \"rsa-{}\" or larger, or \"ecdsa-p256\"",
                c.key_type, p.min_rsa_bits, p.min_rsa_bits
            ),
        );
    }
    if let Some(allowed) = p
        .allowed_issuers
        .as_ref()
        .filter(|a| !a.contains(&c.issuer))
    {
        push(
            "issuer",
            "allowed_issuers",
            format!(
                "issuer \"{}\" is not allowed; use one of: {}",
                c.issuer,
                allowed.join(", ")
            ),
        );
    }
    let writes_key = c.files.entries().iter().any(|(k, _)| k.holds_key());
    if p.key_files_private && writes_key && c.key_mode & 0o077 != 0 {
        push(
            "key_mode",
            "key_files_private",
            format!(
                "key_mode {:04o} lets group or others read the private key; use key_mode = \"0600\" (or \"0400\")",
                c.key_mode
            ),
        );
    }
    if p.require_verify && c.verify.probes.is_empty() && c.policy_waiver.is_none() {
        push(
            "verify",
            "require_verify",
            "verify = none leaves the handoff unproven; configure a tls, http or exec probe, or set policy_waiver = \"<reason>\" on this certificate".to_string(),
        );
    }
}

/// Parse `[policy]`.
pub(super) fn policy(
    src: &Src<'_>,
    table: Spanned<RawTagged>,
) -> Result<PolicyConfig, ConfigError> {
    let mut t = TableReader::new(src, "policy".to_string(), table);
    let mut p = PolicyConfig::default();
    if let Some(s) = t.string("max_lifetime")? {
        p.max_lifetime = Some(super::convert::value(
            src,
            "policy.max_lifetime",
            &s,
            values::duration,
        )?);
    }
    if let Some(v) = t.take("min_rsa_bits") {
        let span = v.span();
        p.min_rsa_bits = v
            .get_ref()
            .as_integer()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (2048..=4096).contains(n))
            .ok_or_else(|| t.err("min_rsa_bits", Some(span), "must be an integer from 2048 to 4096, like 3072 (rsa-2048 is the smallest key type rekey makes)"))?;
    }
    if let Some(v) = t.take("allowed_issuers") {
        let span = v.span();
        let list = v
            .get_ref()
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                t.err(
                    "allowed_issuers",
                    Some(span),
                    "must be a list of issuer names like [\"vault\"]",
                )
            })?;
        p.allowed_issuers = Some(list);
    }
    if let Some(s) = t.string("api_key_max_lifetime")? {
        p.api_key_max_lifetime = Some(super::convert::value(
            src,
            "policy.api_key_max_lifetime",
            &s,
            values::duration,
        )?);
    }
    for (key, field) in [
        ("key_files_private", &mut p.key_files_private),
        ("require_verify", &mut p.require_verify),
        ("api_keys_must_expire", &mut p.api_keys_must_expire),
    ] {
        if let Some(v) = t.take(key) {
            let span = v.span();
            *field = v
                .get_ref()
                .as_bool()
                .ok_or_else(|| t.err(key, Some(span), "must be true or false"))?;
        }
    }
    t.finish()?;
    Ok(p)
}
