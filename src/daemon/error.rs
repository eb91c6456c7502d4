//! Why `rekey run` could not start or stopped abnormally.

use crate::alert::AlertError;
use crate::audit::AuditError;
use crate::issuer::IssuerError;
use crate::server::ServerError;
use crate::store::StoreError;
use crate::token::TokenError;

/// Why the daemon could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state dir could not be opened.
    #[error("daemon.state_dir: {0}")]
    Store(StoreError),
    /// An issuer could not be set up.
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    /// The endpoint could not be bound.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A reload or probe could not be set up.
    #[error("certificate {credential}: {why}")]
    Handoff {
        /// Credential.
        credential: String,
        /// What is wrong and what to do.
        why: String,
    },
    /// An alert sink could not be set up (unreadable header file, no TLS roots...).
    #[error(transparent)]
    Alert(#[from] AlertError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The admin token file could not be read.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The audit log could not be opened.
    #[error("daemon.audit_log: {0}")]
    Audit(AuditError),
    /// The watches could not be set up.
    #[error(transparent)]
    Watch(#[from] crate::monitor::WatchError),
}

// Not `#[from]`: that would also make the inner error the source, and
// `{:#}` would print its message twice after the config key.
impl From<StoreError> for DaemonError {
    fn from(e: StoreError) -> Self {
        DaemonError::Store(e)
    }
}

impl From<AuditError> for DaemonError {
    fn from(e: AuditError) -> Self {
        DaemonError::Audit(e)
    }
}
