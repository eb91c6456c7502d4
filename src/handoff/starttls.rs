//! Protocol-aware TLS: the plaintext negotiation some servers need before
//! the TLS handshake (PostgreSQL's SSLRequest, MySQL's SSL request packet,
//! STARTTLS in SMTP, IMAP, POP3 and LDAP). One function per protocol, run on
//! the TCP stream the probe then hands to rustls.
//!
//! Every read is bounded: a line or packet has a size cap and a whole
//! negotiation a byte cap, and the caller runs it under the probe's
//! deadline, so a hostile or broken server can neither hang a probe nor make
//! it buffer without end. Reads go byte by byte or to an exact length, never
//! ahead: the first TLS byte from the server must stay in the socket for
//! rustls.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use crate::config::StartTls;

/// A reply line longer than this is refused (SMTP caps its lines at 512
/// bytes; the others are shorter in practice).
const MAX_LINE: usize = 2048;
/// A whole negotiation reads at most this much before the handshake.
const MAX_TOTAL: usize = 64 * 1024;
/// A MySQL greeting or an LDAP response larger than this is refused.
const MAX_PACKET: usize = 16 * 1024;

/// Why the plaintext negotiation did not lead to a TLS handshake.
#[derive(Debug, thiserror::Error)]
pub enum StartTlsError {
    /// The server does not offer TLS on this connection.
    #[error("the {proto} server does not offer TLS here: {detail}")]
    NotOffered {
        /// Protocol name as configured (`postgres`, `smtp`, ...).
        proto: &'static str,
        /// What it said instead.
        detail: String,
    },
    /// The server answered something that is not its protocol.
    #[error(
        "the server does not speak {proto} as expected: {detail}; check `starttls` and `connect`"
    )]
    Protocol {
        /// Protocol name as configured.
        proto: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Reading or writing failed (closed, reset).
    #[error("{proto} negotiation failed: {source}")]
    Io {
        /// Protocol name as configured.
        proto: &'static str,
        /// Cause.
        source: std::io::Error,
    },
}

/// Run the negotiation of `proto` on `tcp`; on success the next bytes on
/// the stream are the TLS handshake.
pub async fn negotiate(proto: StartTls, tcp: &mut TcpStream) -> Result<(), StartTlsError> {
    let mut s = Session {
        tcp,
        proto: proto.as_str(),
        read: 0,
    };
    match proto {
        StartTls::Postgres => s.postgres().await,
        StartTls::Mysql => s.mysql().await,
        StartTls::Smtp => s.smtp().await,
        StartTls::Imap => s.imap().await,
        StartTls::Pop3 => s.pop3().await,
        StartTls::Ldap => s.ldap().await,
    }
}

/// One negotiation: the stream, and how much was read so far.
struct Session<'a> {
    tcp: &'a mut TcpStream,
    proto: &'static str,
    read: usize,
}

/// PostgreSQL's SSLRequest: length 8, then the code 1234/5679.
const PG_SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// MySQL capability bits.
const CLIENT_LONG_PASSWORD: u32 = 0x0000_0001;
const CLIENT_PROTOCOL_41: u32 = 0x0000_0200;
const CLIENT_SSL: u32 = 0x0000_0800;
const CLIENT_SECURE_CONNECTION: u32 = 0x0000_8000;
/// The LDAP StartTLS extended request: message 1, ExtendedRequest with
/// requestName 1.3.6.1.4.1.1466.20037 (RFC 4511 section 4.14).
const LDAP_START_TLS: &[u8] = b"\x30\x1d\x02\x01\x01\x77\x18\x80\x16\
1.3.6.1.4.1.1466.20037";

impl Session<'_> {
    fn not_offered(&self, detail: impl Into<String>) -> StartTlsError {
        StartTlsError::NotOffered {
            proto: self.proto,
            detail: detail.into(),
        }
    }

    fn protocol(&self, detail: impl Into<String>) -> StartTlsError {
        StartTlsError::Protocol {
            proto: self.proto,
            detail: detail.into(),
        }
    }

    fn io(&self, source: std::io::Error) -> StartTlsError {
        StartTlsError::Io {
            proto: self.proto,
            source,
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), StartTlsError> {
        let r = self.tcp.write_all(bytes).await;
        r.map_err(|e| self.io(e))
    }

    /// Exactly `n` bytes, counted against the negotiation's cap.
    async fn exact(&mut self, n: usize) -> Result<Vec<u8>, StartTlsError> {
        if self.read + n > MAX_TOTAL {
            return Err(self.protocol(format!("it sent more than {MAX_TOTAL} bytes before TLS")));
        }
        let mut buf = vec![0u8; n];
        let r = self.tcp.read_exact(&mut buf).await;
        r.map_err(|e| self.io(e))?;
        self.read += n;
        Ok(buf)
    }

    /// One CRLF- (or LF-) terminated line, without its terminator.
    async fn line(&mut self) -> Result<String, StartTlsError> {
        let mut line = Vec::with_capacity(128);
        loop {
            let b = self.exact(1).await?[0];
            if b == b'\n' {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if line.len() >= MAX_LINE {
                return Err(self.protocol(format!("a reply line is longer than {MAX_LINE} bytes")));
            }
            line.push(b);
        }
    }

    /// A reply, for messages: printable and short.
    fn quote(text: &str) -> String {
        let clean: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        format!("{:?}", clean.trim())
    }

    async fn postgres(&mut self) -> Result<(), StartTlsError> {
        self.send(&PG_SSL_REQUEST).await?;
        match self.exact(1).await?[0] {
            b'S' => Ok(()),
            b'N' => Err(self.not_offered("it answered 'N' to SSLRequest (set ssl = on in postgresql.conf)")),
            b'E' => Err(self.protocol("it answered SSLRequest with an error message (a server older than 7.0, or not PostgreSQL)")),
            other => Err(self.protocol(format!("it answered SSLRequest with byte 0x{other:02x}, not 'S' or 'N'"))),
        }
    }

    async fn mysql(&mut self) -> Result<(), StartTlsError> {
        // Packet header: 3 bytes length (little endian), 1 byte sequence.
        let head = self.exact(4).await?;
        let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
        if len == 0 || len > MAX_PACKET {
            return Err(self.protocol(format!("a greeting of {len} bytes")));
        }
        let p = self.exact(len).await?;
        if p[0] == 0xff {
            // An error packet: code (2), then '#' + SQL state (6) and the message.
            let msg = String::from_utf8_lossy(p.get(3..).unwrap_or_default());
            return Err(
                self.not_offered(format!("it refused the connection: {}", Self::quote(&msg)))
            );
        }
        if p[0] != 10 {
            return Err(self.protocol(format!("greeting protocol version {}, expected 10", p[0])));
        }
        // Server version (NUL-terminated), thread id (4), scramble (8), filler (1), capabilities low (2).
        let nul = p[1..]
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.protocol("the greeting's server version is not terminated"))?;
        let at = 1 + nul + 1 + 4 + 8 + 1;
        let caps = p
            .get(at..at + 2)
            .map(|c| u32::from(c[0]) | u32::from(c[1]) << 8)
            .ok_or_else(|| self.protocol("the greeting is too short to hold its capabilities"))?;
        if caps & CLIENT_SSL == 0 {
            return Err(self.not_offered(
                "its greeting lacks the SSL capability (configure ssl_cert and ssl_key)",
            ));
        }
        // SSLRequest (sequence 1): capabilities (4), max packet (4), charset (1), 23 zero bytes.
        let flags =
            CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION;
        let mut req = Vec::with_capacity(36);
        req.extend_from_slice(&[32, 0, 0, head[3].wrapping_add(1)]);
        req.extend_from_slice(&flags.to_le_bytes());
        req.extend_from_slice(&(16u32 << 20).to_le_bytes());
        req.push(0x21); // utf8_general_ci
        req.extend_from_slice(&[0u8; 23]);
        self.send(&req).await
    }

    /// An SMTP reply: its code and its lines' text.
    async fn smtp_reply(&mut self) -> Result<(u16, Vec<String>), StartTlsError> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await?;
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| {
                    self.protocol(format!(
                        "reply line {} has no status code",
                        Self::quote(&line)
                    ))
                })?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or_default().to_string());
            if !more {
                return Ok((code, lines));
            }
        }
    }

    async fn smtp(&mut self) -> Result<(), StartTlsError> {
        let (code, text) = self.smtp_reply().await?;
        if code != 220 {
            return Err(self.not_offered(format!(
                "its greeting is {code} {}",
                Self::quote(&text.join(" "))
            )));
        }
        self.send(b"EHLO rekey.invalid\r\n").await?;
        let (code, ext) = self.smtp_reply().await?;
        if code != 250 {
            return Err(self.protocol(format!(
                "EHLO answered {code} {}",
                Self::quote(&ext.join(" "))
            )));
        }
        if !ext
            .iter()
            .any(|l| l.trim().eq_ignore_ascii_case("STARTTLS"))
        {
            return Err(self.not_offered(format!(
                "STARTTLS is not among its EHLO extensions ({})",
                ext.get(1..).unwrap_or_default().join(", ")
            )));
        }
        self.send(b"STARTTLS\r\n").await?;
        match self.smtp_reply().await? {
            (220, _) => Ok(()),
            (code, text) => Err(self.not_offered(format!(
                "STARTTLS answered {code} {}",
                Self::quote(&text.join(" "))
            ))),
        }
    }

    async fn imap(&mut self) -> Result<(), StartTlsError> {
        let greeting = self.line().await?;
        if !greeting.starts_with("* OK") {
            return Err(self.not_offered(format!("its greeting is {}", Self::quote(&greeting))));
        }
        self.send(b"a STARTTLS\r\n").await?;
        // Untagged lines may come first; the tagged one decides.
        loop {
            let line = self.line().await?;
            if let Some(rest) = line.strip_prefix("a ") {
                return if rest.starts_with("OK") {
                    Ok(())
                } else {
                    Err(self.not_offered(format!("STARTTLS answered {}", Self::quote(rest))))
                };
            }
            if !line.starts_with('*') {
                return Err(self.protocol(format!("unexpected reply {}", Self::quote(&line))));
            }
        }
    }

    async fn pop3(&mut self) -> Result<(), StartTlsError> {
        let greeting = self.line().await?;
        if !greeting.starts_with("+OK") {
            return Err(self.not_offered(format!("its greeting is {}", Self::quote(&greeting))));
        }
        self.send(b"STLS\r\n").await?;
        let reply = self.line().await?;
        if reply.starts_with("+OK") {
            Ok(())
        } else {
            Err(self.not_offered(format!("STLS answered {}", Self::quote(&reply))))
        }
    }

    /// A BER tag and definite length (short or long form, at most 4 length bytes).
    async fn ber_head(&mut self) -> Result<(u8, usize), StartTlsError> {
        let tag = self.exact(1).await?[0];
        let first = self.exact(1).await?[0];
        let len = if first & 0x80 == 0 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err(self.protocol("a BER length that is indefinite or longer than 4 bytes"));
            }
            self.exact(n)
                .await?
                .iter()
                .fold(0usize, |acc, &b| acc << 8 | usize::from(b))
        };
        Ok((tag, len))
    }

    async fn ldap(&mut self) -> Result<(), StartTlsError> {
        self.send(LDAP_START_TLS).await?;
        let (tag, len) = self.ber_head().await?;
        if tag != 0x30 || len > MAX_PACKET {
            return Err(self.protocol(format!(
                "a response with tag 0x{tag:02x} and {len} bytes, not an LDAPMessage"
            )));
        }
        let body = self.exact(len).await?;
        let r = Ber(&body);
        let (id, rest) = r
            .take(0x02)
            .ok_or_else(|| self.protocol("the response has no message ID"))?;
        let (op, _) = rest
            .take_any()
            .ok_or_else(|| self.protocol("the response has no operation"))?;
        let (code, diag) =
            op.1.extended_result()
                .ok_or_else(|| self.protocol("the response's result does not parse"))?;
        if id != [1] {
            // Message 0 is the Notice of Disconnection (RFC 4511 4.4.1).
            return Err(self.not_offered(format!(
                "it sent an unsolicited notice instead (result code {code}: {})",
                Self::quote(&diag)
            )));
        }
        if op.0 != 0x78 {
            return Err(self.protocol(format!(
                "it answered with operation 0x{:02x}, not an ExtendedResponse",
                op.0
            )));
        }
        match code {
            0 => Ok(()),
            _ => Err(self.not_offered(format!(
                "StartTLS answered result code {code} ({})",
                Self::quote(&diag)
            ))),
        }
    }
}

/// A slice of BER elements, read one at a time (short definite lengths of
/// up to 4 bytes; everything else is refused as malformed).
struct Ber<'a>(&'a [u8]);

impl<'a> Ber<'a> {
    /// The next element: (tag, contents) and what follows.
    fn take_any(&self) -> Option<((u8, Ber<'a>), Ber<'a>)> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first & 0x80 == 0 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| acc << 8 | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        Some(((tag, Ber(&rest[..len])), Ber(&rest[len..])))
    }

    /// The next element, which must have `tag`: its contents and the rest.
    fn take(&self, tag: u8) -> Option<(&'a [u8], Ber<'a>)> {
        let ((t, body), rest) = self.take_any()?;
        (t == tag).then_some((body.0, rest))
    }

    /// An LDAPResult's resultCode and diagnosticMessage.
    fn extended_result(&self) -> Option<(u32, String)> {
        let (code, rest) = self.take(0x0a)?;
        if code.is_empty() || code.len() > 4 {
            return None;
        }
        let code = code.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b));
        let (_matched, rest) = rest.take(0x04)?;
        let (diag, _) = rest.take(0x04)?;
        Some((code, String::from_utf8_lossy(diag).into_owned()))
    }
}

#[cfg(test)]
#[path = "starttls_tests.rs"]
mod tests;
