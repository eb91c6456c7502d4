//! `[[certificate]]` entries: per-entry checks and the checks across entries.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::convert::{optional, value, MIN_LIFETIME};
use super::error::{line_col, ConfigError, Src};
use super::handoff::{self, OnFailure};
use super::raw::RawCertificate;
use super::{
    values, CertificateConfig, FileKind, IssuerConfig, KeyType, ReloadConfig, Share, SwapMode,
    VerifyConfig,
};

/// Where a file path was configured, to name both sides of a clash.
struct FileUse {
    key: String,
    cert: String,
    /// Byte offset in the config text; turned into a line only for an error
    /// (counting lines for every entry made loading 10,000 entries quadratic).
    at: Option<usize>,
}

/// Convert every entry, then check names, file paths and symlink dirs across them.
pub(super) fn certificates(
    src: &Src<'_>,
    base: &Path,
    issuers: &BTreeMap<String, IssuerConfig>,
    groups: &mut super::reload_group::Resolver,
    raw: Vec<Spanned<RawCertificate>>,
) -> Result<Vec<CertificateConfig>, ConfigError> {
    // Name -> byte offset of its first definition (a line only for an error).
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut paths: HashMap<PathBuf, FileUse> = HashMap::new();
    let mut symlink_dirs: HashMap<PathBuf, FileUse> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, rc) in raw.into_iter().enumerate() {
        let at = format!("certificate[{i}]");
        let span = rc.span();
        let rc = rc.into_inner();
        unique_name(src, &at, &rc.name, &names)?;
        names.insert(rc.name.get_ref().clone(), rc.name.span().start);
        issuer_signs(src, &at, &rc.issuer, issuers)?;
        let c = certificate(src, base, &at, span.clone(), groups, rc)?;
        if let Some(IssuerConfig::Acme(acme)) = issuers.get(&c.issuer) {
            super::acme::check_names(acme, &c)
                .map_err(|m| src.err(format!("{at}.dns_names"), Some(span.clone()), m))?;
        }
        claim_files(src, &at, &c, &mut paths)?;
        if c.config.swap == SwapMode::Symlink {
            claim_symlink_dir(src, &at, &c, &mut symlink_dirs)?;
        }
        out.push(c.config);
    }
    Ok(out)
}

/// The line of a byte offset in the config (0 when unknown).
fn line(src: &Src<'_>, at: Option<usize>) -> usize {
    at.map_or(0, |o| line_col(src.text, o).0)
}

/// Check `name` is valid and not taken (`names`: name → byte offset).
fn unique_name(
    src: &Src<'_>,
    at: &str,
    name: &Spanned<String>,
    names: &HashMap<String, usize>,
) -> Result<(), ConfigError> {
    value(src, &format!("{at}.name"), name, values::cert_name)?;
    if let Some(&first) = names.get(name.get_ref()) {
        let first = line(src, Some(first));
        return Err(src.err(
            format!("{at}.name"),
            Some(name.span()),
            format!("duplicate certificate name \"{}\" (first defined on line {first}); names must be unique", name.get_ref()),
        ));
    }
    Ok(())
}

/// Check `issuer` is defined and issues certificates.
fn issuer_signs(
    src: &Src<'_>,
    at: &str,
    issuer: &Spanned<String>,
    issuers: &BTreeMap<String, IssuerConfig>,
) -> Result<(), ConfigError> {
    match issuers.get(issuer.get_ref()) {
        None => {
            let defined: Vec<&str> = issuers.keys().map(String::as_str).collect();
            let msg = if defined.is_empty() {
                format!("issuer \"{}\" is not defined; no issuers are defined: add an [issuer.{}] table", issuer.get_ref(), issuer.get_ref())
            } else {
                format!(
                    "issuer \"{}\" is not defined; defined issuers: {}",
                    issuer.get_ref(),
                    defined.join(", ")
                )
            };
            Err(src.err(format!("{at}.issuer"), Some(issuer.span()), msg))
        }
        Some(i @ (IssuerConfig::HttpKeys(_) | IssuerConfig::ExecKeys(_))) => {
            let msg = format!("issuer \"{}\" is of type {}, which mints API keys only; use it from an [[api_key]]", issuer.get_ref(), i.type_name());
            Err(src.err(format!("{at}.issuer"), Some(issuer.span()), msg))
        }
        Some(_) => Ok(()),
    }
}

/// Every file must belong to exactly one credential and kind: record
/// `c`'s files in `paths`, refusing one already there.
fn claim_files(
    src: &Src<'_>,
    at: &str,
    c: &Checked,
    paths: &mut HashMap<PathBuf, FileUse>,
) -> Result<(), ConfigError> {
    for (kind, path) in c.files.entries() {
        let key = format!("{at}.files.{}", kind.as_str());
        if let Some(prev) = paths.get(path) {
            return Err(src.err(
                key,
                file_span(&c.files_spans, kind),
                format!(
                    "path {} is also used by {} (certificate \"{}\", line {}); each file needs its own path",
                    path.display(), prev.key, prev.cert, line(src, prev.at)
                ),
            ));
        }
        let at = file_span(&c.files_spans, kind).map(|s| s.start);
        let cert = c.name.clone();
        paths.insert(path.to_path_buf(), FileUse { key, cert, at });
    }
    Ok(())
}

/// With `swap = "symlink"`, `c`'s files share one directory that no other
/// symlink-swapped certificate uses (recorded in `symlink_dirs`).
fn claim_symlink_dir(
    src: &Src<'_>,
    at: &str,
    c: &Checked,
    symlink_dirs: &mut HashMap<PathBuf, FileUse>,
) -> Result<(), ConfigError> {
    let entries = c.config.files.entries();
    let Some((first_kind, first)) = entries.first() else {
        return Ok(());
    };
    let dir = first.parent().unwrap_or(Path::new(""));
    for (kind, path) in &entries[1..] {
        if path.parent().unwrap_or(Path::new("")) != dir {
            return Err(src.err(
                format!("{at}.files.{}", kind.as_str()),
                file_span(&c.files_spans, *kind),
                format!(
                    "with swap = \"symlink\" all files must be in one directory (the ..data swap is per directory), but {} is in {} and {} is in {}; move them together or use swap = \"rename\"",
                    kind.as_str(), path.parent().unwrap_or(Path::new("")).display(), first_kind.as_str(), dir.display()
                ),
            ));
        }
    }
    // Two symlink swaps in one directory would fight over `..data`.
    if let Some(prev) = symlink_dirs.get(dir) {
        return Err(src.err(
            format!("{at}.swap"),
            c.swap_span.clone(),
            format!(
                "certificate \"{}\" already uses swap = \"symlink\" in {} (line {}); give each symlink-swapped certificate its own directory",
                prev.cert, dir.display(), line(src, prev.at)
            ),
        ));
    }
    let swap_at = c.swap_span.as_ref().map(|s| s.start);
    symlink_dirs.insert(
        dir.to_path_buf(),
        FileUse {
            key: format!("{at}.swap"),
            cert: c.name.clone(),
            at: swap_at,
        },
    );
    Ok(())
}

/// A converted certificate plus the spans needed by the cross-certificate checks.
struct Checked {
    config: CertificateConfig,
    files_spans: Vec<(FileKind, Range<usize>)>,
    swap_span: Option<Range<usize>>,
}

impl std::ops::Deref for Checked {
    type Target = CertificateConfig;
    fn deref(&self) -> &CertificateConfig {
        &self.config
    }
}

/// The span of the `files.KIND` value, if it was written.
fn file_span(spans: &[(FileKind, Range<usize>)], kind: FileKind) -> Option<Range<usize>> {
    spans
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, s)| s.clone())
}

/// One entry on its own: names, timing, files, modes, owner, reload, verify.
fn certificate(
    src: &Src<'_>,
    base: &Path,
    at: &str,
    span: Range<usize>,
    groups: &mut super::reload_group::Resolver,
    rc: RawCertificate,
) -> Result<Checked, ConfigError> {
    let k = |key: &str| format!("{at}.{key}");

    let (common_name, dns_names, ip_addresses) = subject(src, at, span.clone(), &rc)?;
    let key_type = match &rc.key_type {
        Some(s) => value(src, &k("key_type"), s, values::key_type)?,
        None => KeyType::EcdsaP256,
    };
    let (lifetime, renew_before, jitter) = timing(src, at, &rc)?;
    let swap = match &rc.swap {
        Some(s) => value(src, &k("swap"), s, values::swap)?,
        None => SwapMode::Rename,
    };
    let (files, files_spans) =
        super::files::files(src, base, at, rc.name.get_ref(), span.clone(), rc.files)?;
    let key_mode = mode(src, &k("key_mode"), rc.key_mode.as_ref(), 0o600)?;
    let cert_mode = mode(src, &k("cert_mode"), rc.cert_mode.as_ref(), 0o644)?;
    let uid = optional(src, &k("owner"), rc.owner.as_ref(), values::uid)?;
    let gid = optional(src, &k("group"), rc.group.as_ref(), values::gid)?;
    let reload = match rc.reload {
        Some(t) => handoff::reload(src, base, k("reload"), t)?,
        None => ReloadConfig::None,
    };
    let reload_group =
        groups.resolve(src, &k("reload_group"), rc.reload_group.as_ref(), &reload)?;
    let verify = match rc.verify {
        Some(t) => handoff::verify(src, base, k("verify"), t, &common_name)?,
        None => VerifyConfig::default(),
    };
    let on_failure = match &rc.on_failure {
        Some(s) => value(src, &k("on_failure"), s, handoff::on_failure)?,
        None => OnFailure::Rollback,
    };
    let on_remove = match &rc.on_remove {
        Some(s) => value(src, &k("on_remove"), s, super::on_remove::on_remove)?,
        None => super::OnRemove::Keep,
    };
    let team = not_blank(
        src,
        k("team"),
        rc.team.as_ref(),
        "must not be empty; name the owning team or contact, or leave the key out",
    )?;
    let labels = labels(src, k("labels"), rc.labels.as_ref())?;
    let policy_waiver = not_blank(
        src,
        k("policy_waiver"),
        rc.policy_waiver.as_ref(),
        "must give the reason for the waiver",
    )?;
    Ok(Checked {
        config: CertificateConfig {
            name: rc.name.into_inner(),
            issuer: rc.issuer.into_inner(),
            common_name,
            dns_names,
            ip_addresses,
            key_type,
            lifetime,
            renew_before,
            jitter,
            swap,
            files,
            key_mode,
            cert_mode,
            owner: rc.owner.map(Spanned::into_inner),
            group: rc.group.map(Spanned::into_inner),
            uid,
            gid,
            reload,
            reload_group,
            verify,
            on_failure,
            on_remove,
            team,
            labels,
            policy_waiver,
            // Set from [policy] once it is parsed (convert.rs).
            policy_max_lifetime: None,
        },
        files_spans,
        swap_span: rc.swap.as_ref().map(Spanned::span),
    })
}

/// The subject: `dns_names`, `ip_addresses`, and `common_name` (the first
/// of them when absent); at least one must be set.
fn subject(
    src: &Src<'_>,
    at: &str,
    span: Range<usize>,
    rc: &RawCertificate,
) -> Result<(String, Vec<String>, Vec<IpAddr>), ConfigError> {
    let k = |key: &str| format!("{at}.{key}");
    let mut dns_names = Vec::with_capacity(rc.dns_names.len());
    for (j, d) in rc.dns_names.iter().enumerate() {
        value(src, &format!("{at}.dns_names[{j}]"), d, values::dns_name)?;
        dns_names.push(d.get_ref().clone());
    }
    let mut ip_addresses = Vec::with_capacity(rc.ip_addresses.len());
    for (j, a) in rc.ip_addresses.iter().enumerate() {
        ip_addresses.push(value(src, &format!("{at}.ip_addresses[{j}]"), a, |s| {
            s.parse::<IpAddr>().map_err(|_| {
                format!("invalid IP address \"{s}\"; write it like \"127.0.0.1\" or \"::1\"")
            })
        })?);
    }
    let common_name = match &rc.common_name {
        Some(cn) if cn.get_ref().trim().is_empty() => {
            return Err(src.err(k("common_name"), Some(cn.span()), "must not be empty"));
        }
        Some(cn) => cn.get_ref().clone(),
        None => match (dns_names.first(), ip_addresses.first()) {
            (Some(d), _) => d.clone(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => {
                return Err(src.err(
                    at,
                    Some(span),
                    "no subject name: set at least one of common_name, dns_names, ip_addresses",
                ));
            }
        },
    };

    Ok((common_name, dns_names, ip_addresses))
}

/// `lifetime`, `renew_before` and `jitter`, each in range, and the earliest
/// renewal point after issuance.
fn timing(
    src: &Src<'_>,
    at: &str,
    rc: &RawCertificate,
) -> Result<(Duration, Share, Share), ConfigError> {
    let k = |key: &str| format!("{at}.{key}");
    let lifetime = match &rc.lifetime {
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
        None => Duration::from_secs(24 * 3600),
    };
    let renew_before = match &rc.renew_before {
        Some(s) => renew_before(src, &k("renew_before"), s, lifetime)?,
        None => Share::Fraction(0.33),
    };
    let jitter = match &rc.jitter {
        Some(s) => jitter(src, &k("jitter"), s, lifetime)?,
        None => Share::Fraction(0.05),
    };
    // The earliest renewal point must still lie after issuance.
    let too_much = match (renew_before, jitter) {
        (Share::Fraction(r), Share::Fraction(j)) => r + j >= 1.0,
        _ => renew_before.of(lifetime) + jitter.of(lifetime) >= lifetime,
    };
    if too_much {
        let (key, sp) = match &rc.jitter {
            Some(j) => (k("jitter"), Some(j.span())),
            None => (
                k("renew_before"),
                rc.renew_before.as_ref().map(Spanned::span),
            ),
        };
        return Err(src.err(
            key,
            sp,
            format!("renew_before ({renew_before}) + jitter ({jitter}) must be less than 100% of lifetime ({})", humantime::format_duration(lifetime)),
        ));
    }
    Ok((lifetime, renew_before, jitter))
}

/// `renew_before` (at `key`): more than nothing, less than the lifetime.
fn renew_before(
    src: &Src<'_>,
    key: &str,
    s: &Spanned<String>,
    lifetime: Duration,
) -> Result<Share, ConfigError> {
    let share = value(src, key, s, values::share)?;
    let bad = |msg: String| src.err(key, Some(s.span()), msg);
    match share {
        Share::Fraction(f) if !(f > 0.0 && f < 1.0) => Err(bad(format!(
            "must be more than 0% and less than 100% of lifetime, found \"{}\"",
            s.get_ref()
        ))),
        Share::Duration(d) if d.is_zero() || d >= lifetime => Err(bad(format!(
            "must be more than 0s and less than lifetime ({}), found \"{}\"",
            humantime::format_duration(lifetime),
            s.get_ref()
        ))),
        _ => Ok(share),
    }
}

/// `jitter` (at `key`): none at all, up to less than the lifetime.
fn jitter(
    src: &Src<'_>,
    key: &str,
    s: &Spanned<String>,
    lifetime: Duration,
) -> Result<Share, ConfigError> {
    let share = value(src, key, s, values::share)?;
    let bad = |msg: String| src.err(key, Some(s.span()), msg);
    match share {
        Share::Fraction(f) if !(0.0..1.0).contains(&f) => Err(bad(format!(
            "must be at least 0% and less than 100% of lifetime, found \"{}\"",
            s.get_ref()
        ))),
        Share::Duration(d) if d >= lifetime => Err(bad(format!(
            "must be less than lifetime ({}), found \"{}\"",
            humantime::format_duration(lifetime),
            s.get_ref()
        ))),
        _ => Ok(share),
    }
}

/// A free-text key (`team`, `policy_waiver`) that must not be blank when
/// written; `empty` says what to write instead.
pub(super) fn not_blank(
    src: &Src<'_>,
    key: String,
    raw: Option<&Spanned<String>>,
    empty: &str,
) -> Result<Option<String>, ConfigError> {
    match raw {
        Some(s) if s.get_ref().trim().is_empty() => Err(src.err(key, Some(s.span()), empty)),
        Some(s) => Ok(Some(s.get_ref().clone())),
        None => Ok(None),
    }
}

/// `labels`: no empty label name.
pub(super) fn labels(
    src: &Src<'_>,
    key: String,
    raw: Option<&Spanned<BTreeMap<String, Spanned<String>>>>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    if let Some(l) = raw {
        for (name, v) in l.get_ref() {
            if name.is_empty() {
                return Err(src.err(key, Some(l.span()), "a label name must not be empty"));
            }
            out.insert(name.clone(), v.get_ref().clone());
        }
    }
    Ok(out)
}

/// `key_mode`/`cert_mode`, or the default.
fn mode(
    src: &Src<'_>,
    key: &str,
    raw: Option<&Spanned<toml::Value>>,
    default: u32,
) -> Result<u32, ConfigError> {
    match raw {
        Some(v) => values::mode(v.get_ref()).map_err(|msg| src.err(key, Some(v.span()), msg)),
        None => Ok(default),
    }
}
