//! `[[alert]]` tables: where alerts go (see `crate::alert`).
//!
//! ```toml
//! [[alert]]
//! type = "webhook"                 # webhook | alertmanager | exec | log
//! name = "ops"                     # optional; defaults to the type ("webhook", then "webhook-2", ...)
//! events = ["handoff_failed", "recovered"]   # optional; default all
//! url = "https://hooks.example.com/rekey"    # or url_file = "/etc/rekey/slack-url"
//! headers = { Authorization = { file = "/etc/rekey/hook-token" }, X-Team = "ops" }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use hyper::Uri;
use toml::Spanned;

use super::convert::{resolve, value};
use super::error::{did_you_mean, ConfigError, Src};
use super::raw::{RawTagged, TableReader};
use super::values;
use super::{AlertMatch, Event};

/// Default per-try timeout of webhook, alertmanager and exec sinks.
pub const DEFAULT_ALERT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default retries after a failed try of webhook and alertmanager sinks.
pub const DEFAULT_ALERT_RETRIES: u32 = 2;
/// The sink types, in the order shown to users.
const TYPES: [&str; 4] = ["webhook", "alertmanager", "exec", "log"];

/// One `[[alert]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertConfig {
    /// Unique name, used in logs and the `sink` metric label.
    pub name: String,
    /// Only these events go to the sink; `None` means all.
    pub events: Option<Vec<Event>>,
    /// The sink type and its settings.
    pub sink: SinkConfig,
    /// `match = { team = "...", labels = { k = "v" } }`: only matching alerts; `None` means all.
    pub matcher: Option<AlertMatch>,
}

/// The settings of one sink type.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    /// `type = "log"`: a structured log line (present even when not configured).
    Log,
    /// `type = "webhook"`: POST the alert JSON.
    Webhook(WebhookConfig),
    /// `type = "alertmanager"`: POST to Alertmanager's `/api/v2/alerts`.
    Alertmanager(HttpConfig),
    /// `type = "exec"`: run a command with the alert JSON on stdin.
    Exec(ExecConfig),
}

/// Where and how an HTTP sink posts.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// `url` (http or https, checked), or `url_file` (read when the sink starts).
    pub url: UrlSource,
    /// Extra request headers, in file order.
    pub headers: Vec<HeaderConfig>,
    /// Deadline of one try.
    pub timeout: Duration,
    /// Further tries after a failed one (backoff 1s, 2s, 4s...).
    pub retries: u32,
    /// Extra PEM roots for https, besides the platform's.
    pub trust_bundle: Option<PathBuf>,
    /// How the receiver is reached: the environment's proxies, none, or one proxy.
    pub proxy: super::ProxyConfig,
}

/// Where the URL of an HTTP sink comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum UrlSource {
    /// Written in the config (shown in messages without its query).
    Inline(Uri),
    /// Read from a file at start; a secret (Slack-style URLs are), so
    /// messages show only its scheme and host.
    File(PathBuf),
}

/// One request header.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderConfig {
    /// Header name, checked.
    pub name: String,
    /// Its value.
    pub value: HeaderSource,
}

/// A header value, as written or from a file.
#[derive(Clone, PartialEq)]
pub enum HeaderSource {
    /// Written in the config.
    Inline(String),
    /// `{ file = "/path" }`: read on every send (so a rotated token is picked
    /// up), trailing newline trimmed, never logged.
    File(PathBuf),
}

impl std::fmt::Debug for HeaderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Inline values may be tokens too: never print them.
        match self {
            HeaderSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            HeaderSource::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// `type = "webhook"`.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Where and how.
    pub http: HttpConfig,
    /// The payload shape.
    pub format: WebhookFormat,
}

/// Payload of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The alert JSON object as is.
    Json,
    /// `{"text": "..."}`, understood by Slack, Mattermost and Rocket.Chat.
    Slack,
}

/// `type = "exec"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecConfig {
    /// argv; no shell.
    pub command: Vec<String>,
    /// Deadline of the command; it is killed (with its process group) after.
    pub timeout: Duration,
    /// Extra environment (`env = { ... }`), on top of the allowlist.
    pub env: Vec<(String, String)>,
}

/// Convert every `[[alert]]` table and check names are unique.
pub(super) fn alerts(
    src: &Src<'_>,
    base: &Path,
    raw: Vec<Spanned<RawTagged>>,
) -> Result<Vec<AlertConfig>, ConfigError> {
    let mut out: Vec<AlertConfig> = Vec::with_capacity(raw.len());
    let mut names: HashMap<String, String> = HashMap::new();
    let mut per_type: HashMap<String, usize> = HashMap::new();
    for (i, table) in raw.into_iter().enumerate() {
        let at = format!("alert[{i}]");
        let mut t = TableReader::new(src, at.clone(), table);
        let tag = t.tag(&TYPES)?;
        let (name, name_span) = match t.string("name")? {
            Some(n) => {
                value(src, &t.key_path("name"), &n, values::cert_name)?;
                (n.get_ref().clone(), Some(n.span()))
            }
            None => {
                let n = per_type.entry(tag.get_ref().clone()).or_default();
                *n += 1;
                let name = match *n {
                    1 => tag.get_ref().clone(),
                    n => format!("{}-{n}", tag.get_ref()),
                };
                (name, Some(tag.span()))
            }
        };
        if let Some(first) = names.get(&name) {
            return Err(t.err(
                "name",
                name_span,
                format!("two alert sinks are named \"{name}\" (the other is {first}); give each its own name"),
            ));
        }
        names.insert(name.clone(), at.clone());
        let events = events(&mut t)?;
        let matcher = matcher(&mut t)?;
        let sink = match tag.get_ref().as_str() {
            "webhook" => {
                let http = http(&mut t, base)?;
                let format = match t.string("format")? {
                    None => WebhookFormat::Json,
                    Some(f) => match f.get_ref().as_str() {
                        "json" => WebhookFormat::Json,
                        "slack" => WebhookFormat::Slack,
                        other => {
                            return Err(t.err(
                                "format",
                                Some(f.span()),
                                format!("unknown format \"{other}\"; allowed: json, slack"),
                            ))
                        }
                    },
                };
                SinkConfig::Webhook(WebhookConfig { http, format })
            }
            "alertmanager" => SinkConfig::Alertmanager(http(&mut t, base)?),
            "exec" => SinkConfig::Exec(ExecConfig {
                command: command(&mut t)?,
                timeout: timeout(&mut t)?,
                env: t.env("env")?,
            }),
            _ => SinkConfig::Log,
        };
        t.finish()?;
        out.push(AlertConfig {
            name,
            events,
            sink,
            matcher,
        });
    }
    Ok(out)
}

/// `events = [...]`: known event names, no duplicates.
fn events(t: &mut TableReader<'_, '_>) -> Result<Option<Vec<Event>>, ConfigError> {
    let Some(v) = t.take("events") else {
        return Ok(None);
    };
    let allowed: Vec<&str> = Event::ALL.iter().map(Event::as_str).collect();
    let span = v.span();
    let items = strings(t, "events", v)?;
    if items.is_empty() {
        return Err(t.err(
            "events",
            Some(span),
            format!(
                "an empty list sends nothing; leave events out to send all, or list some of: {}",
                allowed.join(", ")
            ),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (j, s) in items.iter().enumerate() {
        let Some(e) = Event::from_name(s) else {
            let mut msg = format!("unknown event \"{s}\";");
            if let Some(best) = did_you_mean(s, allowed.iter().copied()) {
                msg.push_str(&format!(" did you mean \"{best}\"?"));
            }
            msg.push_str(&format!(" allowed: {}", allowed.join(", ")));
            return Err(t.err(&format!("events[{j}]"), Some(span), msg));
        };
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(Some(out))
}

/// The keys shared by webhook and alertmanager.
fn http(t: &mut TableReader<'_, '_>, base: &Path) -> Result<HttpConfig, ConfigError> {
    let url = match (t.string("url")?, t.string("url_file")?) {
        (Some(u), None) => UrlSource::Inline(check_url(t, "url", &u)?),
        (None, Some(f)) if !f.get_ref().is_empty() => UrlSource::File(resolve(base, f.get_ref())),
        (None, Some(f)) => return Err(t.err("url_file", Some(f.span()), "must not be empty")),
        (Some(_), Some(f)) => {
            return Err(t.err(
                "url_file",
                Some(f.span()),
                "set either url or url_file, not both",
            ))
        }
        (None, None) => {
            return Err(t.err(
                "url",
                Some(t.span.clone()),
                "required key is missing; set url = \"https://...\" (or url_file = \"/path\" when the URL is a secret)",
            ))
        }
    };
    let headers = headers(t, base)?;
    let timeout = timeout(t)?;
    let retries = match t.take("retries") {
        None => DEFAULT_ALERT_RETRIES,
        Some(v) => v
            .get_ref()
            .as_integer()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n <= 10)
            .ok_or_else(|| {
                t.err(
                    "retries",
                    Some(v.span()),
                    format!("must be an integer from 0 to 10, found {}", v.get_ref()),
                )
            })?,
    };
    let trust_bundle = match t.string("trust_bundle")? {
        None => None,
        Some(p) if p.get_ref().is_empty() => {
            return Err(t.err("trust_bundle", Some(p.span()), "must not be empty"))
        }
        Some(p) => {
            if matches!(&url, UrlSource::Inline(u) if u.scheme_str() != Some("https")) {
                return Err(t.err(
                    "trust_bundle",
                    Some(p.span()),
                    "only applies to an https url; remove it or use https",
                ));
            }
            Some(resolve(base, p.get_ref()))
        }
    };
    let proxy = super::proxy::key(t)?;
    Ok(HttpConfig {
        url,
        headers,
        timeout,
        retries,
        trust_bundle,
        proxy,
    })
}

/// An absolute http(s) URL with a host and no user:password part.
fn check_url(
    t: &TableReader<'_, '_>,
    key: &str,
    raw: &Spanned<String>,
) -> Result<Uri, ConfigError> {
    let s = raw.get_ref();
    let err = |msg: String| t.err(key, Some(raw.span()), msg);
    let uri: Uri = s.parse().map_err(|e| {
        err(format!(
            "invalid URL \"{s}\" ({e}); write it like \"https://hooks.example.com/rekey\""
        ))
    })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(err(format!(
                "unsupported scheme \"{other}\"; allowed: http, https"
            )))
        }
        None => {
            return Err(err(format!(
                "\"{s}\" is not an absolute URL; write it like \"https://hooks.example.com/rekey\""
            )))
        }
    }
    let Some(authority) = uri.authority() else {
        return Err(err(format!("\"{s}\" has no host")));
    };
    if authority.as_str().contains('@') {
        return Err(err("credentials in the URL would show up in logs; send them in a header read from a file: headers = { Authorization = { file = \"/path\" } }".to_string()));
    }
    if authority.host().is_empty() {
        return Err(err(format!("\"{s}\" has no host")));
    }
    Ok(uri)
}

/// `headers = { Name = "value", Other = { file = "/path" } }`.
pub(super) fn headers(
    t: &mut TableReader<'_, '_>,
    base: &Path,
) -> Result<Vec<HeaderConfig>, ConfigError> {
    let Some(v) = t.take("headers") else {
        return Ok(Vec::new());
    };
    let span = v.span();
    let toml::Value::Table(table) = v.into_inner() else {
        return Err(t.err(
            "headers",
            Some(span),
            "expected a table like { Authorization = { file = \"/etc/rekey/token\" } }",
        ));
    };
    let mut out = Vec::with_capacity(table.len());
    for (name, value) in table {
        let key = format!("headers.{name}");
        let err = |msg: String| t.err(&key, Some(span.clone()), msg);
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(err(format!("\"{name}\" is not a valid header name")));
        }
        let lower = name.to_ascii_lowercase();
        if ["host", "content-length", "transfer-encoding", "connection"].contains(&lower.as_str()) {
            return Err(err(format!(
                "{name} is set by rekey and cannot be configured"
            )));
        }
        let value = match value {
            toml::Value::String(s) => {
                if HeaderValue::from_str(&s).is_err() {
                    return Err(err(
                        "the value has characters not allowed in a header (such as a newline)"
                            .to_string(),
                    ));
                }
                HeaderSource::Inline(s)
            }
            toml::Value::Table(mut f) => {
                let file = match f.remove("file") {
                    Some(toml::Value::String(p)) if !p.is_empty() => p,
                    _ => return Err(err("expected a string or { file = \"/path\" }".to_string())),
                };
                if let Some(extra) = f.keys().next() {
                    return Err(err(format!("unknown key `{extra}`; allowed: file")));
                }
                HeaderSource::File(resolve(base, &file))
            }
            other => {
                return Err(err(format!(
                    "expected a string or {{ file = \"/path\" }}, found {}",
                    other.type_str()
                )))
            }
        };
        out.push(HeaderConfig { name, value });
    }
    Ok(out)
}

/// `timeout`: a duration from 1ms to 10 minutes.
fn timeout(t: &mut TableReader<'_, '_>) -> Result<Duration, ConfigError> {
    let Some(s) = t.string("timeout")? else {
        return Ok(DEFAULT_ALERT_TIMEOUT);
    };
    let d = values::duration(s.get_ref()).map_err(|m| t.err("timeout", Some(s.span()), m))?;
    if d.is_zero() || d > Duration::from_secs(600) {
        return Err(t.err(
            "timeout",
            Some(s.span()),
            format!("must be between 1ms and 10m, found \"{}\"", s.get_ref()),
        ));
    }
    Ok(d)
}

/// `command = ["prog", "arg", ...]`: argv, no shell; required.
fn command(t: &mut TableReader<'_, '_>) -> Result<Vec<String>, ConfigError> {
    t.argv("command")?.ok_or_else(|| {
        t.err(
            "command",
            Some(t.span.clone()),
            "required key is missing; set command = [\"/path/to/program\", \"arg\"]",
        )
    })
}

/// An array of strings.
fn strings(
    t: &TableReader<'_, '_>,
    key: &str,
    v: Spanned<toml::Value>,
) -> Result<Vec<String>, ConfigError> {
    let span = v.span();
    let toml::Value::Array(items) = v.into_inner() else {
        return Err(t.err(key, Some(span), "expected an array of strings"));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(j, item)| match item {
            toml::Value::String(s) => Ok(s),
            other => Err(t.err(
                &format!("{key}[{j}]"),
                Some(span.clone()),
                format!("expected a string, found {}", other.type_str()),
            )),
        })
        .collect()
}

/// `match = { team = "payments", labels = { env = "prod" } }`.
fn matcher(t: &mut TableReader<'_, '_>) -> Result<Option<AlertMatch>, ConfigError> {
    let Some(v) = t.take("match") else {
        return Ok(None);
    };
    let span = v.span();
    let help =
        "write match = { team = \"payments\" } and/or match = { labels = { env = \"prod\" } }";
    let toml::Value::Table(table) = v.into_inner() else {
        return Err(t.err("match", Some(span), format!("must be a table; {help}")));
    };
    let mut m = AlertMatch::default();
    for (key, value) in table {
        match (key.as_str(), value) {
            ("team", toml::Value::String(s)) if !s.trim().is_empty() => m.team = Some(s),
            ("labels", toml::Value::Table(labels)) => {
                for (k, v) in labels {
                    let toml::Value::String(v) = v else {
                        return Err(t.err(
                            &format!("match.labels.{k}"),
                            Some(span.clone()),
                            format!("must be a string; {help}"),
                        ));
                    };
                    m.labels.insert(k, v);
                }
            }
            ("team" | "labels", _) => {
                return Err(t.err(
                    &format!("match.{key}"),
                    Some(span.clone()),
                    format!(
                        "team must be a non-empty string and labels a table of strings; {help}"
                    ),
                ));
            }
            (other, _) => {
                return Err(t.err(
                    &format!("match.{other}"),
                    Some(span.clone()),
                    format!("unknown key; allowed: team, labels ({help})"),
                ));
            }
        }
    }
    if m.team.is_none() && m.labels.is_empty() {
        return Err(t.err(
            "match",
            Some(span),
            format!("an empty match matches everything; leave it out, or {help}"),
        ));
    }
    Ok(Some(m))
}
