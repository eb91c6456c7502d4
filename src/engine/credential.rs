//! One credential's task: recover at start, adopt or restore what is on disk,
//! rotate when due, repair drift, back off on failure.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch, Semaphore};

use super::disk::{self, DiskState};
use super::journal::{recovery, Journal, Pending, Recovery, Step};
use super::{Command, Credential};
use crate::cert::{self, CertInfo, IssuedPem, Names};
use crate::config::CertificateConfig;
use crate::issuer::{IssueRequest, Issuer};
use crate::schedule;
use crate::status::{CredentialStatus, Handoff, LastRotation, RotateOutcome, Snapshot, State};
use crate::store::{self, CredentialStore, Material, Store, Target};

/// Why one rotation attempt failed. Messages name the credential and say
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// Key generation or CSR building failed.
    #[error("{credential}: {source}")]
    Cert {
        /// Credential name.
        credential: String,
        /// Cause.
        source: cert::CertError,
    },
    /// The issuer failed.
    #[error(transparent)]
    Issuer(#[from] crate::issuer::IssuerError),
    /// The issuer returned something we will not install.
    #[error(
        "{credential}: issuer {issuer} returned an unusable certificate, not installed: {why}"
    )]
    Invalid {
        /// Credential name.
        credential: String,
        /// Issuer name.
        issuer: String,
        /// What was wrong.
        why: cert::Invalid,
    },
    /// A disk operation failed; the old credential stays in place.
    #[error("{credential}: {source}")]
    Store {
        /// Credential name.
        credential: String,
        /// Cause.
        source: store::StoreError,
    },
}

impl RotateError {
    fn retry_after(&self) -> Option<Duration> {
        match self {
            RotateError::Issuer(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// The committed generation, in memory.
struct Current {
    generation: u64,
    material: Material,
    info: CertInfo,
}

pub(super) struct Task {
    cfg: CertificateConfig,
    names: Names,
    targets: Vec<Target>,
    issuer: Arc<dyn Issuer>,
    store: CredentialStore,
    journal: Journal,
    current: Option<Current>,
    status_tx: watch::Sender<Snapshot>,
    permits: Arc<Semaphore>,
    backstop: Duration,
    failures: u32,
    retry_at: Option<SystemTime>,
    last_rotation: Option<LastRotation>,
    last_error: Option<String>,
    renewing: bool,
}

impl Task {
    pub(super) fn new(
        c: Credential,
        store: Arc<Store>,
        status_tx: watch::Sender<Snapshot>,
        permits: Arc<Semaphore>,
        backstop: Duration,
    ) -> Task {
        Task {
            names: disk::names_of(&c.config),
            targets: super::targets(&c.config),
            store: store.credential(&c.config.name),
            cfg: c.config,
            issuer: c.issuer,
            journal: Journal::default(),
            current: None,
            status_tx,
            permits,
            backstop,
            failures: 0,
            retry_at: None,
            last_rotation: None,
            last_error: None,
            renewing: false,
        }
    }

    fn store_err(&self, source: store::StoreError) -> RotateError {
        RotateError::Store {
            credential: self.cfg.name.clone(),
            source,
        }
    }

    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.start();
        self.publish_status();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = SystemTime::now();
            let due = self.due_at(now);
            if due <= now {
                self.rotate().await;
                continue;
            }
            let sleep = schedule::until(due, now).min(self.backstop);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {
                    if SystemTime::now() < due {
                        self.check_files("backstop re-check");
                    }
                }
                cmd = rx.recv() => match cmd {
                    Some(Command::Rotate(reply)) => {
                        let outcome = self.rotate().await;
                        let _ = reply.send(outcome);
                    }
                    Some(Command::FilesChanged) => self.check_files("file event"),
                    None => break,
                },
                _ = shutdown.changed() => break,
            }
        }
        tracing::debug!(credential = %self.cfg.name, "stopped");
    }

    /// Recover an interrupted rotation, then load the committed generation or
    /// adopt a valid pair found on disk, then repair drift.
    fn start(&mut self) {
        let name = self.cfg.name.clone();
        self.journal = match self.store.load_journal::<Journal>() {
            Ok(Some(j)) => j,
            Ok(None) => Journal::default(),
            Err(e) => {
                tracing::error!(credential = %name, error = %e, "journal unreadable; starting from what is on disk");
                Journal::default()
            }
        };
        let staged = self
            .journal
            .pending
            .is_some_and(|p| self.store.has_generation(p.generation));
        match recovery(&self.journal, staged) {
            Recovery::Nothing => {}
            Recovery::Discard(g) => {
                tracing::info!(credential = %name, generation = g, "discarding a rotation interrupted before publish");
                self.journal.pending = None;
                self.save_and_prune();
            }
            Recovery::RollForward(g) => match self.store.load_generation(g) {
                Ok(m) => match store::publish(&self.targets, self.cfg.swap, &m) {
                    Ok(()) => {
                        tracing::info!(credential = %name, generation = g, event = "recovered", "finished a rotation interrupted during publish");
                        self.journal.commit(g, fastrand::f64());
                        self.save_and_prune();
                    }
                    Err(e) => {
                        tracing::error!(credential = %name, generation = g, error = %e, "cannot finish the interrupted publish");
                        self.journal.pending = None;
                        self.save_and_prune();
                    }
                },
                Err(e) => {
                    tracing::error!(credential = %name, generation = g, error = %e, "staged generation unreadable; discarding it");
                    self.journal.pending = None;
                    self.save_and_prune();
                }
            },
        }
        if let Some(g) = self.journal.committed {
            match self.load_current(g) {
                Ok(c) => self.current = Some(c),
                Err(e) => {
                    tracing::error!(credential = %name, generation = g, error = %e, "committed generation unreadable; checking the published files");
                }
            }
        }
        if self.current.is_none() {
            self.adopt();
        }
        self.check_files("start");
    }

    fn load_current(&self, g: u64) -> Result<Current, String> {
        let material = self.store.load_generation(g).map_err(|e| e.to_string())?;
        let ders = cert::pem_certs(material.cert_pem.as_bytes(), "staged certificate")
            .map_err(|e| e.to_string())?;
        let der = ders.first().ok_or("staged certificate is empty")?;
        let info = cert::parse_der(der).map_err(|e| e.to_string())?;
        Ok(Current {
            generation: g,
            material,
            info,
        })
    }

    /// A valid pair already published (by an earlier install, or a state dir
    /// that was lost) is adopted instead of reissued: reissuing on every
    /// restart burns CA rate limits.
    fn adopt(&mut self) {
        let (state, material) = disk::assess(&self.cfg, SystemTime::now());
        let (DiskState::Valid(info), Some(material)) = (state.clone(), material) else {
            tracing::info!(credential = %self.cfg.name, on_disk = %state.describe(), "no usable credential on disk; will issue");
            return;
        };
        let g = self.journal.allocate();
        if let Err(e) = self.store.stage(g, &material) {
            tracing::error!(credential = %self.cfg.name, error = %e, "cannot stage the adopted credential; will issue");
            return;
        }
        self.journal.commit(g, fastrand::f64());
        self.save_and_prune();
        tracing::info!(credential = %self.cfg.name, generation = g, fingerprint = %info.fingerprint, event = "adopted", "adopted the valid credential found on disk");
        self.current = Some(Current {
            generation: g,
            material,
            info: *info,
        });
    }

    /// When the next rotation is due: now when there is no usable committed
    /// credential, else its jittered renewal point; a pending retry wins.
    fn due_at(&self, now: SystemTime) -> SystemTime {
        let natural = match &self.current {
            Some(c) if self.usable(&c.info, now) => schedule::renewal_point(
                c.info.not_before,
                c.info.not_after,
                self.cfg.renew_before,
                self.cfg.jitter,
                self.journal.jitter_draw,
            ),
            _ => now,
        };
        match self.retry_at {
            Some(r) if self.failures > 0 => r,
            _ => natural,
        }
    }

    fn usable(&self, info: &CertInfo, now: SystemTime) -> bool {
        info.not_after > now && cert::missing_names(info, &self.names).is_empty()
    }

    /// Compare the published files with the committed generation; put it
    /// back if something else changed them and it is still valid.
    fn check_files(&mut self, reason: &str) {
        let Some(cur) = &self.current else { return };
        let drift = store::diff_published(&self.targets, self.cfg.swap, &cur.material);
        if drift.is_empty() {
            return;
        }
        let what: Vec<String> = drift
            .iter()
            .map(|d| format!("{} ({})", d.path.display(), d.reason))
            .collect();
        tracing::warn!(credential = %self.cfg.name, generation = cur.generation, event = "tampered", trigger = reason, files = %what.join(", "), "managed files changed behind rekey's back");
        if cur.info.not_after <= SystemTime::now() {
            return; // expired: the due logic rotates instead
        }
        match store::publish(&self.targets, self.cfg.swap, &cur.material) {
            Ok(()) => {
                tracing::info!(credential = %self.cfg.name, generation = cur.generation, event = "restored", "restored the committed generation")
            }
            Err(e) => {
                tracing::error!(credential = %self.cfg.name, error = %e, "cannot restore the committed generation")
            }
        }
    }

    fn save_and_prune(&mut self) {
        if let Err(e) = self.store.save_journal(&self.journal) {
            tracing::error!(credential = %self.cfg.name, error = %e, "cannot save the journal");
            return;
        }
        if let Err(e) = self.store.prune(&self.journal.keep()) {
            tracing::warn!(credential = %self.cfg.name, error = %e, "cannot remove old generations");
        }
    }

    async fn rotate(&mut self) -> RotateOutcome {
        let _permit = self.permits.clone().acquire_owned().await;
        self.renewing = true;
        self.publish_status();
        let started = Instant::now();
        let result = self.try_rotate().await;
        self.renewing = false;
        let at = cert::rfc3339(SystemTime::now());
        let duration_ms = started.elapsed().as_millis() as u64;
        let outcome = match result {
            Ok(()) => {
                self.failures = 0;
                self.retry_at = None;
                self.last_error = None;
                self.last_rotation = Some(LastRotation {
                    at,
                    result: "success".into(),
                    duration_ms,
                });
                let cur = self.current.as_ref();
                tracing::info!(credential = %self.cfg.name, generation = cur.map(|c| c.generation), fingerprint = cur.map(|c| c.info.fingerprint.as_str()), issuer = %self.cfg.issuer, duration_ms, event = "rotated", "published a new generation");
                RotateOutcome {
                    credential: self.cfg.name.clone(),
                    result: "success".into(),
                    generation: cur.map(|c| c.generation),
                    fingerprint: cur.map(|c| c.info.fingerprint.clone()),
                    error: None,
                }
            }
            Err(e) => {
                let lifetime = self.cfg.lifetime;
                let delay = schedule::retry_delay(
                    self.failures,
                    lifetime,
                    fastrand::f64(),
                    e.retry_after(),
                );
                self.failures += 1;
                self.retry_at = Some(SystemTime::now() + delay);
                let msg = e.to_string();
                tracing::warn!(credential = %self.cfg.name, issuer = %self.cfg.issuer, error = %msg, retry_in_ms = delay.as_millis() as u64, consecutive_failures = self.failures, event = "renewal_failed", "rotation failed; the current credential stays in place");
                self.last_error = Some(msg.clone());
                self.last_rotation = Some(LastRotation {
                    at,
                    result: "failed".into(),
                    duration_ms,
                });
                RotateOutcome {
                    credential: self.cfg.name.clone(),
                    result: "failed".into(),
                    generation: self.current.as_ref().map(|c| c.generation),
                    fingerprint: self.current.as_ref().map(|c| c.info.fingerprint.clone()),
                    error: Some(msg),
                }
            }
        };
        self.publish_status();
        outcome
    }

    /// Issue, validate, stage, publish, commit; each step journaled first.
    async fn try_rotate(&mut self) -> Result<(), RotateError> {
        let g = self.journal.allocate();
        self.set_pending(g, Step::Issuing)?;
        let result = self.issue(g).await;
        let (material, info) = match result {
            Ok(x) => x,
            Err(e) => {
                self.journal.pending = None;
                self.save_and_prune();
                return Err(e);
            }
        };
        self.set_pending(g, Step::Staging)?;
        if let Err(e) = self.store.stage(g, &material) {
            self.journal.pending = None;
            self.save_and_prune();
            return Err(self.store_err(e));
        }
        self.set_pending(g, Step::Publishing)?;
        if let Err(e) = store::publish(&self.targets, self.cfg.swap, &material) {
            // Put the committed generation back in case some files had flipped.
            if let Some(cur) = &self.current {
                if let Err(e2) = store::publish(&self.targets, self.cfg.swap, &cur.material) {
                    tracing::error!(credential = %self.cfg.name, error = %e2, "cannot restore the committed generation after a failed publish");
                }
            }
            self.journal.pending = None;
            self.save_and_prune();
            return Err(self.store_err(e));
        }
        self.journal.commit(g, fastrand::f64());
        self.save_and_prune();
        self.current = Some(Current {
            generation: g,
            material,
            info,
        });
        Ok(())
    }

    fn set_pending(&mut self, generation: u64, step: Step) -> Result<(), RotateError> {
        self.journal.pending = Some(Pending { generation, step });
        self.store
            .save_journal(&self.journal)
            .map_err(|e| self.store_err(e))
    }

    /// Generate the key locally, send only the CSR, validate the answer.
    async fn issue(&self, g: u64) -> Result<(Material, CertInfo), RotateError> {
        let key_type = self.cfg.key_type;
        let cert_err = |source| RotateError::Cert {
            credential: self.cfg.name.clone(),
            source,
        };
        // RSA keys take up to a second or two: keep them off the async workers.
        let key = tokio::task::spawn_blocking(move || cert::generate_key(key_type))
            .await
            .map_err(|e| {
                cert_err(cert::CertError::KeyGen {
                    key_type: key_type.as_str(),
                    reason: e.to_string(),
                })
            })?
            .map_err(cert_err)?;
        let csr_der = cert::build_csr(&key, &self.names).map_err(cert_err)?;
        let req = IssueRequest {
            credential: self.cfg.name.clone(),
            csr_der,
            names: self.names.clone(),
            lifetime: self.cfg.lifetime,
        };
        let issued = self.issuer.issue(&req).await?;
        let pem = IssuedPem {
            cert_pem: &issued.cert_pem,
            chain_pem: &issued.chain_pem,
            ca_pem: issued.ca_pem.as_deref(),
        };
        let info = cert::validate_issued(&pem, &key.public_key(), &self.names, SystemTime::now())
            .map_err(|why| RotateError::Invalid {
            credential: self.cfg.name.clone(),
            issuer: self.issuer.name().to_string(),
            why,
        })?;
        tracing::debug!(credential = %self.cfg.name, generation = g, fingerprint = %info.fingerprint, "issued and validated");
        Ok((
            Material {
                cert_pem: issued.cert_pem,
                chain_pem: issued.chain_pem,
                key_pem: key.pem().clone(),
                ca_pem: issued.ca_pem,
            },
            info,
        ))
    }

    fn publish_status(&self) {
        let now = SystemTime::now();
        let mut s = CredentialStatus::starting(&self.cfg.name, "certificate", &self.cfg.issuer);
        s.state = match &self.current {
            _ if self.renewing => State::Renewing,
            None => State::Missing,
            Some(c) if c.info.not_after <= now => State::Expired,
            Some(_) if self.failures > 0 => State::Backoff,
            Some(_) => State::Valid,
        };
        if let Some(c) = &self.current {
            s.generation = Some(c.generation);
            s.fingerprint = Some(c.info.fingerprint.clone());
            s.serial = Some(c.info.serial.clone());
            s.not_before = Some(cert::rfc3339(c.info.not_before));
            s.not_after = Some(cert::rfc3339(c.info.not_after));
            // With `verify = none` nothing proves the app uses it.
            s.handoff = Handoff::Unverified;
        }
        s.next_renewal = Some(cert::rfc3339(self.due_at(now)));
        s.last_rotation = self.last_rotation.clone();
        s.last_error = self.last_error.clone();
        s.consecutive_failures = self.failures;
        let name = self.cfg.name.clone();
        self.status_tx.send_modify(|snap| {
            snap.insert(name, s);
        });
    }
}
