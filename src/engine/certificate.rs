//! The certificate kind: recover at start, adopt or restore what is on
//! disk, issue and hand over through the shared rotation driver, repair
//! drift, probe a pending handoff, raise date alerts.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod adopt;
mod alerts;
mod ari;
mod encode;
mod issue;
mod probe;
mod refresh;
mod repair;
mod rollback;
mod rotate;
mod staged;
mod steps;

use super::budget::IssuerLedger;
use super::disk;
use super::group::Member;
use super::journal::{recovery, Journal, Recovery};
use super::task::{self, Kind, Parts, Shared};
use super::Credential;
use crate::cert::{self, CertInfo, Names};
use crate::config::{CertificateConfig, VerifyConfig};
use crate::handoff::Generation;
use crate::issuer::Issuer;
use crate::issuer::{pick_in_window, RenewalWindow};
use crate::schedule;
use crate::status::Handoff;
use crate::store::{Expected, Material, Target};

/// Background probing of a pending or failed handoff backs off up to this.
pub(super) const MAX_PROBE_PAUSE: Duration = Duration::from_secs(30);
/// `expiring` fires when less than this share of the lifetime is left.
const EXPIRING_SHARE: f64 = 0.10;

/// The committed generation, in memory: no PEM and no key, only what drift
/// detection and scheduling need (repair.rs loads the rest on demand).
pub(super) struct Current {
    pub(super) generation: u64,
    /// Digests of what each target must hold.
    pub(super) expected: Expected,
    pub(super) info: CertInfo,
    /// Why the issuer made the certificate shorter than asked, if it said.
    pub(super) shortened: Option<String>,
}

impl Current {
    pub(super) fn new(
        generation: u64,
        mut info: CertInfo,
        targets: &[Target],
        m: &Material,
    ) -> Self {
        // What the engine never reads again once the certificate is
        // validated goes: subject, issuer and the public key are for
        // `rekey inspect` and validation, which parse the PEM themselves
        // (10,000 idle credentials: about 2 MiB).
        info.subject = String::new();
        info.issuer = String::new();
        info.public_key = Vec::new();
        info.dns_names.shrink_to_fit();
        info.ip_addresses.shrink_to_fit();
        Current {
            generation,
            expected: Expected::of(targets, m),
            info,
            shortened: None,
        }
    }
}

/// The certificate kind of credential (see [`Kind`]).
pub(in crate::engine) struct Cert;

impl Kind for Cert {
    const LABEL: &'static str = "certificate";
    type Config = Arc<CertificateConfig>;
    type Issuer = dyn Issuer;
    type Journal = Journal;
    type Own = CertState;

    fn name(cfg: &Self::Config) -> &str {
        &cfg.name
    }
    fn issuer_name(cfg: &Self::Config) -> &str {
        &cfg.issuer
    }
    fn verify(cfg: &Self::Config) -> &VerifyConfig {
        &cfg.verify
    }
}

/// A certificate's task: the shared task over [`Cert`].
pub(in crate::engine) type Task = task::Task<Cert>;

/// A new generation on its way through stage, publish and handoff.
pub(in crate::engine) struct Next {
    pub(super) current: Current,
    /// Its files' contents, until published (then dropped, and zeroized).
    pub(super) material: Option<Material>,
}

/// What a certificate's task keeps besides the shared state.
pub(in crate::engine) struct CertState {
    pub(super) current: Option<Current>,
    pub(super) served: Option<String>,
    /// Next background probe of a pending/failed handoff, and the pause after it.
    pub(super) probe_at: Option<SystemTime>,
    pub(super) probe_pause: Duration,
    /// Why the handoff is not verified, when a reload or probe said so.
    pub(super) handoff_reason: Option<String>,
    /// The app may not have been told about the committed generation (a
    /// bootstrap reload failed, or a restart cannot know): background
    /// probing reloads it when it finds the app serving something else.
    pub(super) reload_owed: bool,
    /// Date alerts already raised for the committed generation.
    pub(super) alerted_expiring: Option<u64>,
    pub(super) alerted_expired: Option<u64>,
    /// The files drifted and the committed generation could not be read
    /// back to restore them: rotate now (cleared on commit).
    pub(super) rotate_to_repair: bool,
    /// The committed generation's keystore is missing (a `pkcs12` file was
    /// added) or does not open with the password configured now: a new
    /// generation with the same certificate is due (refresh.rs).
    pub(super) keystore_owed: bool,
    /// Issuer errors in a row (the handoff retries have their own count in
    /// the staged record), for the issuer backoff.
    pub(super) issuer_failures: u32,
    /// When the generation being handed over was issued (this process).
    pub(super) issued_at: Option<SystemTime>,
}

/// A certificate's task, not started yet.
pub(super) fn task(
    c: Credential,
    shared: &Shared,
    issuer_ledger: Option<Arc<IssuerLedger>>,
    group: Option<Member>,
) -> Task {
    let trust = c.config.files.ca.as_ref().and_then(|_| c.issuer.trust());
    let own = CertState {
        current: None,
        served: None,
        probe_at: None,
        probe_pause: Duration::from_millis(50),
        handoff_reason: None,
        reload_owed: false,
        alerted_expiring: None,
        alerted_expired: None,
        rotate_to_repair: false,
        keystore_owed: false,
        issuer_failures: 0,
        issued_at: None,
    };
    let parts = Parts {
        cfg: c.config,
        issuer: c.issuer,
        own,
        reload: c.reload,
        probes: c.probes,
        audit: c.audit,
        budget: c.budget,
    };
    let mut t = task::Task::new(parts, shared, issuer_ledger, group);
    t.trust = trust;
    t
}

impl Task {
    /// The names to request and validate. Derived from the config when a
    /// step needs them, like [`Task::targets`]: an idle credential keeps no
    /// copy (about 400 bytes each, 4 MB at 10,000 credentials).
    pub(super) fn names(&self) -> Names {
        disk::names_of(&self.cfg)
    }

    /// The files to publish, from the config.
    pub(super) fn targets(&self) -> Vec<Target> {
        super::targets(&self.cfg)
    }

    /// Recover an interrupted rotation, then load the committed generation or
    /// adopt a valid pair found on disk, then repair drift.
    pub(super) async fn recover(&mut self) {
        // Before anything is written: the directories as they are at load
        // are the ones this credential's files go into.
        self.pins.pin(&self.targets());
        self.load_journal("starting from what is on disk");
        // The committed certificate, kept only until the ARI check below.
        let mut cert_pem = None;
        if let Some(g) = self.journal.committed {
            match self.load_current(g) {
                // The rest of the material (the key) is dropped here: only
                // digests stay resident.
                Ok((mut c, material)) => {
                    c.shortened = self.journal.shortened_by_ca.clone();
                    self.own.current = Some(c);
                    self.own.keystore_owed = !self.keystore_fits(&material);
                    let Material { cert_pem: pem, .. } = material;
                    cert_pem = Some((g, pem));
                }
                Err(e) => {
                    tracing::error!(generation = g, error = %e, "committed generation unreadable; checking the published files");
                }
            }
        }
        let staged = self
            .journal
            .pending
            .is_some_and(|p| self.store.has_generation(p.generation));
        match recovery(&self.journal, staged) {
            Recovery::Nothing => {}
            Recovery::Discard(g) => {
                tracing::info!(
                    generation = g,
                    "discarding a rotation interrupted before publish"
                );
                self.journal.pending = None;
                self.save_and_prune();
            }
            Recovery::RollForward(g) => match self.load_current(g) {
                Ok((next, material)) => {
                    tracing::info!(
                        generation = g,
                        event = "recovered",
                        "finishing a rotation interrupted during publish or handoff"
                    );
                    let next = Next {
                        current: next,
                        material: Some(material),
                    };
                    if let Err(e) = self.hand_over(next).await {
                        self.note_failure(&e); // logs it
                    }
                }
                Err(e) => {
                    tracing::error!(generation = g, error = %e, "staged generation unreadable; discarding it");
                    self.journal.pending = None;
                    self.save_and_prune();
                }
            },
            Recovery::RollBack(g) => {
                tracing::info!(
                    generation = g,
                    "finishing a rollback interrupted by a restart"
                );
                self.restore_committed("interrupted rollback").await;
                self.journal.pending = None;
                self.save_and_prune();
            }
        }
        if self.own.current.is_none() {
            self.adopt();
        }
        self.repair_files("start").await;
        self.resume_staged();
        if self.journal.ari.is_none() {
            self.refresh_window_with(cert_pem).await;
        }
        if self.own.current.is_some()
            && !self.probes.is_empty()
            && self.handoff != Handoff::Verified
        {
            // Learn at once whether the app serves what is committed. The
            // last process may have died before its reload, or its reload
            // never reached the app: if the app serves something else, tell
            // it once more.
            self.own.probe_at = Some(SystemTime::now());
            self.own.reload_owed = true;
        }
    }

    /// Load staged generation `g`: its in-memory record, and its material
    /// for a caller that must publish it (others drop it at once).
    pub(super) fn load_current(&self, g: u64) -> Result<(Current, Material), String> {
        let material = self.store.load_generation(g).map_err(|e| e.to_string())?;
        let ders = cert::pem_certs(material.cert_pem.as_bytes(), "staged certificate")
            .map_err(|e| e.to_string())?;
        let der = ders.first().ok_or("staged certificate is empty")?;
        let info = cert::parse_der(der).map_err(|e| e.to_string())?;
        let current = Current::new(g, info, &self.targets(), &material);
        Ok((current, material))
    }

    /// When the next rotation is due: now when there is no usable committed
    /// credential, else its jittered renewal point; a pending retry wins,
    /// and a trust bundle the `ca` file lacks, or a keystore that no longer
    /// fits, is due at once.
    pub(super) fn due(&self, now: SystemTime) -> SystemTime {
        let natural = self.natural_due(now);
        match self.retry_at {
            Some(r) if self.failures > 0 => r,
            _ if self.own.rotate_to_repair => now,
            _ if self.trust_owed() || self.own.keystore_owed => now.min(natural),
            _ => natural,
        }
    }

    /// When the certificate itself is due: now when there is no usable
    /// committed one, else its jittered renewal point (or the CA's ARI window).
    pub(super) fn natural_due(&self, now: SystemTime) -> SystemTime {
        match &self.own.current {
            Some(c) if self.usable(&c.info, now) => {
                let own = schedule::renewal_point(
                    c.info.not_before,
                    c.info.not_after,
                    self.cfg.renew_before,
                    self.cfg.jitter,
                    self.journal.jitter_draw,
                );
                // A CA's ARI window takes precedence over renew_before.
                let ari =
                    self.journal
                        .ari
                        .as_ref()
                        .and_then(|a| a.window)
                        .and_then(|(start, end)| {
                            let w = RenewalWindow {
                                start,
                                end,
                                retry_after: None,
                            };
                            pick_in_window(&w, self.journal.jitter_draw, now)
                        });
                ari.map_or(own, |t| t.min(c.info.not_after))
            }
            _ => now,
        }
    }

    fn usable(&self, info: &CertInfo, now: SystemTime) -> bool {
        info.not_after > now
            && cert::missing_names(info, &self.names()).is_empty()
            && cert::key_type_matches(info, self.cfg.key_type)
    }

    /// The generation details handed to reload and probes.
    pub(super) fn generation_of(&self, c: &Current) -> Generation {
        Generation {
            credential: self.cfg.name.clone(),
            generation: c.generation,
            fingerprint: c.info.fingerprint.clone(),
            serial: c.info.serial.clone(),
            not_after: crate::timestamp::Timestamp::new(c.info.not_after),
            files: self
                .targets()
                .into_iter()
                .map(|t| (t.kind, t.path))
                .collect(),
            ..Generation::default()
        }
    }

    pub(super) fn save_and_prune(&mut self) {
        if let Err(e) = self.store.save_journal(&self.journal) {
            tracing::error!(error = %e, "cannot save the journal");
            return;
        }
        if let Err(e) = self.store.prune(&self.journal.keep()) {
            tracing::warn!(error = %e, "cannot remove old generations");
        }
    }
}
