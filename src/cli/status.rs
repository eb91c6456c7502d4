//! `rekey status`: ask a running daemon for its status over TCP, print a
//! table (or the raw JSON), and exit like `/readyz` so it works as a health
//! check.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use hyper::Method;

use crate::net::admin;
use crate::status::{self, CredentialStatus};

/// `rekey status [--addr ADDR] [--json] [--strict]`: 0 ready, 1 not ready.
pub fn command(addr: SocketAddr, json: bool, strict: bool) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(status(addr, json, strict))
}

async fn status(addr: SocketAddr, json: bool, strict: bool) -> anyhow::Result<ExitCode> {
    let reply = admin::request(addr, Method::GET, "/status", Duration::from_secs(10)).await?;
    let list: Vec<CredentialStatus> = serde_json::from_str(&reply.body).with_context(|| {
        format!(
            "unexpected /status answer from {addr} (HTTP {})",
            reply.status
        )
    })?;
    if json {
        println!("{}", reply.body.trim_end());
    } else {
        print!("{}", status_table(&list, SystemTime::now()));
    }
    // The same rule as /readyz (or /readyz?strict), so `rekey status` works
    // as a health check.
    let strictness = if strict {
        status::Strictness::HandoffOk
    } else {
        status::Strictness::Usable
    };
    let not_ready = status::readiness_with(&list, SystemTime::now(), strictness);
    for r in &not_ready {
        eprintln!("rekey: not ready: {}: {}", r.credential, r.reason);
    }
    Ok(if not_ready.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The table `rekey status` prints: one row per credential, what waits under it.
pub fn status_table(list: &[CredentialStatus], now: SystemTime) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:<16} {:<10} {:<10} {:<12} {:<21} {}\n",
        "NAME", "STATE", "HANDOFF", "EXPIRES IN", "NEXT RENEWAL", "LAST ERROR"
    );
    let parse = |s: &Option<status::Timestamp>| s.map(status::Timestamp::time);
    for c in list {
        let expires = match parse(&c.not_after) {
            Some(t) => match t.duration_since(now) {
                Ok(d) => humantime::format_duration(Duration::from_secs(d.as_secs())).to_string(),
                Err(_) => "expired".into(),
            },
            None => "-".into(),
        };
        let next = parse(&c.next_renewal)
            .map(crate::timestamp::rfc3339)
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<16} {:<10} {:<10} {:<12} {:<21} {}",
            c.name,
            c.state.as_str(),
            c.handoff.as_str(),
            expires,
            next,
            problem(c)
        );
        // What waits, under the row: a staged handoff, a used-up budget.
        if let Some(st) = &c.staged {
            let _ = writeln!(
                out,
                "  staged: generation {} ({}) waits for its handoff; {} failed so far, retried without a new issuance",
                st.generation, st.fingerprint, st.attempts
            );
        }
        if let Some(x) = c
            .issuance_budget
            .as_ref()
            .and_then(|b| b.exhausted.as_ref())
        {
            let _ = writeln!(
                out,
                "  issuance budget exhausted: {}; frees up at {}",
                x.budget, x.frees_at
            );
        }
    }
    out
}

/// The table's last column: the last error, why the handoff is not
/// verified when something said why, and why the certificate is short.
fn problem(c: &CredentialStatus) -> String {
    let mut out = match (&c.last_error, &c.handoff_reason) {
        (Some(e), Some(h)) if e != h => format!("{e}; handoff {}: {h}", c.handoff.as_str()),
        (Some(e), _) => e.clone(),
        (None, Some(h)) => format!("handoff {}: {h}", c.handoff.as_str()),
        (None, None) => String::new(),
    };
    if let Some(why) = &c.shortened_by_ca {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str("shortened by its CA: ");
        out.push_str(why);
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}
