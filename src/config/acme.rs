//! `[issuer.NAME]` tables with `type = "acme"`: the typed settings and their
//! parsing. Kept apart from `convert` so the ACME keys live in one place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::convert::resolve;
use super::error::ConfigError;
use super::raw::TableReader;
use super::{values, CertificateConfig};

/// Settings of an ACME (RFC 8555) issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The directory URL (https only).
    pub directory: String,
    /// Account contact URIs, e.g. `mailto:ops@example.com`.
    pub contact: Vec<String>,
    /// Extra PEM roots trusted for TLS to the CA, on top of the system roots.
    pub trust_bundle: Option<PathBuf>,
    /// How the CA is reached: the environment's proxies, none, or one proxy.
    pub proxy: super::ProxyConfig,
    /// External account binding, for CAs that require one.
    pub eab: Option<EabConfig>,
    /// Revoke the replaced certificate once a handoff of its successor is verified.
    pub revoke_replaced: bool,
    /// How identifiers are proven.
    pub challenge: ChallengeConfig,
}

/// `eab = { kid, hmac_key_file }`: the CA's key id and a file holding the
/// base64url HMAC key (never the key itself in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EabConfig {
    /// Key identifier given by the CA.
    pub kid: String,
    /// File holding the base64url-encoded HMAC key.
    pub hmac_key_file: PathBuf,
}

/// `challenge = { type = ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeConfig {
    /// http-01 answered by a built-in responder that listens only while a
    /// challenge is pending.
    Http01Listen {
        /// Address to listen on (the CA connects to port 80 of each name).
        listen: SocketAddr,
    },
    /// http-01 answered by files written under `DIR/.well-known/acme-challenge/`.
    Http01Webroot {
        /// The web server's document root.
        webroot: PathBuf,
    },
    /// dns-01 through a hook command called with `present` or `cleanup`.
    Dns01 {
        /// argv of the hook; `present`/`cleanup` is appended.
        command: Vec<String>,
        /// Wait after `present` before asking the CA to validate.
        propagation_wait: Duration,
        /// Extra environment of the hook (`env = { ... }`), on top of the allowlist.
        env: Vec<(String, String)>,
    },
}

impl ChallengeConfig {
    /// The ACME challenge type, e.g. "http-01".
    pub fn type_name(&self) -> &'static str {
        match self {
            ChallengeConfig::Http01Listen { .. } | ChallengeConfig::Http01Webroot { .. } => {
                "http-01"
            }
            ChallengeConfig::Dns01 { .. } => "dns-01",
        }
    }
}

/// The keys of an ACME issuer table, after `type` was read.
pub(super) fn issuer(t: &mut TableReader<'_, '_>, base: &Path) -> Result<AcmeConfig, ConfigError> {
    let Some(dir) = t.string("directory")? else {
        return Err(t.err(
            "directory",
            Some(t.span.clone()),
            "required key is missing; give the CA's directory URL, e.g. \"https://acme-v02.api.letsencrypt.org/directory\"",
        ));
    };
    directory_url(dir.get_ref()).map_err(|m| t.err("directory", Some(dir.span()), m))?;

    let contact = match t.take("contact") {
        None => Vec::new(),
        Some(v) => {
            let span = v.span();
            let list =
                strings(v.into_inner()).map_err(|m| t.err("contact", Some(span.clone()), m))?;
            for c in &list {
                contact_uri(c).map_err(|m| t.err("contact", Some(span.clone()), m))?;
            }
            list
        }
    };

    let trust_bundle = t
        .string("trust_bundle")?
        .map(|s| {
            if s.get_ref().is_empty() {
                Err(t.err(
                    "trust_bundle",
                    Some(s.span()),
                    "must not be empty; leave the key out to use the system roots only",
                ))
            } else {
                Ok(resolve(base, s.get_ref()))
            }
        })
        .transpose()?;

    let proxy = super::proxy::key(t)?;

    let eab = t.take("eab").map(|v| eab(t, base, v)).transpose()?;

    let revoke_replaced = t.bool("revoke_replaced")?.unwrap_or(false);

    let Some(ch) = t.take("challenge") else {
        return Err(t.err(
            "challenge",
            Some(t.span.clone()),
            "required key is missing; e.g. challenge = { type = \"http-01\", listen = \"0.0.0.0:80\" }",
        ));
    };
    let challenge = challenge(t, base, ch)?;
    Ok(AcmeConfig {
        directory: dir.into_inner(),
        contact,
        trust_bundle,
        proxy,
        eab,
        revoke_replaced,
        challenge,
    })
}

/// An https URL with a host.
fn directory_url(s: &str) -> Result<(), String> {
    let uri: http::Uri = s.parse().map_err(|e| {
        format!("invalid URL \"{s}\" ({e}); write it like \"https://ca.example/directory\"")
    })?;
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "\"{s}\" must be an https:// URL (TLS to the CA is always verified; add a private CA's root with trust_bundle)"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("\"{s}\" has no host"));
    }
    Ok(())
}

/// A contact URI: it needs a scheme, and an e-mail address needs `mailto:`.
fn contact_uri(s: &str) -> Result<(), String> {
    match s.split_once(':') {
        Some((scheme, rest))
            if !scheme.is_empty()
                && !rest.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            Ok(())
        }
        _ if s.contains('@') => Err(format!("\"{s}\" is not a URI; write \"mailto:{s}\"")),
        _ => Err(format!(
            "\"{s}\" is not a URI; write contacts like \"mailto:ops@example.com\""
        )),
    }
}

/// An array of strings.
fn strings(v: toml::Value) -> Result<Vec<String>, String> {
    let toml::Value::Array(items) = v else {
        return Err(format!(
            "expected an array of strings, found {}",
            v.type_str()
        ));
    };
    items
        .into_iter()
        .map(|i| match i {
            toml::Value::String(s) => Ok(s),
            other => Err(format!(
                "expected an array of strings, found an element of type {}",
                other.type_str()
            )),
        })
        .collect()
}

/// Split an inline table's value into its keys, or say it is not a table.
fn table(
    t: &TableReader<'_, '_>,
    key: &str,
    v: &Spanned<toml::Value>,
) -> Result<toml::map::Map<String, toml::Value>, ConfigError> {
    match v.get_ref() {
        toml::Value::Table(m) => Ok(m.clone()),
        other => Err(t.err(
            key,
            Some(v.span()),
            format!("expected a table, found {}", other.type_str()),
        )),
    }
}

/// Fail on a key of a nested table that is not among `allowed`.
fn only(
    t: &TableReader<'_, '_>,
    key: &str,
    v: &Spanned<toml::Value>,
    m: &toml::map::Map<String, toml::Value>,
    allowed: &[&str],
) -> Result<(), ConfigError> {
    if let Some(bad) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        return Err(t.err(
            &format!("{key}.{bad}"),
            Some(v.span()),
            super::error::unknown_key_message(bad, &allowed),
        ));
    }
    Ok(())
}

/// A string key of a nested table.
fn nested_string(
    t: &TableReader<'_, '_>,
    key: &str,
    v: &Spanned<toml::Value>,
    m: &toml::map::Map<String, toml::Value>,
    field: &str,
) -> Result<Option<String>, ConfigError> {
    match m.get(field) {
        None => Ok(None),
        Some(toml::Value::String(s)) if s.trim().is_empty() => Err(t.err(
            &format!("{key}.{field}"),
            Some(v.span()),
            "must not be empty",
        )),
        Some(toml::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(t.err(
            &format!("{key}.{field}"),
            Some(v.span()),
            format!("expected a string, found {}", other.type_str()),
        )),
    }
}

/// `eab = { kid = "...", hmac_key_file = "..." }`.
fn eab(
    t: &TableReader<'_, '_>,
    base: &Path,
    v: Spanned<toml::Value>,
) -> Result<EabConfig, ConfigError> {
    let m = table(t, "eab", &v)?;
    only(t, "eab", &v, &m, &["kid", "hmac_key_file"])?;
    let missing = |field: &str| {
        t.err(
            &format!("eab.{field}"),
            Some(v.span()),
            "required key is missing; write eab = { kid = \"KEY_ID\", hmac_key_file = \"/etc/rekey/eab-hmac\" }",
        )
    };
    let kid = nested_string(t, "eab", &v, &m, "kid")?.ok_or_else(|| missing("kid"))?;
    let file = nested_string(t, "eab", &v, &m, "hmac_key_file")?
        .ok_or_else(|| missing("hmac_key_file"))?;
    Ok(EabConfig {
        kid,
        hmac_key_file: resolve(base, &file),
    })
}

/// `challenge = { type = "http-01" | "dns-01", ... }`.
fn challenge(
    t: &TableReader<'_, '_>,
    base: &Path,
    v: Spanned<toml::Value>,
) -> Result<ChallengeConfig, ConfigError> {
    let m = table(t, "challenge", &v)?;
    let kind = nested_string(t, "challenge", &v, &m, "type")?.ok_or_else(|| {
        t.err(
            "challenge.type",
            Some(v.span()),
            "required key is missing; allowed types: http-01, dns-01",
        )
    })?;
    match kind.as_str() {
        "http-01" => http01(t, base, &v, &m),
        "dns-01" => dns01(t, &v, &m),
        other => Err(t.err(
            "challenge.type",
            Some(v.span()),
            format!("unknown challenge type \"{other}\"; allowed: http-01, dns-01"),
        )),
    }
}

/// The http-01 keys of the `challenge` table `v` (entries `m`): exactly one
/// of `listen` (the built-in responder) and `webroot`.
fn http01(
    t: &TableReader<'_, '_>,
    base: &Path,
    v: &Spanned<toml::Value>,
    m: &toml::map::Map<String, toml::Value>,
) -> Result<ChallengeConfig, ConfigError> {
    only(t, "challenge", v, m, &["type", "listen", "webroot"])?;
    let listen = nested_string(t, "challenge", v, m, "listen")?;
    let webroot = nested_string(t, "challenge", v, m, "webroot")?;
    match (listen, webroot) {
        (Some(l), None) => {
            let listen = l.parse::<SocketAddr>().map_err(|_| {
                t.err(
                    "challenge.listen",
                    Some(v.span()),
                    format!("invalid address \"{l}\"; write IP:PORT like \"0.0.0.0:80\""),
                )
            })?;
            Ok(ChallengeConfig::Http01Listen { listen })
        }
        (None, Some(w)) => Ok(ChallengeConfig::Http01Webroot {
            webroot: resolve(base, &w),
        }),
        _ => Err(t.err(
            "challenge",
            Some(v.span()),
            "http-01 needs exactly one of listen = \"IP:PORT\" (built-in responder) or webroot = \"DIR\" (files served by your web server)",
        )),
    }
}

/// The dns-01 keys of the `challenge` table `v` (entries `m`): the hook's
/// `command` (required), `propagation_wait` and `env`.
fn dns01(
    t: &TableReader<'_, '_>,
    v: &Spanned<toml::Value>,
    m: &toml::map::Map<String, toml::Value>,
) -> Result<ChallengeConfig, ConfigError> {
    only(
        t,
        "challenge",
        v,
        m,
        &["type", "command", "propagation_wait", "env"],
    )?;
    let command = match m.get("command") {
        None => Vec::new(),
        Some(c) => {
            strings(c.clone()).map_err(|msg| t.err("challenge.command", Some(v.span()), msg))?
        }
    };
    if command.first().is_none_or(|c| c.is_empty()) {
        return Err(t.err(
            "challenge.command",
            Some(v.span()),
            "dns-01 needs command = [\"/path/to/hook\", ARGS...] (an argv array, run without a shell)",
        ));
    }
    let propagation_wait = match nested_string(t, "challenge", v, m, "propagation_wait")? {
        None => Duration::ZERO,
        Some(s) => values::duration(&s)
            .map_err(|msg| t.err("challenge.propagation_wait", Some(v.span()), msg))?,
    };
    let env = match m.get("env") {
        None => Vec::new(),
        Some(e) => super::raw::env_table(e.clone())
            .map_err(|msg| t.err("challenge.env", Some(v.span()), msg))?,
    };
    Ok(ChallengeConfig::Dns01 {
        command,
        propagation_wait,
        env,
    })
}

/// Names a certificate may ask of this ACME issuer: wildcards need dns-01,
/// and dns-01 cannot prove IP addresses.
pub(super) fn check_names(acme: &AcmeConfig, cert: &CertificateConfig) -> Result<(), String> {
    match acme.challenge {
        ChallengeConfig::Dns01 { .. } => match cert.ip_addresses.first() {
            Some(ip) => Err(format!(
                "IP address {ip} cannot be validated with dns-01; use an http-01 issuer for IP addresses"
            )),
            None => Ok(()),
        },
        _ => match cert.dns_names.iter().find(|n| n.starts_with("*.")) {
            Some(n) => Err(format!(
                "wildcard name \"{n}\" can only be validated with dns-01; use an issuer with challenge = {{ type = \"dns-01\", ... }}"
            )),
            None => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, IssuerConfig};

    const FILE: &str = "/etc/rekey/rekey.toml";

    fn parse(issuer: &str, names: &str) -> Result<AcmeConfig, ConfigError> {
        let text = format!(
            "[issuer.le]\ntype = \"acme\"\n{issuer}\n\n[[certificate]]\nname = \"web\"\nissuer = \"le\"\n{names}\nfiles = {{ cert = \"/t/c.pem\", key = \"/t/k.pem\" }}\n"
        );
        let cfg = Config::parse(&text, Path::new(FILE))?;
        match cfg.issuers.get("le") {
            Some(IssuerConfig::Acme(a)) => Ok(a.clone()),
            other => panic!("not an acme issuer: {other:?}"),
        }
    }

    const DIR: &str = "directory = \"https://ca.test/dir\"";
    const DNS: &str = "dns_names = [\"a.test\"]";

    #[test]
    fn every_key_parses_and_relative_paths_resolve() {
        let a = parse(
            &format!("{DIR}\ncontact = [\"mailto:ops@a.test\"]\ntrust_bundle = \"roots.pem\"\neab = {{ kid = \"k1\", hmac_key_file = \"eab/hmac\" }}\nrevoke_replaced = true\nchallenge = {{ type = \"dns-01\", command = [\"/bin/hook\", \"-v\"], propagation_wait = \"30s\", env = {{ DNS_ZONE = \"a.test\" }} }}"),
            DNS,
        )
        .unwrap();
        assert_eq!(a.directory, "https://ca.test/dir");
        assert_eq!(a.contact, ["mailto:ops@a.test"]);
        assert_eq!(
            a.trust_bundle.as_deref(),
            Some(Path::new("/etc/rekey/roots.pem"))
        );
        let eab = a.eab.unwrap();
        assert_eq!(
            (eab.kid.as_str(), eab.hmac_key_file.as_path()),
            ("k1", Path::new("/etc/rekey/eab/hmac"))
        );
        assert!(a.revoke_replaced);
        assert_eq!(
            a.challenge,
            ChallengeConfig::Dns01 {
                command: vec!["/bin/hook".into(), "-v".into()],
                propagation_wait: Duration::from_secs(30),
                env: vec![("DNS_ZONE".into(), "a.test".into())],
            }
        );
        let a = parse(
            &format!("{DIR}\nchallenge = {{ type = \"http-01\", webroot = \"www\" }}"),
            DNS,
        )
        .unwrap();
        assert_eq!(
            a.challenge,
            ChallengeConfig::Http01Webroot {
                webroot: "/etc/rekey/www".into()
            }
        );
        assert!(!a.revoke_replaced && a.contact.is_empty() && a.eab.is_none());
        let a = parse(
            &format!("{DIR}\nchallenge = {{ type = \"http-01\", listen = \"[::]:80\" }}"),
            DNS,
        )
        .unwrap();
        assert_eq!(
            a.challenge,
            ChallengeConfig::Http01Listen {
                listen: "[::]:80".parse().unwrap()
            }
        );
    }

    #[test]
    fn bad_acme_tables_name_the_key_and_line() {
        let listen = "challenge = { type = \"http-01\", listen = \"0.0.0.0:80\" }";
        let cases: Vec<(String, &str, &str, &str)> = vec![
            (listen.into(), DNS, "issuer.le.directory", "required key is missing"),
            (format!("directory = \"http://ca.test/dir\"\n{listen}"), DNS, "issuer.le.directory", "https://"),
            (format!("directory = \"not a url\"\n{listen}"), DNS, "issuer.le.directory", "invalid URL"),
            (DIR.into(), DNS, "issuer.le.challenge", "required key is missing"),
            (format!("{DIR}\ncontact = [\"ops@a.test\"]\n{listen}"), DNS, "issuer.le.contact", "mailto:ops@a.test"),
            (format!("{DIR}\ncontact = \"mailto:x@a.test\"\n{listen}"), DNS, "issuer.le.contact", "array of strings"),
            (format!("{DIR}\nrevoke_replaced = \"yes\"\n{listen}"), DNS, "issuer.le.revoke_replaced", "true or false"),
            (format!("{DIR}\ndirectroy = \"x\"\n{listen}"), DNS, "issuer.le.directroy", "did you mean `directory`?"),
            (format!("{DIR}\nchallenge = {{ type = \"tls-alpn-01\" }}"), DNS, "issuer.le.challenge.type", "allowed: http-01, dns-01"),
            (format!("{DIR}\nchallenge = {{ type = \"http-01\" }}"), DNS, "issuer.le.challenge", "exactly one of listen"),
            (format!("{DIR}\nchallenge = {{ type = \"http-01\", listen = \"80\" }}"), DNS, "issuer.le.challenge.listen", "IP:PORT"),
            (format!("{DIR}\nchallenge = {{ type = \"http-01\", listen = \"0.0.0.0:80\", webrot = \"/w\" }}"), DNS, "issuer.le.challenge.webrot", "did you mean `webroot`?"),
            (format!("{DIR}\nchallenge = {{ type = \"dns-01\" }}"), DNS, "issuer.le.challenge.command", "argv array"),
            (format!("{DIR}\nchallenge = {{ type = \"dns-01\", command = \"/bin/hook present\" }}"), DNS, "issuer.le.challenge.command", "array of strings"),
            (format!("{DIR}\nchallenge = {{ type = \"dns-01\", command = [\"/h\"], propagation_wait = \"soon\" }}"), DNS, "issuer.le.challenge.propagation_wait", "invalid duration"),
            (format!("{DIR}\nchallenge = {{ type = \"dns-01\", command = [\"/h\"], env = {{ REKEY_DNS_VALUE = \"x\" }} }}"), DNS, "issuer.le.challenge.env", "reserved"),
            (format!("{DIR}\nchallenge = {{ type = \"dns-01\", command = [\"/h\"], env = {{ TOKEN = 3 }} }}"), DNS, "issuer.le.challenge.env", "must be a string"),
            (format!("{DIR}\neab = {{ kid = \"k\" }}\n{listen}"), DNS, "issuer.le.eab.hmac_key_file", "required key is missing"),
            (format!("{DIR}\neab = {{ kid = \"k\", hmac_key = \"c2VjcmV0\", hmac_key_file = \"/f\" }}\n{listen}"), DNS, "issuer.le.eab.hmac_key", "allowed: kid, hmac_key_file"),
            (format!("{DIR}\n{listen}"), "dns_names = [\"*.a.test\"]", "certificate[0].dns_names", "only be validated with dns-01"),
            (format!("{DIR}\nchallenge = {{ type = \"dns-01\", command = [\"/h\"] }}"), "dns_names = [\"a.test\"]\nip_addresses = [\"192.0.2.1\"]", "certificate[0].dns_names", "cannot be validated with dns-01"),
        ];
        for (issuer, names, key, part) in cases {
            let err = parse(&issuer, names).expect_err(&issuer);
            assert_eq!(err.key(), key, "{issuer}: {err}");
            assert!(err.to_string().contains(part), "{issuer}: {err}");
            assert!(err.line().is_some(), "{issuer}: no line in {err}");
        }
    }
}
