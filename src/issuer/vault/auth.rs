//! rekey's own Vault token: obtained by the configured method, held in
//! memory only (zeroized on drop), renewed with `renew-self` once 2/3 of
//! its TTL has passed, replaced by a fresh login when it cannot be renewed,
//! has run out or was revoked.
//!
//! A background task renews it too, so a token survives the long gaps
//! between certificate renewals. It sleeps on one timer set to the renewal
//! point and never logs in by itself: logins happen only when a request
//! needs a token (each login may use up one of a secret id's uses).

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::sync::Notify;
use zeroize::{Zeroize, Zeroizing};

use super::client::{AbortOnDrop, Inner};
use super::error::VaultError;
use crate::config::VaultAuth;
use crate::fs::safefile::{self, Guard};

/// A token in memory. Its secret is zeroized on drop and never printed.
pub(crate) struct Token {
    secret: Zeroizing<String>,
    /// When `ttl` was measured.
    at: Instant,
    /// Time left at `at`; `None` for a token that never expires.
    ttl: Option<Duration>,
    /// Whether renew-self may still extend it: false for non-renewable
    /// tokens and once a renewal came back short (capped by its max TTL).
    renewable: bool,
    /// TTL the token was made with; a renewal that returns less is capped.
    full_ttl: Duration,
    /// `token` method: the token file as it was when read.
    stamp: Option<FileStamp>,
    /// After a failed background renewal: when to try again.
    retry_at: Option<Instant>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .field("renewable", &self.renewable)
            .finish()
    }
}

/// What to do with the current token before a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Use it as is.
    Use,
    /// Past 2/3 of its TTL and renewable: renew-self.
    Renew,
    /// Expired, or past 2/3 and not renewable: get a new one.
    Replace,
}

impl Token {
    fn new(secret: Zeroizing<String>, ttl: u64, renewable: bool, full_ttl: u64) -> Token {
        Token {
            secret,
            at: Instant::now(),
            // Vault reports 0 for tokens without expiry (root, some service tokens).
            ttl: (ttl > 0).then(|| Duration::from_secs(ttl)),
            renewable: renewable && ttl > 0,
            full_ttl: Duration::from_secs(full_ttl.max(ttl)),
            stamp: None,
            retry_at: None,
        }
    }

    /// When renewal is due: 2/3 of the TTL after it was measured.
    fn renewal_point(&self) -> Option<Instant> {
        self.ttl.map(|ttl| self.at + ttl * 2 / 3)
    }

    /// Whether the token has run out (with a small margin, so a request
    /// does not start with a token that dies on the way).
    fn expired(&self, now: Instant) -> bool {
        match self.ttl {
            None => false,
            Some(ttl) => {
                let margin = (ttl / 20).min(Duration::from_secs(5));
                now.saturating_duration_since(self.at) + margin >= ttl
            }
        }
    }

    /// What to do before using the token at `now`.
    pub(crate) fn step(&self, now: Instant) -> Step {
        if self.expired(now) {
            return Step::Replace;
        }
        match self.renewal_point() {
            Some(point) if now >= point => {
                if self.renewable {
                    Step::Renew
                } else {
                    Step::Replace
                }
            }
            _ => Step::Use,
        }
    }

    /// The token after a renewal that granted `ttl` seconds.
    fn renewed(mut self, ttl: u64, renewable: bool) -> Token {
        let granted = Duration::from_secs(ttl);
        self.at = Instant::now();
        self.ttl = (ttl > 0).then_some(granted);
        // A shorter grant than the token's own TTL means its max TTL is
        // near: renewing again would only shrink it further, so the next
        // step is a new login.
        self.renewable = renewable && ttl > 0 && granted >= self.full_ttl;
        self.retry_at = None;
        self
    }
}

/// A file's identity and version: a change means re-read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: (u64, u64),
}

impl FileStamp {
    fn of(what: &'static str, path: &Path) -> Result<FileStamp, VaultError> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|e| VaultError::File {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: (meta.dev(), meta.ino()),
        })
    }
}

/// The trimmed content of a secret file, zeroized on drop.
pub(crate) fn read_secret(
    what: &'static str,
    path: &Path,
) -> Result<Zeroizing<String>, VaultError> {
    let err = |reason: String| VaultError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    // A secret: refused when other users can write it, a WARN when they can
    // read it; never blocks on a FIFO, never reads past the cap.
    let raw = safefile::read_guarded(path, what, Guard::Secret, safefile::MAX_SECRET)
        .and_then(|b| safefile::text(path, b))
        .map_err(|e| err(e.reason()))?;
    let trimmed = Zeroizing::new(raw.trim().to_string());
    if trimmed.is_empty() {
        return Err(err("the file is empty".to_string()));
    }
    Ok(trimmed)
}

/// Overwrite every string in a parsed answer (login answers hold tokens).
fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(o) => o.values_mut().for_each(wipe),
        _ => {}
    }
}

/// `auth.client_token`, `auth.lease_duration`, `auth.renewable` of a login
/// or renew-self answer.
fn auth_block(path: &str, mut v: Value) -> Result<(Zeroizing<String>, u64, bool), VaultError> {
    let bad = |why: &str| VaultError::Answer {
        method: "POST".to_string(),
        path: format!("/v1/{path}"),
        why: why.to_string(),
    };
    let auth = v.get_mut("auth").ok_or_else(|| bad("no auth block"))?;
    let secret = match auth.get_mut("client_token").map(Value::take) {
        Some(Value::String(s)) if !s.is_empty() => Zeroizing::new(s),
        _ => return Err(bad("no auth.client_token")),
    };
    let ttl = auth
        .get("lease_duration")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let renewable = auth
        .get("renewable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    wipe(&mut v);
    Ok((secret, ttl, renewable))
}

impl Inner {
    /// A usable token: the current one, renewed or replaced as needed.
    pub(super) async fn token(self: &Arc<Self>) -> Result<Zeroizing<String>, VaultError> {
        self.start_renewer();
        let mut slot = self.token.lock().await;
        if let VaultAuth::Token { token_file } = &self.auth {
            // A new token written to the file replaces ours whatever its TTL.
            let stamp = FileStamp::of("token_file", token_file)?;
            if slot
                .as_ref()
                .is_some_and(|t| t.stamp.as_ref() != Some(&stamp))
            {
                tracing::info!(issuer = %self.name, "token_file changed; using the new token");
                *slot = None;
            }
        }
        if let Some(current) = slot.take() {
            let now = Instant::now();
            *slot = match current.step(now) {
                Step::Use => Some(current),
                Step::Replace => None,
                Step::Renew => match self.renew(&current).await {
                    Ok((ttl, renewable)) => {
                        self.changed.notify_one();
                        Some(current.renewed(ttl, renewable))
                    }
                    // Revoked or expired under us: log in below.
                    Err(e) if e.status() == Some(403) => None,
                    Err(e) if current.expired(Instant::now()) => return Err(e),
                    Err(e) => {
                        tracing::warn!(issuer = %self.name, error = %e, "cannot renew the Vault token; using it while it lasts");
                        Some(current)
                    }
                },
            };
        }
        if let Some(t) = slot.as_ref() {
            return Ok(t.secret.clone());
        }
        let fresh = self.login().await?;
        let secret = fresh.secret.clone();
        *slot = Some(fresh);
        self.changed.notify_one();
        Ok(secret)
    }

    /// Forget `secret` if it is still the current token (another request
    /// may have replaced it already).
    pub(super) async fn invalidate(&self, secret: &str) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.secret.as_str() == secret) {
            *slot = None;
        }
    }

    /// A new token by the configured method.
    async fn login(&self) -> Result<Token, VaultError> {
        let (path, body) = match &self.auth {
            VaultAuth::Token { token_file } => return self.token_from_file(token_file).await,
            VaultAuth::AppRole {
                role_id_file,
                secret_id_file,
                mount,
            } => {
                let role_id = read_secret("role_id_file", role_id_file)?;
                let secret_id = read_secret("secret_id_file", secret_id_file)?;
                let body = json!({ "role_id": role_id.as_str(), "secret_id": secret_id.as_str() });
                (format!("auth/{mount}/login"), body)
            }
            VaultAuth::Kubernetes {
                role,
                jwt_file,
                mount,
            } => {
                // Re-read every time: the kubelet rotates projected tokens.
                let jwt = read_secret("jwt_file", jwt_file)?;
                (
                    format!("auth/{mount}/login"),
                    json!({ "role": role, "jwt": jwt.as_str() }),
                )
            }
        };
        let mut body = body;
        let bytes = body.to_string().into_bytes();
        wipe(&mut body);
        let resp = self.send("POST", &path, Some(bytes), None).await?;
        let answer = self.answer("POST", &path, resp)?;
        let (secret, ttl, renewable) = auth_block(&path, answer)?;
        tracing::info!(issuer = %self.name, method = self.auth.method(), ttl_s = ttl, renewable, "logged in to Vault");
        Ok(Token::new(secret, ttl, renewable, ttl))
    }

    /// `token` method: read the file, then ask Vault how long the token lives.
    async fn token_from_file(&self, path: &Path) -> Result<Token, VaultError> {
        let stamp = FileStamp::of("token_file", path)?;
        let secret = read_secret("token_file", path)?;
        let resp = self
            .send("GET", "auth/token/lookup-self", None, Some(&secret))
            .await?;
        let mut answer = match self.answer("GET", "auth/token/lookup-self", resp) {
            Ok(a) => a,
            Err(VaultError::Status {
                status: 403,
                errors,
                ..
            }) => {
                return Err(VaultError::TokenFile {
                    path: path.to_path_buf(),
                    why: format!("was refused by Vault (lookup-self answered HTTP 403: {errors})"),
                })
            }
            Err(e) => return Err(e),
        };
        let data = answer.get("data");
        let num = |k: &str| {
            data.and_then(|d| d.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let (ttl, full) = (num("ttl"), num("creation_ttl"));
        let renewable = data
            .and_then(|d| d.get("renewable"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        wipe(&mut answer);
        tracing::info!(issuer = %self.name, ttl_s = ttl, renewable, "read the Vault token from token_file");
        let mut token = Token::new(secret, ttl, renewable, full);
        token.stamp = Some(stamp);
        Ok(token)
    }

    /// renew-self; the granted TTL and whether it stays renewable.
    async fn renew(&self, token: &Token) -> Result<(u64, bool), VaultError> {
        const PATH: &str = "auth/token/renew-self";
        let resp = self
            .send("POST", PATH, Some(b"{}".to_vec()), Some(&token.secret))
            .await?;
        let answer = self.answer("POST", PATH, resp)?;
        let (_same_token, ttl, renewable) = auth_block(PATH, answer)?;
        tracing::debug!(issuer = %self.name, ttl_s = ttl, renewable, "renewed the Vault token");
        Ok((ttl, renewable))
    }

    /// Start the background renewal task once, from inside the runtime.
    fn start_renewer(self: &Arc<Self>) {
        self.renewer.get_or_init(|| {
            let weak = Arc::downgrade(self);
            let changed = self.changed.clone();
            AbortOnDrop(tokio::spawn(renew_loop(weak, changed)))
        });
    }

    /// When the background task should next renew, if ever.
    async fn next_renewal(&self) -> Option<Instant> {
        let slot = self.token.lock().await;
        let t = slot.as_ref()?;
        if !t.renewable || t.expired(Instant::now()) {
            return None;
        }
        let point = t.renewal_point()?;
        Some(t.retry_at.map_or(point, |r| r.max(point)))
    }

    /// The background renewal: renew if due; on a transient failure try
    /// again halfway to expiry, so the attempts stay few.
    async fn renew_in_background(&self) {
        let mut slot = self.token.lock().await;
        let Some(current) = slot.take() else { return };
        let now = Instant::now();
        if current.step(now) != Step::Renew || current.retry_at.is_some_and(|r| now < r) {
            *slot = Some(current);
            return;
        }
        *slot = match self.renew(&current).await {
            Ok((ttl, renewable)) => Some(current.renewed(ttl, renewable)),
            Err(e) if e.status() == Some(403) => {
                tracing::info!(issuer = %self.name, "Vault refused to renew rekey's token (revoked?); the next request logs in again");
                None
            }
            Err(e) => {
                let mut current = current;
                let left = current
                    .ttl
                    .map(|ttl| (current.at + ttl).saturating_duration_since(Instant::now()))
                    .unwrap_or_default();
                if left / 2 >= Duration::from_secs(1) {
                    current.retry_at = Some(Instant::now() + left / 2);
                } else {
                    current.renewable = false;
                }
                tracing::warn!(issuer = %self.name, error = %e, "cannot renew the Vault token; will retry");
                Some(current)
            }
        };
    }
}

/// Sleep until the renewal point (or a token change), renew, repeat. Holds
/// only a weak reference while asleep so the client can be dropped.
async fn renew_loop(weak: Weak<Inner>, changed: Arc<Notify>) {
    loop {
        let next = match weak.upgrade() {
            Some(inner) => inner.next_renewal().await,
            None => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = changed.notified() => continue,
                }
            }
            None => {
                changed.notified().await;
                continue;
            }
        }
        match weak.upgrade() {
            Some(inner) => inner.renew_in_background().await,
            None => return,
        }
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
