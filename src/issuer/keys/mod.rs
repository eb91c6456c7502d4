//! API key issuers: mint an opaque secret with an id and a lifetime, and
//! revoke one by id. The engine knows only [`KeyIssuer`]; the Vault backend
//! sends the configured request through the issuer's [`VaultClient`].

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::config::{MintConfig, RevokeConfig};
use crate::issuer::vault::VaultClient;

mod exec;
mod http;

pub use exec::ExecKeys;
pub use http::HttpKeys;

/// A freshly minted key. The secret never reaches logs or errors.
pub struct MintedKey {
    /// The secret itself.
    pub secret: Zeroizing<String>,
    /// Its id (an accessor, a key id): safe to show.
    pub id: String,
    /// Its lease id, when the issuer leases it.
    pub lease: Option<String>,
    /// When it stops working.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for MintedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedKey")
            .field("id", &self.id)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Why minting or revoking failed; names the issuer and the path, never the secret.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The request was refused or its answer unusable (status, denial,
    /// not JSON), or a header file is unusable.
    #[error("issuer {issuer}: {op} via {path}: {why}")]
    Request {
        /// Issuer name.
        issuer: String,
        /// `mint` or `revoke`.
        op: &'static str,
        /// API path.
        path: String,
        /// The server's or transport's words.
        why: String,
    },
    /// The service was not reached or did not answer in full.
    #[error("issuer {issuer}: {op} via {path}: {source}")]
    Transport {
        /// Issuer name.
        issuer: String,
        /// `mint` or `revoke`.
        op: &'static str,
        /// API path.
        path: String,
        /// What failed (connection, TLS, proxy, deadline...); boxed to
        /// keep every `Result` of the key engine small.
        #[source]
        source: Box<crate::net::httpc::HttpError>,
    },
    /// Vault refused the request or could not be reached.
    #[error("issuer {issuer}: {op} via {path}: {source}")]
    Vault {
        /// Issuer name.
        issuer: String,
        /// `mint` or `revoke`.
        op: &'static str,
        /// API path.
        path: String,
        /// Vault's answer or the transport failure.
        #[source]
        source: Box<crate::issuer::vault::VaultError>,
    },
    /// The answer lacks a configured field.
    #[error("issuer {issuer}: mint via {path}: the answer has no {field} at \"{at}\"; check mint.{field}")]
    Field {
        /// Issuer name.
        issuer: String,
        /// API path.
        path: String,
        /// `secret`, `id`, `ttl` or `lease`.
        field: &'static str,
        /// The configured field path.
        at: String,
    },
    /// Revocation by lease, but the key has no lease id.
    #[error("issuer {issuer}: cannot revoke key {id} by lease: it has no lease id")]
    NoLease {
        /// Issuer name.
        issuer: String,
        /// Key id.
        id: String,
    },
}

/// Mints and revokes the API keys of one `[[api_key]]`.
#[async_trait]
pub trait KeyIssuer: Send + Sync {
    /// The issuer name, for messages and metrics.
    fn name(&self) -> &str;
    /// Mint a new key asking for `lifetime`.
    async fn mint(&self, lifetime: Duration) -> Result<MintedKey, KeyError>;
    /// Revoke the key `id` (with its lease, if any). `Ok` when nothing revokes keys.
    async fn revoke(&self, id: &str, lease: Option<&str>) -> Result<(), KeyError>;
}

/// Keys from Vault/OpenBao (`auth/token/create`, `database/creds/ROLE`...).
pub struct VaultKeys {
    /// The issuer's client (rekey's own token).
    pub client: VaultClient,
    /// How to mint.
    pub mint: MintConfig,
    /// How to revoke.
    pub revoke: Option<RevokeConfig>,
}

/// Follow a dotted path (`auth.client_token`) into a JSON answer.
pub fn field<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| match v {
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => v.get(k),
    })
}

/// Replace `{name}` in every string leaf of a JSON template.
pub fn fill(template: &Value, vars: &[(&str, &str)]) -> Value {
    match template {
        Value::String(s) => {
            let mut s = s.clone();
            for (k, v) in vars {
                s = s.replace(&format!("{{{k}}}"), v);
            }
            Value::String(s)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| fill(x, vars)).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, x)| (k.clone(), fill(x, vars))).collect())
        }
        other => other.clone(),
    }
}

/// Take secret, id, lease and expiry out of a mint answer, per `m`'s field paths.
pub fn read_answer(
    issuer: &str,
    m: &MintConfig,
    answer: &Value,
    lifetime: Duration,
) -> Result<MintedKey, KeyError> {
    let what = if m.path.is_empty() {
        format!("{:?}", m.command.join(" "))
    } else {
        m.path.clone()
    };
    let missing = |field: &'static str, at: &str| KeyError::Field {
        issuer: issuer.to_string(),
        path: what.clone(),
        field,
        at: at.to_string(),
    };
    let secret = field(answer, &m.secret)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| Zeroizing::new(s.to_string()))
        .ok_or_else(|| missing("secret", &m.secret))?;
    let id = field(answer, &m.id)
        .and_then(as_text)
        .ok_or_else(|| missing("id", &m.id))?;
    let lease = match &m.lease {
        Some(at) => Some(
            field(answer, at)
                .and_then(as_text)
                .ok_or_else(|| missing("lease", at))?,
        ),
        None => None,
    };
    let now = SystemTime::now();
    let expires_at = if let Some(at) = &m.ttl {
        field(answer, at)
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .filter(|s| *s > 0)
            .map(|s| now + Duration::from_secs(s))
            .ok_or_else(|| missing("ttl", at))?
    } else if let Some(at) = &m.expires {
        field(answer, at)
            .and_then(Value::as_str)
            .and_then(|s| crate::timestamp::parse(Some(s)))
            .filter(|t| *t > now)
            .ok_or_else(|| missing("expires", at))?
    } else {
        now + lifetime
    };
    Ok(MintedKey {
        secret,
        id,
        lease,
        expires_at,
    })
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[async_trait]
impl KeyIssuer for VaultKeys {
    fn name(&self) -> &str {
        self.client.name()
    }

    async fn mint(&self, lifetime: Duration) -> Result<MintedKey, KeyError> {
        let m = &self.mint;
        let ttl = format!("{}s", lifetime.as_secs().max(1));
        let body = m.body.as_ref().map(|b| fill(b, &[("lifetime", &ttl)]));
        let answer = self
            .client
            .request(&m.method, &m.path, body.as_ref())
            .await
            .map_err(|source| KeyError::Vault {
                issuer: self.name().to_string(),
                op: "mint",
                path: m.path.clone(),
                source: Box::new(source),
            })?;
        read_answer(self.name(), m, &answer, lifetime)
    }

    async fn revoke(&self, id: &str, lease: Option<&str>) -> Result<(), KeyError> {
        let (method, path, body) = match &self.revoke {
            None => return Ok(()),
            Some(RevokeConfig::Lease) => {
                let lease = lease.ok_or_else(|| KeyError::NoLease {
                    issuer: self.name().to_string(),
                    id: id.to_string(),
                })?;
                (
                    "PUT".to_string(),
                    "sys/leases/revoke".to_string(),
                    Some(serde_json::json!({ "lease_id": lease })),
                )
            }
            Some(RevokeConfig::Command(_)) => return Ok(()),
            Some(RevokeConfig::Request { method, path, body }) => {
                let vars = [("id", id), ("lease", lease.unwrap_or(""))];
                let path = path.replace("{id}", id);
                (method.clone(), path, body.as_ref().map(|b| fill(b, &vars)))
            }
        };
        self.client
            .request(&method, &path, body.as_ref())
            .await
            .map(|_| ())
            .map_err(|source| KeyError::Vault {
                issuer: self.name().to_string(),
                op: "revoke",
                path,
                source: Box::new(source),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mint(ttl: Option<&str>, expires: Option<&str>) -> MintConfig {
        MintConfig {
            method: "POST".into(),
            path: "keys".into(),
            headers: vec![],
            body: None,
            command: vec![],
            secret: "k.secret".into(),
            id: "k.id".into(),
            ttl: ttl.map(Into::into),
            expires: expires.map(Into::into),
            lease: None,
        }
    }

    #[test]
    fn answers_give_secret_id_and_expiry_and_errors_name_the_field_not_the_secret() {
        let hour = Duration::from_secs(3600);
        let a = json!({"k": {"secret": "hunter2", "id": 42, "ttl": "60", "exp": "2099-01-01T00:00:00Z"}});
        let k = read_answer("svc", &mint(Some("k.ttl"), None), &a, hour).unwrap();
        assert_eq!((k.secret.as_str(), k.id.as_str()), ("hunter2", "42"));
        let left = k.expires_at.duration_since(SystemTime::now()).unwrap();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
        let k = read_answer("svc", &mint(None, Some("k.exp")), &a, hour).unwrap();
        assert_eq!(
            crate::timestamp::rfc3339(k.expires_at),
            "2099-01-01T00:00:00Z"
        );
        assert!(!format!("{k:?}").contains("hunter2"));
        let mut m = mint(None, None);
        m.id = "k.nope".into();
        let e = read_answer("svc", &m, &a, hour).unwrap_err().to_string();
        assert!(
            e.contains("k.nope") && e.contains("svc") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn fields_and_templates() {
        let v = json!({"auth": {"client_token": "s.x", "lease_duration": 60}, "list": ["a"]});
        assert_eq!(field(&v, "auth.client_token"), Some(&json!("s.x")));
        assert_eq!(field(&v, "list.0"), Some(&json!("a")));
        assert_eq!(field(&v, "auth.nope"), None);
        let t = json!({"ttl": "{lifetime}", "p": ["{lifetime}"], "n": 1});
        assert_eq!(
            fill(&t, &[("lifetime", "60s")]),
            json!({"ttl": "60s", "p": ["60s"], "n": 1})
        );
    }
}
