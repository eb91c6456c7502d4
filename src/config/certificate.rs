//! `[[certificate]]` entries: per-entry checks and the checks across entries.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::convert::{value, MIN_LIFETIME};
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
        let line = |at: Option<usize>| at.map_or(0, |o| line_col(src.text, o).0);

        let name = &rc.name;
        value(src, &format!("{at}.name"), name, values::cert_name)?;
        if let Some(&first) = names.get(name.get_ref()) {
            let first = line(Some(first));
            return Err(src.err(
                format!("{at}.name"),
                Some(name.span()),
                format!("duplicate certificate name \"{}\" (first defined on line {first}); names must be unique", name.get_ref()),
            ));
        }
        names.insert(name.get_ref().clone(), name.span().start);

        if !issuers.contains_key(rc.issuer.get_ref()) {
            let defined: Vec<&str> = issuers.keys().map(String::as_str).collect();
            let msg = if defined.is_empty() {
                format!("issuer \"{}\" is not defined; no issuers are defined: add an [issuer.{}] table", rc.issuer.get_ref(), rc.issuer.get_ref())
            } else {
                format!(
                    "issuer \"{}\" is not defined; defined issuers: {}",
                    rc.issuer.get_ref(),
                    defined.join(", ")
                )
            };
            return Err(src.err(format!("{at}.issuer"), Some(rc.issuer.span()), msg));
        }

        if let Some(i @ (IssuerConfig::HttpKeys(_) | IssuerConfig::ExecKeys(_))) =
            issuers.get(rc.issuer.get_ref())
        {
            let msg = format!("issuer \"{}\" is of type {}, which mints API keys only; use it from an [[api_key]]", rc.issuer.get_ref(), i.type_name());
            return Err(src.err(format!("{at}.issuer"), Some(rc.issuer.span()), msg));
        }
        let c = certificate(src, base, &at, span.clone(), groups, rc)?;
        if let Some(IssuerConfig::Acme(acme)) = issuers.get(&c.issuer) {
            super::acme::check_names(acme, &c)
                .map_err(|m| src.err(format!("{at}.dns_names"), Some(span.clone()), m))?;
        }

        // Every file must belong to exactly one credential and kind.
        for (kind, path) in c.files.entries() {
            let key = format!("{at}.files.{}", kind.as_str());
            if let Some(prev) = paths.get(path) {
                return Err(src.err(
                    key,
                    file_span(&c.files_spans, kind),
                    format!(
                        "path {} is also used by {} (certificate \"{}\", line {}); each file needs its own path",
                        path.display(), prev.key, prev.cert, line(prev.at)
                    ),
                ));
            }
            let at = file_span(&c.files_spans, kind).map(|s| s.start);
            let cert = c.name.clone();
            paths.insert(path.to_path_buf(), FileUse { key, cert, at });
        }

        if c.config.swap == SwapMode::Symlink {
            let entries = c.config.files.entries();
            if let Some((first_kind, first)) = entries.first() {
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
                            prev.cert, dir.display(), line(prev.at)
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
            }
        }
        out.push(c.config);
    }
    Ok(out)
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

    let key_type = match &rc.key_type {
        Some(s) => value(src, &k("key_type"), s, values::key_type)?,
        None => KeyType::EcdsaP256,
    };
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
        Some(s) => {
            let share = value(src, &k("renew_before"), s, values::share)?;
            let bad = |msg: String| src.err(k("renew_before"), Some(s.span()), msg);
            match share {
                Share::Fraction(f) if !(f > 0.0 && f < 1.0) => {
                    return Err(bad(format!(
                        "must be more than 0% and less than 100% of lifetime, found \"{}\"",
                        s.get_ref()
                    )));
                }
                Share::Duration(d) if d.is_zero() || d >= lifetime => {
                    return Err(bad(format!(
                        "must be more than 0s and less than lifetime ({}), found \"{}\"",
                        humantime::format_duration(lifetime),
                        s.get_ref()
                    )));
                }
                _ => share,
            }
        }
        None => Share::Fraction(0.33),
    };
    let jitter = match &rc.jitter {
        Some(s) => {
            let share = value(src, &k("jitter"), s, values::share)?;
            let bad = |msg: String| src.err(k("jitter"), Some(s.span()), msg);
            match share {
                Share::Fraction(f) if !(0.0..1.0).contains(&f) => {
                    return Err(bad(format!(
                        "must be at least 0% and less than 100% of lifetime, found \"{}\"",
                        s.get_ref()
                    )));
                }
                Share::Duration(d) if d >= lifetime => {
                    return Err(bad(format!(
                        "must be less than lifetime ({}), found \"{}\"",
                        humantime::format_duration(lifetime),
                        s.get_ref()
                    )));
                }
                _ => share,
            }
        }
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

    let swap = match &rc.swap {
        Some(s) => value(src, &k("swap"), s, values::swap)?,
        None => SwapMode::Rename,
    };
    let (files, files_spans) =
        super::files::files(src, base, at, rc.name.get_ref(), span.clone(), rc.files)?;
    let key_mode = mode(src, &k("key_mode"), rc.key_mode.as_ref(), 0o600)?;
    let cert_mode = mode(src, &k("cert_mode"), rc.cert_mode.as_ref(), 0o644)?;
    let uid = match &rc.owner {
        Some(s) => Some(value(src, &k("owner"), s, values::uid)?),
        None => None,
    };
    let gid = match &rc.group {
        Some(s) => Some(value(src, &k("group"), s, values::gid)?),
        None => None,
    };
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
    let team = match &rc.team {
        Some(s) if s.get_ref().trim().is_empty() => {
            return Err(src.err(
                k("team"),
                Some(s.span()),
                "must not be empty; name the owning team or contact, or leave the key out",
            ));
        }
        Some(s) => Some(s.get_ref().clone()),
        None => None,
    };
    let mut labels = BTreeMap::new();
    if let Some(l) = &rc.labels {
        for (key, v) in l.get_ref() {
            if key.is_empty() {
                return Err(src.err(
                    k("labels"),
                    Some(l.span()),
                    "a label name must not be empty",
                ));
            }
            labels.insert(key.clone(), v.get_ref().clone());
        }
    }
    let policy_waiver = match &rc.policy_waiver {
        Some(s) if s.get_ref().trim().is_empty() => {
            return Err(src.err(
                k("policy_waiver"),
                Some(s.span()),
                "must give the reason for the waiver",
            ));
        }
        Some(s) => Some(s.get_ref().clone()),
        None => None,
    };
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
