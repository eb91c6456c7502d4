//! A minimal HTTP/1.1 client (http and https) for reload requests, probes
//! and issuers (Vault): one request per connection, a deadline on the whole exchange, bodies
//! capped so a misbehaving app cannot make rekey buffer without bound.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

/// Bodies larger than this are an error.
pub const MAX_BODY: usize = 1024 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL does not parse or is not http/https.
    #[error("invalid URL {url}: {why}")]
    Url {
        /// URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// Connecting, TLS or the exchange failed.
    #[error("{method} {url}: {why}")]
    Exchange {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// What failed.
        why: String,
    },
    /// No answer in time.
    #[error("{method} {url}: no answer within {timeout:?}")]
    Timeout {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// Deadline.
        timeout: Duration,
    },
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: hyper::HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The `Retry-After` header as a wait from now: delta-seconds, or an
    /// HTTP date (a date in the past means no wait).
    pub fn retry_after(&self) -> Option<Duration> {
        let v = self
            .headers
            .get(hyper::header::RETRY_AFTER)?
            .to_str()
            .ok()?;
        parse_retry_after(v.trim(), std::time::SystemTime::now())
    }
}

/// `Retry-After` (RFC 9110 10.2.3) relative to `now`.
fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // IMF-fixdate, e.g. "Wed, 21 Oct 2015 07:28:00 GMT"; RFC 2822 parsing
    // accepts it once "GMT" is spelled as a numeric zone.
    let v = v.strip_suffix(" GMT").map(|d| format!("{d} +0000"))?;
    let at =
        time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc2822).ok()?;
    let at = std::time::SystemTime::from(at);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Send one request. `tls` is used for https URLs.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Option<Vec<u8>>,
    timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Response, HttpError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| HttpError::Url {
            url: url.to_string(),
            why: e.to_string(),
        })?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(HttpError::Url {
                url: url.to_string(),
                why: "only http:// and https:// are supported".into(),
            })
        }
    };
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let ex = |why: String| HttpError::Exchange {
        method: method.to_string(),
        url: url.to_string(),
        why,
    };
    let method_v = Method::from_bytes(method.as_bytes()).map_err(|e| ex(e.to_string()))?;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| ex(format!("cannot connect: {e}")))?;
        let mut req = Request::builder()
            .method(method_v)
            .uri(path)
            .header("host", authority);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ex(e.to_string()))?;
        let resp = if https {
            let name = ServerName::try_from(host.clone()).map_err(|e| ex(e.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|e| ex(format!("TLS: {e}")))?;
            exchange(TokioIo::new(stream), req).await
        } else {
            exchange(TokioIo::new(tcp), req).await
        }
        .map_err(ex)?;
        Ok(resp)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HttpError::Timeout {
            method: method.to_string(),
            url: url.to_string(),
            timeout,
        })?
}

async fn exchange<I>(io: I, req: Request<Full<Bytes>>) -> Result<Response, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        // 1445412480 is Wed, 21 Oct 2015 07:28:00 GMT.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:20:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }
}
