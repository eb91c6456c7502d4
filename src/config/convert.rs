//! Raw layer → typed `Config`, with every cross-field check.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, Src};
use super::raw::{RawConfig, RawDaemon, RawTagged, TableReader};
use super::{values, Config, DaemonConfig, IssuanceBudgets, IssuerConfig, LocalCaConfig, Share};

/// Shortest certificate lifetime: below this rotation would be a busy loop.
/// The longest Unix socket path (sun_path holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

pub(super) const MIN_LIFETIME: Duration = Duration::from_secs(10);
/// Shortest backstop: it re-reads every file, so it must stay slow.
const MIN_BACKSTOP: Duration = Duration::from_secs(60);

/// Parse and validate; also returns the span of `daemon.state_dir` for `load`'s later check.
pub(super) fn parse(
    text: &str,
    path: &Path,
) -> Result<(Config, Option<Range<usize>>), ConfigError> {
    let src = Src { file: path, text };
    let de = toml::Deserializer::parse(text).map_err(|e| src.syntax(&e))?;
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| src.serde_error(e))?;
    let base = path.parent().unwrap_or(Path::new(""));

    let (daemon, state_dir_span) = match raw.daemon {
        Some(d) => daemon(&src, base, d.into_inner())?,
        None => (DaemonConfig::default(), None),
    };
    let mut issuers = BTreeMap::new();
    let mut budgets = BTreeMap::new();
    for (name, table) in raw.issuer {
        let (issuer, budget) = issuer(&src, base, &name, table)?;
        issuers.insert(name.clone(), issuer);
        budgets.insert(name, budget);
    }
    // Shared with the engine's tasks: one copy of each credential's config
    // for the daemon's lifetime, not one per holder.
    let mut groups = super::reload_group::Resolver::new(&src, &daemon, raw.reload_group)?;
    let mut parsed =
        super::certificate::certificates(&src, base, &issuers, &mut groups, raw.certificate)?;
    let policy = match raw.policy {
        Some(t) => Some(super::policy::policy(&src, t)?),
        None => None,
    };
    let max_lifetime = policy.as_ref().and_then(|p| p.max_lifetime);
    for c in &mut parsed {
        c.policy_max_lifetime = max_lifetime;
    }
    let mut certificates: Vec<std::sync::Arc<super::CertificateConfig>> =
        Vec::with_capacity(parsed.len());
    // Not `into_iter().map(Arc::new).collect()`: that collects in place,
    // keeping the parsed Vec's buffer (600 bytes an entry, 6 MB at 10,000)
    // for 8-byte pointers.
    certificates.extend(parsed.into_iter().map(std::sync::Arc::new));
    let alerts = super::alert::alerts(&src, base, raw.alert)?;
    let api_keys = super::apikey::api_keys(
        &src,
        base,
        &issuers,
        &certificates,
        &mut groups,
        raw.api_key,
    )?;
    let watches = super::watch::watches(&src, base, &certificates, &api_keys, raw.watch)?;
    let config = Config {
        path: path.to_path_buf(),
        daemon,
        issuers,
        budgets,
        certificates,
        alerts,
        api_keys,
        policy,
        watches,
    };
    Ok((config, state_dir_span))
}

/// Run a value parser and locate its error at `key`/`span`.
pub(super) fn value<T>(
    src: &Src<'_>,
    key: &str,
    raw: &Spanned<String>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    parse(raw.get_ref()).map_err(|msg| src.err(key, Some(raw.span()), msg))
}

/// [`value`] of a key that may be absent.
pub(super) fn optional<T>(
    src: &Src<'_>,
    key: &str,
    raw: Option<&Spanned<String>>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    raw.map(|r| value(src, key, r, parse)).transpose()
}

/// A path as written, relative ones resolved against the config file's directory.
pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
    // Collecting components drops "a/./b" noise so equal paths compare equal.
    base.join(p).components().collect()
}

/// `[daemon]`: every key optional.
fn daemon(
    src: &Src<'_>,
    base: &Path,
    raw: RawDaemon,
) -> Result<(DaemonConfig, Option<Range<usize>>), ConfigError> {
    let mut d = DaemonConfig::default();
    let mut state_dir_span = None;
    if let Some(s) = &raw.state_dir {
        if s.get_ref().is_empty() {
            return Err(src.err("daemon.state_dir", Some(s.span()), "must not be empty"));
        }
        d.state_dir = resolve(base, s.get_ref());
        state_dir_span = Some(s.span());
    }
    if let Some(s) = &raw.listen {
        d.listen = value(src, "daemon.listen", s, listen)?;
    }
    if let Some(s) = &raw.log_format {
        d.log_format = value(src, "daemon.log_format", s, values::log_format)?;
    }
    if let Some(n) = &raw.max_concurrent_rotations {
        d.max_concurrent_rotations = max_concurrent_rotations(src, n)?;
    }
    if let Some(s) = &raw.backstop {
        d.backstop = backstop(src, s)?;
    }
    if let Some(s) = &raw.admin_token_file {
        d.admin_token_file = Some(named_file(
            src,
            base,
            "daemon.admin_token_file",
            s,
            "must not be empty; name a file holding the token, or leave the key out",
        )?);
    }
    if let Some(s) = &raw.audit_log {
        d.audit_log = Some(named_file(
            src,
            base,
            "daemon.audit_log",
            s,
            "must not be empty; name the audit log file, or leave the key out",
        )?);
    }
    if let Some(v) = &raw.audit_max_size {
        d.audit_max_size = values::size(v.get_ref())
            .map_err(|m| src.err("daemon.audit_max_size", Some(v.span()), m))?;
    }
    if let Some(list) = &raw.compat_metrics {
        d.compat_metrics = compat_metrics(src, list.get_ref())?;
    }
    super::reload_group::daemon_timing(
        src,
        &mut d,
        raw.reload_window.as_ref(),
        raw.reload_max_wait.as_ref(),
    )?;
    socket_path_fits(src, &d, raw.state_dir.as_ref())?;
    Ok((d, state_dir_span))
}

/// `daemon.listen`: IP:PORT, or "" for no endpoint.
fn listen(v: &str) -> Result<Option<SocketAddr>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<SocketAddr>().map(Some).map_err(|_| {
        format!("invalid address \"{v}\"; write IP:PORT like \"127.0.0.1:9464\" or \"[::1]:9464\", or \"\" to turn the endpoint off")
    })
}

/// `daemon.max_concurrent_rotations`: at least 1.
fn max_concurrent_rotations(src: &Src<'_>, n: &Spanned<i64>) -> Result<usize, ConfigError> {
    usize::try_from(*n.get_ref())
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            src.err(
                "daemon.max_concurrent_rotations",
                Some(n.span()),
                format!("must be at least 1, found {}", n.get_ref()),
            )
        })
}

/// `daemon.backstop`: at least [`MIN_BACKSTOP`].
fn backstop(src: &Src<'_>, s: &Spanned<String>) -> Result<Duration, ConfigError> {
    let d = value(src, "daemon.backstop", s, values::duration)?;
    if d < MIN_BACKSTOP {
        return Err(src.err(
            "daemon.backstop",
            Some(s.span()),
            format!("must be at least 60s, found \"{}\"", s.get_ref()),
        ));
    }
    Ok(d)
}

/// A file key that, when written, must name a file (`empty` says so).
fn named_file(
    src: &Src<'_>,
    base: &Path,
    key: &str,
    s: &Spanned<String>,
    empty: &str,
) -> Result<PathBuf, ConfigError> {
    if s.get_ref().is_empty() {
        return Err(src.err(key, Some(s.span()), empty));
    }
    Ok(resolve(base, s.get_ref()))
}

/// `daemon.compat_metrics`: known sets, each once.
fn compat_metrics(
    src: &Src<'_>,
    list: &[Spanned<String>],
) -> Result<Vec<super::CompatMetrics>, ConfigError> {
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let key = format!("daemon.compat_metrics[{i}]");
        let c = value(src, &key, s, |v| {
            super::CompatMetrics::ALL
                .into_iter()
                .find(|c| c.as_str() == v)
                .ok_or_else(|| format!("unknown metrics set \"{v}\"; allowed: x509-exporter"))
        })?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

/// The admin socket lives in the state dir, and a Unix socket path is at
/// most 107 bytes (sun_path).
fn socket_path_fits(
    src: &Src<'_>,
    d: &DaemonConfig,
    state_dir: Option<&Spanned<String>>,
) -> Result<(), ConfigError> {
    let socket = d.admin_socket();
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(src.err(
            "daemon.state_dir",
            state_dir.map(|s| s.span()),
            format!(
                "the admin socket {} would be {len} bytes long, and a Unix socket path may have at most {MAX_SOCKET_PATH}; use a shorter state_dir",
                socket.display()
            ),
        ));
    }
    Ok(())
}

/// `[issuer.NAME]`, dispatched on its `type`, with its issuance budgets.
fn issuer(
    src: &Src<'_>,
    base: &Path,
    name: &str,
    table: Spanned<RawTagged>,
) -> Result<(IssuerConfig, IssuanceBudgets), ConfigError> {
    let mut t = TableReader::new(src, format!("issuer.{name}"), table);
    if name.is_empty() {
        return Err(src.err(
            "issuer",
            Some(t.span.clone()),
            "an issuer name must not be empty",
        ));
    }
    let tag = t.tag(&["local-ca", "acme", "vault", "http", "exec"])?;
    let mut budgets = IssuanceBudgets::for_type(tag.get_ref());
    for key in ["max_issuances", "max_issuances_total"] {
        let Some(s) = t.string(key)? else { continue };
        let limit = value(src, &t.key_path(key), &s, super::budget::parse)?;
        if key == "max_issuances" {
            budgets.per_credential = limit;
        } else {
            budgets.total = limit;
        }
    }
    let issuer = issuer_of_type(src, base, &mut t, tag)?;
    t.finish()?;
    Ok((issuer, budgets))
}

/// The type-specific keys of an `[issuer.NAME]` table (`finish` is left to
/// the caller).
fn issuer_of_type(
    src: &Src<'_>,
    base: &Path,
    t: &mut TableReader<'_, '_>,
    tag: Spanned<String>,
) -> Result<IssuerConfig, ConfigError> {
    if tag.get_ref() == "http" || tag.get_ref() == "exec" {
        return super::apikey::key_issuer(src, base, t, tag.get_ref());
    }
    if tag.get_ref() == "acme" {
        return Ok(IssuerConfig::Acme(super::acme::issuer(t, base)?));
    }
    if tag.get_ref() == "vault" {
        return Ok(IssuerConfig::Vault(super::vault::vault(src, base, t)?));
    }
    let mut ca = LocalCaConfig::default();
    if let Some(s) = t.string("key_type")? {
        ca.key_type = value(src, &t.key_path("key_type"), &s, values::key_type)?;
    }
    if let Some(s) = t.string("common_name")? {
        if s.get_ref().trim().is_empty() {
            return Err(t.err("common_name", Some(s.span()), "must not be empty"));
        }
        ca.common_name = s.into_inner();
    }
    if let Some(s) = t.string("ca_lifetime")? {
        ca.ca_lifetime = value(src, &t.key_path("ca_lifetime"), &s, values::duration)?;
        if ca.ca_lifetime.is_zero() {
            return Err(t.err("ca_lifetime", Some(s.span()), "must be longer than 0s"));
        }
    }
    if let Some(s) = t.string("ca_renew_before")? {
        let share = value(src, &t.key_path("ca_renew_before"), &s, values::share)?;
        let life = humantime::format_duration(ca.ca_lifetime);
        let bad = match share {
            // At most 90%: each CA lives a while before the next one is made.
            Share::Fraction(f) if !(f > 0.0 && f <= 0.9) => Some(format!(
                "must be more than 0% and at most 90% of ca_lifetime, found \"{}\"",
                s.get_ref()
            )),
            Share::Duration(d) if d.is_zero() || d > ca.ca_lifetime.mul_f64(0.9) => Some(format!(
                "must be more than 0s and at most 90% of ca_lifetime ({life}), found \"{}\"",
                s.get_ref()
            )),
            _ => None,
        };
        if let Some(msg) = bad {
            return Err(t.err("ca_renew_before", Some(s.span()), msg));
        }
        ca.ca_renew_before = share;
    }
    Ok(IssuerConfig::LocalCa(ca))
}
