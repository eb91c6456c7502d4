//! The TOML config file turned into typed, validated structs.
//!
//! All validation happens here, before anything runs: an error names the
//! file, the line, the dotted key and what is allowed. Parsing goes through
//! a private raw layer (`raw`) that keeps source spans, then `convert`
//! converts and checks it into the public types below.

mod acme;
mod alert;
mod apikey;
pub(crate) mod budget;
mod certificate;
mod convert;
mod error;
mod files;
mod handoff;
mod on_remove;
mod policy;
mod proxy;
mod raw;
mod reload_group;
mod routing;
mod starttls;
#[cfg(test)]
mod tests;
mod values;
mod vault;
mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fs::safefile::{self, Guard};
pub use budget::{Budget, Limit};

pub use acme::{AcmeConfig, ChallengeConfig, EabConfig};
pub use alert::{
    AlertConfig, ExecConfig, HeaderConfig, HeaderSource, HttpConfig, SinkConfig, UrlSource,
    WebhookConfig, WebhookFormat, DEFAULT_ALERT_RETRIES, DEFAULT_ALERT_TIMEOUT,
};
pub use apikey::{
    ApiKeyConfig, ExecKeysConfig, HttpKeysConfig, KeyFormat, MintConfig, RevokeConfig,
};
pub use error::ConfigError;
pub use files::{read_keystore_password, FileKind, Files, Pkcs12Options};
pub use handoff::{OnFailure, PidSource, ProbeConfig, ReloadConfig, VerifyConfig, DEFAULT_SETTLE};
pub use on_remove::OnRemove;
pub use policy::{evaluate as evaluate_policy, PolicyConfig, Violation, DEFAULT_MIN_RSA_BITS};
pub use proxy::ProxyConfig;
pub use reload_group::{
    ReloadGroup, DEFAULT_RELOAD_MAX_WAIT, DEFAULT_RELOAD_WINDOW, MAX_RELOAD_MAX_WAIT,
    MAX_RELOAD_WINDOW,
};
pub use routing::{AlertMatch, Event};
pub use starttls::StartTls;
pub use vault::{
    VaultAuth, VaultConfig, DEFAULT_JWT_FILE, DEFAULT_PKI_MOUNT, DEFAULT_VAULT_TIMEOUT,
};
pub use watch::{
    WatchConfig, WatchSource, DEFAULT_ALERT_CAP, DEFAULT_ALERT_SHARE, DEFAULT_WATCH_INTERVAL,
    DEFAULT_WATCH_TIMEOUT, MIN_WATCH_INTERVAL,
};

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file the config was read from (as given), used in messages.
    pub path: PathBuf,
    /// The `[daemon]` table.
    pub daemon: DaemonConfig,
    /// The `[issuer.NAME]` tables, by name.
    pub issuers: BTreeMap<String, IssuerConfig>,
    /// Each issuer's `max_issuances` / `max_issuances_total`, by issuer name.
    pub budgets: BTreeMap<String, IssuanceBudgets>,
    /// The `[[certificate]]` entries, in file order.
    pub certificates: Vec<std::sync::Arc<CertificateConfig>>,
    /// The `[[alert]]` sinks, in file order.
    pub alerts: Vec<AlertConfig>,
    /// The `[[api_key]]` entries, in file order.
    pub api_keys: Vec<ApiKeyConfig>,
    /// The `[policy]` guardrails, when the table is present.
    pub policy: Option<PolicyConfig>,
    /// The `[[watch]]` entries (monitored, never written), in file order.
    pub watches: Vec<WatchConfig>,
}

impl Config {
    /// Read, parse and validate a config file for the daemon (also runs
    /// [`check_state_dir`] with [`StateDirUse::Daemon`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_for(path, StateDirUse::Daemon)
    }

    /// [`Config::load`] for the commands that only read the state dir
    /// (`check`, `report`, `audit`): root may inspect a state dir that
    /// belongs to rekey's user (`sudo rekey check`).
    pub fn load_to_inspect(path: &Path) -> Result<Config, ConfigError> {
        Config::load_for(path, StateDirUse::Inspect)
    }

    fn load_for(path: &Path, usage: StateDirUse) -> Result<Config, ConfigError> {
        let read_err = |source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        };
        let bytes = safefile::read_guarded(path, "config", Guard::Trust, MAX_CONFIG_SIZE)
            .map_err(read_err)?;
        let text = safefile::text(path, bytes).map_err(read_err)?;
        let (config, state_dir_span) = convert::parse(&text, path)?;
        check_state_dir_for(&config.daemon.state_dir, usage)
            .map_err(|e| e.locate(path, &text, state_dir_span))?;
        Ok(config)
    }

    /// Parse and validate text; `path` is used in messages and to resolve relative paths (against path's parent dir). Does NOT touch the filesystem except resolving owner/group names.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        convert::parse(text, path).map(|(config, _)| config)
    }

    /// The issuer called `name`, if defined.
    pub fn issuer(&self, name: &str) -> Option<&IssuerConfig> {
        self.issuers.get(name)
    }

    /// The issuance budgets of issuer `name` (the defaults if it has none).
    pub fn budget(&self, name: &str) -> IssuanceBudgets {
        self.budgets.get(name).copied().unwrap_or_default()
    }
}

/// An issuer's issuance budgets (`max_issuances`, `max_issuances_total`):
/// see `crate::budget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IssuanceBudgets {
    /// For each credential of this issuer; `Default` derives it from the
    /// credential's lifetime (`crate::budget::default_budget`).
    pub per_credential: Limit,
    /// For all credentials of this issuer together; never `Default` once
    /// parsed ([`IssuanceBudgets::for_type`] fills it in).
    pub total: Limit,
}

/// The default `max_issuances_total` of an ACME issuer: Let's Encrypt's 50
/// certificates per registered domain per week.
pub const ACME_DEFAULT_TOTAL: Budget = Budget {
    count: 50,
    window_s: 7 * 86_400,
};

impl IssuanceBudgets {
    /// The defaults for an issuer of `type_name`: per credential derived from
    /// its lifetime; in total [`ACME_DEFAULT_TOTAL`] for ACME, else unlimited.
    pub fn for_type(type_name: &str) -> IssuanceBudgets {
        IssuanceBudgets {
            per_credential: Limit::Default,
            total: if type_name == "acme" {
                Limit::Max(ACME_DEFAULT_TOTAL)
            } else {
                Limit::Unlimited
            },
        }
    }

    /// No budget at all (the handoff retry and backoff still apply): for
    /// tests and benchmarks that rotate one credential many times.
    pub const UNLIMITED: IssuanceBudgets = IssuanceBudgets {
        per_credential: Limit::Unlimited,
        total: Limit::Unlimited,
    };
}

/// The largest config file read: 10,000 credentials take about 2 MiB.
pub const MAX_CONFIG_SIZE: u64 = 32 * 1024 * 1024;

/// Default for `daemon.state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/rekey";
/// Default for `daemon.listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
/// The admin socket's file name in the state dir.
pub const ADMIN_SOCKET: &str = "rekey.sock";
/// Default for `daemon.audit_max_size`: 10 MiB.
pub const DEFAULT_AUDIT_MAX_SIZE: u64 = 10 * 1024 * 1024;

/// The admin socket of the daemon that runs the config in `path`:
/// `daemon.state_dir/rekey.sock`. Reads only that key, so `rekey rotate`
/// still finds the daemon while the file holds edits not yet loaded.
pub fn admin_socket(path: &Path) -> Result<PathBuf, ConfigError> {
    let read_err = |source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    };
    let bytes =
        safefile::read_guarded(path, "config", Guard::Trust, MAX_CONFIG_SIZE).map_err(read_err)?;
    let text = safefile::text(path, bytes).map_err(read_err)?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
        file: path.to_path_buf(),
        line: None,
        column: None,
        message: e.message().to_string(),
    })?;
    let dir = table
        .get("daemon")
        .and_then(|d| d.get("state_dir"))
        .and_then(toml::Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_STATE_DIR);
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(convert::resolve(base, dir).join(ADMIN_SOCKET))
}

/// The `[daemon]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// Journal, generations, local CA (kept 0700).
    pub state_dir: PathBuf,
    /// Address of the health/status/metrics endpoint; `None` turns it off.
    pub listen: Option<SocketAddr>,
    /// Log output format.
    pub log_format: LogFormat,
    /// How many rotations may run at the same time (>= 1).
    pub max_concurrent_rotations: usize,
    /// Slow safety re-check of the published files (>= 60s).
    pub backstop: Duration,
    /// File holding the bearer token that lets TCP clients rotate and retire
    /// (without it, only the admin socket may). Only the path is kept here:
    /// the token is read at start and never logged.
    pub admin_token_file: Option<PathBuf>,
    /// The hash-chained JSON-lines audit log; `None` records nothing.
    pub audit_log: Option<PathBuf>,
    /// Size at which the audit log is rotated to `PATH.1`.
    pub audit_max_size: u64,
    /// Extra metric families in other exporters' names (opt-in).
    pub compat_metrics: Vec<CompatMetrics>,
    /// A handoff group's batch closes this long after its last member
    /// joined (0: no batching); see [`ReloadGroup`].
    pub reload_window: Duration,
    /// ...and at the latest this long after its first member joined.
    pub reload_max_wait: Duration,
}

/// `daemon.compat_metrics`: metric families exposed under another
/// exporter's names, so existing dashboards and rules work unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompatMetrics {
    /// `x509_cert_not_after`, `x509_cert_not_before`, `x509_cert_expired`
    /// with x509-certificate-exporter's label names.
    X509Exporter,
}

impl CompatMetrics {
    /// Every choice, as spelled in the config.
    pub const ALL: [CompatMetrics; 1] = [CompatMetrics::X509Exporter];

    /// The config spelling, e.g. "x509-exporter".
    pub fn as_str(&self) -> &'static str {
        match self {
            CompatMetrics::X509Exporter => "x509-exporter",
        }
    }
}

impl DaemonConfig {
    /// `STATE_DIR/rekey.sock`, where rotate and retire are served.
    pub fn admin_socket(&self) -> PathBuf {
        self.state_dir.join(ADMIN_SOCKET)
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            listen: DEFAULT_LISTEN.parse().ok(),
            log_format: LogFormat::Text,
            max_concurrent_rotations: 4,
            backstop: Duration::from_secs(300),
            admin_token_file: None,
            audit_log: None,
            audit_max_size: DEFAULT_AUDIT_MAX_SIZE,
            compat_metrics: Vec::new(),
            reload_window: DEFAULT_RELOAD_WINDOW,
            reload_max_wait: DEFAULT_RELOAD_MAX_WAIT,
        }
    }
}

/// Log output format (`log_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// An `[issuer.NAME]` table, tagged by its `type` key.
#[derive(Debug, Clone, PartialEq)]
pub enum IssuerConfig {
    /// `type = "local-ca"`: the embedded CA kept in the state dir.
    LocalCa(LocalCaConfig),
    /// `type = "acme"`: an RFC 8555 CA.
    Acme(AcmeConfig),
    /// `type = "vault"`: Vault or OpenBao PKI.
    Vault(VaultConfig),
    /// `type = "http"`: a generic HTTP key service (API keys only).
    HttpKeys(HttpKeysConfig),
    /// `type = "exec"`: commands that mint and revoke API keys.
    ExecKeys(ExecKeysConfig),
}

impl IssuerConfig {
    /// The `type` string of this issuer.
    pub fn type_name(&self) -> &'static str {
        match self {
            IssuerConfig::LocalCa(_) => "local-ca",
            IssuerConfig::Acme(_) => "acme",
            IssuerConfig::Vault(_) => "vault",
            IssuerConfig::HttpKeys(_) => "http",
            IssuerConfig::ExecKeys(_) => "exec",
        }
    }
}

/// Settings of the embedded local CA.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalCaConfig {
    /// Key type of the CA's own key.
    pub key_type: KeyType,
    /// Common name of the CA certificate.
    pub common_name: String,
    /// Validity of the CA certificate.
    pub ca_lifetime: Duration,
    /// When the next CA is created: this share (or span) of a CA's life
    /// before it ends (see [`crate::issuer::local_ca`]).
    pub ca_renew_before: Share,
}

/// Default `ca_renew_before`: the next CA exists for the last fifth of the
/// current one's life (two years of a ten-year CA), far longer than any
/// leaf lives, so apps get the new root long before a leaf signed by it.
pub const DEFAULT_CA_RENEW_BEFORE: f64 = 0.20;

impl Default for LocalCaConfig {
    fn default() -> Self {
        LocalCaConfig {
            key_type: KeyType::EcdsaP256,
            common_name: "rekey local CA".to_string(),
            ca_lifetime: Duration::from_secs(3650 * 86400),
            ca_renew_before: Share::Fraction(DEFAULT_CA_RENEW_BEFORE),
        }
    }
}

/// A private key algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA, 2048 bits.
    Rsa2048,
    /// RSA, 3072 bits.
    Rsa3072,
    /// RSA, 4096 bits.
    Rsa4096,
}

impl KeyType {
    /// Every key type, in the order shown to users.
    pub const ALL: [KeyType; 6] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    /// The config spelling, e.g. "ecdsa-p256".
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    /// The key type spelled `s` in the config, if any.
    pub fn from_name(s: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A share of lifetime ("33%") or a fixed duration ("8h").
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Share {
    /// A fraction of the lifetime: 0.33 for "33%".
    Fraction(f64),
    /// A fixed amount of time.
    Duration(Duration),
}

impl Share {
    /// the amount of `lifetime` this share stands for (a Duration share is capped at lifetime)
    pub fn of(&self, lifetime: Duration) -> Duration {
        match *self {
            // Clamp so a hand-built odd value cannot panic in mul_f64.
            Share::Fraction(f) if f.is_nan() || f <= 0.0 => Duration::ZERO,
            Share::Fraction(f) if f >= 1.0 => lifetime,
            Share::Fraction(f) => lifetime.mul_f64(f),
            Share::Duration(d) => d.min(lifetime),
        }
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Round away float noise so 0.07 shows as "7%", not "7.000000000000001%".
            Share::Fraction(x) => write!(f, "{}%", (x * 100.0 * 1e6).round() / 1e6),
            Share::Duration(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// How the files of a generation are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SwapMode {
    /// Per-file temp + fsync + rename + dir fsync.
    #[default]
    Rename,
    /// A `..data` symlink swap: all files flip at once.
    Symlink,
}

impl SwapMode {
    /// The config spelling: "rename" or "symlink".
    pub fn as_str(&self) -> &'static str {
        match self {
            SwapMode::Rename => "rename",
            SwapMode::Symlink => "symlink",
        }
    }
}

/// One `[[certificate]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateConfig {
    /// Unique name; also a directory name in the state dir.
    pub name: String,
    /// Name of the `[issuer.NAME]` that mints it.
    pub issuer: String,
    /// Subject CN: as written, else the first DNS name, else the first IP.
    pub common_name: String,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Algorithm of the certificate's key.
    pub key_type: KeyType,
    /// Lifetime asked of the issuer (>= 10s).
    pub lifetime: Duration,
    /// How long before expiry to renew.
    pub renew_before: Share,
    /// Random amount the renewal point moves earlier.
    pub jitter: Share,
    /// How files are published.
    pub swap: SwapMode,
    /// Where the files are written.
    pub files: Files,
    /// Permission bits of files holding the key.
    pub key_mode: u32,
    /// Permission bits of the other files.
    pub cert_mode: u32,
    /// Owner of the files, as written.
    pub owner: Option<String>,
    /// Group of the files, as written.
    pub group: Option<String>,
    /// `owner` resolved to a uid.
    pub uid: Option<u32>,
    /// `group` resolved to a gid.
    pub gid: Option<u32>,
    /// How the application is told to reload.
    pub reload: ReloadConfig,
    /// The credentials it shares that reload with, when its handoffs are
    /// batched with theirs (`None`: handed over alone).
    pub reload_group: Option<std::sync::Arc<ReloadGroup>>,
    /// How the handoff is verified.
    pub verify: VerifyConfig,
    /// What to do when the handoff fails.
    pub on_failure: OnFailure,
    /// What a config reload that drops this credential does with it.
    pub on_remove: OnRemove,
    /// The owning team or contact (`owner` already means the files' Unix owner).
    pub team: Option<String>,
    /// Free-form labels (shown in /status and alerts, kept out of metrics).
    pub labels: BTreeMap<String, String>,
    /// Why this credential may break `[policy]` `require_verify`.
    pub policy_waiver: Option<String>,
    /// `[policy] max_lifetime`, copied here at load: a certificate found on
    /// disk that lives longer is reissued, never adopted.
    pub policy_max_lifetime: Option<Duration>,
}

/// Check an existing state dir: a directory, readable, no group/other mode bits, owned by the user rekey runs as. A missing one is fine (it is created 0700 later).
pub fn check_state_dir(path: &Path) -> Result<(), ConfigError> {
    check_state_dir_for(path, StateDirUse::Daemon)
}

/// Who is about to use the state dir: the daemon writes keys into it; the
/// inspecting commands only read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateDirUse {
    /// `rekey run`: the dir must belong to the user rekey runs as.
    Daemon,
    /// `check`, `report`, `audit`: root may also read another user's dir,
    /// since it writes nothing there and could read it anyway.
    Inspect,
}

/// [`check_state_dir`] for a given use.
pub fn check_state_dir_for(path: &Path, usage: StateDirUse) -> Result<(), ConfigError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let bad = |message: String| ConfigError::state_dir(message);
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(bad(format!("cannot inspect {}: {e}", path.display()))),
    };
    if !meta.is_dir() {
        return Err(bad(format!(
            "{} exists but is not a directory; point state_dir at a directory",
            path.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "{} has mode {mode:04o}, but group and others must have no access (it holds private keys); fix: chmod 700 {}",
            path.display(),
            path.display()
        )));
    }
    // Even root refuses another user's state dir: its owner could read and
    // replace the keys rekey would write into it (the store checks it too).
    let (owner, me) = (meta.uid(), nix::unistd::geteuid().as_raw());
    let root_inspects = usage == StateDirUse::Inspect && me == 0;
    if owner != me && !root_inspects {
        return Err(bad(format!(
            "{} belongs to uid {owner}, not to uid {me} that rekey runs as: its owner could read and replace the keys in it; fix: chown -R {me} {}, or run rekey as its owner",
            path.display(),
            path.display()
        )));
    }
    std::fs::read_dir(path)
        .map(drop)
        .map_err(|e| bad(format!("cannot read directory {}: {e}", path.display())))
}
