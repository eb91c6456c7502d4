//! One `[[certificate]]` entry on its own, read in named steps: subject and
//! key type, timing, files and who may read them, the handoff, and the
//! owning team. The checks across entries are in the parent module.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::super::convert::{optional, value, MIN_LIFETIME};
use super::super::error::{ConfigError, Src};
use super::super::handoff::{self, OnFailure};
use super::super::raw::RawCertificate;
use super::super::reload_group::{ReloadGroup, Resolver};
use super::super::{
    values, CertificateConfig, KeyType, OnRemove, ReloadConfig, Share, SwapMode, VerifyConfig,
};
use super::{labels, not_blank, Checked};

/// One entry on its own. Each step reports its own keys, in this order.
pub(super) fn certificate(
    src: &Src<'_>,
    base: &Path,
    at: &str,
    span: Range<usize>,
    groups: &mut Resolver,
    mut rc: RawCertificate,
) -> Result<Checked, ConfigError> {
    let k = |key: &str| format!("{at}.{key}");
    let (common_name, dns_names, ip_addresses) = subject(src, at, span.clone(), &rc)?;
    let key_type = optional(src, &k("key_type"), rc.key_type.as_ref(), values::key_type)?
        .unwrap_or(KeyType::EcdsaP256);
    let (lifetime, renew_before, jitter) = timing(src, at, &rc)?;
    let swap =
        optional(src, &k("swap"), rc.swap.as_ref(), values::swap)?.unwrap_or(SwapMode::Rename);
    let (files, files_spans) =
        super::super::files::files(src, base, at, rc.name.get_ref(), span, rc.files.take())?;
    let access = access(src, at, &rc)?;
    let handoff = handoff_keys(src, base, at, groups, &mut rc, &common_name)?;
    let owners = owners(src, at, &rc)?;
    Ok(Checked {
        swap_span: rc.swap.as_ref().map(Spanned::span),
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
            key_mode: access.key_mode,
            cert_mode: access.cert_mode,
            owner: rc.owner.map(Spanned::into_inner),
            group: rc.group.map(Spanned::into_inner),
            uid: access.uid,
            gid: access.gid,
            reload: handoff.reload,
            reload_group: handoff.reload_group,
            verify: handoff.verify,
            on_failure: handoff.on_failure,
            on_remove: handoff.on_remove,
            team: owners.team,
            labels: owners.labels,
            policy_waiver: owners.policy_waiver,
            // Set from [policy] once it is parsed (convert.rs).
            policy_max_lifetime: None,
        },
        files_spans,
    })
}

/// Who may read the published files: their modes and owner.
struct Access {
    key_mode: u32,
    cert_mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
}

/// `key_mode` (default 0600), `cert_mode` (default 0644), and `owner` and
/// `group` looked up as ids.
fn access(src: &Src<'_>, at: &str, rc: &RawCertificate) -> Result<Access, ConfigError> {
    let k = |key: &str| format!("{at}.{key}");
    Ok(Access {
        key_mode: mode(src, &k("key_mode"), rc.key_mode.as_ref(), 0o600)?,
        cert_mode: mode(src, &k("cert_mode"), rc.cert_mode.as_ref(), 0o644)?,
        uid: optional(src, &k("owner"), rc.owner.as_ref(), values::uid)?,
        gid: optional(src, &k("group"), rc.group.as_ref(), values::gid)?,
    })
}

/// How a new generation is handed over and what happens when that fails or
/// the entry goes away.
struct Handoff {
    reload: ReloadConfig,
    reload_group: Option<Arc<ReloadGroup>>,
    verify: VerifyConfig,
    on_failure: OnFailure,
    on_remove: OnRemove,
}

/// `reload` and the group it shares, `verify` (a TLS probe checks
/// `common_name` by default), `on_failure` and `on_remove`. Takes the
/// `reload` and `verify` tables out of `rc`.
fn handoff_keys(
    src: &Src<'_>,
    base: &Path,
    at: &str,
    groups: &mut Resolver,
    rc: &mut RawCertificate,
    common_name: &str,
) -> Result<Handoff, ConfigError> {
    let k = |key: &str| format!("{at}.{key}");
    let reload = match rc.reload.take() {
        Some(t) => handoff::reload(src, base, k("reload"), t)?,
        None => ReloadConfig::None,
    };
    let reload_group =
        groups.resolve(src, &k("reload_group"), rc.reload_group.as_ref(), &reload)?;
    let verify = match rc.verify.take() {
        Some(t) => handoff::verify(src, base, k("verify"), t, common_name)?,
        None => VerifyConfig::default(),
    };
    let on_failure = optional(
        src,
        &k("on_failure"),
        rc.on_failure.as_ref(),
        handoff::on_failure,
    )?
    .unwrap_or(OnFailure::Rollback);
    let on_remove = optional(
        src,
        &k("on_remove"),
        rc.on_remove.as_ref(),
        super::super::on_remove::on_remove,
    )?
    .unwrap_or(OnRemove::Keep);
    Ok(Handoff {
        reload,
        reload_group,
        verify,
        on_failure,
        on_remove,
    })
}

/// Who owns the certificate, for alert routing and policy.
struct Owners {
    team: Option<String>,
    labels: BTreeMap<String, String>,
    policy_waiver: Option<String>,
}

/// `team`, `labels` and `policy_waiver`: free text that must say something
/// when written.
fn owners(src: &Src<'_>, at: &str, rc: &RawCertificate) -> Result<Owners, ConfigError> {
    let k = |key: &str| format!("{at}.{key}");
    Ok(Owners {
        team: not_blank(
            src,
            k("team"),
            rc.team.as_ref(),
            "must not be empty; name the owning team or contact, or leave the key out",
        )?,
        labels: labels(src, k("labels"), rc.labels.as_ref())?,
        policy_waiver: not_blank(
            src,
            k("policy_waiver"),
            rc.policy_waiver.as_ref(),
            "must give the reason for the waiver",
        )?,
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
