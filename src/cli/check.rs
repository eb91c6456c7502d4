//! `rekey check`: the config validated, and per credential what is on disk
//! and when it renews, the handoff groups and the `[policy]` verdict. Reads
//! files but changes nothing.

use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use crate::cert;
use crate::config::{CertificateConfig, Config};
use crate::engine::disk::{self, DiskState};
use crate::engine::journal::Journal;
use crate::issuer;
use crate::schedule;
use crate::store::Store;

/// `rekey check -c FILE`: 0 when the config is valid and every credential
/// complies with `[policy]`, 1 listing the violations, 2 for an invalid config.
pub fn command(config: &Path) -> ExitCode {
    let config = match super::load_to_inspect(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    print!("{}", check(&config, SystemTime::now()));
    let violations = crate::config::evaluate_policy(&config);
    if violations.is_empty() {
        if config.policy.is_some() {
            println!("policy: every credential complies");
        }
        return ExitCode::SUCCESS;
    }
    println!("policy: {} violation(s):", violations.len());
    for v in &violations {
        println!("  {v}");
    }
    ExitCode::from(1)
}

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
                    Some(d) => format!("renews at {}", crate::timestamp::rfc3339(at(d))),
                    None => format!(
                        "renews between {} and {}",
                        crate::timestamp::rfc3339(at(1.0)),
                        crate::timestamp::rfc3339(at(0.0))
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
