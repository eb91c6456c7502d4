//! Each protocol's negotiation against a small scripted server on loopback
//! that then does a real rustls handshake; and the ways a server can refuse
//! or misbehave (no TLS offered, endless lines, huge packets, silence).
//! Real PostgreSQL and Postfix are exercised in tests/it/apps.rs.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::handoff::probe::{served_chain, ChainError};

/// A self-signed server config and its certificate.
fn server_tls() -> (Arc<rustls::ServerConfig>, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["db.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = cert.der().clone();
    let cfg = rustls::ServerConfig::builder_with_provider(crate::net::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    (Arc::new(cfg), der)
}

/// What the scripted server does before (maybe) handing over to TLS.
type Script =
    fn(TcpStream) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<TcpStream>> + Send>>;

/// Serve one connection: run `script`, then a TLS handshake if it returns the stream.
async fn server(script: Script) -> (String, CertificateDer<'static>) {
    let (tls, der) = server_tls();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        if let Some(tcp) = script(tcp).await {
            if let Ok(mut s) = tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await {
                let _ = s.shutdown().await;
            }
        }
    });
    (addr, der)
}

async fn read_exact(tcp: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    tcp.read_exact(&mut b).await.unwrap();
    b
}

/// Read one CRLF line from the client.
async fn read_line(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    loop {
        let b = read_exact(tcp, 1).await[0];
        if b == b'\n' {
            return String::from_utf8(out).unwrap().trim_end().to_string();
        }
        out.push(b);
    }
}

async fn probe(addr: &str, proto: StartTls) -> Result<Vec<CertificateDer<'static>>, ChainError> {
    let tls = Arc::new(crate::net::tls::probe_config(None).unwrap());
    served_chain(addr, "db.test", Some(proto), tls, Duration::from_secs(3)).await
}

async fn served(script: Script, proto: StartTls) {
    let (addr, der) = server(script).await;
    let chain = probe(&addr, proto)
        .await
        .unwrap_or_else(|e| panic!("{proto:?}: {e}"));
    assert_eq!(chain[0], der, "{proto:?}");
}

async fn refused(script: Script, proto: StartTls) -> String {
    let (addr, _) = server(script).await;
    match probe(&addr, proto).await {
        Ok(_) => panic!("{proto:?}: a handshake happened"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn postgres_sslrequest() {
    served(
        |mut t| {
            Box::pin(async move {
                assert_eq!(read_exact(&mut t, 8).await, PG_SSL_REQUEST);
                t.write_all(b"S").await.unwrap();
                Some(t)
            })
        },
        StartTls::Postgres,
    )
    .await;
    let e = refused(
        |mut t| {
            Box::pin(async move {
                read_exact(&mut t, 8).await;
                t.write_all(b"N").await.unwrap();
                None
            })
        },
        StartTls::Postgres,
    )
    .await;
    assert!(
        e.contains("does not offer TLS") && e.contains("ssl = on"),
        "{e}"
    );
}

#[tokio::test]
async fn mysql_ssl_request_after_the_greeting() {
    fn greeting(caps: u16) -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"8.0.36\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        p.extend_from_slice(&caps.to_le_bytes());
        p.extend_from_slice(&[0x21, 2, 0, 0xff, 0xff, 21]);
        p.extend_from_slice(&[0; 10]);
        let mut out = vec![p.len() as u8, 0, 0, 0];
        out.extend(p);
        out
    }
    served(
        |mut t| {
            Box::pin(async move {
                t.write_all(&greeting(0xffff)).await.unwrap();
                let req = read_exact(&mut t, 36).await;
                assert_eq!(&req[..4], &[32, 0, 0, 1]);
                let caps = u32::from_le_bytes(req[4..8].try_into().unwrap());
                assert_ne!(caps & CLIENT_SSL, 0);
                Some(t)
            })
        },
        StartTls::Mysql,
    )
    .await;
    let e = refused(
        |mut t| {
            Box::pin(async move {
                t.write_all(&greeting(!(CLIENT_SSL as u16))).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
                None
            })
        },
        StartTls::Mysql,
    )
    .await;
    assert!(
        e.contains("does not offer TLS") && e.contains("SSL capability"),
        "{e}"
    );
}

#[tokio::test]
async fn smtp_ehlo_then_starttls() {
    served(
        |mut t| {
            Box::pin(async move {
                t.write_all(b"220 mx.test ESMTP\r\n").await.unwrap();
                assert!(read_line(&mut t).await.starts_with("EHLO "));
                t.write_all(b"250-mx.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
                    .await
                    .unwrap();
                assert_eq!(read_line(&mut t).await, "STARTTLS");
                t.write_all(b"220 2.0.0 Ready to start TLS\r\n")
                    .await
                    .unwrap();
                Some(t)
            })
        },
        StartTls::Smtp,
    )
    .await;
    let e = refused(
        |mut t| {
            Box::pin(async move {
                t.write_all(b"220 mx.test ESMTP\r\n").await.unwrap();
                read_line(&mut t).await;
                t.write_all(b"250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
                None
            })
        },
        StartTls::Smtp,
    )
    .await;
    assert!(
        e.contains("STARTTLS is not among") && e.contains("PIPELINING"),
        "{e}"
    );
}

#[tokio::test]
async fn imap_and_pop3() {
    served(
        |mut t| {
            Box::pin(async move {
                t.write_all(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
                    .await
                    .unwrap();
                assert_eq!(read_line(&mut t).await, "a STARTTLS");
                t.write_all(b"* NOTE untagged first\r\na OK Begin TLS negotiation now\r\n")
                    .await
                    .unwrap();
                Some(t)
            })
        },
        StartTls::Imap,
    )
    .await;
    let e = refused(
        |mut t| {
            Box::pin(async move {
                t.write_all(b"* OK ready\r\n").await.unwrap();
                read_line(&mut t).await;
                t.write_all(b"a BAD unknown command\r\n").await.unwrap();
                None
            })
        },
        StartTls::Imap,
    )
    .await;
    assert!(e.contains("does not offer TLS") && e.contains("BAD"), "{e}");
    served(
        |mut t| {
            Box::pin(async move {
                t.write_all(b"+OK POP3 ready\r\n").await.unwrap();
                assert_eq!(read_line(&mut t).await, "STLS");
                t.write_all(b"+OK Begin TLS\r\n").await.unwrap();
                Some(t)
            })
        },
        StartTls::Pop3,
    )
    .await;
    let e = refused(
        |mut t| {
            Box::pin(async move {
                t.write_all(b"+OK POP3 ready\r\n").await.unwrap();
                read_line(&mut t).await;
                t.write_all(b"-ERR Command not permitted\r\n")
                    .await
                    .unwrap();
                None
            })
        },
        StartTls::Pop3,
    )
    .await;
    assert!(e.contains("STLS answered") && e.contains("-ERR"), "{e}");
}

/// An ExtendedResponse for message `id` with `code` and `diag`.
fn ldap_response(id: u8, code: u8, diag: &str) -> Vec<u8> {
    let mut op = vec![0x0a, 1, code, 0x04, 0, 0x04, diag.len() as u8];
    op.extend_from_slice(diag.as_bytes());
    let mut body = vec![0x02, 1, id, 0x78, op.len() as u8];
    body.extend(op);
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

#[tokio::test]
async fn ldap_extended_operation() {
    served(
        |mut t| {
            Box::pin(async move {
                assert_eq!(
                    read_exact(&mut t, LDAP_START_TLS.len()).await,
                    LDAP_START_TLS
                );
                t.write_all(&ldap_response(1, 0, "")).await.unwrap();
                Some(t)
            })
        },
        StartTls::Ldap,
    )
    .await;
    let e = refused(
        |mut t| {
            Box::pin(async move {
                read_exact(&mut t, LDAP_START_TLS.len()).await;
                t.write_all(&ldap_response(1, 52, "Could not initialize TLS"))
                    .await
                    .unwrap();
                None
            })
        },
        StartTls::Ldap,
    )
    .await;
    assert!(
        e.contains("result code 52") && e.contains("Could not initialize TLS"),
        "{e}"
    );
}

#[tokio::test]
async fn a_hostile_server_neither_hangs_nor_floods_the_probe() {
    // A line without end: refused at the line cap, long before the deadline.
    let e = refused(
        |mut t| {
            Box::pin(async move {
                let junk = vec![b'x'; 64 * 1024];
                let _ = t.write_all(b"220-").await;
                let _ = t.write_all(&junk).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
                None
            })
        },
        StartTls::Smtp,
    )
    .await;
    assert!(e.contains("longer than"), "{e}");
    // Endless short continuation lines: refused at the negotiation cap.
    let e = refused(
        |mut t| {
            Box::pin(async move {
                for _ in 0..20_000 {
                    if t.write_all(b"220-more\r\n").await.is_err() {
                        break;
                    }
                }
                None
            })
        },
        StartTls::Smtp,
    )
    .await;
    assert!(e.contains("more than"), "{e}");
    // A MySQL packet claiming 16 MB.
    let e = refused(
        |mut t| {
            Box::pin(async move {
                t.write_all(&[0xff, 0xff, 0xff, 0]).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
                None
            })
        },
        StartTls::Mysql,
    )
    .await;
    assert!(e.contains("greeting of 16777215 bytes"), "{e}");
    // Silence: the probe's deadline ends it.
    let (addr, _) = server(|t| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(t);
            None
        })
    })
    .await;
    let tls = Arc::new(crate::net::tls::probe_config(None).unwrap());
    let started = std::time::Instant::now();
    let e = served_chain(
        &addr,
        "db.test",
        Some(StartTls::Pop3),
        tls,
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ChainError::Timeout(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn malformed_ber_is_refused_not_panicked_on() {
    for bytes in [
        &b""[..],
        b"\x0a",
        b"\x0a\x05\x00",
        b"\x0a\x85\x00\x00\x00\x00\x01",
    ] {
        assert!(Ber(bytes).extended_result().is_none(), "{bytes:?}");
    }
    let ok = ldap_response(1, 0, "fine");
    let ((_, body), _) = Ber(&ok).take_any().unwrap();
    let (_, rest) = body.take(0x02).unwrap();
    let ((tag, op), _) = rest.take_any().unwrap();
    assert_eq!(tag, 0x78);
    assert_eq!(op.extended_result(), Some((0, "fine".to_string())));
}
