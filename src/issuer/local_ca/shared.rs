//! One CA directory's live state, shared by every [`super::LocalCa`] that
//! opens it (a config reload builds new issuer objects while tasks still
//! hold the old ones; both must see one rollover): the generations, the
//! journaled [`State`], the consumers, the cached signing key, the trust
//! bundle channel, and the clock task that runs due steps on time.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use rcgen::KeyPair;
use tokio::sync::{watch, Notify};

use super::gens::{self, Gen};
use super::rollover::{self, State};
use crate::config::LocalCaConfig;
use crate::issuer::TrustBundle;

/// The journal of the rollover, in the CA's directory.
const STATE_FILE: &str = "rollover.json";
/// The clock looks again at least this often (a clock jump, a failed step).
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// After a failed step (disk full), the clock retries this soon.
const RETRY: Duration = Duration::from_secs(60);

/// What one CA directory holds, behind the lock.
pub(super) struct Inner {
    pub cfg: LocalCaConfig,
    pub gens: Vec<Gen>,
    pub state: State,
    /// The credentials that publish the bundle; `None` until the engine says.
    pub consumers: Option<BTreeSet<String>>,
    /// The signing generation's key, loaded when it starts signing.
    pub signer: Option<(u64, rcgen::Issuer<'static, KeyPair>)>,
}

/// The shared state of one CA directory.
pub(super) struct Shared {
    pub dir: PathBuf,
    /// The issuer's config name, for logs.
    pub name: String,
    inner: Mutex<Inner>,
    bundle: watch::Sender<Arc<TrustBundle>>,
    wake: Arc<Notify>,
    clock: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(c) = self.clock.get_mut().ok().and_then(Option::take) {
            c.abort();
        }
    }
}

/// The bundle of `gens`: every live root, oldest first.
fn bundle_of(gens: &[Gen]) -> TrustBundle {
    let mut pem = String::new();
    for g in gens {
        pem.push_str(&g.pem);
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
    }
    TrustBundle::new(pem)
}

/// Hex of a digest, as journaled.
pub(super) fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl Shared {
    /// Open `dir`: create generation 1 when there is none, tidy what a
    /// crash left, read the journal, load the signing key, run due steps.
    pub fn open(name: &str, dir: &Path, cfg: &LocalCaConfig) -> Result<Arc<Shared>, String> {
        let mut found = gens::scan(dir)?;
        gens::tidy(dir, &found);
        if found.is_empty() {
            found.push(gens::create(dir, 1, cfg)?);
            tracing::info!(dir = %dir.display(), "created the local CA");
        }
        let state = load_state(dir);
        let mut inner = Inner {
            cfg: cfg.clone(),
            gens: found,
            state,
            consumers: None,
            signer: None,
        };
        load_signer(dir, &mut inner)?;
        let (bundle, _) = watch::channel(Arc::new(bundle_of(&inner.gens)));
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            inner: Mutex::new(inner),
            bundle,
            wake: Arc::new(Notify::new()),
            clock: Mutex::new(None),
        });
        shared.tick(SystemTime::now());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let task = rt.spawn(clock(Arc::downgrade(&shared), shared.wake.clone()));
            *shared.clock.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        }
        Ok(shared)
    }

    /// The state, locked. A poisoned lock only means a panic elsewhere;
    /// every step leaves the state consistent, so it is still usable.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver of the trust bundle.
    pub fn subscribe(&self) -> watch::Receiver<Arc<TrustBundle>> {
        self.bundle.subscribe()
    }

    /// The current trust bundle.
    pub fn bundle(&self) -> Arc<TrustBundle> {
        self.bundle.borrow().clone()
    }

    /// Ask the clock to plan again (config, consumers or deliveries changed).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Run the steps due at `now`; the next moment to look again.
    pub fn tick(&self, now: SystemTime) -> SystemTime {
        let mut inner = self.lock();
        self.tick_locked(&mut inner, now)
    }

    /// [`Shared::tick`] with the lock held (issue() plans under its lock).
    pub fn tick_locked(&self, inner: &mut Inner, now: SystemTime) -> SystemTime {
        let digest = hex(&self.bundle().digest);
        let plan = rollover::plan(
            now,
            &inner.gens,
            &inner.state,
            inner.consumers.as_ref(),
            &digest,
            inner.cfg.ca_renew_before,
        );
        let mut next = plan.next.unwrap_or(now + MAX_SLEEP);
        let mut changed = false;
        if plan.create_next {
            let n = inner.gens.last().map_or(1, |g| g.n + 1);
            match gens::create(&self.dir, n, &inner.cfg) {
                Ok(g) => {
                    tracing::info!(issuer = %self.name, generation = n, not_after = %crate::timestamp::rfc3339(g.not_after), event = "ca_created", "created the next CA generation; publishing a trust bundle with both to every credential with a ca file before signing with it");
                    inner.gens.push(g);
                    changed = true;
                    // Plan again at once: the new bundle is now due.
                    next = now;
                }
                Err(e) => {
                    tracing::error!(issuer = %self.name, generation = n, error = %e, "cannot create the next CA generation; retrying");
                    next = next.min(now + RETRY);
                }
            }
        }
        if let Some((n, missing)) = plan.switch_to {
            if missing.is_empty() {
                tracing::info!(issuer = %self.name, generation = n, event = "ca_switched", "every credential with a ca file holds the new CA; signing with it from now on");
            } else {
                tracing::warn!(issuer = %self.name, generation = n, missing = %missing.join(", "), event = "ca_switched", "the old CA can no longer sign and these credentials have not delivered the trust bundle with the new one; signing with the new CA anyway: their apps may refuse peers it signed until their handoff succeeds");
            }
            inner.state.signer = Some(n);
            if let Err(e) = load_signer(&self.dir, inner) {
                tracing::error!(issuer = %self.name, generation = n, error = %e, "cannot load the new CA's key; the old one keeps signing");
                inner.state.signer = inner.signer.as_ref().map(|(s, _)| *s);
            }
            self.save(inner);
        }
        for n in plan.drop {
            match gens::remove(&self.dir, n) {
                Ok(()) => {
                    tracing::info!(issuer = %self.name, generation = n, event = "ca_dropped", "the last certificate signed by this CA generation has expired; it leaves the trust bundle");
                    inner.gens.retain(|g| g.n != n);
                    inner.state.last_leaf.remove(&n);
                    changed = true;
                }
                Err(e) => {
                    tracing::error!(issuer = %self.name, generation = n, error = %e, "cannot remove an old CA generation; retrying");
                    next = next.min(now + RETRY);
                }
            }
        }
        if changed {
            self.save(inner);
            let b = Arc::new(bundle_of(&inner.gens));
            self.bundle.send_if_modified(|cur| {
                let differs = cur.digest != b.digest;
                if differs {
                    *cur = b;
                }
                differs
            });
        }
        next
    }

    /// Journal the state (atomic replace); a failure is logged: the state
    /// on disk is then older, never torn, and every older state is safe
    /// (see [`rollover`]).
    pub fn save(&self, inner: &mut Inner) {
        if let Some(c) = &inner.consumers {
            inner.state.delivered.retain(|k, _| c.contains(k));
        }
        if let Err(e) = save_state(&self.dir, &inner.state) {
            tracing::error!(issuer = %self.name, error = %e, "cannot journal the CA rollover state");
        }
    }

    /// Like [`Shared::save`], reporting the failure (before a signature).
    /// A CA directory deleted while rekey runs is no failure: there is no
    /// CA on disk left to roll over or drop (the next start creates a new
    /// one), so the CA kept in memory signs on, as it did before rollovers.
    pub fn save_or_fail(&self, inner: &Inner) -> Result<(), String> {
        match save_state(&self.dir, &inner.state) {
            Err(e) if is_gone(&self.dir) => {
                tracing::warn!(issuer = %self.name, dir = %self.dir.display(), error = %e, "the CA directory is gone; signing with the CA kept in memory, whose journal cannot be kept (the next start creates a new CA)");
                Ok(())
            }
            r => r,
        }
    }
}

/// Whether `dir` no longer exists.
fn is_gone(dir: &Path) -> bool {
    matches!(std::fs::symlink_metadata(dir), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// Load the key of the signing generation into `inner.signer`.
fn load_signer(dir: &Path, inner: &mut Inner) -> Result<(), String> {
    let n = inner
        .state
        .signer_of(&inner.gens)
        .ok_or("the local CA has no generation")?;
    if inner.signer.as_ref().is_some_and(|(s, _)| *s == n) {
        return Ok(());
    }
    let gen = inner
        .gens
        .iter()
        .find(|g| g.n == n)
        .ok_or("the signing CA generation is missing")?;
    inner.signer = Some((n, gens::signer(dir, gen)?));
    Ok(())
}

fn load_state(dir: &Path) -> State {
    let path = dir.join(STATE_FILE);
    match gens::read_own(&path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
            // Every field's default is safe: the oldest CA signs, deliveries
            // are asked for again, old CAs stay until their own end.
            tracing::warn!(path = %path.display(), error = %e, "the CA rollover journal does not parse; starting it afresh");
            State::default()
        }),
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => State::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the CA rollover journal is unreadable; starting it afresh");
            State::default()
        }
    }
}

fn save_state(dir: &Path, st: &State) -> Result<(), String> {
    let mut bytes = serde_json::to_vec_pretty(st).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    crate::fs::write_file_atomic(&dir.join(STATE_FILE), &bytes, 0o600).map_err(|e| e.to_string())
}

/// Run due steps on time until every [`super::LocalCa`] on the directory is gone.
async fn clock(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(s) = shared.upgrade() else { return };
            s.tick(SystemTime::now())
        };
        let pause = crate::schedule::until(next, SystemTime::now()).min(MAX_SLEEP);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = wake.notified() => {}
        }
    }
}
