//! The client against small loopback servers that misbehave on purpose
//! (stall, oversize, redirect, untrusted TLS): no real server can be made
//! to do that on cue. Proxies and issuers through real servers are in
//! tests/it/proxy.rs.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// `Retry-After` in both of its forms, with the header as servers send it.
#[test]
fn retry_after_takes_seconds_and_http_dates() {
    let at = |v: &str, now: SystemTime| {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        retry_after(&h, now)
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
    assert_eq!(at("120", now), Some(Duration::from_secs(120)));
    assert_eq!(at(" 7 ", now), Some(Duration::from_secs(7)));
    // 1445412480 is Wed, 21 Oct 2015 07:28:00 GMT.
    assert_eq!(
        at("Wed, 21 Oct 2015 07:28:00 GMT", now),
        Some(Duration::from_secs(10))
    );
    // The obsolete RFC 850 form, which RFC 9110 asks recipients to accept.
    assert_eq!(
        at("Wednesday, 21-Oct-15 07:28:00 GMT", now),
        Some(Duration::from_secs(10))
    );
    // A date in the past: no wait.
    assert_eq!(
        at("Wed, 21 Oct 2015 07:20:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(at("soon", now), None);
    assert_eq!(at("-3", now), None);
    assert_eq!(retry_after(&HeaderMap::new(), now), None);
}

/// A server that answers every connection with `answer` after reading the
/// request head, or never answers when `answer` is None.
async fn serve(answer: Option<Vec<u8>>) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = s.read(&mut buf).await;
                match answer {
                    Some(a) => {
                        let _ = s.write_all(&a).await;
                        let _ = s.shutdown().await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    addr
}

fn direct() -> Client {
    Client::remote(Remote {
        url: "http://127.0.0.1",
        trust_bundle: None,
        proxy: &ProxyConfig::Off,
        keep_alive: false,
    })
    .unwrap()
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_refused_connection_is_connect_and_never_shows_the_url() {
    let url = format!("http://127.0.0.1:{}/hook?token=s3cret", closed_port());
    let e = direct()
        .send(Call::new(Method::POST, url, Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Connect { .. }), "{e:?}");
    assert!(e.not_connected());
    assert_eq!(e.io_kind(), Some(std::io::ErrorKind::ConnectionRefused));
    let text = e.to_string();
    assert!(text.starts_with("cannot connect: "), "{text}");
    assert!(text.to_lowercase().contains("refused"), "{text}");
    // The source chain is typed and holds no URL either.
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = src {
        assert!(!s.to_string().contains("s3cret"), "{s}");
        src = s.source();
    }
}

#[tokio::test]
async fn the_deadline_covers_the_whole_exchange() {
    // Nothing at all comes back.
    let silent = serve(None).await;
    let e = direct()
        .send(Call::new(
            Method::GET,
            format!("http://{silent}/"),
            Duration::from_millis(300),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Timeout { .. }), "{e:?}");
    assert_eq!(e.to_string(), "no complete answer within 300ms");

    // Headers, then a body cut short.
    let short = serve(Some(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial".to_vec(),
    ))
    .await;
    // The server closes after "partial": a broken exchange, not a timeout.
    let e = direct()
        .send(Call::new(
            Method::GET,
            format!("http://{short}/"),
            Duration::from_secs(5),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Exchange { .. }), "{e:?}");
}

#[tokio::test]
async fn a_body_past_the_cap_is_refused_or_cut_where_asked() {
    let big = vec![b'x'; 4096];
    let mut answer = format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    answer.extend_from_slice(&big);
    let addr = serve(Some(answer)).await;
    let url = format!("http://{addr}/");
    let e = direct()
        .send(Call::new(Method::GET, url.as_str(), Duration::from_secs(5)).max_body(1000))
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::TooLarge { limit: 1000 }), "{e:?}");
    assert_eq!(e.to_string(), "the answer is larger than 1000 bytes");

    let r = direct()
        .send(Call::new(Method::GET, url.as_str(), Duration::from_secs(5)).keep_head(10))
        .await
        .unwrap();
    assert_eq!((r.status, r.body.as_slice()), (502, &b"xxxxxxxxxx"[..]));
}

#[tokio::test]
async fn redirects_are_never_followed() {
    // Following would send the request's headers (a Vault token, a sink's
    // Authorization) to wherever the Location points.
    let target = serve(Some(
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
    ))
    .await;
    let addr = serve(Some(
        format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{target}/\r\ncontent-length: 0\r\n\r\n")
            .into_bytes(),
    ))
    .await;
    let r = direct()
        .send(
            Call::new(
                Method::GET,
                format!("http://{addr}/"),
                Duration::from_secs(5),
            )
            .header("x-vault-token", "s3cret")
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 307);
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_a_tls_error() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(crate::net::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = acceptor.accept(s).await;
        }
    });
    let url = format!("https://localhost:{}/", addr.port());
    let e = Client::remote(Remote {
        url: &url,
        trust_bundle: None,
        proxy: &ProxyConfig::Off,
        keep_alive: false,
    })
    .unwrap()
    .send(Call::new(Method::GET, url.as_str(), Duration::from_secs(5)))
    .await
    .unwrap_err();
    assert!(matches!(e, HttpError::Tls { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with("TLS handshake failed: ") && text.contains("UnknownIssuer"),
        "{text}"
    );

    // The local client (the app on this host) takes any certificate.
    let r = Client::local()
        .unwrap()
        .send(Call::new(Method::GET, url.as_str(), Duration::from_secs(2)))
        .await
        .unwrap_err();
    // The test server closes after the handshake: not a TLS error.
    assert!(!matches!(r, HttpError::Tls { .. }), "{r:?}");
}

#[tokio::test]
async fn a_proxy_that_is_down_is_named_without_its_credentials() {
    let proxy = format!("http://ops:s3cret@127.0.0.1:{}", closed_port());
    let client = Client::remote(Remote {
        url: "http://example.invalid",
        trust_bundle: None,
        proxy: &ProxyConfig::Url(proxy),
        keep_alive: false,
    })
    .unwrap();
    let e = client
        .send(Call::new(
            Method::GET,
            "http://example.invalid/v1/sys/health",
            Duration::from_secs(5),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Proxy { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with("through proxy http://127.0.0.1:")
            && text.contains("(from the proxy key): cannot connect"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
}

#[test]
fn environment_proxies_are_named_per_url() {
    let m = hyper_util::client::proxy::matcher::Matcher::builder()
        .https("http://user:pw@proxy.internal:3128")
        .no("localhost, .internal")
        .build();
    let route = Route::Environment(Box::new(m));
    let url = |u: &str| reqwest::Url::parse(u).unwrap();
    assert_eq!(
        route
            .proxy_for(&url("https://acme.example/dir"))
            .map(|(p, _)| p)
            .as_deref(),
        Some("http://proxy.internal:3128")
    );
    assert_eq!(route.proxy_for(&url("https://vault.internal/v1")), None);
    // HTTP_PROXY is not set: plain http goes direct.
    assert_eq!(route.proxy_for(&url("http://acme.example/")), None);
    assert_eq!(Route::Direct.proxy_for(&url("https://a.example/")), None);
}
