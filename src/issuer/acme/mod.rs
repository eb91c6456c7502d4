//! ACME (RFC 8555) issuer on instant-acme: the key stays local and only the
//! CSR is sent; the account lives in `<state_dir>/acme/<issuer>/`; ARI
//! (RFC 9773) windows come from the directory's `renewalInfo`.

mod account;
mod ari;
mod challenge;
mod http;
mod order;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use instant_acme::{Account, Problem, RevocationReason};
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::Deserialize;
use zeroize::Zeroizing;

use self::account::{AccountFiles, Registration};
use self::challenge::Http01Listener;
use self::http::{take_hints, with_hints, Http};
use super::{IssueRequest, Issued, Issuer, IssuerError, RenewalWindow, Revocation};
use crate::config::{AcmeConfig, ChallengeConfig};
use crate::net::httpc::HttpError;

/// Why an ACME operation failed; every message names the CA's directory and,
/// where there is one, the identifier. Never holds a key or the EAB secret.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// No usable answer from the CA (connection, TLS, proxy, timeout).
    #[error("cannot reach the ACME CA at {directory}: {source}")]
    Unreachable {
        /// Directory URL.
        directory: String,
        /// What failed.
        #[source]
        source: HttpError,
    },
    /// The CA refused a request; `kind` is the ACME problem type.
    #[error("ACME CA {directory} refused {step} for {identifier}: {detail} ({kind})")]
    Rejected {
        /// Directory URL.
        directory: String,
        /// The protocol step, e.g. "validation".
        step: &'static str,
        /// The identifier(s) concerned, or "the account".
        identifier: String,
        /// Problem type without the `urn:ietf:params:acme:error:` prefix.
        kind: String,
        /// The CA's problem detail.
        detail: String,
    },
    /// Rate limited or a server error: try again later.
    #[error("ACME CA {directory} is rate limiting or failing ({step}): {detail}")]
    Busy {
        /// Directory URL.
        directory: String,
        /// The protocol step.
        step: &'static str,
        /// The CA's problem detail and status.
        detail: String,
        /// The CA's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// An answer that does not follow the protocol.
    #[error("ACME CA {directory}: {step}: {detail}")]
    Protocol {
        /// Directory URL.
        directory: String,
        /// The protocol step.
        step: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// An order stayed pending or processing past our deadline.
    #[error("ACME CA {directory}: {step} still not done after {}s", waited.as_secs())]
    Timeout {
        /// Directory URL.
        directory: String,
        /// The protocol step.
        step: &'static str,
        /// How long we waited.
        waited: Duration,
        /// A `Retry-After` beyond the deadline, if that was the reason.
        retry_after: Option<Duration>,
    },
    /// A challenge could not be set up (responder, webroot, DNS hook).
    #[error("{challenge} challenge for {identifier}: {reason}")]
    Challenge {
        /// The identifier being proven.
        identifier: String,
        /// The challenge type.
        challenge: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The account files in the state dir are unusable.
    #[error("ACME account state {}: {reason}", path.display())]
    State {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
}

impl AcmeError {
    /// The delay the CA asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AcmeError::Busy { retry_after, .. } | AcmeError::Timeout { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The transport failure, when the CA was not reached or did not answer
    /// in full.
    pub fn transport(&self) -> Option<&HttpError> {
        match self {
            AcmeError::Unreachable { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The ACME problem type, for errors that came from one.
    fn kind(&self) -> Option<&str> {
        match self {
            AcmeError::Rejected { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

/// Where errors happen: builds [`AcmeError`]s with the directory in them.
pub(super) struct Ctx<'a> {
    directory: &'a str,
}

impl Ctx<'_> {
    fn unreachable(&self, source: HttpError) -> AcmeError {
        AcmeError::Unreachable {
            directory: self.directory.to_string(),
            source,
        }
    }

    /// A non-success HTTP status without a problem document (a proxy's
    /// error page, a directory that is down): 429 and 5xx are "try later",
    /// with the response's `Retry-After`; anything else breaks the protocol.
    fn status(&self, step: &'static str, status: u16) -> AcmeError {
        let hints = take_hints();
        if status == 429 || status >= 500 {
            return AcmeError::Busy {
                directory: self.directory.to_string(),
                step,
                detail: format!("HTTP {status} without a problem document"),
                retry_after: hints.retry_after,
            };
        }
        self.protocol(step, format!("HTTP {status} without a problem document"))
    }

    fn protocol(&self, step: &'static str, detail: String) -> AcmeError {
        AcmeError::Protocol {
            directory: self.directory.to_string(),
            step,
            detail,
        }
    }

    /// Classify a problem document; `identifier` is what the step was about.
    fn problem(&self, step: &'static str, identifier: Option<&str>, p: Problem) -> AcmeError {
        let hints = take_hints();
        let kind = p
            .r#type
            .as_deref()
            .unwrap_or("")
            .trim_start_matches("urn:ietf:params:acme:error:")
            .to_string();
        let status = p.status.or(hints.status).unwrap_or(0);
        let mut detail = p.detail.clone().unwrap_or_else(|| "no detail".into());
        let mut idents: Vec<String> = Vec::new();
        for sp in &p.subproblems {
            let who = sp
                .identifier
                .as_ref()
                .map(|i| i.authorized(false).to_string())
                .unwrap_or_default();
            detail.push_str(&format!(
                "; {who}: {}",
                sp.detail.as_deref().unwrap_or("no detail")
            ));
            if !who.is_empty() {
                idents.push(who);
            }
        }
        if kind == "rateLimited" || kind == "serverInternal" || status >= 500 || status == 429 {
            return AcmeError::Busy {
                directory: self.directory.to_string(),
                step,
                detail: format!("{detail} ({kind}, HTTP {status})"),
                retry_after: hints.retry_after,
            };
        }
        let identifier = if !idents.is_empty() {
            idents.join(", ")
        } else {
            identifier.unwrap_or("the account").to_string()
        };
        AcmeError::Rejected {
            directory: self.directory.to_string(),
            step,
            identifier,
            kind,
            detail,
        }
    }

    /// Classify an instant-acme error.
    fn acme(
        &self,
        step: &'static str,
        identifier: Option<&str>,
        e: instant_acme::Error,
    ) -> AcmeError {
        match e {
            instant_acme::Error::Api(p) => self.problem(step, identifier, p),
            // Our client's errors travel through instant-acme boxed.
            instant_acme::Error::Other(inner) => match inner.downcast::<HttpError>() {
                Ok(e) => self.unreachable(*e),
                Err(other) => self.protocol(step, other.to_string()),
            },
            instant_acme::Error::Json(j) => {
                self.protocol(step, format!("the answer is not the expected JSON: {j}"))
            }
            other => self.protocol(step, other.to_string()),
        }
    }
}

/// Whether `e` is a `badNonce` rejection (safe to resend: the CA did nothing).
fn is_bad_nonce(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p) if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce"))
}

/// The directory fields rekey reads itself (instant-acme keeps its own copy).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Directory {
    new_nonce: String,
    new_account: String,
    #[serde(default)]
    renewal_info: Option<String>,
}

/// An ACME issuer.
pub struct Acme {
    name: String,
    cfg: AcmeConfig,
    http: Http,
    files: AccountFiles,
    eab_key: Option<Zeroizing<Vec<u8>>>,
    listener: Option<Http01Listener>,
    directory: tokio::sync::Mutex<Option<Arc<Directory>>>,
    account: tokio::sync::Mutex<Option<Account>>,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("name", &self.name)
            .field("directory", &self.cfg.directory)
            .finish()
    }
}

impl Acme {
    /// Set up the issuer: TLS roots, the EAB key and the account key in
    /// `state_dir` (created 0600 on first use). Nothing is sent to the CA
    /// yet, so an unreachable CA never stops the daemon from starting.
    pub fn open(name: &str, state_dir: &Path, cfg: &AcmeConfig) -> Result<Acme, IssuerError> {
        let setup = |message: String| IssuerError::Setup {
            issuer: name.to_string(),
            message,
        };
        let http = Http::new(cfg).map_err(|e| setup(e.to_string()))?;
        let eab_key = cfg
            .eab
            .as_ref()
            .map(account::eab_key)
            .transpose()
            .map_err(setup)?;
        let files = AccountFiles::new(state_dir.join("acme").join(name));
        files.key().map_err(|e| setup(e.to_string()))?;
        Ok(Acme {
            name: name.to_string(),
            cfg: cfg.clone(),
            http,
            files,
            eab_key,
            listener: match cfg.challenge {
                ChallengeConfig::Http01Listen { listen } => Some(Http01Listener::new(listen)),
                _ => None,
            },
            directory: tokio::sync::Mutex::new(None),
            account: tokio::sync::Mutex::new(None),
        })
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            directory: &self.cfg.directory,
        }
    }

    /// The directory, fetched once and then kept.
    async fn directory(&self) -> Result<Arc<Directory>, AcmeError> {
        let mut slot = self.directory.lock().await;
        if let Some(d) = &*slot {
            return Ok(d.clone());
        }
        let ctx = self.ctx();
        let (status, body) = self
            .http
            .get(&self.cfg.directory)
            .await
            .map_err(|e| ctx.unreachable(e))?;
        if status != 200 {
            return Err(ctx.status("directory", status));
        }
        let dir: Directory = serde_json::from_slice(&body)
            .map_err(|e| ctx.protocol("directory", format!("not an ACME directory: {e}")))?;
        let dir = Arc::new(dir);
        *slot = Some(dir.clone());
        Ok(dir)
    }

    /// The account, registered on first use (idempotent: same key, same account).
    async fn account(&self) -> Result<Account, AcmeError> {
        let mut slot = self.account.lock().await;
        if let Some(a) = &*slot {
            return Ok(a.clone());
        }
        let ctx = self.ctx();
        let key = self.files.key()?;
        let url = match self.files.registration(&self.cfg.directory) {
            Some(reg) => reg.url,
            None => {
                let dir = self.directory().await?;
                let eab = match (&self.cfg.eab, &self.eab_key) {
                    (Some(e), Some(k)) => Some((e.kid.as_str(), k.as_slice())),
                    _ => None,
                };
                let url =
                    account::register(&self.http, &dir, &key, &self.cfg.contact, eab, &ctx).await?;
                self.files.save(&Registration {
                    directory: self.cfg.directory.clone(),
                    url: url.clone(),
                })?;
                tracing::info!(issuer = %self.name, directory = %self.cfg.directory, account = %url, "ACME account registered");
                url
            }
        };
        let account = Account::builder_with_http(self.http.boxed())
            .from_parts(
                url,
                PrivatePkcs8KeyDer::from(key.pkcs8()),
                self.cfg.directory.clone(),
            )
            .await
            .map_err(|e| ctx.acme("directory", None, e))?;
        *slot = Some(account.clone());
        Ok(account)
    }

    /// Forget the account so the next use registers the key again (the CA
    /// lost it, e.g. a test CA that restarted).
    async fn forget_account(&self) {
        *self.account.lock().await = None;
        self.files.forget();
    }

    async fn issue_inner(&self, req: &IssueRequest) -> Result<Issued, AcmeError> {
        let mut again = true;
        loop {
            let account = self.account().await?;
            let dir = self.directory().await?;
            let result = order::run(
                &account,
                &dir,
                &self.cfg,
                self.listener.as_ref(),
                &self.files,
                req,
                &self.ctx(),
            )
            .await;
            match result {
                Err(e) if again && e.kind() == Some("accountDoesNotExist") => {
                    tracing::warn!(issuer = %self.name, "the CA does not know our account; registering the same key again");
                    self.forget_account().await;
                    again = false;
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl Issuer for Acme {
    fn name(&self) -> &str {
        &self.name
    }

    fn trust_anchors(&self) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, IssuerError> {
        // Public ACME CAs chain to the platform's roots; a private one's
        // root goes into trust_bundle.
        crate::net::tls::anchors(self.cfg.trust_bundle.as_deref()).map_err(|e| IssuerError::Setup {
            issuer: self.name.clone(),
            message: e.to_string(),
        })
    }

    async fn issue(&self, req: &IssueRequest) -> Result<Issued, IssuerError> {
        let started = std::time::Instant::now();
        let result = with_hints(self.issue_inner(req)).await;
        match result {
            Ok(issued) => {
                tracing::info!(issuer = %self.name, ms = started.elapsed().as_millis() as u64, "ACME certificate issued");
                Ok(issued)
            }
            Err(e) => Err(IssuerError::Issue {
                issuer: self.name.clone(),
                credential: req.credential.clone(),
                retry_after: e.retry_after(),
                message: e.to_string(),
                source: Some(Box::new(e)),
            }),
        }
    }

    async fn renewal_window(&self, cert_pem: &str) -> Result<Option<RenewalWindow>, IssuerError> {
        let query = |e: AcmeError| IssuerError::Query {
            issuer: self.name.clone(),
            retry_after: e.retry_after(),
            message: e.to_string(),
            source: Some(Box::new(e)),
        };
        let dir = with_hints(self.directory()).await.map_err(query)?;
        let Some(base) = dir.renewal_info.as_deref() else {
            return Ok(None);
        };
        let id = ari::cert_id_pem(cert_pem).map_err(|m| IssuerError::Query {
            issuer: self.name.clone(),
            retry_after: None,
            message: format!("renewal info: {m}"),
            source: None,
        })?;
        ari::fetch(&self.http, base, &id, &self.ctx())
            .await
            .map(Some)
            .map_err(query)
    }

    async fn replaced(&self, credential: &str, cert_pem: &str) -> Result<(), IssuerError> {
        if !self.cfg.revoke_replaced {
            return Ok(());
        }
        let fail = |e: AcmeError| IssuerError::Issue {
            issuer: self.name.clone(),
            credential: credential.to_string(),
            retry_after: e.retry_after(),
            message: format!("revoking the replaced certificate: {e}"),
            source: Some(Box::new(e)),
        };
        with_hints(async {
            let account = self.account().await?;
            order::revoke(
                &account,
                cert_pem,
                RevocationReason::Superseded,
                &self.ctx(),
            )
            .await
        })
        .await
        .map_err(fail)?;
        tracing::info!(issuer = %self.name, "revoked the replaced certificate");
        Ok(())
    }

    async fn revoke(&self, credential: &str, cert_pem: &str) -> Result<Revocation, IssuerError> {
        // Decommissioning: the credential is no longer in service.
        with_hints(async {
            let account = self.account().await?;
            order::revoke(
                &account,
                cert_pem,
                RevocationReason::CessationOfOperation,
                &self.ctx(),
            )
            .await
        })
        .await
        .map_err(|e| IssuerError::Revoke {
            issuer: self.name.clone(),
            credential: credential.to_string(),
            message: format!("{e}; the certificate stays valid until it expires unless revoked by hand at the CA"),
            source: Some(Box::new(e)),
        })?;
        tracing::info!(issuer = %self.name, event = "revoked", "revoked the retired certificate at the CA");
        Ok(Revocation::Revoked(
            "ACME revokeCert (reason cessationOfOperation)".to_string(),
        ))
    }
}
