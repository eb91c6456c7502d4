//! `reload`, `verify` and `on_failure`: how the application is told about a
//! new generation and how rekey proves it picked it up (the `verify` probes
//! are read in `verify.rs`).

mod verify;

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::convert::{resolve, value};
use super::error::{ConfigError, Src};
use super::raw::{RawTagged, TableReader};
use super::values;

pub(super) use verify::verify;

/// Default deadline for a reload command or request.
pub const DEFAULT_RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline for the probes to see the new generation.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default settle period: multi-worker servers (nginx) keep answering from
/// old workers for a moment after a reload (about 110 ms measured here), so a
/// handoff counts as verified only after the probes have seen the new
/// generation continuously for this long.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(100);

/// Signals a reload may send, without the `SIG` prefix.
pub const SIGNALS: &[&str] = &[
    "HUP", "USR1", "USR2", "TERM", "INT", "QUIT", "WINCH", "CONT", "ALRM",
];

/// How the application is told to reload (`reload = { type = ... }`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ReloadConfig {
    /// The application watches its files itself.
    #[default]
    None,
    /// Send a signal to a process.
    Signal {
        /// Signal name without `SIG`, e.g. `HUP`.
        signal: String,
        /// Which process.
        target: PidSource,
    },
    /// Run a command (argv, no shell).
    Exec {
        /// argv.
        command: Vec<String>,
        /// Killed (with its process group) after this long.
        timeout: Duration,
        /// Extra environment (`env = { ... }`), on top of the allowlist.
        env: Vec<(String, String)>,
    },
    /// Send an HTTP request; a 2xx answer is success.
    Http {
        /// `http://` or `https://` URL.
        url: String,
        /// HTTP method (default POST).
        method: String,
        /// Extra request headers.
        headers: Vec<(String, String)>,
        /// Request deadline.
        timeout: Duration,
    },
}

/// The process a signal goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidSource {
    /// A fixed PID.
    Pid(i32),
    /// A pid file, re-read before every signal (apps rewrite it on restart).
    File(PathBuf),
}

/// One verification probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeConfig {
    /// TLS handshake; the served leaf's SHA-256 must be the new one.
    Tls {
        /// `host:port` to connect to.
        connect: String,
        /// SNI name sent.
        server_name: String,
        /// The protocol negotiation before the handshake, if any.
        starttls: Option<super::StartTls>,
        /// Client certificate PEM for servers that require mTLS.
        client_cert: Option<PathBuf>,
        /// Its key.
        client_key: Option<PathBuf>,
    },
    /// HTTP request; status (and body) must match.
    Http {
        /// URL.
        url: String,
        /// Expected status code.
        expect_status: u16,
        /// Text the body must contain; may hold `{fingerprint}`, `{serial}`, `{key_id}`.
        expect_body: Option<String>,
        /// Request headers; values may hold `{secret}` (API keys).
        headers: Vec<(String, String)>,
    },
    /// A command; exit 0 means the app uses the new generation.
    Exec {
        /// argv.
        command: Vec<String>,
        /// Extra environment (`env = { ... }`), on top of the allowlist.
        env: Vec<(String, String)>,
    },
}

/// How a handoff is verified: every probe must pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyConfig {
    /// The probes; empty for `type = "none"` (handoffs are then unverified).
    pub probes: Vec<ProbeConfig>,
    /// Deadline for all probes to see the new generation.
    pub timeout: Duration,
    /// How long they must keep seeing it.
    pub settle: Duration,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            probes: Vec::new(),
            timeout: DEFAULT_VERIFY_TIMEOUT,
            settle: DEFAULT_SETTLE,
        }
    }
}

/// What to do when a handoff fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Put the previous generation back (if still valid), reload, retry later.
    #[default]
    Rollback,
    /// Keep the new generation published and alert.
    Keep,
}

/// `on_failure = "rollback" | "keep"`.
pub(super) fn on_failure(s: &str) -> Result<OnFailure, String> {
    match s {
        "rollback" => Ok(OnFailure::Rollback),
        "keep" => Ok(OnFailure::Keep),
        _ => Err(format!("unknown value \"{s}\"; allowed: rollback, keep")),
    }
}

/// Take `key` as a table of string values (headers).
fn headers(t: &mut TableReader<'_, '_>) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(v) = t.take("headers") else {
        return Ok(Vec::new());
    };
    let span = v.span();
    let toml::Value::Table(map) = v.into_inner() else {
        return Err(t.err(
            "headers",
            Some(span),
            "must be a table like { Authorization = \"...\" }",
        ));
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let Some(s) = v.as_str() else {
            return Err(t.err(
                "headers",
                Some(span),
                format!("header {k} must be a string"),
            ));
        };
        out.push((k, s.to_string()));
    }
    Ok(out)
}

fn duration_key(
    t: &mut TableReader<'_, '_>,
    src: &Src<'_>,
    key: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match t.string(key)? {
        Some(s) => {
            let d = value(src, &t.key_path(key), &s, values::duration)?;
            if d.is_zero() {
                return Err(t.err(key, Some(s.span()), "must be longer than 0s"));
            }
            Ok(d)
        }
        None => Ok(default),
    }
}

fn url_key(t: &mut TableReader<'_, '_>, span: &Range<usize>) -> Result<String, ConfigError> {
    match t.string("url")? {
        Some(u) if u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://") => {
            Ok(u.into_inner())
        }
        Some(u) => Err(t.err(
            "url",
            Some(u.span()),
            format!("\"{}\" is not an http:// or https:// URL", u.get_ref()),
        )),
        None => Err(t.err("url", Some(span.clone()), "required key is missing")),
    }
}

/// `reload = { type = "none" | "signal" | "exec" | "http", ... }`.
pub(super) fn reload(
    src: &Src<'_>,
    base: &std::path::Path,
    path: String,
    table: Spanned<RawTagged>,
) -> Result<ReloadConfig, ConfigError> {
    let mut t = TableReader::new(src, path, table);
    let span = t.span.clone();
    let tag = t.tag(&["none", "signal", "exec", "http"])?;
    let r = match tag.get_ref().as_str() {
        "signal" => signal_reload(&mut t, base, &span)?,
        "exec" => exec_reload(&mut t, src, &span)?,
        "http" => http_reload(&mut t, src, &span)?,
        _ => ReloadConfig::None,
    };
    t.finish()?;
    Ok(r)
}

/// `type = "signal"`: the signal (HUP when absent) and exactly one of
/// `pid_file` or `pid`.
fn signal_reload(
    t: &mut TableReader<'_, '_>,
    base: &std::path::Path,
    span: &Range<usize>,
) -> Result<ReloadConfig, ConfigError> {
    let signal = match t.string("signal")? {
        Some(s) => {
            let name = s.get_ref().trim().to_ascii_uppercase();
            let name = name.strip_prefix("SIG").unwrap_or(&name).to_string();
            if !SIGNALS.contains(&name.as_str()) {
                return Err(t.err(
                    "signal",
                    Some(s.span()),
                    format!(
                        "unknown signal \"{}\"; allowed: {}",
                        s.get_ref(),
                        SIGNALS.join(", ")
                    ),
                ));
            }
            name
        }
        None => "HUP".to_string(),
    };
    let pid = t.take("pid");
    let pid_file = t.string("pid_file")?;
    let target = match (pid, pid_file) {
        (Some(p), None) => {
            let span = p.span();
            match p
                .into_inner()
                .as_integer()
                .and_then(|n| i32::try_from(n).ok())
            {
                // Never PID 1 (init, or a container's first process).
                Some(n) if n >= 2 => PidSource::Pid(n),
                _ => {
                    return Err(t.err(
                        "pid",
                        Some(span),
                        "must be the application's process id (an integer of 2 or more; rekey never signals PID 1)",
                    ))
                }
            }
        }
        (None, Some(f)) => PidSource::File(resolve(base, f.get_ref())),
        _ => {
            return Err(t.err(
                "pid_file",
                Some(span.clone()),
                "set exactly one of pid_file (re-read before every signal) or pid",
            ))
        }
    };
    Ok(ReloadConfig::Signal { signal, target })
}

/// `type = "exec"`: the command, its timeout and environment.
fn exec_reload(
    t: &mut TableReader<'_, '_>,
    src: &Src<'_>,
    span: &Range<usize>,
) -> Result<ReloadConfig, ConfigError> {
    let command = t
        .argv("command")?
        .ok_or_else(|| t.err("command", Some(span.clone()), "required key is missing"))?;
    let timeout = duration_key(t, src, "timeout", DEFAULT_RELOAD_TIMEOUT)?;
    let env = t.env("env")?;
    Ok(ReloadConfig::Exec {
        command,
        timeout,
        env,
    })
}

/// `type = "http"`: the request that tells the application.
fn http_reload(
    t: &mut TableReader<'_, '_>,
    src: &Src<'_>,
    span: &Range<usize>,
) -> Result<ReloadConfig, ConfigError> {
    let url = url_key(t, span)?;
    let method = t
        .string("method")?
        .map(|m| m.into_inner().to_ascii_uppercase())
        .unwrap_or_else(|| "POST".into());
    let headers = headers(t)?;
    let timeout = duration_key(t, src, "timeout", DEFAULT_RELOAD_TIMEOUT)?;
    Ok(ReloadConfig::Http {
        url,
        method,
        headers,
        timeout,
    })
}
