//! `starttls = "..."`: the protocols whose TLS starts after a plaintext
//! negotiation, for `verify` TLS probes and endpoint watches.

/// The plaintext negotiation a server needs before its TLS handshake
/// (`starttls = "..."`); see [`crate::handoff::starttls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StartTls {
    /// PostgreSQL: SSLRequest, answered 'S'.
    Postgres,
    /// MySQL and MariaDB: the SSL request packet after the greeting.
    Mysql,
    /// SMTP: EHLO, then STARTTLS answered 220.
    Smtp,
    /// IMAP: `a STARTTLS` answered `a OK`.
    Imap,
    /// POP3: `STLS` answered `+OK`.
    Pop3,
    /// LDAP: the StartTLS extended operation, answered with result 0.
    Ldap,
}

impl StartTls {
    /// Every protocol, in the order the docs list them.
    pub const ALL: [StartTls; 6] = [
        StartTls::Postgres,
        StartTls::Mysql,
        StartTls::Smtp,
        StartTls::Imap,
        StartTls::Pop3,
        StartTls::Ldap,
    ];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StartTls::Postgres => "postgres",
            StartTls::Mysql => "mysql",
            StartTls::Smtp => "smtp",
            StartTls::Imap => "imap",
            StartTls::Pop3 => "pop3",
            StartTls::Ldap => "ldap",
        }
    }
}

/// `starttls = "..."`: one of [`StartTls::ALL`].
pub(super) fn parse(s: &str) -> Result<StartTls, String> {
    StartTls::ALL
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| {
            let all: Vec<&str> = StartTls::ALL.iter().map(|p| p.as_str()).collect();
            format!(
                "unknown protocol \"{s}\"; allowed: {} (leave starttls out for a server that speaks TLS from the first byte)",
                all.join(", ")
            )
        })
}
