//! Verification probes: a TLS handshake comparing the served leaf's
//! fingerprint, an HTTP request with expected status/body, or a command.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rustls::pki_types::ServerName;

use super::{Generation, Observation, Probe};
use crate::{cert, httpc};

/// One probe attempt gives up after this long (the overall deadline is the
/// verify timeout; a hung app must not stall a single attempt).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS handshake with SNI; compare the served leaf with the generation.
pub struct TlsProbe {
    /// `host:port`.
    pub connect: String,
    /// SNI.
    pub server_name: String,
    /// Client config (accepts any server cert; optional client cert).
    pub tls: Arc<rustls::ClientConfig>,
}

impl TlsProbe {
    /// The fingerprint of the leaf the server presents.
    pub async fn served_fingerprint(&self) -> Result<String, String> {
        let name = ServerName::try_from(self.server_name.clone())
            .map_err(|e| format!("bad server_name: {e}"))?;
        let work = async {
            let tcp = tokio::net::TcpStream::connect(self.connect.as_str())
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            let (_, conn) = stream.get_ref();
            let leaf = conn
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or("the server presented no certificate")?;
            Ok(cert::fingerprint(leaf))
        };
        tokio::time::timeout(ATTEMPT_TIMEOUT, work)
            .await
            .map_err(|_| format!("no TLS handshake within {ATTEMPT_TIMEOUT:?}"))?
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
        format!("tls {} (SNI {})", self.connect, self.server_name)
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
    /// TLS for https URLs.
    pub tls: Arc<rustls::ClientConfig>,
}

#[async_trait]
impl Probe for HttpProbe {
    async fn probe(&self, g: &Generation) -> Observation {
        let headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), g.fill_header(v)))
            .collect();
        match httpc::send(
            "GET",
            &self.url,
            &headers,
            None,
            ATTEMPT_TIMEOUT,
            self.tls.clone(),
        )
        .await
        {
            Err(httpc::HttpError::Exchange { why, .. }) if why.starts_with("cannot connect") => {
                Observation::Unreachable(why)
            }
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
