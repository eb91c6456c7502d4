//! The plan as a starter config (TOML with comments) and the findings as
//! JSON for scripts. Neither ever holds key material: keys appear as paths.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::plan::Plan;
use super::Discovery;
use crate::certview::Seen;
use crate::status::WatchedCert;

/// Paths "not read" listed in the config's comments; `--json` has them all.
const MAX_SKIPPED_SHOWN: usize = 10;

/// A TOML string literal.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn path(p: &std::path::Path) -> String {
    q(&p.display().to_string())
}

/// "expires 2027-03-06T00:00:00Z (in 89days)" or "... (expired 3days ago)".
fn expiry(s: &Seen, now: SystemTime) -> String {
    let at = crate::timestamp::rfc3339(s.not_after);
    match s.not_after.duration_since(now) {
        Ok(left) => format!("expires {at} (in {})", approx(left)),
        Err(e) => format!("EXPIRED at {at} ({} ago)", approx(e.duration())),
    }
}

/// "89d 23h", "5h 10m", "42s": two units at most.
fn approx(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// A duration in one unit rekey's config reads: "90d", "25h", "2m", "90s".
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s > 0 && s % 86400 == 0 => format!("{}d", s / 86400),
        _ if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        _ if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

fn who(c: &WatchedCert) -> String {
    c.subject_cn
        .as_deref()
        .map_or_else(|| c.subject.clone(), |cn| format!("CN={cn}"))
}

fn issuer(c: &WatchedCert) -> String {
    c.issuer_cn.clone().unwrap_or_else(|| c.issuer.clone())
}

/// The starter config.
pub fn toml(d: &Discovery, now: SystemTime) -> String {
    let p = &d.plan;
    let mut out = String::new();
    let args: Vec<String> = d.paths.iter().map(|x| x.display().to_string()).collect();
    let _ = writeln!(
        out,
        "# Starter config from `rekey discover {}` at {}.",
        args.join(" "),
        crate::timestamp::rfc3339(now)
    );
    let _ = writeln!(
        out,
        "# {} file(s) with certificates or keys: {} certificate(s) rekey could manage, {} to watch.",
        d.scan.found.len(),
        p.certificates.len(),
        p.watches.len()
    );
    out.push_str("# Review every entry before use: point the issuer at the CA that should issue\n# these certificates, and set reload and verify for the application (docs/rotation.md,\n# \"Handoff\"). Watched certificates are monitored and never written.\n");
    if d.scan.truncated {
        let _ = writeln!(
            out,
            "# The walk stopped after {} files: give narrower paths.",
            super::scan::MAX_FILES
        );
    }
    if !p.certificates.is_empty() {
        let mut issuers: Vec<String> = p
            .certificates
            .iter()
            .map(|c| issuer(&c.leaf.cert))
            .collect();
        issuers.sort();
        issuers.dedup();
        let _ = writeln!(
            out,
            "\n# These certificates were issued by: {}.",
            issuers.join(", ")
        );
        out.push_str("# rekey cannot tell which issuer to use: replace this local CA with your acme\n# or vault issuer (docs/configuration.md).\n[issuer.ca]\ntype = \"local-ca\"\n");
    }
    for c in &p.certificates {
        let _ = writeln!(
            out,
            "\n# {}: {}, issued by {}",
            who(&c.leaf.cert),
            expiry(&c.leaf, now),
            issuer(&c.leaf.cert)
        );
        out.push_str("[[certificate]]\n");
        let _ = writeln!(out, "name = {}", q(&c.name));
        out.push_str("issuer = \"ca\"\n");
        if let Some(cn) = &c.leaf.cert.subject_cn {
            let _ = writeln!(out, "common_name = {}", q(cn));
        }
        if !c.leaf.dns_names.is_empty() {
            let names: Vec<String> = c.leaf.dns_names.iter().map(|n| q(n)).collect();
            let _ = writeln!(out, "dns_names = [{}]", names.join(", "));
        }
        if !c.leaf.ip_addresses.is_empty() {
            let ips: Vec<String> = c
                .leaf
                .ip_addresses
                .iter()
                .map(|ip| q(&ip.to_string()))
                .collect();
            let _ = writeln!(out, "ip_addresses = [{}]", ips.join(", "));
        }
        let _ = writeln!(out, "key_type = {}", q(c.key_type.as_str()));
        let _ = writeln!(out, "lifetime = {}", q(&duration(c.lifetime)));
        let _ = writeln!(out, "swap = {}", q(c.swap.as_str()));
        let files: Vec<String> = c
            .files
            .iter()
            .map(|(kind, p)| format!("{} = {}", kind.as_str(), path(p)))
            .collect();
        let _ = writeln!(out, "files = {{ {} }}", files.join(", "));
        let _ = writeln!(out, "key_mode = \"{:04o}\"", c.key_mode);
        let _ = writeln!(out, "cert_mode = \"{:04o}\"", c.cert_mode);
    }
    for w in &p.watches {
        let _ = writeln!(
            out,
            "\n# {} certificate(s); the first to expire: {}, {}, issued by {}",
            w.count,
            who(&w.soonest.cert),
            expiry(&w.soonest, now),
            issuer(&w.soonest.cert)
        );
        if let Some(why) = &w.why {
            let _ = writeln!(out, "# Not managed: {why}");
        }
        out.push_str("[[watch]]\n");
        let _ = writeln!(out, "name = {}", q(&w.name));
        let _ = writeln!(out, "file = {}", path(&w.path));
    }
    if !p.lone_keys.is_empty() {
        out.push_str("\n# Keys with no certificate rekey could manage:\n");
        for k in &p.lone_keys {
            let _ = writeln!(out, "#   {}: {}", k.path.display(), k.why);
        }
    }
    if !d.scan.skipped.is_empty() {
        out.push_str("\n# Not read:\n");
        // /etc/ssl/certs alone has hundreds of hash links into /usr/share.
        for (p, why) in d.scan.skipped.iter().take(MAX_SKIPPED_SHOWN) {
            let _ = writeln!(out, "#   {}: {why}", p.display());
        }
        if let Some(more) = d
            .scan
            .skipped
            .len()
            .checked_sub(MAX_SKIPPED_SHOWN)
            .filter(|n| *n > 0)
        {
            let _ = writeln!(
                out,
                "#   ... and {more} more (`rekey discover --json` lists them all)"
            );
        }
    }
    out
}

#[derive(Serialize)]
struct CertJson<'a> {
    #[serde(flatten)]
    cert: &'a WatchedCert,
    key_type: &'a str,
    dns_names: &'a [String],
    ip_addresses: Vec<String>,
}

#[derive(Serialize)]
struct FindingJson<'a> {
    path: String,
    mode: String,
    certificates: Vec<CertJson<'a>>,
    /// The algorithm of the private key in it, if any (never the key).
    key: Option<&'a str>,
    encrypted_key: bool,
    /// `certificate NAME`, `watch NAME`, or null.
    proposed: Option<String>,
}

/// The findings for scripts.
pub fn json(d: &Discovery) -> serde_json::Value {
    let p: &Plan = &d.plan;
    let proposed = |path: &std::path::Path| {
        p.certificates
            .iter()
            .find(|c| c.files.iter().any(|(_, f)| f == path))
            .map(|c| format!("certificate {}", c.name))
            .or_else(|| {
                p.watches
                    .iter()
                    .find(|w| w.path == path)
                    .map(|w| format!("watch {}", w.name))
            })
    };
    let findings: Vec<FindingJson<'_>> = d
        .scan
        .found
        .iter()
        .map(|f| FindingJson {
            path: f.path.display().to_string(),
            mode: format!("{:04o}", f.mode & 0o7777),
            certificates: f
                .certs
                .iter()
                .map(|s| CertJson {
                    cert: &s.cert,
                    key_type: &s.key_type,
                    dns_names: &s.dns_names,
                    ip_addresses: s.ip_addresses.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            key: f.key.as_ref().map(|k| k.algorithm.as_str()),
            encrypted_key: f.encrypted_key,
            proposed: proposed(&f.path),
        })
        .collect();
    serde_json::json!({
        "paths": d.paths.iter().map(|x| x.display().to_string()).collect::<Vec<_>>(),
        "findings": findings,
        "certificates": p.certificates.iter().map(|c| serde_json::json!({
            "name": c.name,
            "key_type": c.key_type.as_str(),
            "lifetime_seconds": c.lifetime.as_secs(),
            "swap": c.swap.as_str(),
            "files": c.files.iter().map(|(k, f)| (k.as_str().to_string(), serde_json::json!(f.display().to_string()))).collect::<serde_json::Map<_, _>>(),
            "not_after": c.leaf.cert.not_after,
        })).collect::<Vec<_>>(),
        "watches": p.watches.iter().map(|w| serde_json::json!({
            "name": w.name,
            "file": w.path.display().to_string(),
            "certificates": w.count,
            "not_after": w.soonest.cert.not_after,
        })).collect::<Vec<_>>(),
        "lone_keys": p.lone_keys.iter().map(|k| serde_json::json!({
            "path": k.path.display().to_string(), "why": k.why,
        })).collect::<Vec<_>>(),
        "skipped": d.scan.skipped.iter().map(|(p, why)| serde_json::json!({
            "path": p.display().to_string(), "reason": why,
        })).collect::<Vec<_>>(),
        "truncated": d.scan.truncated,
    })
}
