//! API keys from a generic HTTP key service: mint and revoke with requests
//! described in the config; secret, id and expiry read from the JSON answer.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use zeroize::Zeroizing;

use super::{fill, read_answer, KeyError, KeyIssuer, MintedKey};
use crate::config::{HeaderSource, HttpKeysConfig, MintConfig, RevokeConfig};
use crate::fs::safefile::{self, Guard};
use crate::net::httpc::{self, Call};

/// One `[[api_key]]` minted by a `type = "http"` issuer.
pub struct HttpKeys {
    name: String,
    cfg: HttpKeysConfig,
    mint: MintConfig,
    revoke: Option<RevokeConfig>,
    http: httpc::Client,
}

impl HttpKeys {
    /// Set up; reads each header file once so a missing one stops the start.
    pub fn new(
        name: &str,
        cfg: &HttpKeysConfig,
        mint: &MintConfig,
        revoke: Option<&RevokeConfig>,
    ) -> Result<HttpKeys, KeyError> {
        let setup = |why: String| KeyError::Request {
            issuer: name.to_string(),
            op: "setup",
            path: cfg.base_url.clone(),
            why,
        };
        let http = httpc::Client::remote(httpc::Remote {
            url: &cfg.base_url,
            trust_bundle: cfg.trust_bundle.as_deref(),
            proxy: &cfg.proxy,
            keep_alive: true,
        })
        .map_err(|e| setup(e.to_string()))?;
        let keys = HttpKeys {
            name: name.to_string(),
            cfg: cfg.clone(),
            mint: mint.clone(),
            revoke: revoke.cloned(),
            http,
        };
        keys.headers(&[]).map_err(setup)?;
        Ok(keys)
    }

    /// The issuer's headers (files read now, so rotated tokens are picked
    /// up) followed by `extra`. Values are never put into errors.
    fn headers(
        &self,
        extra: &[(String, String)],
    ) -> Result<Vec<(String, Zeroizing<String>)>, String> {
        let mut out = Vec::new();
        for h in &self.cfg.headers {
            let v = match &h.value {
                HeaderSource::Inline(v) => Zeroizing::new(v.clone()),
                HeaderSource::File(p) => {
                    // A secret: bounded, never blocking, refused when other
                    // users can write it.
                    let key = format!("issuer.{}.headers.{}", self.name, h.name);
                    let raw = safefile::read_guarded(p, &key, Guard::Secret, safefile::MAX_SECRET)
                        .and_then(|b| safefile::text(p, b))
                        .map_err(|e| format!("header {}: {e}", h.name))?;
                    Zeroizing::new(raw.trim_end_matches(['\r', '\n']).to_string())
                }
            };
            out.push((h.name.clone(), v));
        }
        out.extend(
            extra
                .iter()
                .map(|(k, v)| (k.clone(), Zeroizing::new(v.clone()))),
        );
        Ok(out)
    }

    async fn send(
        &self,
        op: &'static str,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<httpc::Response, KeyError> {
        let fail = |why: String| KeyError::Request {
            issuer: self.name.clone(),
            op,
            path: path.to_string(),
            why,
        };
        let url = format!("{}/{}", self.cfg.base_url, path.trim_start_matches('/'));
        let transport = |source| KeyError::Transport {
            issuer: self.name.clone(),
            op,
            path: path.to_string(),
            source: Box::new(source),
        };
        let mut call = Call::named(method, url, self.cfg.timeout).map_err(transport)?;
        for (name, value) in self.headers(headers).map_err(fail)? {
            call = call.header(&name, &value).map_err(transport)?;
        }
        if let Some(b) = body {
            call = call.body("application/json", b.to_string().into_bytes());
        }
        self.http.send(call).await.map_err(transport)
    }
}

#[async_trait]
impl KeyIssuer for HttpKeys {
    fn name(&self) -> &str {
        &self.name
    }

    async fn mint(&self, lifetime: Duration) -> Result<MintedKey, KeyError> {
        let m = &self.mint;
        let ttl = format!("{}s", lifetime.as_secs().max(1));
        let body = m.body.as_ref().map(|b| fill(b, &[("lifetime", &ttl)]));
        let r = self
            .send("mint", &m.method, &m.path, &m.headers, body.as_ref())
            .await?;
        let fail = |why: String| KeyError::Request {
            issuer: self.name.clone(),
            op: "mint",
            path: m.path.clone(),
            why,
        };
        if !(200..300).contains(&r.status) {
            // The body is not shown: a misbehaving service could echo a secret.
            return Err(fail(format!("HTTP {}", r.status)));
        }
        let body = Zeroizing::new(r.body);
        let answer: Value = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("the answer is not JSON ({e})")))?;
        read_answer(&self.name, m, &answer, lifetime)
    }

    async fn revoke(&self, id: &str, lease: Option<&str>) -> Result<(), KeyError> {
        let Some(RevokeConfig::Request { method, path, body }) = &self.revoke else {
            return Ok(());
        };
        let path = path.replace("{id}", id);
        let body = body
            .as_ref()
            .map(|b| fill(b, &[("id", id), ("lease", lease.unwrap_or(""))]));
        let r = self
            .send("revoke", method, &path, &[], body.as_ref())
            .await?;
        // 404/410: the service no longer knows the key, which is what we want.
        if (200..300).contains(&r.status) || r.status == 404 || r.status == 410 {
            Ok(())
        } else {
            Err(KeyError::Request {
                issuer: self.name.clone(),
                op: "revoke",
                path,
                why: format!("HTTP {}", r.status),
            })
        }
    }
}
