//! The raw layer: the TOML shape with source spans, before any checking.
//!
//! Values that need a custom message ("allowed: ...") stay strings here and
//! are parsed in `convert`, where the key path and span are known.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::error::{unknown_key_message, ConfigError, Src};

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub daemon: Option<Spanned<RawDaemon>>,
    #[serde(default)]
    pub issuer: BTreeMap<String, Spanned<RawTagged>>,
    #[serde(default)]
    pub certificate: Vec<Spanned<RawCertificate>>,
    #[serde(default)]
    pub alert: Vec<Spanned<RawTagged>>,
    pub policy: Option<Spanned<RawTagged>>,
    #[serde(default)]
    pub api_key: Vec<Spanned<RawApiKey>>,
    #[serde(default)]
    pub watch: Vec<Spanned<RawWatch>>,
    #[serde(default)]
    pub reload_group: BTreeMap<String, Spanned<super::reload_group::RawReloadGroup>>,
}

/// `[[watch]]`: a certificate rekey monitors but never writes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWatch {
    pub name: Spanned<String>,
    pub file: Option<Spanned<String>>,
    pub endpoint: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
    pub starttls: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub alert_before: Option<Spanned<String>>,
    pub team: Option<Spanned<String>>,
    pub labels: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
}

/// `[[api_key]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApiKey {
    pub name: Spanned<String>,
    pub issuer: Spanned<String>,
    pub file: Spanned<String>,
    pub format: Option<Spanned<String>>,
    pub env_var: Option<Spanned<String>>,
    pub key_mode: Option<Spanned<toml::Value>>,
    pub owner: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub lifetime: Option<Spanned<String>>,
    pub renew_before: Option<Spanned<String>>,
    pub overlap: Option<Spanned<String>>,
    pub mint: Spanned<RawTagged>,
    pub revoke: Option<Spanned<RawTagged>>,
    pub reload: Option<Spanned<RawTagged>>,
    pub reload_group: Option<Spanned<toml::Value>>,
    pub verify: Option<Spanned<RawVerify>>,
    pub on_failure: Option<Spanned<String>>,
    pub on_remove: Option<Spanned<String>>,
}

/// `[daemon]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub state_dir: Option<Spanned<String>>,
    pub listen: Option<Spanned<String>>,
    pub log_format: Option<Spanned<String>>,
    pub max_concurrent_rotations: Option<Spanned<i64>>,
    pub backstop: Option<Spanned<String>>,
    pub admin_token_file: Option<Spanned<String>>,
    pub audit_log: Option<Spanned<String>>,
    pub audit_max_size: Option<Spanned<toml::Value>>,
    pub compat_metrics: Option<Spanned<Vec<Spanned<String>>>>,
    pub reload_window: Option<Spanned<String>>,
    pub reload_max_wait: Option<Spanned<String>>,
}

/// `[[certificate]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub name: Spanned<String>,
    pub issuer: Spanned<String>,
    pub common_name: Option<Spanned<String>>,
    #[serde(default)]
    pub dns_names: Vec<Spanned<String>>,
    #[serde(default)]
    pub ip_addresses: Vec<Spanned<String>>,
    pub key_type: Option<Spanned<String>>,
    pub lifetime: Option<Spanned<String>>,
    pub renew_before: Option<Spanned<String>>,
    pub jitter: Option<Spanned<String>>,
    pub swap: Option<Spanned<String>>,
    pub files: Option<Spanned<RawFiles>>,
    pub key_mode: Option<Spanned<toml::Value>>,
    pub cert_mode: Option<Spanned<toml::Value>>,
    pub owner: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub reload: Option<Spanned<RawTagged>>,
    pub reload_group: Option<Spanned<toml::Value>>,
    pub verify: Option<Spanned<RawVerify>>,
    pub on_failure: Option<Spanned<String>>,
    pub on_remove: Option<Spanned<String>>,
    pub team: Option<Spanned<String>>,
    pub labels: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub policy_waiver: Option<Spanned<String>>,
}

/// `files = { ... }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFiles {
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub chain: Option<Spanned<String>>,
    pub fullchain: Option<Spanned<String>>,
    pub bundle: Option<Spanned<String>>,
    pub ca: Option<Spanned<String>>,
    pub cert_der: Option<Spanned<String>>,
    pub key_der: Option<Spanned<String>>,
    pub pkcs12: Option<Spanned<String>>,
    /// A table, checked by hand for a message that shows its shape.
    pub pkcs12_password: Option<Spanned<toml::Value>>,
    pub pkcs12_legacy: Option<Spanned<bool>>,
    pub pkcs12_alias: Option<Spanned<String>>,
    /// Refused with the reason (config/files.rs).
    pub jks: Option<Spanned<String>>,
}

/// A table tagged by `type` (issuer, reload, verify).
///
/// Kept as spanned values rather than a serde internally tagged enum:
/// serde buffers such enums, which loses every span inside them.
#[derive(Deserialize)]
#[serde(transparent)]
pub(super) struct RawTagged(pub BTreeMap<String, Spanned<toml::Value>>);

/// `verify`: one probe table or a list of them.
pub(super) enum RawVerify {
    /// `verify = { type = ... }`.
    One(Spanned<RawTagged>),
    /// `verify = [{ type = ... }, ...]`.
    Many(Vec<Spanned<RawTagged>>),
}

impl<'de> Deserialize<'de> for RawVerify {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A hand-written visitor: serde's untagged enums buffer their input,
        // which would lose the spans inside.
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawVerify;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a probe table like { type = \"tls\", ... } or a list of them")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawVerify, A::Error> {
                let mut out = Vec::new();
                while let Some(t) = seq.next_element::<Spanned<RawTagged>>()? {
                    out.push(t);
                }
                Ok(RawVerify::Many(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawVerify, A::Error> {
                let mut m = BTreeMap::new();
                let (mut start, mut end) = (usize::MAX, 0);
                while let Some((k, v)) = map.next_entry::<String, Spanned<toml::Value>>()? {
                    start = start.min(v.span().start);
                    end = end.max(v.span().end);
                    m.insert(k, v);
                }
                let span = if start <= end { start..end } else { 0..0 };
                Ok(RawVerify::One(Spanned::new(span, RawTagged(m))))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads the keys of one tagged table, then reports the ones nobody read.
pub(super) struct TableReader<'s, 'a> {
    src: &'s Src<'a>,
    /// Dotted path of the table, e.g. `issuer.dev`.
    pub path: String,
    /// Span of the whole table, for errors about missing keys.
    pub span: Range<usize>,
    entries: BTreeMap<String, Spanned<toml::Value>>,
    known: Vec<&'static str>,
}

impl<'s, 'a> TableReader<'s, 'a> {
    /// Start reading `table` found at `path`.
    pub fn new(src: &'s Src<'a>, path: String, table: Spanned<RawTagged>) -> Self {
        let span = table.span();
        TableReader {
            src,
            path,
            span,
            entries: table.into_inner().0,
            known: Vec::new(),
        }
    }

    /// The dotted path of `key` in this table.
    pub fn key_path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// An error on `key` at `span`.
    pub fn err(
        &self,
        key: &str,
        span: Option<Range<usize>>,
        msg: impl Into<String>,
    ) -> ConfigError {
        self.src.err(self.key_path(key), span, msg)
    }

    /// The `type` tag, which must be one of `allowed`.
    pub fn tag(&mut self, allowed: &[&str]) -> Result<Spanned<String>, ConfigError> {
        let list = allowed.join(", ");
        let Some(value) = self.take("type") else {
            return Err(self.src.err(
                self.key_path("type"),
                Some(self.span.clone()),
                format!("required key is missing; allowed types: {list}"),
            ));
        };
        let span = value.span();
        let Some(tag) = value.get_ref().as_str() else {
            return Err(self.err(
                "type",
                Some(span),
                format!("must be a string; allowed: {list}"),
            ));
        };
        if !allowed.contains(&tag) {
            return Err(self.err(
                "type",
                Some(span),
                format!("unknown type \"{tag}\"; allowed: {list}"),
            ));
        }
        Ok(Spanned::new(span, tag.to_string()))
    }

    /// Take `key`, marking it as known whether or not it is present.
    pub fn take(&mut self, key: &'static str) -> Option<Spanned<toml::Value>> {
        self.known.push(key);
        self.entries.remove(key)
    }

    /// Take `key` as a string.
    pub fn string(&mut self, key: &'static str) -> Result<Option<Spanned<String>>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => {
                let span = v.span();
                match v.into_inner() {
                    toml::Value::String(s) => Ok(Some(Spanned::new(span, s))),
                    other => Err(self.err(
                        key,
                        Some(span),
                        format!("expected a string, found {}", other.type_str()),
                    )),
                }
            }
        }
    }

    /// Take `key` as `true` or `false`; `None` when absent.
    pub fn bool(&mut self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                toml::Value::Boolean(b) => Ok(Some(*b)),
                other => Err(self.err(
                    key,
                    Some(v.span()),
                    format!("expected true or false, found {}", other.type_str()),
                )),
            },
        }
    }

    /// Take `key` as an argv array (a program and its arguments, run without
    /// a shell); `None` when absent.
    pub fn argv(&mut self, key: &'static str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(v) = self.take(key) else {
            return Ok(None);
        };
        let span = v.span();
        let toml::Value::Array(items) = v.into_inner() else {
            return Err(self.err(
                key,
                Some(span),
                "must be an argv array like [\"systemctl\", \"reload\", \"nginx\"], run without a shell; rekey never runs a shell string",
            ));
        };
        let mut argv = Vec::with_capacity(items.len());
        for (j, item) in items.into_iter().enumerate() {
            match item {
                toml::Value::String(s) => argv.push(s),
                other => {
                    return Err(self.src.err(
                        format!("{}.{key}[{j}]", self.path),
                        Some(span),
                        format!("expected a string, found {}", other.type_str()),
                    ))
                }
            }
        }
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err(self.err(
                key,
                Some(span),
                "the program (first element) is missing or empty",
            ));
        }
        Ok(Some(argv))
    }

    /// Take `key` as a command's extra environment, `{ NAME = "value", ... }`
    /// (see [`env_table`]); empty when absent.
    pub fn env(&mut self, key: &'static str) -> Result<Vec<(String, String)>, ConfigError> {
        let Some(v) = self.take(key) else {
            return Ok(Vec::new());
        };
        let span = v.span();
        env_table(v.into_inner()).map_err(|m| self.err(key, Some(span), m))
    }

    /// Fail on the first key that no `take` asked for.
    pub fn finish(self) -> Result<(), ConfigError> {
        // Report the first unknown key in file order, not map order.
        if let Some((key, value)) = self.entries.iter().min_by_key(|(_, v)| v.span().start) {
            let allowed: Vec<String> = self.known.iter().map(|k| k.to_string()).collect();
            return Err(self.err(key, Some(value.span()), unknown_key_message(key, &allowed)));
        }
        Ok(())
    }
}

/// A command's `env = { NAME = "value", ... }`: names are `[A-Za-z_][A-Za-z0-9_]*`
/// and may not start with `REKEY_` (rekey sets those itself); values are
/// strings. Sorted by name.
pub(super) fn env_table(v: toml::Value) -> Result<Vec<(String, String)>, String> {
    const EXAMPLE: &str = "write it like env = { APP_ENV = \"prod\" }";
    let toml::Value::Table(map) = v else {
        return Err(format!("must be a table of strings; {EXAMPLE}"));
    };
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let valid = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "{name:?} is not a variable name (letters, digits and _, not starting with a digit)"
            ));
        }
        if name.to_ascii_uppercase().starts_with("REKEY_") {
            return Err(format!(
                "{name} is reserved: rekey sets the REKEY_* variables itself"
            ));
        }
        match value {
            toml::Value::String(s) if !s.contains('\0') => out.push((name, s)),
            toml::Value::String(_) => {
                return Err(format!(
                    "{name} holds a NUL byte, which no environment can carry"
                ))
            }
            other => {
                return Err(format!(
                    "{name} must be a string, found {}; {EXAMPLE}",
                    other.type_str()
                ))
            }
        }
    }
    Ok(out)
}
