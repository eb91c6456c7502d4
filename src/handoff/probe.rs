//! Verification probes: a TLS handshake comparing the served leaf's
//! fingerprint, an HTTP request with expected status/body, or a command.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rustls::pki_types::{CertificateDer, ServerName};

use super::starttls::StartTls;
use super::{Generation, Observation, Probe};
use crate::cert;
use crate::net::httpc::{self, Call, HttpError};

/// One probe attempt gives up after this long (the overall deadline is the
/// verify timeout; a hung app must not stall a single attempt).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the served chain could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// `server_name` is not a DNS name or IP address.
    #[error("bad server_name {name:?}: {reason}")]
    ServerName {
        /// As configured.
        name: String,
        /// rustls' reason.
        reason: String,
    },
    /// The TCP connection failed (refused, unreachable, no such host).
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The plaintext negotiation before the handshake failed (`starttls`).
    #[error(transparent)]
    StartTls(#[from] super::starttls::StartTlsError),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    /// The handshake finished without a certificate.
    #[error("the server presented no certificate")]
    NoCertificate,
    /// Connect plus handshake took longer than the deadline.
    #[error("no TLS handshake within {0:?}")]
    Timeout(Duration),
}

/// The certificate chain a TLS server at `connect` (`host:port`) presents
/// for SNI `server_name`, leaf first, as sent, after the plaintext
/// negotiation `starttls` when the protocol has one. The one TLS client of
/// the probes: the handoff's TLS verify and endpoint watches both read it
/// here. `tls` normally accepts any server certificate
/// ([`crate::net::tls::probe_config`]): what is served is what is checked.
/// `timeout` bounds everything: connect, negotiation and handshake.
pub async fn served_chain(
    connect: &str,
    server_name: &str,
    starttls: Option<StartTls>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Vec<CertificateDer<'static>>, ChainError> {
    let name =
        ServerName::try_from(server_name.to_string()).map_err(|e| ChainError::ServerName {
            name: server_name.to_string(),
            reason: e.to_string(),
        })?;
    let work = async {
        let mut tcp = tokio::net::TcpStream::connect(connect)
            .await
            .map_err(ChainError::Connect)?;
        if let Some(proto) = starttls {
            super::starttls::negotiate(proto, &mut tcp).await?;
        }
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(ChainError::Handshake)?;
        let (_, conn) = stream.get_ref();
        match conn.peer_certificates() {
            Some(chain) if !chain.is_empty() => {
                Ok(chain.iter().map(|c| c.clone().into_owned()).collect())
            }
            _ => Err(ChainError::NoCertificate),
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ChainError::Timeout(timeout))?
}

/// TLS handshake with SNI; compare the served leaf with the generation.
pub struct TlsProbe {
    /// `host:port`.
    pub connect: String,
    /// SNI.
    pub server_name: String,
    /// The protocol negotiation before the handshake, if any.
    pub starttls: Option<StartTls>,
    /// Client config (accepts any server cert; optional client cert).
    pub tls: Arc<rustls::ClientConfig>,
}

impl TlsProbe {
    /// The fingerprint of the leaf the server presents.
    pub async fn served_fingerprint(&self) -> Result<String, String> {
        let chain = served_chain(
            &self.connect,
            &self.server_name,
            self.starttls,
            self.tls.clone(),
            ATTEMPT_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())?;
        // served_chain never returns an empty chain.
        Ok(chain
            .first()
            .map(|c| cert::fingerprint(c))
            .unwrap_or_default())
    }
}

#[async_trait]
impl Probe for TlsProbe {
    async fn probe(&self, g: &Generation) -> Observation {
        match self.served_fingerprint().await {
            Ok(fp) if fp == g.fingerprint => Observation::Serving,
            Ok(fp) => Observation::Other {
                detail: format!("serves {fp}"),
                served: Some(fp),
            },
            Err(e) if e.starts_with("cannot connect") => Observation::Unreachable(e),
            Err(e) => Observation::Other {
                served: None,
                detail: e,
            },
        }
    }
    fn describe(&self) -> String {
        match self.starttls {
            Some(p) => format!(
                "tls {} (SNI {}, STARTTLS {})",
                self.connect,
                self.server_name,
                p.as_str()
            ),
            None => format!("tls {} (SNI {})", self.connect, self.server_name),
        }
    }
}

/// HTTP request; status and (optionally) body text must match.
pub struct HttpProbe {
    /// URL.
    pub url: String,
    /// Expected status.
    pub expect_status: u16,
    /// Body must contain this (after filling placeholders).
    pub expect_body: Option<String>,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// The client for the local app ([`httpc::Client::local`]).
    pub http: httpc::Client,
}

#[async_trait]
impl Probe for HttpProbe {
    async fn probe(&self, g: &Generation) -> Observation {
        let mut call = Call::new(http::Method::GET, self.url.as_str(), ATTEMPT_TIMEOUT);
        for (k, v) in &self.headers {
            call = match call.header(k, &g.fill_header(v)) {
                Ok(c) => c,
                Err(e) => {
                    return Observation::Other {
                        served: None,
                        detail: e.to_string(),
                    }
                }
            };
        }
        match self.http.send(call).await {
            Err(e @ HttpError::Connect { .. }) => Observation::Unreachable(e.to_string()),
            Err(e) => Observation::Other {
                served: None,
                detail: e.to_string(),
            },
            Ok(r) if r.status != self.expect_status => Observation::Other {
                served: None,
                detail: format!(
                    "answered HTTP {}, expected {}",
                    r.status, self.expect_status
                ),
            },
            Ok(r) => match &self.expect_body {
                Some(want) => {
                    let want = g.fill(want);
                    if String::from_utf8_lossy(&r.body).contains(&want) {
                        Observation::Serving
                    } else {
                        Observation::Other {
                            served: None,
                            detail: format!("body does not contain {want:?}"),
                        }
                    }
                }
                None => Observation::Serving,
            },
        }
    }
    fn describe(&self) -> String {
        format!("http {}", self.url)
    }
}

/// A command; exit 0 means the app uses the generation.
pub struct ExecProbe {
    /// argv.
    pub command: Vec<String>,
    /// Extra environment from the config.
    pub env: Vec<(String, String)>,
}

#[async_trait]
impl Probe for ExecProbe {
    async fn probe(&self, g: &Generation) -> Observation {
        let run = crate::exec::Exec::new(&self.command, ATTEMPT_TIMEOUT)
            .env(&self.env)
            .vars(g.env())
            .run();
        match run.await {
            Ok(_) => Observation::Serving,
            Err(e) => Observation::Other {
                served: None,
                detail: e.to_string(),
            },
        }
    }
    fn describe(&self) -> String {
        format!("exec {:?}", self.command.join(" "))
    }
}
