//! `[issuer.NAME] type = "vault"`: certificates from Vault or OpenBao PKI.
//!
//! ```toml
//! [issuer.vault]
//! type = "vault"
//! address = "https://vault.internal:8200"
//! trust_bundle = "/etc/rekey/vault-ca.pem"   # extra roots; TLS is always verified
//! namespace = "team-a"                       # sent as X-Vault-Namespace
//! pki_mount = "pki"                          # default "pki"
//! pki_role = "web"                           # required
//! server_keygen = false                      # true: pki/issue, the key crosses the network
//! timeout = "30s"                            # per request
//! auth = { method = "approle", role_id_file = "/etc/rekey/role-id", secret_id_file = "/etc/rekey/secret-id" }
//! ```
//!
//! Only file paths are kept here: tokens, secret ids and JWTs are read from
//! their files when they are used, so no secret ever sits in a `Config`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::Uri;
use toml::Spanned;

use super::convert::{resolve, value};
use super::error::{ConfigError, Src};
use super::raw::{RawTagged, TableReader};
use super::values;

/// Default `pki_mount`.
pub const DEFAULT_PKI_MOUNT: &str = "pki";
/// Default `timeout` of one request to Vault.
pub const DEFAULT_VAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `jwt_file` of the kubernetes method: the pod's service account token.
pub const DEFAULT_JWT_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// The auth methods, in the order shown to users.
const METHODS: [&str; 3] = ["token", "approle", "kubernetes"];

/// Settings of a Vault / OpenBao issuer.
#[derive(Debug, Clone, PartialEq)]
pub struct VaultConfig {
    /// Base URL (http or https, no query), without a trailing slash; the API
    /// lives under `{address}/v1/`.
    pub address: String,
    /// Extra PEM roots for https, besides the platform's.
    pub trust_bundle: Option<PathBuf>,
    /// How Vault is reached: the environment's proxies, none, or one proxy.
    pub proxy: super::ProxyConfig,
    /// Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// Mount path of the PKI secrets engine, without slashes at the ends.
    pub pki_mount: String,
    /// The PKI role to sign (or issue) with.
    pub pki_role: String,
    /// Use `pki/issue` (Vault generates the key and sends it back) instead
    /// of `pki/sign` with our CSR.
    pub server_keygen: bool,
    /// Deadline of one HTTP request.
    pub timeout: Duration,
    /// How rekey gets its token.
    pub auth: VaultAuth,
}

/// `auth = { method = ... }`: where rekey's Vault token comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum VaultAuth {
    /// A token kept in a file by someone else; re-read when the file changes.
    Token {
        /// File holding the token.
        token_file: PathBuf,
    },
    /// AppRole login with a role id and a secret id, each read from a file.
    AppRole {
        /// File holding the role id.
        role_id_file: PathBuf,
        /// File holding the secret id.
        secret_id_file: PathBuf,
        /// Mount path of the approle auth method.
        mount: String,
    },
    /// Kubernetes login with the pod's service account JWT.
    Kubernetes {
        /// The Vault role to log in as.
        role: String,
        /// File holding the JWT (re-read at every login: it is rotated).
        jwt_file: PathBuf,
        /// Mount path of the kubernetes auth method.
        mount: String,
    },
}

impl VaultAuth {
    /// The `method` string.
    pub fn method(&self) -> &'static str {
        match self {
            VaultAuth::Token { .. } => "token",
            VaultAuth::AppRole { .. } => "approle",
            VaultAuth::Kubernetes { .. } => "kubernetes",
        }
    }
}

/// The keys of a `type = "vault"` table (its `type` already taken), read
/// in the order a missing or bad key is reported: where Vault is and how it
/// is reached, the PKI engine and role, the request settings, then auth.
pub(super) fn vault(
    src: &Src<'_>,
    base: &Path,
    t: &mut TableReader<'_, '_>,
) -> Result<VaultConfig, ConfigError> {
    let address = required_address(src, t)?;
    let trust_bundle = file_key(t, base, "trust_bundle")?;
    let proxy = super::proxy::key(t)?;
    let namespace = namespace(src, t)?;
    let (pki_mount, pki_role) = pki(src, t)?;
    let server_keygen = t.bool("server_keygen")?.unwrap_or(false);
    let timeout = timeout(src, t)?;
    let auth = required_auth(src, base, t)?;
    Ok(VaultConfig {
        address,
        trust_bundle,
        proxy,
        namespace,
        pki_mount,
        pki_role,
        server_keygen,
        timeout,
        auth,
    })
}

/// `address`, required: the Vault URL.
fn required_address(src: &Src<'_>, t: &mut TableReader<'_, '_>) -> Result<String, ConfigError> {
    match t.string("address")? {
        Some(a) => value(src, &t.key_path("address"), &a, address),
        None => Err(t.err(
            "address",
            Some(t.span.clone()),
            "required key is missing; write the Vault URL like \"https://vault.internal:8200\"",
        )),
    }
}

/// `namespace`, without slashes at the ends.
fn namespace(src: &Src<'_>, t: &mut TableReader<'_, '_>) -> Result<Option<String>, ConfigError> {
    let Some(n) = t.string("namespace")? else {
        return Ok(None);
    };
    value(src, &t.key_path("namespace"), &n, |s| {
        mount_path(s).map(|_| s.trim_matches('/').to_string())
    })
    .map(Some)
}

/// `pki_mount` (default `pki`) and `pki_role` (required).
fn pki(src: &Src<'_>, t: &mut TableReader<'_, '_>) -> Result<(String, String), ConfigError> {
    let mount = match t.string("pki_mount")? {
        Some(m) => value(src, &t.key_path("pki_mount"), &m, mount_path)?,
        None => DEFAULT_PKI_MOUNT.to_string(),
    };
    let role = match t.string("pki_role")? {
        Some(r) => value(src, &t.key_path("pki_role"), &r, role_name)?,
        None => {
            return Err(t.err(
                "pki_role",
                Some(t.span.clone()),
                "required key is missing; name the PKI role to sign with (pki/roles/NAME)",
            ))
        }
    };
    Ok((mount, role))
}

/// `timeout` of one request: longer than nothing (default 30 s).
fn timeout(src: &Src<'_>, t: &mut TableReader<'_, '_>) -> Result<Duration, ConfigError> {
    let Some(s) = t.string("timeout")? else {
        return Ok(DEFAULT_VAULT_TIMEOUT);
    };
    let d = value(src, &t.key_path("timeout"), &s, values::duration)?;
    if d.is_zero() {
        return Err(t.err("timeout", Some(s.span()), "must be longer than 0s"));
    }
    Ok(d)
}

/// `auth`, required: how rekey gets its token.
fn required_auth(
    src: &Src<'_>,
    base: &Path,
    t: &mut TableReader<'_, '_>,
) -> Result<VaultAuth, ConfigError> {
    match t.take("auth") {
        Some(a) => auth(src, base, &t.key_path("auth"), a),
        None => Err(t.err(
            "auth",
            Some(t.span.clone()),
            format!(
                "required key is missing; write auth = {{ method = \"...\", ... }}; allowed: {}",
                METHODS.join(", ")
            ),
        )),
    }
}

/// `auth = { method = ..., ... }`.
fn auth(
    src: &Src<'_>,
    base: &Path,
    path: &str,
    raw: Spanned<toml::Value>,
) -> Result<VaultAuth, ConfigError> {
    let span = raw.span();
    let entries = auth_entries(src, path, raw)?;
    let mut t = TableReader::new(
        src,
        path.to_string(),
        Spanned::new(span.clone(), RawTagged(entries)),
    );
    let method = match t.string("method")? {
        Some(m) => m,
        None => {
            return Err(t.err(
                "method",
                Some(span),
                format!("required key is missing; allowed: {}", METHODS.join(", ")),
            ))
        }
    };
    let auth = match method.get_ref().as_str() {
        "token" => VaultAuth::Token {
            token_file: required_file(&mut t, base, "token_file", &span)?,
        },
        "approle" => VaultAuth::AppRole {
            role_id_file: required_file(&mut t, base, "role_id_file", &span)?,
            secret_id_file: required_file(&mut t, base, "secret_id_file", &span)?,
            mount: auth_mount(src, &mut t, "approle")?,
        },
        "kubernetes" => {
            let role = match t.string("role")? {
                Some(r) => value(src, &t.key_path("role"), &r, role_name)?,
                None => return Err(t.err(
                    "role",
                    Some(span),
                    "required key is missing; name the Vault role bound to this service account",
                )),
            };
            VaultAuth::Kubernetes {
                role,
                jwt_file: file_key(&mut t, base, "jwt_file")?
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_JWT_FILE)),
                mount: auth_mount(src, &mut t, "kubernetes")?,
            }
        }
        other => {
            return Err(t.err(
                "method",
                Some(method.span()),
                format!(
                    "unknown auth method \"{other}\"; allowed: {}",
                    METHODS.join(", ")
                ),
            ))
        }
    };
    t.finish()?;
    Ok(auth)
}

/// The `auth` table's entries, each located at the table; a secret
/// written inline is refused.
fn auth_entries(
    src: &Src<'_>,
    path: &str,
    raw: Spanned<toml::Value>,
) -> Result<BTreeMap<String, Spanned<toml::Value>>, ConfigError> {
    let span = raw.span();
    let toml::Value::Table(table) = raw.into_inner() else {
        return Err(src.err(
            path,
            Some(span),
            "must be a table like { method = \"approle\", role_id_file = \"...\", secret_id_file = \"...\" }",
        ));
    };
    // toml::Value keeps no spans of its own: errors inside point at the
    // auth table, which is usually one line.
    let entries: BTreeMap<String, Spanned<toml::Value>> = table
        .into_iter()
        .map(|(k, v)| (k, Spanned::new(span.clone(), v)))
        .collect();
    // A secret written inline would sit in the config and its backups.
    for (inline, file) in [
        ("token", "token_file"),
        ("role_id", "role_id_file"),
        ("secret_id", "secret_id_file"),
        ("jwt", "jwt_file"),
    ] {
        if entries.contains_key(inline) {
            return Err(src.err(
                format!("{path}.{inline}"),
                Some(span),
                format!("secrets are never written in the config; put it in a file readable only by rekey and set {file}"),
            ));
        }
    }
    Ok(entries)
}

/// An optional path key, resolved against the config's directory.
fn file_key(
    t: &mut TableReader<'_, '_>,
    base: &Path,
    key: &'static str,
) -> Result<Option<PathBuf>, ConfigError> {
    match t.string(key)? {
        Some(s) if s.get_ref().trim().is_empty() => Err(t.err(
            key,
            Some(s.span()),
            "must not be empty; name a file, or leave the key out",
        )),
        Some(s) => Ok(Some(resolve(base, s.get_ref()))),
        None => Ok(None),
    }
}

/// A required path key.
fn required_file(
    t: &mut TableReader<'_, '_>,
    base: &Path,
    key: &'static str,
    table: &Range<usize>,
) -> Result<PathBuf, ConfigError> {
    file_key(t, base, key)?.ok_or_else(|| {
        t.err(
            key,
            Some(table.clone()),
            "required key is missing; name the file that holds it (secrets are never written in the config)",
        )
    })
}

/// `mount`, defaulting to the method's name.
fn auth_mount(
    src: &Src<'_>,
    t: &mut TableReader<'_, '_>,
    default: &str,
) -> Result<String, ConfigError> {
    match t.string("mount")? {
        Some(m) => value(src, &t.key_path("mount"), &m, mount_path),
        None => Ok(default.to_string()),
    }
}

/// An http(s) URL without query, fragment or credentials; trailing '/' dropped.
fn address(s: &str) -> Result<String, String> {
    let hint = "write it like \"https://vault.internal:8200\"";
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("\"{s}\" is not a URL ({e}); {hint}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("\"{s}\" is not an http:// or https:// URL; {hint}"));
    }
    match uri.authority() {
        Some(a) if a.as_str().contains('@') => {
            return Err(format!(
                "\"{s}\" holds user:password; Vault credentials go in auth"
            ))
        }
        Some(a) if !a.host().is_empty() => {}
        _ => return Err(format!("\"{s}\" has no host; {hint}")),
    }
    if uri.query().is_some() || s.contains('#') {
        return Err(format!("\"{s}\" must not have a query or fragment; {hint}"));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// A mount path such as "pki" or "pki/intermediate": segments of letters,
/// digits, '-', '_' and '.', no empty or dot-only segment.
fn mount_path(s: &str) -> Result<String, String> {
    let trimmed = s.trim_matches('/');
    let ok = !trimmed.is_empty()
        && trimmed.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    if ok {
        Ok(trimmed.to_string())
    } else {
        Err(format!(
            "invalid path \"{s}\"; use letters, digits, '-', '_' and '.', segments separated by '/'"
        ))
    }
}

/// A role name: one path segment.
fn role_name(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
    {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid role name \"{s}\"; use letters, digits, '-', '_', '.' and '@'"
        ))
    }
}
