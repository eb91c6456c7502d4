//! `rekey report`: the evidence an access review asks for, per credential:
//! owner team, issuer, age and lifetime of the current generation, the last
//! verified handoff, rotations and failures over the audit log's span, and
//! policy status; and for each watched certificate, what it holds now.
//! Reads the config, the published files, the journal, the audit log and
//! the watched files (and probes watched endpoints); changes nothing.

use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::audit::{self, AuditError, AuditEvent, AuditOutcome, Record};
use crate::config::{evaluate_policy, Config};
use crate::engine::disk::DiskState;
use crate::engine::journal::Journal;
use crate::store::Store;
use crate::timestamp::Timestamp;

/// `rekey report -c FILE [--json]`: 2 for an invalid config, else the
/// report on stdout.
pub fn command(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = match super::load_to_inspect(config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let now = SystemTime::now();
    let mut r = build(&config, now)?;
    if !config.watches.is_empty() {
        r.watches = super::runtime()?.block_on(watches(&config));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", text(&r, now));
    }
    Ok(ExitCode::SUCCESS)
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The config file.
    pub config: String,
    /// The audit log read, if any.
    pub audit_log: Option<String>,
    /// First and last audit record times: the span counted below.
    pub audit_span: Option<(Timestamp, Timestamp)>,
    /// One entry per credential, in config order.
    pub credentials: Vec<CredentialReport>,
    /// One entry per `[[watch]]` (certificates rekey monitors but does not
    /// issue), as read or probed when the report was made.
    pub watches: Vec<WatchReport>,
}

/// One watched certificate's evidence.
#[derive(Debug, Clone, Serialize)]
pub struct WatchReport {
    /// Name.
    pub name: String,
    /// Owning team, if configured.
    pub team: Option<String>,
    /// The file, or `host:port (SNI name)`.
    pub source: String,
    /// `valid`, `expiring`, `expired` or `unreadable`.
    pub state: String,
    /// The certificate that expires first: its subject.
    pub subject: Option<String>,
    /// ...its issuer.
    pub issuer: Option<String>,
    /// ...and its expiry.
    pub not_after: Option<Timestamp>,
    /// Certificates found.
    pub certificates: usize,
    /// `alert_before` in words.
    pub alert_before: String,
    /// Why it could not be read.
    pub error: Option<String>,
}

/// Read every watched file and probe every watched endpoint once, at the
/// same time (each probe within its `timeout`).
pub async fn watches(config: &Config) -> Vec<WatchReport> {
    let checks: Vec<_> = config
        .watches
        .iter()
        .cloned()
        .map(|w| tokio::spawn(async move { (crate::monitor::check_once(&w).await, w) }))
        .collect();
    let mut out = Vec::with_capacity(checks.len());
    for c in checks {
        let Ok((status, w)) = c.await else { continue };
        let mut r = WatchReport {
            name: w.name.clone(),
            team: w.team.clone(),
            source: w.source.describe(),
            state: "unreadable".into(),
            subject: None,
            issuer: None,
            not_after: None,
            certificates: 0,
            alert_before: w.alert_before_text(),
            error: None,
        };
        match status {
            Ok(s) => {
                let soonest = s.watch.as_ref().and_then(|d| {
                    d.certificates
                        .iter()
                        .find(|c| Some(&c.fingerprint) == s.fingerprint.as_ref())
                });
                r.state = s.state.as_str().to_string();
                r.subject = soonest.map(|c| c.subject.clone());
                r.issuer = soonest.map(|c| c.issuer.clone());
                r.not_after = s.not_after;
                r.certificates = s.watch.as_ref().map_or(0, |d| d.certificates.len());
                r.error = s.last_error;
            }
            Err(e) => r.error = Some(e.to_string()),
        }
        out.push(r);
    }
    out
}

/// One credential's evidence.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialReport {
    /// Name.
    pub name: String,
    /// Owning team, if configured.
    pub team: Option<String>,
    /// Issuer name.
    pub issuer: String,
    /// Committed generation per the journal.
    pub generation: Option<u64>,
    /// What is published now, in words.
    pub state: String,
    /// Age of the published certificate (seconds since not_before).
    pub age_seconds: Option<u64>,
    /// Configured lifetime, seconds.
    pub lifetime_seconds: u64,
    /// When a probe last saw the app use a new generation, per the audit log.
    pub last_verified_handoff: Option<Timestamp>,
    /// Generations issued, per the audit log.
    pub rotations: u64,
    /// Issue or publish failures and failed handoffs, per the audit log.
    pub failures: u64,
    /// "compliant", "no policy", or the violated rules.
    pub policy: Vec<String>,
}

/// Build the report for `config` at `now`.
pub fn build(config: &Config, now: SystemTime) -> Result<Report, AuditError> {
    let records: Vec<Record> = match &config.daemon.audit_log {
        Some(p) => audit::read_all(p)?.into_iter().map(|(_, _, r)| r).collect(),
        None => Vec::new(),
    };
    let violations = evaluate_policy(config);
    let store = Store::open_readonly(&config.daemon.state_dir);
    let mut credentials = Vec::new();
    for c in &config.certificates {
        let state = super::check::judge(config, &store, c, now);
        let age_seconds = match &state {
            DiskState::Valid(info)
            | DiskState::Unusable(info, _)
            | DiskState::Untrusted(info, _) => now
                .duration_since(info.not_before)
                .ok()
                .map(|d| d.as_secs()),
            _ => None,
        };
        let generation = store
            .credential(&c.name)
            .load_journal::<Journal>()
            .ok()
            .flatten()
            .and_then(|j| j.committed);
        let mine = records.iter().filter(|r| r.credential == c.name);
        let (mut rotations, mut failures, mut last_verified) = (0, 0, None);
        for r in mine {
            match (r.event, &r.outcome) {
                (AuditEvent::Issued, AuditOutcome::Success) => rotations += 1,
                (AuditEvent::Issued | AuditEvent::Published, AuditOutcome::Failure) => {
                    failures += 1
                }
                (AuditEvent::RolledBack, _) => failures += 1,
                (AuditEvent::Verified, AuditOutcome::Verified) => last_verified = Some(r.time),
                _ => {}
            }
        }
        let policy = if config.policy.is_none() {
            vec!["no policy".to_string()]
        } else {
            let mine: Vec<String> = violations
                .iter()
                .filter(|v| v.credential == c.name)
                .map(|v| format!("violates {}: {}", v.rule, v.fix))
                .collect();
            if mine.is_empty() {
                vec!["compliant".to_string()]
            } else {
                mine
            }
        };
        credentials.push(CredentialReport {
            name: c.name.clone(),
            team: c.team.clone(),
            issuer: c.issuer.clone(),
            generation,
            state: state.describe(),
            age_seconds,
            lifetime_seconds: c.lifetime.as_secs(),
            last_verified_handoff: last_verified,
            rotations,
            failures,
            policy,
        });
    }
    let audit_span = match (records.first(), records.last()) {
        (Some(a), Some(b)) => Some((a.time, b.time)),
        _ => None,
    };
    Ok(Report {
        config: config.path.display().to_string(),
        audit_log: config
            .daemon
            .audit_log
            .as_ref()
            .map(|p| p.display().to_string()),
        audit_span,
        credentials,
        watches: Vec::new(),
    })
}

/// The report as text for people.
pub fn text(r: &Report, now: SystemTime) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "evidence report for {} at {}",
        r.config,
        crate::timestamp::rfc3339(now)
    );
    match (&r.audit_log, &r.audit_span) {
        (None, _) => {
            let _ = writeln!(
                out,
                "audit log: not configured (daemon.audit_log); rotation counts unavailable"
            );
        }
        (Some(p), None) => {
            let _ = writeln!(out, "audit log: {p} (empty)");
        }
        (Some(p), Some((a, b))) => {
            let _ = writeln!(out, "audit log: {p}, {a} .. {b}");
        }
    }
    let dur = |s: u64| humantime::format_duration(Duration::from_secs(s)).to_string();
    for c in &r.credentials {
        let _ = writeln!(out, "\n{}", c.name);
        let _ = writeln!(
            out,
            "  team:                  {}",
            c.team.as_deref().unwrap_or("(none: set team)")
        );
        let _ = writeln!(out, "  issuer:                {}", c.issuer);
        let gen = c.generation.map_or("-".to_string(), |g| g.to_string());
        let _ = writeln!(out, "  generation:            {gen} ({})", c.state);
        let age = c.age_seconds.map_or("-".to_string(), dur);
        let _ = writeln!(
            out,
            "  age / lifetime:        {age} / {}",
            dur(c.lifetime_seconds)
        );
        let _ = writeln!(
            out,
            "  last verified handoff: {}",
            c.last_verified_handoff
                .map_or_else(|| "never (in the audit log)".to_string(), |t| t.to_string())
        );
        let _ = writeln!(
            out,
            "  rotations / failures:  {} / {}",
            c.rotations, c.failures
        );
        let _ = writeln!(out, "  policy:                {}", c.policy.join("; "));
    }
    if !r.watches.is_empty() {
        let _ = writeln!(
            out,
            "\nwatched certificates (monitored, not issued by rekey)"
        );
    }
    for w in &r.watches {
        let _ = writeln!(out, "\n{}", w.name);
        let _ = writeln!(
            out,
            "  team:                  {}",
            w.team.as_deref().unwrap_or("(none: set team)")
        );
        let _ = writeln!(out, "  source:                {}", w.source);
        let _ = writeln!(
            out,
            "  state:                 {} ({} certificate(s))",
            w.state, w.certificates
        );
        if let Some(na) = &w.not_after {
            let _ = writeln!(
                out,
                "  first to expire:       {} ({}, issued by {})",
                na,
                w.subject.as_deref().unwrap_or("-"),
                w.issuer.as_deref().unwrap_or("-")
            );
        }
        let _ = writeln!(out, "  alert_before:          {}", w.alert_before);
        if let Some(e) = &w.error {
            let _ = writeln!(out, "  error:                 {e}");
        }
    }
    out
}
