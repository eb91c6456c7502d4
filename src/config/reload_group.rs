//! Handoff groups: which credentials share one reload of their app.
//!
//! Credentials whose `reload` reaches the same target (the same signal to
//! the same `pid` or `pid_file`, the same command with the same environment
//! and timeout, the same HTTP request) form a group by themselves; a
//! `reload_group = "NAME"` puts a credential into the group declared by a
//! `[reload_group.NAME]` table instead (for reloads that are written
//! differently but reach one app), and `reload_group = false` keeps it
//! alone. The engine batches the handoffs of a group (see
//! `engine::group`): `daemon.reload_window` and `daemon.reload_max_wait`
//! time the batches, and a declared group may set its own `window` and
//! `max_wait`.
//!
//! Declared groups exist so that a misspelt name is an error rather than a
//! group of one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::convert::value;
use super::error::{ConfigError, Src};
use super::{values, DaemonConfig, PidSource, ReloadConfig};

/// Default `daemon.reload_window`: long enough for credentials that fall due
/// together (a first start, a CA change) to join, short next to a reload.
pub const DEFAULT_RELOAD_WINDOW: Duration = Duration::from_millis(200);
/// Default `daemon.reload_max_wait`.
pub const DEFAULT_RELOAD_MAX_WAIT: Duration = Duration::from_secs(2);
/// The longest `reload_window`: a batch is a short coalescing delay, not a
/// schedule.
pub const MAX_RELOAD_WINDOW: Duration = Duration::from_secs(5);
/// The longest `reload_max_wait`: no handoff waits longer than this for its
/// reload.
pub const MAX_RELOAD_MAX_WAIT: Duration = Duration::from_secs(60);

/// Credentials that share one reload: their handoffs are published, reloaded
/// once and verified together (see the module docs). Shared by its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadGroup {
    /// What makes two credentials members of one group: the group's name, or
    /// the whole reload config. Compared, never shown (it may hold headers).
    pub key: String,
    /// For logs and messages: `reload group nginx`, `SIGHUP to the process in
    /// /run/nginx.pid`.
    pub label: String,
    /// A batch closes this long after its last member joined...
    pub window: Duration,
    /// ...and at the latest this long after its first member joined.
    pub max_wait: Duration,
}

/// `[reload_group.NAME]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReloadGroup {
    pub window: Option<Spanned<String>>,
    pub max_wait: Option<Spanned<String>>,
}

/// A batch's timing.
#[derive(Debug, Clone, Copy)]
struct Timing {
    window: Duration,
    max_wait: Duration,
}

/// Check a window and a max wait written at `window_key` / `max_key`.
fn timing(
    src: &Src<'_>,
    window_key: &str,
    window: Option<&Spanned<String>>,
    max_key: &str,
    max_wait: Option<&Spanned<String>>,
    defaults: Timing,
) -> Result<Timing, ConfigError> {
    let mut t = defaults;
    if let Some(s) = window {
        t.window = value(src, window_key, s, values::duration)?;
        if t.window > MAX_RELOAD_WINDOW {
            return Err(src.err(
                window_key,
                Some(s.span()),
                format!(
                    "must be between 0s (no batching) and 5s, found \"{}\"",
                    s.get_ref()
                ),
            ));
        }
    }
    if let Some(s) = max_wait {
        t.max_wait = value(src, max_key, s, values::duration)?;
        if t.max_wait > MAX_RELOAD_MAX_WAIT {
            return Err(src.err(
                max_key,
                Some(s.span()),
                format!("must be at most 60s, found \"{}\"", s.get_ref()),
            ));
        }
    }
    if t.max_wait < t.window {
        let span = max_wait.or(window).map(Spanned::span);
        let key = if max_wait.is_some() {
            max_key
        } else {
            window_key
        };
        return Err(src.err(
            key,
            span,
            format!(
                "the max wait ({}) is shorter than the window ({}); a batch closes a window after its last member joined and at the latest a max wait after its first: make the max wait at least the window",
                humantime::format_duration(t.max_wait),
                humantime::format_duration(t.window)
            ),
        ));
    }
    Ok(t)
}

/// `daemon.reload_window` / `daemon.reload_max_wait` into `d`.
pub(super) fn daemon_timing(
    src: &Src<'_>,
    d: &mut DaemonConfig,
    window: Option<&Spanned<String>>,
    max_wait: Option<&Spanned<String>>,
) -> Result<(), ConfigError> {
    let t = timing(
        src,
        "daemon.reload_window",
        window,
        "daemon.reload_max_wait",
        max_wait,
        Timing {
            window: d.reload_window,
            max_wait: d.reload_max_wait,
        },
    )?;
    d.reload_window = t.window;
    d.reload_max_wait = t.max_wait;
    Ok(())
}

/// Turns each credential's `reload` and `reload_group` into its group,
/// sharing one [`ReloadGroup`] among the members.
pub(super) struct Resolver {
    defaults: Timing,
    declared: BTreeMap<String, Timing>,
    groups: HashMap<String, Arc<ReloadGroup>>,
}

impl Resolver {
    /// Check the `[reload_group.NAME]` tables against the daemon's defaults.
    pub(super) fn new(
        src: &Src<'_>,
        daemon: &DaemonConfig,
        raw: BTreeMap<String, Spanned<RawReloadGroup>>,
    ) -> Result<Resolver, ConfigError> {
        let defaults = Timing {
            window: daemon.reload_window,
            max_wait: daemon.reload_max_wait,
        };
        let mut declared = BTreeMap::new();
        for (name, table) in raw {
            let span = table.span();
            values::cert_name(&name)
                .map_err(|m| src.err(format!("reload_group.{name}"), Some(span.clone()), m))?;
            let t = table.into_inner();
            let timing = timing(
                src,
                &format!("reload_group.{name}.window"),
                t.window.as_ref(),
                &format!("reload_group.{name}.max_wait"),
                t.max_wait.as_ref(),
                defaults,
            )?;
            declared.insert(name, timing);
        }
        Ok(Resolver {
            defaults,
            declared,
            groups: HashMap::new(),
        })
    }

    /// The group of a credential whose `reload_group` (at `key`) is `raw`
    /// and whose reload is `reload`; `None` when it is handed over alone
    /// (no reload, `reload_group = false`, or a window of 0s).
    pub(super) fn resolve(
        &mut self,
        src: &Src<'_>,
        key: &str,
        raw: Option<&Spanned<toml::Value>>,
        reload: &ReloadConfig,
    ) -> Result<Option<Arc<ReloadGroup>>, ConfigError> {
        let (id, label, timing) = match raw.map(|v| (v.get_ref(), v.span())) {
            None => match target(reload) {
                Some(label) => (format!("{reload:?}"), label, self.defaults),
                // Nothing to reload: nothing to share.
                None => return Ok(None),
            },
            Some((toml::Value::Boolean(false), _)) => return Ok(None),
            Some((toml::Value::String(name), span)) if target(reload).is_none() => {
                return Err(src.err(
                    key,
                    Some(span),
                    format!("reload group \"{name}\" shares a reload, but this credential has none (reload is \"none\"): give it the reload of the app, or leave reload_group out"),
                ))
            }
            Some((toml::Value::String(name), span)) => match self.declared.get(name) {
                Some(t) => (
                    format!("group {name}"),
                    format!("reload group {name}"),
                    *t,
                ),
                None => {
                    let msg = if self.declared.is_empty() {
                        format!("reload group \"{name}\" is not declared; no groups are declared: add a [reload_group.{name}] table (it may be empty), or leave reload_group out to group credentials by their reload target")
                    } else {
                        let names: Vec<&str> = self.declared.keys().map(String::as_str).collect();
                        format!(
                            "reload group \"{name}\" is not declared; declared groups: {}",
                            names.join(", ")
                        )
                    };
                    return Err(src.err(key, Some(span), msg));
                }
            },
            Some((other, span)) => {
                return Err(src.err(
                    key,
                    Some(span),
                    format!(
                        "expected the name of a [reload_group.NAME] table, or false to hand this credential over alone; found {}",
                        match other {
                            toml::Value::Boolean(true) => "true".to_string(),
                            v => v.type_str().to_string(),
                        }
                    ),
                ))
            }
        };
        if timing.window.is_zero() {
            return Ok(None);
        }
        let group = self.groups.entry(id.clone()).or_insert_with(|| {
            Arc::new(ReloadGroup {
                key: id,
                label,
                window: timing.window,
                max_wait: timing.max_wait,
            })
        });
        Ok(Some(group.clone()))
    }
}

/// What a reload reaches, for people; `None` for `type = "none"`.
fn target(reload: &ReloadConfig) -> Option<String> {
    match reload {
        ReloadConfig::None => None,
        ReloadConfig::Signal {
            signal,
            target: PidSource::Pid(p),
        } => Some(format!("SIG{signal} to process {p}")),
        ReloadConfig::Signal {
            signal,
            target: PidSource::File(f),
        } => Some(format!("SIG{signal} to the process in {}", f.display())),
        ReloadConfig::Exec { command, .. } => Some(format!("command {}", command.join(" "))),
        ReloadConfig::Http { method, url, .. } => Some(format!("{method} {url}")),
    }
}
