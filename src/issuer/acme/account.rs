//! The ACME account: its key is created once and kept 0600 in
//! `<state_dir>/acme/<issuer>/`, and registered idempotently.
//!
//! newAccount is sent here rather than through instant-acme because its
//! builder either generates a fresh key per attempt (contact + EAB) or sends
//! neither contact nor EAB (bring-your-own key). Writing the key to disk
//! *before* the request and signing it ourselves means a crash or timeout at
//! any point retries with the same key, and the CA answers with the account
//! it already has instead of creating another (RFC 8555 §7.3.1).

use std::path::PathBuf;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use aws_lc_rs::{hmac, signature};
use base64::prelude::{Engine, BASE64_URL_SAFE_NO_PAD as B64};
use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use super::http::Http;
use super::{AcmeError, Directory};
use crate::config::EabConfig;
use crate::fs::safefile::{self, Guard};

/// How often one request is re-sent after `badNonce`.
pub(super) const NONCE_RETRIES: u32 = 10;

/// The account key, PKCS#8 DER, kept zeroized.
pub(super) struct AccountKey {
    pkcs8: Zeroizing<Vec<u8>>,
    pair: EcdsaKeyPair,
}

impl AccountKey {
    /// The PKCS#8 DER, for instant-acme.
    pub(super) fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    fn jwk(&self) -> serde_json::Value {
        // Uncompressed point: 0x04 || x || y.
        let point = self.pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        json!({"crv": "P-256", "kty": "EC", "x": B64.encode(x), "y": B64.encode(y)})
    }
}

/// What is stored next to the key once the CA accepted it.
#[derive(Serialize, Deserialize)]
pub(super) struct Registration {
    /// The directory the account belongs to.
    pub directory: String,
    /// The account URL (the `kid` of every later request).
    pub url: String,
}

/// Files of one issuer's account.
pub(super) struct AccountFiles {
    dir: PathBuf,
}

impl AccountFiles {
    pub(super) fn new(dir: PathBuf) -> AccountFiles {
        AccountFiles { dir }
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("account.key")
    }

    fn reg_path(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    /// The account key, created (0600) on first use.
    pub(super) fn key(&self) -> Result<AccountKey, AcmeError> {
        let path = self.key_path();
        let state = |reason: String| AcmeError::State {
            path: path.clone(),
            reason,
        };
        if !path.exists() {
            let rng = SystemRandom::new();
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| state("cannot generate an account key".into()))?;
            let pem = Zeroizing::new(pem::encode(&pem::Pem::new(
                "PRIVATE KEY",
                doc.as_ref().to_vec(),
            )));
            crate::fs::write_private_dir(&self.dir).map_err(|e| state(e.to_string()))?;
            crate::fs::write_file_atomic(&path, pem.as_bytes(), 0o600)
                .map_err(|e| state(e.to_string()))?;
            tracing::info!(path = %path.display(), "created the ACME account key");
        }
        let text = read_state(&path).map_err(|e| state(e.to_string()))?;
        let parsed = pem::parse(text.as_bytes()).map_err(|_| {
            state("not a PEM private key; remove it to create a new account".into())
        })?;
        let pkcs8 = Zeroizing::new(parsed.into_contents());
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).map_err(|_| {
                state("not a P-256 PKCS#8 key; remove it to create a new account".into())
            })?;
        Ok(AccountKey { pkcs8, pair })
    }

    /// The stored registration, if it is for `directory`.
    pub(super) fn registration(&self, directory: &str) -> Option<Registration> {
        let text = read_state(&self.reg_path()).ok()?;
        let reg: Registration = serde_json::from_str(&text).ok()?;
        (reg.directory == directory).then_some(reg)
    }

    /// Remember the account URL for `directory`.
    pub(super) fn save(&self, reg: &Registration) -> Result<(), AcmeError> {
        let path = self.reg_path();
        let bytes = serde_json::to_vec_pretty(reg).map_err(|e| AcmeError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        crate::fs::write_file_atomic(&path, &bytes, 0o600).map_err(|e| AcmeError::State {
            path,
            reason: e.to_string(),
        })
    }

    /// Drop the registration (the key stays: registering it again is idempotent).
    pub(super) fn forget(&self) {
        let _ = std::fs::remove_file(self.reg_path());
    }

    /// The ARI id of the last certificate issued here for `credential`.
    pub(super) fn last_issued(&self, credential: &str) -> Option<String> {
        let text = read_state(&self.dir.join("issued").join(credential)).ok()?;
        Some(text.trim().to_string()).filter(|s| !s.is_empty())
    }

    /// Remember the ARI id of the certificate just issued for `credential`,
    /// so the next order can say which one it `replaces`.
    pub(super) fn remember_issued(&self, credential: &str, id: &str) -> Result<(), AcmeError> {
        let dir = self.dir.join("issued");
        let path = dir.join(credential);
        crate::fs::write_private_dir(&dir)
            .and_then(|()| crate::fs::write_file_atomic(&path, id.as_bytes(), 0o600))
            .map_err(|e| AcmeError::State {
                path,
                reason: e.to_string(),
            })
    }

    /// The directory holding the files.
    #[cfg(test)]
    pub(super) fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

/// A file of the account's own (in the state dir): bounded, never blocking,
/// and a symlink is not followed (rekey writes none there).
fn read_state(path: &std::path::Path) -> Result<Zeroizing<String>, safefile::ReadError> {
    let opts = safefile::Options {
        follow: false,
        max: safefile::MAX_SECRET,
    };
    let (bytes, _) = safefile::read_with(path, opts)?;
    safefile::text(path, bytes)
}

/// The EAB HMAC key from its file: base64url, as CAs hand it out.
pub(super) fn eab_key(eab: &EabConfig) -> Result<Zeroizing<Vec<u8>>, String> {
    let path = &eab.hmac_key_file;
    // A secret: bounded, never blocking, refused when other users can write it.
    let text = safefile::read_guarded(
        path,
        "eab.hmac_key_file",
        Guard::Secret,
        safefile::MAX_SECRET,
    )
    .and_then(|b| safefile::text(path, b))
    .map_err(|e| format!("eab.hmac_key_file: {e}"))?;
    let trimmed = text.trim().trim_end_matches('=');
    let key = base64::prelude::BASE64_URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::prelude::BASE64_STANDARD_NO_PAD.decode(trimmed))
        // Never echo the file's content: it is a secret.
        .map_err(|_| {
            format!(
                "eab.hmac_key_file {} is not base64url text (the HMAC key as the CA gave it)",
                path.display()
            )
        })?;
    if key.is_empty() {
        return Err(format!("eab.hmac_key_file {} is empty", path.display()));
    }
    Ok(Zeroizing::new(key))
}

/// A flattened JWS.
fn jws(
    protected: &serde_json::Value,
    payload: &[u8],
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<serde_json::Value, String> {
    let protected = B64.encode(serde_json::to_vec(protected).map_err(|e| e.to_string())?);
    let payload = B64.encode(payload);
    let signature = sign(format!("{protected}.{payload}").as_bytes())?;
    Ok(json!({"protected": protected, "payload": payload, "signature": B64.encode(signature)}))
}

/// Register `key` with the CA (or find the account it already has); returns the account URL.
pub(super) async fn register(
    http: &Http,
    dir: &Directory,
    key: &AccountKey,
    contact: &[String],
    eab: Option<(&str, &[u8])>,
    ctx: &super::Ctx<'_>,
) -> Result<String, AcmeError> {
    let mut payload = json!({"termsOfServiceAgreed": true, "contact": contact});
    if let Some((kid, hmac_key)) = eab {
        let protected = json!({"alg": "HS256", "kid": kid, "url": dir.new_account});
        let jwk = serde_json::to_vec(&key.jwk())
            .map_err(|e| ctx.protocol("newAccount", e.to_string()))?;
        let hkey = hmac::Key::new(hmac::HMAC_SHA256, hmac_key);
        let binding = jws(&protected, &jwk, |m| {
            Ok(hmac::sign(&hkey, m).as_ref().to_vec())
        })
        .map_err(|e| ctx.protocol("newAccount", e))?;
        payload["externalAccountBinding"] = binding;
    }
    let payload =
        serde_json::to_vec(&payload).map_err(|e| ctx.protocol("newAccount", e.to_string()))?;
    let rng = SystemRandom::new();
    let mut nonce = None;
    for _ in 0..=NONCE_RETRIES {
        let n = match nonce.take() {
            Some(n) => n,
            None => fresh_nonce(http, dir, ctx).await?,
        };
        let protected =
            json!({"alg": "ES256", "jwk": key.jwk(), "nonce": n, "url": dir.new_account});
        let body = jws(&protected, &payload, |m| {
            key.pair
                .sign(&rng, m)
                .map(|s: signature::Signature| s.as_ref().to_vec())
                .map_err(|_| "signing failed".to_string())
        })
        .map_err(|e| ctx.protocol("newAccount", e))?;
        let body =
            serde_json::to_vec(&body).map_err(|e| ctx.protocol("newAccount", e.to_string()))?;
        let answer = http
            .send(
                Method::POST,
                &dir.new_account,
                Some((body, "application/jose+json")),
            )
            .await
            .map_err(|e| ctx.unreachable(e))?;
        if (200..300).contains(&answer.status) {
            return answer
                .location
                .ok_or_else(|| ctx.protocol("newAccount", "the CA sent no account URL".into()));
        }
        let problem: instant_acme::Problem = serde_json::from_slice(&answer.body)
            .map_err(|_| ctx.status("newAccount", answer.status))?;
        if problem.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce") {
            nonce = answer.nonce;
            continue;
        }
        return Err(ctx.problem("newAccount", None, problem));
    }
    Err(ctx.protocol(
        "newAccount",
        format!("the CA rejected {NONCE_RETRIES} nonces in a row"),
    ))
}

/// A nonce from newNonce.
async fn fresh_nonce(
    http: &Http,
    dir: &Directory,
    ctx: &super::Ctx<'_>,
) -> Result<String, AcmeError> {
    let answer = http
        .send(Method::HEAD, &dir.new_nonce, None)
        .await
        .map_err(|e| ctx.unreachable(e))?;
    answer
        .nonce
        .ok_or_else(|| ctx.protocol("newNonce", "the CA sent no Replay-Nonce".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_is_created_once_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let files = AccountFiles::new(tmp.path().join("acme").join("le"));
        let a = files.key().unwrap();
        let b = files.key().unwrap();
        assert_eq!(a.pkcs8(), b.pkcs8());
        let mode = std::fs::metadata(files.dir().join("account.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn registration_is_per_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let files = AccountFiles::new(tmp.path().to_path_buf());
        files
            .save(&Registration {
                directory: "https://a/dir".into(),
                url: "https://a/acct/1".into(),
            })
            .unwrap();
        assert_eq!(
            files.registration("https://a/dir").unwrap().url,
            "https://a/acct/1"
        );
        assert!(files.registration("https://b/dir").is_none());
    }

    #[test]
    fn eab_key_decodes_base64url_and_never_echoes() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("hmac");
        std::fs::write(
            &p,
            "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W\n",
        )
        .unwrap();
        let cfg = EabConfig {
            kid: "kid-1".into(),
            hmac_key_file: p.clone(),
        };
        assert_eq!(eab_key(&cfg).unwrap().len(), 48);
        std::fs::write(&p, "not base64 !!! s3cr3t").unwrap();
        let err = eab_key(&cfg).unwrap_err();
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}
