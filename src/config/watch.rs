//! `[[watch]]` entries: certificates rekey does not issue but monitors (a
//! file another pipeline drops in place, a CA bundle, an endpoint's served
//! chain). rekey never writes them; it exports their expiry and alerts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::convert::{resolve, value};
use super::error::{line_col, ConfigError, Src};
use super::raw::RawWatch;
use super::{values, ApiKeyConfig, CertificateConfig, Share};

/// Default time between two probes of an endpoint watch.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(300);
/// Shortest endpoint probe interval: below this a fleet of sidecars becomes load.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_secs(10);
/// Default deadline of one endpoint probe (connect + handshake).
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Without `alert_before`, a certificate turns `expiring` when this share of
/// its lifetime is left...
pub const DEFAULT_ALERT_SHARE: f64 = 0.20;
/// ...but never earlier than this before its expiry. 20% stays below the
/// renewal point of the usual automation (cert-manager renews at 1/3 left,
/// certbot at 30 days), so a healthy renewal pipeline never trips it, and the
/// cap keeps a 10-year CA from warning for two years.
pub const DEFAULT_ALERT_CAP: Duration = Duration::from_secs(30 * 86400);

/// Where a watched certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchSource {
    /// A PEM or DER file: a certificate, a chain or a bundle (every
    /// certificate in it counts). Re-read on change and at every backstop.
    File(PathBuf),
    /// The chain a TLS server presents, probed on an interval.
    Endpoint {
        /// `host:port` to connect to.
        connect: String,
        /// SNI name sent.
        server_name: String,
        /// The protocol negotiation before the handshake, if any.
        starttls: Option<super::StartTls>,
    },
}

impl WatchSource {
    /// `file` or `endpoint`, as in `/status` and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            WatchSource::File(_) => "file",
            WatchSource::Endpoint { .. } => "endpoint",
        }
    }

    /// The path, or `host:port`, for messages.
    pub fn describe(&self) -> String {
        match self {
            WatchSource::File(p) => p.display().to_string(),
            WatchSource::Endpoint {
                connect,
                server_name,
                starttls: None,
            } => format!("{connect} (SNI {server_name})"),
            WatchSource::Endpoint {
                connect,
                server_name,
                starttls: Some(p),
            } => format!("{connect} (SNI {server_name}, STARTTLS {})", p.as_str()),
        }
    }
}

/// One `[[watch]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchConfig {
    /// Unique among certificates, API keys and watches.
    pub name: String,
    /// What is watched.
    pub source: WatchSource,
    /// How long before expiry it turns `expiring`; `None`: 20% of each
    /// certificate's lifetime, at most 30 days.
    pub alert_before: Option<Share>,
    /// Time between endpoint probes (jittered earlier by up to 10%).
    pub interval: Duration,
    /// Deadline of one endpoint probe.
    pub timeout: Duration,
    /// The owning team or contact (routes alerts like a credential's).
    pub team: Option<String>,
    /// Free-form labels (in /status and alerts, kept out of metrics).
    pub labels: BTreeMap<String, String>,
}

impl WatchConfig {
    /// How long before its expiry a certificate living `lifetime` turns `expiring`.
    pub fn alert_before_for(&self, lifetime: Duration) -> Duration {
        match self.alert_before {
            Some(share) => share.of(lifetime),
            None => lifetime.mul_f64(DEFAULT_ALERT_SHARE).min(DEFAULT_ALERT_CAP),
        }
    }

    /// `alert_before` in words, e.g. "14days" or "20% of lifetime, at most 30d".
    pub fn alert_before_text(&self) -> String {
        match self.alert_before {
            Some(s @ Share::Fraction(_)) => format!("{s} of lifetime"),
            Some(s) => s.to_string(),
            None => format!(
                "{}% of lifetime, at most {}",
                DEFAULT_ALERT_SHARE * 100.0,
                humantime::format_duration(DEFAULT_ALERT_CAP)
            ),
        }
    }
}

/// Convert every `[[watch]]`; names must be unique across credentials and watches.
pub(super) fn watches(
    src: &Src<'_>,
    base: &Path,
    certificates: &[std::sync::Arc<CertificateConfig>],
    api_keys: &[ApiKeyConfig],
    raw: Vec<Spanned<RawWatch>>,
) -> Result<Vec<WatchConfig>, ConfigError> {
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, rw) in raw.into_iter().enumerate() {
        let at = format!("watch[{i}]");
        let span = rw.span();
        let rw = rw.into_inner();
        let name = &rw.name;
        value(src, &format!("{at}.name"), name, values::cert_name)?;
        let taken = |what: &str| {
            src.err(
                format!("{at}.name"),
                Some(name.span()),
                format!(
                    "{what} is already named \"{}\"; watch names share one namespace with certificates and API keys (alerts and /status name them)",
                    name.get_ref()
                ),
            )
        };
        if let Some(first) = names.get(name.get_ref()) {
            return Err(taken(&format!("another watch (line {first})")));
        }
        if certificates.iter().any(|c| &c.name == name.get_ref()) {
            return Err(taken("a certificate"));
        }
        if api_keys.iter().any(|k| &k.name == name.get_ref()) {
            return Err(taken("an api_key"));
        }
        names.insert(
            name.get_ref().clone(),
            line_col(src.text, name.span().start).0,
        );
        out.push(watch(src, base, &at, span, rw)?);
    }
    Ok(out)
}

/// One entry on its own.
fn watch(
    src: &Src<'_>,
    base: &Path,
    at: &str,
    span: std::ops::Range<usize>,
    rw: RawWatch,
) -> Result<WatchConfig, ConfigError> {
    let k = |key: &str| format!("{at}.{key}");
    let source = source(src, base, at, span, &rw)?;
    let (interval, timeout) = probe_times(src, at, &rw)?;
    let alert_before = match &rw.alert_before {
        Some(s) => Some(alert_before(src, &k("alert_before"), s)?),
        None => None,
    };
    let team = super::certificate::not_blank(
        src,
        k("team"),
        rw.team.as_ref(),
        "must not be empty; name the owning team or contact, or leave the key out",
    )?;
    let labels = super::certificate::labels(src, k("labels"), rw.labels.as_ref())?;
    Ok(WatchConfig {
        name: rw.name.into_inner(),
        source,
        alert_before,
        interval,
        timeout,
        team,
        labels,
    })
}

/// What is watched: `file` or `endpoint` (exactly one), with the keys only
/// an endpoint takes.
fn source(
    src: &Src<'_>,
    base: &Path,
    at: &str,
    span: std::ops::Range<usize>,
    rw: &RawWatch,
) -> Result<WatchSource, ConfigError> {
    let k = |key: &str| format!("{at}.{key}");
    match (&rw.file, &rw.endpoint) {
        (Some(f), None) => file_source(src, base, at, f, rw),
        (None, Some(e)) => endpoint_source(src, at, e, rw),
        (Some(_), Some(e)) => Err(src.err(
            k("endpoint"),
            Some(e.span()),
            "set either file or endpoint, not both; use two [[watch]] entries to watch both",
        )),
        (None, None) => Err(src.err(
            at,
            Some(span),
            "set file = \"PATH\" (a PEM or DER certificate, chain or bundle) or endpoint = \"host:port\" (a TLS server's chain)",
        )),
    }
}

/// `file = "PATH"`: a non-empty path, and none of the endpoint's keys.
fn file_source(
    src: &Src<'_>,
    base: &Path,
    at: &str,
    f: &Spanned<String>,
    rw: &RawWatch,
) -> Result<WatchSource, ConfigError> {
    let k = |key: &str| format!("{at}.{key}");
    if f.get_ref().is_empty() {
        return Err(src.err(k("file"), Some(f.span()), "path must not be empty"));
    }
    for (key, v) in [
        ("server_name", &rw.server_name),
        ("starttls", &rw.starttls),
        ("interval", &rw.interval),
        ("timeout", &rw.timeout),
    ] {
        if let Some(v) = v {
            return Err(src.err(
                k(key),
                Some(v.span()),
                format!("only an endpoint watch takes {key}; a file watch is re-read when the file changes and at every daemon.backstop"),
            ));
        }
    }
    Ok(WatchSource::File(resolve(base, f.get_ref())))
}

/// `endpoint = "host:port"`, its `server_name` (the host when absent) and
/// `starttls`.
fn endpoint_source(
    src: &Src<'_>,
    at: &str,
    e: &Spanned<String>,
    rw: &RawWatch,
) -> Result<WatchSource, ConfigError> {
    let k = |key: &str| format!("{at}.{key}");
    let host = value(src, &k("endpoint"), e, host_port)?;
    let server_name = match &rw.server_name {
        Some(s) => {
            value(src, &k("server_name"), s, |v| {
                rustls::pki_types::ServerName::try_from(v.to_string())
                    .map(drop)
                    .map_err(|_| format!("\"{v}\" is not a DNS name or IP address to send as SNI"))
            })?;
            s.get_ref().clone()
        }
        None => host,
    };
    let starttls = match &rw.starttls {
        Some(s) => Some(value(src, &k("starttls"), s, super::starttls::parse)?),
        None => None,
    };
    Ok(WatchSource::Endpoint {
        connect: e.get_ref().clone(),
        server_name,
        starttls,
    })
}

/// An endpoint's `interval` (at least [`MIN_WATCH_INTERVAL`]) and `timeout`
/// (within the interval).
fn probe_times(
    src: &Src<'_>,
    at: &str,
    rw: &RawWatch,
) -> Result<(Duration, Duration), ConfigError> {
    let k = |key: &str| format!("{at}.{key}");
    let interval = match &rw.interval {
        Some(s) => {
            let d = value(src, &k("interval"), s, values::duration)?;
            if d < MIN_WATCH_INTERVAL {
                return Err(src.err(
                    k("interval"),
                    Some(s.span()),
                    format!("must be at least 10s, found \"{}\"", s.get_ref()),
                ));
            }
            d
        }
        None => DEFAULT_WATCH_INTERVAL,
    };
    let timeout = match &rw.timeout {
        Some(s) => {
            let d = value(src, &k("timeout"), s, values::duration)?;
            if d.is_zero() || d > interval {
                return Err(src.err(
                    k("timeout"),
                    Some(s.span()),
                    format!(
                        "must be longer than 0s and at most interval ({}), found \"{}\"",
                        humantime::format_duration(interval),
                        s.get_ref()
                    ),
                ));
            }
            d
        }
        None => DEFAULT_WATCH_TIMEOUT.min(interval),
    };
    Ok((interval, timeout))
}

/// `alert_before` (at `key`): a share strictly inside the lifetime, or a
/// duration longer than nothing.
fn alert_before(src: &Src<'_>, key: &str, s: &Spanned<String>) -> Result<Share, ConfigError> {
    match value(src, key, s, values::share)? {
        Share::Fraction(f) if !(f > 0.0 && f < 1.0) => Err(src.err(
            key,
            Some(s.span()),
            format!(
                "must be more than 0% and less than 100% of lifetime, found \"{}\"",
                s.get_ref()
            ),
        )),
        Share::Duration(d) if d.is_zero() => {
            Err(src.err(key, Some(s.span()), "must be longer than 0s"))
        }
        share => Ok(share),
    }
}

/// `host:port` (IPv6 in brackets); returns the host, for the default SNI.
fn host_port(s: &str) -> Result<String, String> {
    let bad = || {
        format!("\"{s}\" is not host:port; write it like \"app.internal:443\", \"127.0.0.1:8443\" or \"[::1]:443\"")
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err(bad());
    }
    Ok(host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_takes_names_ipv4_and_bracketed_ipv6() {
        assert_eq!(host_port("app.internal:443").unwrap(), "app.internal");
        assert_eq!(host_port("127.0.0.1:8443").unwrap(), "127.0.0.1");
        assert_eq!(host_port("[::1]:443").unwrap(), "::1");
        for bad in [
            "app.internal",
            ":443",
            "a:0",
            "a:70000",
            "https://a:443",
            "a:b",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_alert_before_is_a_fifth_of_lifetime_capped_at_30_days() {
        let w = WatchConfig {
            name: "w".into(),
            source: WatchSource::File("/x".into()),
            alert_before: None,
            interval: DEFAULT_WATCH_INTERVAL,
            timeout: DEFAULT_WATCH_TIMEOUT,
            team: None,
            labels: BTreeMap::new(),
        };
        let day = Duration::from_secs(86400);
        assert_eq!(w.alert_before_for(day * 90), day * 18);
        assert_eq!(w.alert_before_for(day * 3650), day * 30);
        assert_eq!(w.alert_before_for(day), day.mul_f64(0.2));
        let fixed = WatchConfig {
            alert_before: Some(Share::Duration(day * 14)),
            ..w.clone()
        };
        assert_eq!(fixed.alert_before_for(day * 365), day * 14);
        // A fixed duration is capped at the lifetime: a 1-day certificate
        // with alert_before = 14d is expiring from the start.
        assert_eq!(fixed.alert_before_for(day), day);
        assert_eq!(w.alert_before_text(), "20% of lifetime, at most 30days");
    }
}
