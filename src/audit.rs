//! The audit log: an append-only, hash-chained JSON-lines file of what rekey
//! did to each credential (issued, published, reloaded, verified, ...).
//!
//! Each line is one record. `prev` is the hex SHA-256 of the previous line
//! (across size rotations), `seq` counts records, and `hash` is the SHA-256
//! of the line without its `hash` member, so an edited, removed or reordered
//! record is found by [`verify`] and named by file and line. Never a secret:
//! records hold names, generations, fingerprints and outcomes only.

mod chain;
mod file;
mod outcome;
mod read;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::config::{ApiKeyConfig, CertificateConfig};
use crate::handoff::{Generation, Verdict};
use crate::timestamp::Timestamp;
use file::open_append;

pub use chain::{compressed, files, rotated_path, verify, Broken, Verified, GENESIS, KEEP};
pub use outcome::AuditOutcome;
pub use read::{format, read_all, Filter};

/// Default for `daemon.audit_max_size`: 10 MiB (defined by config, which
/// imports nothing of rekey's).
pub const DEFAULT_MAX_SIZE: u64 = crate::config::DEFAULT_AUDIT_MAX_SIZE;

/// Why the audit log cannot be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file operation failed.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file could not be opened for reading (not a regular file, a symlink...).
    #[error("audit log: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why; names the path.
        source: crate::fs::safefile::ReadError,
    },
    /// A record could not be encoded (never expected).
    #[error("audit record: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// The issuer answered (or failed to) for a new generation.
    Issued,
    /// The generation's files were swapped in.
    Published,
    /// The application was told to reload.
    Reloaded,
    /// The probes' verdict on the new generation.
    Verified,
    /// A failed handoff was undone (or kept, per `on_failure`).
    RolledBack,
    /// A credential was revoked at its issuer.
    Revoked,
    /// Managed files were changed behind rekey's back.
    Tampered,
    /// The daemon started with a config.
    ConfigLoaded,
    /// SIGHUP applied a new config (or rejected it).
    ConfigReloaded,
    /// A credential was decommissioned.
    Retired,
    /// A credential found on disk at start was adopted, or refused (and
    /// reissued) with the reason.
    Adopted,
}

impl AuditEvent {
    /// The JSON spelling, e.g. "rolled_back".
    pub fn as_str(&self) -> &'static str {
        match self {
            AuditEvent::Issued => "issued",
            AuditEvent::Published => "published",
            AuditEvent::Reloaded => "reloaded",
            AuditEvent::Verified => "verified",
            AuditEvent::RolledBack => "rolled_back",
            AuditEvent::Revoked => "revoked",
            AuditEvent::Tampered => "tampered",
            AuditEvent::ConfigLoaded => "config_loaded",
            AuditEvent::ConfigReloaded => "config_reloaded",
            AuditEvent::Retired => "retired",
            AuditEvent::Adopted => "adopted",
        }
    }
}

/// One line of the audit log (members in this order on disk, `hash` last).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// 1 for the first record ever, +1 per record, across rotated files.
    pub seq: u64,
    /// When it was written (RFC 3339, UTC, to the second on the wire).
    pub time: Timestamp,
    /// What happened.
    pub event: AuditEvent,
    /// Credential name ("" for daemon-wide events).
    pub credential: String,
    /// The credential's owning team, when configured.
    pub team: Option<String>,
    /// Generation number.
    pub generation: Option<u64>,
    /// `sha256:` of the leaf certificate.
    pub fingerprint: Option<String>,
    /// An API key's id.
    pub key_id: Option<String>,
    /// The issuer's name.
    pub issuer: Option<String>,
    /// How the step ended.
    pub outcome: AuditOutcome,
    /// Why, in words (an error message, a trigger).
    pub reason: Option<String>,
    /// Hex SHA-256 of the previous line.
    pub prev: String,
}

/// What a caller records; the log adds seq, time and prev.
#[derive(Clone, Debug)]
pub struct Entry {
    /// What happened.
    pub event: AuditEvent,
    /// Credential name.
    pub credential: String,
    /// Owning team.
    pub team: Option<String>,
    /// Generation number.
    pub generation: Option<u64>,
    /// Leaf fingerprint.
    pub fingerprint: Option<String>,
    /// API key id.
    pub key_id: Option<String>,
    /// Issuer name.
    pub issuer: Option<String>,
    /// How the step ended.
    pub outcome: AuditOutcome,
    /// Reason in words.
    pub reason: Option<String>,
}

impl Entry {
    /// A daemon-wide entry (config events).
    pub fn daemon(event: AuditEvent, outcome: AuditOutcome, reason: Option<String>) -> Entry {
        Entry {
            event,
            credential: String::new(),
            team: None,
            generation: None,
            fingerprint: None,
            key_id: None,
            issuer: None,
            outcome,
            reason,
        }
    }

    /// An entry about certificate `cfg`.
    pub fn cert(cfg: &CertificateConfig, event: AuditEvent, outcome: AuditOutcome) -> Entry {
        Entry {
            event,
            credential: cfg.name.clone(),
            team: cfg.team.clone(),
            generation: None,
            fingerprint: None,
            key_id: None,
            issuer: Some(cfg.issuer.clone()),
            outcome,
            reason: None,
        }
    }

    /// An entry about API key `cfg`'s key `key_id` (no team: keys carry none yet).
    pub fn key(
        cfg: &ApiKeyConfig,
        event: AuditEvent,
        outcome: AuditOutcome,
        key_id: Option<&str>,
    ) -> Entry {
        Entry {
            event,
            credential: cfg.name.clone(),
            team: None,
            generation: None,
            fingerprint: None,
            key_id: key_id.map(str::to_string),
            issuer: Some(cfg.issuer.clone()),
            outcome,
            reason: None,
        }
    }

    /// Set the generation and fingerprint.
    pub fn generation(mut self, generation: u64, fingerprint: &str) -> Entry {
        self.generation = Some(generation);
        self.fingerprint = Some(fingerprint.to_string());
        self
    }

    /// Set the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Entry {
        self.reason = Some(reason.into());
        self
    }
}

/// The open file and the chain state.
struct Writer {
    path: PathBuf,
    max_size: u64,
    file: Option<File>,
    size: u64,
    last_hash: String,
    next_seq: u64,
}

/// A cheap, cloneable handle to the audit log; a no-op when not configured.
#[derive(Clone, Default)]
pub struct Audit {
    inner: Option<Arc<Mutex<Writer>>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.inner.is_some() {
            "Audit(on)"
        } else {
            "Audit(off)"
        })
    }
}

impl Audit {
    /// A handle that records nothing.
    pub fn none() -> Audit {
        Audit { inner: None }
    }

    /// Open (or create) the log at `path`, continuing its chain.
    pub fn open(path: &Path, max_size: u64) -> Result<Audit, AuditError> {
        let (last_hash, next_seq) = chain::tail(path)?;
        let file = open_append(path)?;
        let size = file.metadata().map_err(io_err(path))?.len();
        Ok(Audit {
            inner: Some(Arc::new(Mutex::new(Writer {
                path: path.to_path_buf(),
                max_size: max_size.max(1),
                file: Some(file),
                size,
                last_hash,
                next_seq,
            }))),
        })
    }

    /// Whether records are written at all.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Append `entry` and fsync it; a failure is logged, never fatal, because
    /// refusing to rotate would turn an audit problem into an outage.
    pub fn record(&self, entry: Entry) {
        if let Err(e) = self.try_record(entry) {
            tracing::error!(error = %e, event = "audit_failed", "cannot write the audit log");
        }
    }

    /// Let go of a file that logrotate renamed or removed, so the next
    /// record starts the file at the configured path (SIGHUP calls this;
    /// every record checks it anyway).
    pub fn reopen(&self) {
        let Some(inner) = &self.inner else { return };
        let mut w = inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = w.follow_path(false) {
            tracing::error!(error = %e, event = "audit_failed", "cannot reopen the audit log");
        }
    }

    /// Append `entry` and fsync it before returning.
    pub fn try_record(&self, entry: Entry) -> Result<(), AuditError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        // A poisoned lock only means a panic elsewhere; the state is still consistent.
        let mut w = inner.lock().unwrap_or_else(|e| e.into_inner());
        w.append(entry)
    }

    /// Record a certificate event without generation.
    pub fn cert(
        &self,
        cfg: &CertificateConfig,
        event: AuditEvent,
        outcome: AuditOutcome,
        reason: Option<&str>,
    ) {
        if !self.is_on() {
            return;
        }
        let mut e = Entry::cert(cfg, event, outcome);
        e.reason = reason.map(str::to_string);
        self.record(e);
    }

    /// Record a certificate event about generation `g` (fingerprint `fp`).
    pub fn gen(
        &self,
        cfg: &CertificateConfig,
        event: AuditEvent,
        g: u64,
        fp: &str,
        outcome: AuditOutcome,
        reason: Option<&str>,
    ) {
        if !self.is_on() {
            return;
        }
        let mut e = Entry::cert(cfg, event, outcome).generation(g, fp);
        e.reason = reason.map(str::to_string);
        self.record(e);
    }

    /// `issued` / success for generation `g`.
    pub fn issued(&self, cfg: &CertificateConfig, g: u64, fp: &str) {
        self.gen(cfg, AuditEvent::Issued, g, fp, AuditOutcome::Success, None);
    }

    /// `issued` / failure: the issuer refused or the answer was invalid.
    pub fn issue_failed(&self, cfg: &CertificateConfig, e: &dyn std::fmt::Display) {
        self.cert(
            cfg,
            AuditEvent::Issued,
            AuditOutcome::Failure,
            Some(&e.to_string()),
        );
    }

    /// `published` / success.
    pub fn published(&self, cfg: &CertificateConfig, g: u64, fp: &str) {
        self.gen(
            cfg,
            AuditEvent::Published,
            g,
            fp,
            AuditOutcome::Success,
            None,
        );
    }

    /// `published` / failure (the committed generation was put back).
    pub fn publish_failed(
        &self,
        cfg: &CertificateConfig,
        g: u64,
        fp: &str,
        e: &dyn std::fmt::Display,
    ) {
        self.gen(
            cfg,
            AuditEvent::Published,
            g,
            fp,
            AuditOutcome::Failure,
            Some(&e.to_string()),
        );
    }

    /// `rolled_back` / rolled_back, or / kept when the new generation stays.
    pub fn rolled_back(
        &self,
        cfg: &CertificateConfig,
        gen: &Generation,
        rolled_back: bool,
        why: &str,
    ) {
        let outcome = if rolled_back {
            AuditOutcome::RolledBack
        } else {
            AuditOutcome::Kept
        };
        self.gen(
            cfg,
            AuditEvent::RolledBack,
            gen.generation,
            &gen.fingerprint,
            outcome,
            Some(why),
        );
    }

    /// `tampered` / restoring, naming the changed files.
    pub fn tampered(&self, cfg: &CertificateConfig, g: u64, fp: &str, files: &[String]) {
        self.gen(
            cfg,
            AuditEvent::Tampered,
            g,
            fp,
            AuditOutcome::Restoring,
            Some(&files.join(", ")),
        );
    }

    /// Record a reload's result for `gen` and pass it through unchanged.
    pub fn reloaded<E: std::fmt::Display>(
        &self,
        cfg: &CertificateConfig,
        gen: &Generation,
        result: Result<(), E>,
    ) -> Result<(), E> {
        let (outcome, reason) = match &result {
            Ok(()) => (AuditOutcome::Success, None),
            Err(e) => (AuditOutcome::Failure, Some(e.to_string())),
        };
        self.gen(
            cfg,
            AuditEvent::Reloaded,
            gen.generation,
            &gen.fingerprint,
            outcome,
            reason.as_deref(),
        );
        result
    }

    /// Record the probes' verdict on `gen` as a `verified` event.
    pub fn verdict(&self, cfg: &CertificateConfig, gen: &Generation, verdict: &Verdict) {
        let (outcome, reason) = match verdict {
            Verdict::Verified => (AuditOutcome::Verified, None),
            Verdict::Unverified => (AuditOutcome::Unverified, Some("verify = none")),
            Verdict::Unreachable(why) => (AuditOutcome::Unreachable, Some(why.as_str())),
            Verdict::Failed { detail, .. } => (AuditOutcome::Failed, Some(detail.as_str())),
        };
        self.gen(
            cfg,
            AuditEvent::Verified,
            gen.generation,
            &gen.fingerprint,
            outcome,
            reason,
        );
    }
}

impl Writer {
    fn append(&mut self, entry: Entry) -> Result<(), AuditError> {
        let record = Record {
            seq: self.next_seq,
            time: Timestamp::now(),
            event: entry.event,
            credential: entry.credential,
            team: entry.team,
            generation: entry.generation,
            fingerprint: entry.fingerprint,
            key_id: entry.key_id,
            issuer: entry.issuer,
            outcome: entry.outcome,
            reason: entry.reason,
            prev: self.last_hash.clone(),
        };
        let line = chain::encode(&record)?;
        let len = line.len() as u64 + 1;
        self.follow_path(true)?;
        if self.size > 0 && self.size + len > self.max_size {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(open_append(&self.path)?),
        };
        // One write of the whole line: O_APPEND keeps it in one piece.
        let mut buf = line.clone().into_bytes();
        buf.push(b'\n');
        file.write_all(&buf).map_err(io_err(&self.path))?;
        file.sync_data().map_err(io_err(&self.path))?;
        self.size += len;
        self.last_hash = chain::hash_line(&line);
        self.next_seq += 1;
        Ok(())
    }

    /// Make `file` the file at `path` again when something else moved it
    /// away: logrotate renamed it (the open descriptor would keep writing
    /// into `PATH.1`), removed it (records would go to a deleted inode), or
    /// replaced it. A copy-and-truncate leaves the same file, now shorter;
    /// the size is taken from it so rekey's own size limit stays right.
    /// With `create`, a missing file is created (a record is coming);
    /// otherwise it waits for the next record.
    fn follow_path(&mut self, create: bool) -> Result<(), AuditError> {
        use std::os::unix::fs::MetadataExt;
        if let Some(f) = &self.file {
            let open = f.metadata().map_err(io_err(&self.path))?;
            let same = std::fs::metadata(&self.path)
                .is_ok_and(|m| m.dev() == open.dev() && m.ino() == open.ino());
            if same && open.nlink() > 0 {
                self.size = open.len();
                return Ok(());
            }
            tracing::info!(path = %self.path.display(), event = "audit_reopened", "the audit log was rotated or removed by something else; records go to a new file at its path, the hash chain continues");
            self.file = None;
        }
        if create || self.path.exists() {
            let f = open_append(&self.path)?;
            self.size = f.metadata().map_err(io_err(&self.path))?.len();
            self.file = Some(f);
        }
        Ok(())
    }

    /// PATH.4→.5 … PATH→PATH.1, then a fresh PATH; the chain carries over.
    fn rotate(&mut self) -> Result<(), AuditError> {
        self.file = None;
        for n in (1..KEEP).rev() {
            let from = rotated_path(&self.path, n);
            if from.exists() {
                let to = rotated_path(&self.path, n + 1);
                std::fs::rename(&from, &to).map_err(io_err(&from))?;
            }
        }
        let to = rotated_path(&self.path, 1);
        std::fs::rename(&self.path, &to).map_err(io_err(&self.path))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the renames durable before records go to the new file.
            let d = OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NONBLOCK)
                .open(dir);
            if let Ok(d) = d {
                let _ = d.sync_all();
            }
        }
        self.file = Some(open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
