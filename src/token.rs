//! The admin token that guards `POST /v1/rotate/NAME` (`daemon.admin_token_file`).
//!
//! The daemon keeps only the token's SHA-256: the file's bytes are zeroized
//! right after reading, and presented tokens are hashed before a
//! constant-time comparison, so neither the contents nor the length of the
//! token leak through timing.

use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{digest, SHA256};

use crate::fs::safefile::{self, Guard, ReadError};

/// Reading the token file failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read (missing, not a regular file, too large,
    /// writable by other users).
    #[error("daemon.admin_token_file: {source}")]
    Read {
        /// The token file.
        path: PathBuf,
        /// Why; names the path.
        source: ReadError,
    },
    /// The file holds nothing but whitespace.
    #[error("daemon.admin_token_file: {} is empty; write a long random token into it (e.g. `openssl rand -hex 32`)", path.display())]
    Empty {
        /// The token file.
        path: PathBuf,
    },
}

/// A bearer token, kept as its SHA-256 only. `Debug` shows nothing secret.
#[derive(Clone)]
pub struct AdminToken {
    hash: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// The token in `path`: its contents without surrounding whitespace
    /// (files written by `echo` end with a newline). The file is read as a
    /// secret (see [`crate::fs::safefile::read_guarded`]): refused when other
    /// users can write it, a WARN when they can read it.
    pub fn read(path: &Path) -> Result<AdminToken, TokenError> {
        let bytes = safefile::read_guarded(
            path,
            "daemon.admin_token_file",
            Guard::Secret,
            safefile::MAX_SECRET,
        )
        .map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let token = bytes.trim_ascii();
        if token.is_empty() {
            return Err(TokenError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(AdminToken::from_bytes(token))
    }

    /// A token from bytes already in memory.
    pub fn from_bytes(token: &[u8]) -> AdminToken {
        AdminToken {
            hash: sha256(token),
        }
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`.
    /// Compares hashes in constant time.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(presented) = strip_bearer(value) else {
            return false;
        };
        aws_lc_rs::constant_time::verify_slices_are_equal(&sha256(presented), &self.hash).is_ok()
    }
}

/// The credentials of a `Bearer` authorization (scheme case-insensitive, RFC 9110).
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_exact_bearer_token() {
        let t = AdminToken::from_bytes(b"s3cret-token");
        assert!(t.accepts(Some(b"Bearer s3cret-token")));
        assert!(t.accepts(Some(b"bearer s3cret-token")));
        assert!(t.accepts(Some(b"BEARER  s3cret-token ")));
        for bad in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer s3cret-toke",
            b"Bearer s3cret-token2",
            b"Basic s3cret-token",
            b"s3cret-token",
        ] {
            assert!(!t.accepts(Some(bad)), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(!t.accepts(None));
    }

    #[test]
    fn reads_the_file_trimmed_and_refuses_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "abc123\n").unwrap();
        let t = AdminToken::read(&p).unwrap();
        assert!(t.accepts(Some(b"Bearer abc123")));
        assert_eq!(format!("{t:?}"), "AdminToken(<redacted>)");

        std::fs::write(&p, " \n").unwrap();
        let e = AdminToken::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("daemon.admin_token_file") && e.contains("empty"),
            "{e}"
        );
        let e = AdminToken::read(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
