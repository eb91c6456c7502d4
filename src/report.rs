//! Human-readable reports for `rekey check` and `rekey inspect`. They read
//! files but change nothing.

use std::fmt::Write;
use std::path::Path;
use std::time::SystemTime;

use crate::cert::{self, CertInfo};
use crate::config::{CertificateConfig, Config};
use crate::engine::disk::{self, DiskState};
use crate::engine::journal::Journal;
use crate::issuer;
use crate::schedule;
use crate::store::Store;

/// `rekey check`: per credential, what is on disk and when it renews.
pub fn check(config: &Config, now: SystemTime) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: valid; {} certificate(s), {} api key(s), {} issuer(s), {} watch(es), state dir {}",
        config.path.display(),
        config.certificates.len(),
        config.api_keys.len(),
        config.issuers.len(),
        config.watches.len(),
        config.daemon.state_dir.display()
    );
    let store = Store::open_readonly(&config.daemon.state_dir);
    for c in &config.certificates {
        let state = judge(config, &store, c, now);
        let renew = match &state {
            DiskState::Valid(info) => {
                let draw = store
                    .credential(&c.name)
                    .load_journal::<Journal>()
                    .ok()
                    .flatten()
                    .map(|j| j.jitter_draw);
                let at = |d| {
                    schedule::renewal_point(
                        info.not_before,
                        info.not_after,
                        c.renew_before,
                        c.jitter,
                        d,
                    )
                };
                match draw {
                    Some(d) => format!("renews at {}", cert::rfc3339(at(d))),
                    None => format!(
                        "renews between {} and {}",
                        cert::rfc3339(at(1.0)),
                        cert::rfc3339(at(0.0))
                    ),
                }
            }
            _ => "will be issued at start".to_string(),
        };
        let _ = writeln!(
            out,
            "  {:<16} issuer={:<10} {} ({}, {})",
            c.name,
            c.issuer,
            state.describe(),
            renew,
            c.key_type.as_str()
        );
    }
    for k in &config.api_keys {
        let _ = writeln!(out, "{}", crate::engine::apikey::describe(k, &store, now));
    }
    for w in &config.watches {
        let _ = writeln!(out, "{}", crate::monitor::describe(w, now));
    }
    groups(config, &mut out);
    out
}

/// The handoff groups with more than one member: which credentials share a
/// reload, and how long a batch waits for them.
fn groups(config: &Config, out: &mut String) {
    let mut by_key: Vec<(&crate::config::ReloadGroup, Vec<&str>)> = Vec::new();
    let members = config
        .certificates
        .iter()
        .map(|c| (c.name.as_str(), c.reload_group.as_deref()))
        .chain(
            config
                .api_keys
                .iter()
                .map(|k| (k.name.as_str(), k.reload_group.as_deref())),
        );
    for (name, group) in members {
        let Some(g) = group else { continue };
        match by_key.iter_mut().find(|(x, _)| x.key == g.key) {
            Some((_, names)) => names.push(name),
            None => by_key.push((g, vec![name])),
        }
    }
    for (g, names) in by_key.iter().filter(|(_, n)| n.len() > 1) {
        let _ = writeln!(
            out,
            "  handoff group ({}): {}; one reload for the handoffs that fall within {} of each other (at most {} wait)",
            g.label,
            names.join(", "),
            humantime::format_duration(g.window),
            humantime::format_duration(g.max_wait)
        );
    }
}

/// What is published for `c`, judged the way `rekey run` judges it at
/// start: a valid pair counts as valid only when the journal committed it,
/// or when it chains to the issuer and passes `[policy]` (see
/// [`disk::vouch`]); otherwise it is [`DiskState::Untrusted`].
pub fn judge(config: &Config, store: &Store, c: &CertificateConfig, now: SystemTime) -> DiskState {
    let (state, material) = disk::assess(c, now);
    let (DiskState::Valid(info), Some(material)) = (state.clone(), material) else {
        return state;
    };
    let cs = store.credential(&c.name);
    let committed = cs
        .load_journal::<Journal>()
        .ok()
        .flatten()
        .and_then(|j| j.committed)
        .and_then(|g| cs.load_cert_pem(g).ok())
        .and_then(|pem| cert::pem_certs(pem.as_bytes(), "staged certificate").ok())
        .and_then(|ders| ders.first().map(|d| cert::fingerprint(d)));
    if committed.as_deref() == Some(info.fingerprint.as_str()) {
        return state;
    }
    let anchors = match config.issuer(&c.issuer) {
        Some(ic) => {
            let ca_dir = config.daemon.state_dir.join("ca").join(&c.issuer);
            issuer::anchors_of(ic, &ca_dir)
        }
        None => Err(format!("no issuer named {}", c.issuer)),
    };
    match anchors.and_then(|a| disk::vouch(c, &material, &info, &a, now)) {
        Ok(()) => state,
        Err(why) => DiskState::Untrusted(info, why),
    }
}

fn describe_cert(out: &mut String, info: &CertInfo, now: SystemTime) {
    let _ = writeln!(out, "  subject:     {}", info.subject);
    let mut sans: Vec<String> = info.dns_names.clone();
    sans.extend(info.ip_addresses.iter().map(|i| i.to_string()));
    let _ = writeln!(out, "  names:       {}", sans.join(", "));
    let _ = writeln!(out, "  issuer:      {}", info.issuer);
    let left = match info.not_after.duration_since(now) {
        Ok(d) => format!(
            "{} left",
            humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
        ),
        Err(_) => "EXPIRED".to_string(),
    };
    let _ = writeln!(
        out,
        "  validity:    {} .. {} ({left})",
        cert::rfc3339(info.not_before),
        cert::rfc3339(info.not_after)
    );
    let _ = writeln!(out, "  serial:      {}", info.serial);
    let _ = writeln!(out, "  fingerprint: {}", info.fingerprint);
    let _ = writeln!(
        out,
        "  key:         {}{}",
        info.key_type,
        if info.is_ca { " (CA)" } else { "" }
    );
}

/// `rekey inspect FILE...`: every certificate and key in the files, and
/// whether each key matches each certificate. Err lists unreadable files.
pub fn inspect(files: &[impl AsRef<Path>], now: SystemTime) -> Result<String, String> {
    let mut out = String::new();
    let mut certs: Vec<(String, CertInfo)> = Vec::new();
    let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        let path = f.as_ref();
        let shown = path.display().to_string();
        // Never blocks on a FIFO, refuses devices, reads at most MAX_READ.
        let bytes = match crate::safefile::read(path) {
            Ok(b) => b,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            // A chain file is empty when the issuer has no intermediates.
            let _ = writeln!(out, "{shown}: empty");
            continue;
        }
        let ders = cert::pem_certs(&bytes, &shown).unwrap_or_default();
        for (i, der) in ders.iter().enumerate() {
            match cert::parse_der(der) {
                Ok(info) => {
                    let _ = writeln!(out, "{shown}: certificate #{}", i + 1);
                    describe_cert(&mut out, &info, now);
                    certs.push((format!("{shown} #{}", i + 1), info));
                }
                Err(e) => errors.push(format!("{shown}: certificate #{}: {e}", i + 1)),
            }
        }
        if let Some(pem) = cert::pem_private_key(&bytes) {
            match cert::load_key(&pem, &shown) {
                Ok(k) => {
                    let _ = writeln!(out, "{shown}: private key ({})", key_kind(&k));
                    keys.push((shown.clone(), k.public_key()));
                }
                Err(e) => errors.push(e.to_string()),
            }
        } else if ders.is_empty() {
            errors.push(format!(
                "{shown}: no certificate or private key PEM block found"
            ));
        }
    }
    for (kname, kpub) in &keys {
        for (cname, info) in certs.iter().filter(|(_, i)| !i.is_ca) {
            let verdict = if &info.public_key == kpub {
                "MATCHES"
            } else {
                "does NOT match"
            };
            let _ = writeln!(out, "key {kname} {verdict} certificate {cname}");
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(format!("{out}{}", errors.join("\n")))
    }
}

fn key_kind(k: &cert::PrivateKey) -> &'static str {
    let alg = k.pair().algorithm();
    if alg == &rcgen::PKCS_ED25519 {
        "ed25519"
    } else if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        "ecdsa-p256"
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        "ecdsa-p384"
    } else {
        "rsa"
    }
}
