//! `VaultClient`: one Vault (or OpenBao) server as seen by rekey. It sends
//! authenticated JSON requests under `/v1/`, with the namespace header, and
//! keeps rekey's own token alive (see `auth`). The PKI issuer uses it, and
//! so can any later Vault-backed credential (API keys, database creds).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Mutex, Notify};
use zeroize::{Zeroize, Zeroizing};

use super::auth::Token;
use super::error::{errors_text, VaultError};
use crate::config::{VaultAuth, VaultConfig};
use crate::net::httpc::{self, Call};

/// A Vault API client; cheap to clone (clones share the token).
#[derive(Clone)]
pub struct VaultClient {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token: only where and how.
        f.debug_struct("VaultClient")
            .field("issuer", &self.inner.name)
            .field("address", &self.inner.address)
            .field("namespace", &self.inner.namespace)
            .field("auth", &self.inner.auth.method())
            .finish()
    }
}

/// State shared by clones and the background renewal task.
pub(super) struct Inner {
    /// Issuer name, for logs.
    pub name: String,
    /// Base URL, no trailing slash.
    pub address: String,
    /// Sent as `X-Vault-Namespace` when set.
    pub namespace: Option<String>,
    /// The HTTP client (TLS roots, proxy, keep-alive).
    pub http: httpc::Client,
    /// Deadline of one request.
    pub timeout: Duration,
    /// How the token is obtained.
    pub auth: VaultAuth,
    /// rekey's current token; the lock also serialises logins and renewals.
    pub token: Mutex<Option<Token>>,
    /// Woken when the token changes, so the renewal timer is re-armed.
    pub changed: Arc<Notify>,
    /// The background renewal task, started with the first token.
    pub renewer: OnceLock<AbortOnDrop>,
}

/// Aborts a task when dropped (the renewal task dies with its client).
pub(super) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl VaultClient {
    /// A client for the issuer `name`. Reads each secret file once so that a
    /// missing or unreadable file stops the daemon at start, not at the
    /// first renewal hours later; nothing is sent to Vault yet.
    pub fn new(name: &str, cfg: &VaultConfig) -> Result<VaultClient, VaultError> {
        let http = httpc::Client::remote(httpc::Remote {
            url: &cfg.address,
            trust_bundle: cfg.trust_bundle.as_deref(),
            proxy: &cfg.proxy,
            keep_alive: true,
        })?;
        match &cfg.auth {
            VaultAuth::Token { token_file } => {
                super::auth::read_secret("token_file", token_file)?;
            }
            VaultAuth::AppRole {
                role_id_file,
                secret_id_file,
                ..
            } => {
                super::auth::read_secret("role_id_file", role_id_file)?;
                super::auth::read_secret("secret_id_file", secret_id_file)?;
            }
            VaultAuth::Kubernetes { jwt_file, .. } => {
                super::auth::read_secret("jwt_file", jwt_file)?;
            }
        }
        Ok(VaultClient {
            inner: Arc::new(Inner {
                name: name.to_string(),
                address: cfg.address.clone(),
                namespace: cfg.namespace.clone(),
                http,
                timeout: cfg.timeout,
                auth: cfg.auth.clone(),
                token: Mutex::new(None),
                changed: Arc::new(Notify::new()),
                renewer: OnceLock::new(),
            }),
        })
    }

    /// Send `method` to `/v1/{path}` with rekey's token and return the JSON
    /// answer (`Null` for an empty body). A 403 caused by a revoked or
    /// expired token triggers one fresh login and one retry.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, VaultError> {
        let inner = &self.inner;
        let bytes = body.map(|b| b.to_string().into_bytes());
        let token = inner.token().await?;
        let resp = inner
            .send(method, path, bytes.clone(), Some(&token))
            .await?;
        // A 403 is either a policy denial or a dead token; only lookup-self
        // tells them apart, and only a dead token is worth a new login
        // (logins can use up a secret id's allowed uses).
        if resp.status == 403 && !inner.token_is_valid(&token).await {
            tracing::info!(issuer = %inner.name, path = %format!("/v1/{path}"), "Vault no longer accepts rekey's token (revoked or expired); getting a new one");
            inner.invalidate(&token).await;
            let token = inner.token().await?;
            let resp = inner.send(method, path, bytes, Some(&token)).await?;
            return inner.answer(method, path, resp);
        }
        inner.answer(method, path, resp)
    }

    /// The issuer name this client belongs to.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
}

impl Inner {
    /// One HTTP exchange with `/v1/{path}`; transport failures become
    /// `Unreachable`, any status is returned as is.
    pub(super) async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> Result<httpc::Response, VaultError> {
        let url = format!("{}/v1/{path}", self.address);
        let unreachable = |source| VaultError::Unreachable {
            method: method.to_string(),
            path: format!("/v1/{path}"),
            address: self.address.clone(),
            source,
        };
        let mut call = Call::named(method, url, self.timeout)
            .map_err(unreachable)?
            // Vault asks clients to send it (a guard against browser-driven SSRF).
            .header("x-vault-request", "true")
            .map_err(unreachable)?;
        if let Some(ns) = &self.namespace {
            call = call.header("x-vault-namespace", ns).map_err(unreachable)?;
        }
        if let Some(t) = token {
            // The header's copy of the token lives in the request's buffers
            // until they are freed; the token itself stays zeroized.
            call = call.header("x-vault-token", t).map_err(unreachable)?;
        }
        if let Some(b) = body {
            call = call.body("application/json", b);
        }
        self.http.send(call).await.map_err(unreachable)
    }

    /// A 2xx answer's JSON, or a `Status` error with Vault's errors. The
    /// body is wiped once parsed: login answers carry a token.
    pub(super) fn answer(
        &self,
        method: &str,
        path: &str,
        mut resp: httpc::Response,
    ) -> Result<Value, VaultError> {
        let out = if (200..300).contains(&resp.status) {
            if resp.body.iter().all(u8::is_ascii_whitespace) {
                Ok(Value::Null)
            } else {
                serde_json::from_slice(&resp.body).map_err(|e| VaultError::Answer {
                    method: method.to_string(),
                    path: format!("/v1/{path}"),
                    why: format!("the body is not JSON ({e})"),
                })
            }
        } else {
            let retry_after = if resp.status == 429 || resp.status >= 500 {
                resp.retry_after()
            } else {
                None
            };
            Err(VaultError::Status {
                method: method.to_string(),
                path: format!("/v1/{path}"),
                status: resp.status,
                errors: errors_text(&resp.body),
                retry_after,
            })
        };
        resp.body.zeroize();
        out
    }

    /// Whether Vault still accepts `token` (lookup-self is allowed by the
    /// default policy). Anything but a 403 counts as valid: we cannot tell.
    pub(super) async fn token_is_valid(&self, token: &Zeroizing<String>) -> bool {
        match self
            .send("GET", "auth/token/lookup-self", None, Some(token))
            .await
        {
            Ok(mut resp) => {
                // The answer repeats the token itself (`data.id`).
                resp.body.zeroize();
                resp.status != 403
            }
            Err(_) => true,
        }
    }
}
