//! The invariants every fault scenario checks, written once. Each returns
//! `Err(what is wrong)` so a scenario can count it (see `scorecard`).
//!
//! - the app's cert and key parse and match; with `swap = "symlink"` both are
//!   rekey's links into one `..data` generation (they flip together);
//! - a committed generation is never lost: the journal's committed
//!   generation is complete in the state dir, and a generation committed
//!   before a fault is still the committed one or the `previous` one (what
//!   the published one replaced);
//! - nothing published failed validation: the published leaf is for the
//!   published key, covers the names, is valid now, and chains to the CA;
//! - the daemon converges within a bound: `valid` with a verified (or, with
//!   no probe, unverified) handoff, and no rotation left pending.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rekey::engine::journal::Journal;
use rekey::status::{CredentialStatus, Handoff, State};

/// Where one credential lives: its published files and its state.
#[derive(Clone, Debug)]
pub struct Cred {
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// leaf + chain, when published.
    pub fullchain: Option<PathBuf>,
    /// The CA root, when published.
    pub ca: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub dns_names: Vec<String>,
}

impl Cred {
    /// The layout `Env::cert_section`-style configs use: `tls/NAME/{cert,key,fullchain,ca}.pem`.
    pub fn under(root: &Path, name: &str) -> Cred {
        let d = root.join("tls").join(name);
        Cred {
            name: name.into(),
            cert: d.join("cert.pem"),
            key: d.join("key.pem"),
            fullchain: Some(d.join("fullchain.pem")),
            ca: Some(d.join("ca.pem")),
            state_dir: root.join("state"),
            dns_names: vec!["localhost".into()],
        }
    }

    fn gen_dir(&self, g: u64) -> PathBuf {
        self.state_dir
            .join("certs")
            .join(&self.name)
            .join(format!("gen-{g}"))
    }

    /// The journal, as the daemon persisted it.
    pub fn journal(&self) -> Result<Journal, String> {
        let p = self
            .state_dir
            .join("certs")
            .join(&self.name)
            .join("journal.json");
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", p.display()))
    }

    /// The published leaf's fingerprint (no other check).
    pub fn published_fingerprint(&self) -> Option<String> {
        let b = std::fs::read(&self.cert).ok()?;
        let ders = rekey::cert::pem_certs(&b, "cert").ok()?;
        Some(rekey::cert::fingerprint(ders.first()?))
    }

    /// Bytes of every published file, to prove a fault changed nothing.
    pub fn snapshot(&self) -> Vec<(PathBuf, Option<Vec<u8>>)> {
        [
            Some(&self.cert),
            Some(&self.key),
            self.fullchain.as_ref(),
            self.ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| (p.clone(), std::fs::read(p).ok()))
        .collect()
    }
}

/// Cert and key parse and belong together; returns the leaf's fingerprint.
pub fn pair_matches(c: &Cred) -> Result<String, String> {
    match super::pair(&c.cert, &c.key)? {
        (fp, true) => Ok(fp),
        (fp, false) => Err(format!("{fp}: the key does not match the certificate")),
    }
}

/// Each published file is complete on its own (parses), whatever the pair.
pub fn files_whole(c: &Cred) -> Result<(), String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    for p in [Some(&c.cert), c.fullchain.as_ref(), c.ca.as_ref()]
        .into_iter()
        .flatten()
    {
        let ders = rekey::cert::pem_certs(&read(p)?, "cert").map_err(|e| e.to_string())?;
        let der = ders
            .first()
            .ok_or(format!("{}: no certificate", p.display()))?;
        rekey::cert::parse_der(der).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let kb = read(&c.key)?;
    let kp = rekey::cert::pem_private_key(&kb).ok_or(format!("{}: no key", c.key.display()))?;
    rekey::cert::load_key(&kp, "key").map_err(|e| e.to_string())?;
    Ok(())
}

/// Symlink mode: cert and key are rekey's links into `..data`, which names
/// one complete generation directory whose pair matches.
pub fn flip_together(c: &Cred) -> Result<(), String> {
    let dir = c.cert.parent().ok_or("no parent")?;
    let data = std::fs::read_link(dir.join("..data")).map_err(|e| format!("..data: {e}"))?;
    for f in [&c.cert, &c.key] {
        let l = std::fs::read_link(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let want = Path::new("..data").join(f.file_name().ok_or("no name")?);
        if l != want {
            return Err(format!(
                "{} -> {}, not {}",
                f.display(),
                l.display(),
                want.display()
            ));
        }
    }
    let gen = dir.join(&data);
    let name = |p: &Path| p.file_name().map(|n| gen.join(n)).ok_or("no name");
    match super::pair(&name(&c.cert)?, &name(&c.key)?)? {
        (_, true) => Ok(()),
        (fp, false) => Err(format!(
            "generation {} holds a mismatched pair ({fp})",
            data.display()
        )),
    }
}

/// What a fault must never do to the journal: the committed generation is
/// complete on disk, and `before` (committed before the fault) is either
/// still committed or kept as `previous`, replaced by a newer one.
pub fn committed_kept(c: &Cred, before: Option<u64>) -> Result<u64, String> {
    let j = c.journal()?;
    let g = j
        .committed
        .ok_or("the journal has no committed generation")?;
    for f in ["cert.pem", "key.pem", "chain.pem"] {
        let p = c.gen_dir(g).join(f);
        if !p.is_file() {
            return Err(format!("committed generation {g} lacks {}", p.display()));
        }
    }
    if let Some(b) = before {
        if g < b {
            return Err(format!("committed went back from {b} to {g}"));
        }
        if g != b && j.previous != Some(b) {
            return Err(format!(
                "generation {b} was committed before the fault, but now committed={g}, previous={:?}",
                j.previous
            ));
        }
    }
    Ok(g)
}

/// The published leaf is the committed generation's (after convergence).
pub fn published_is_committed(c: &Cred) -> Result<(), String> {
    let g = c.journal()?.committed.ok_or("nothing committed")?;
    let staged = std::fs::read(c.gen_dir(g).join("cert.pem")).map_err(|e| e.to_string())?;
    let published = std::fs::read(&c.cert).map_err(|e| e.to_string())?;
    if staged != published {
        return Err(format!(
            "the published cert is not generation {g}'s ({:?} vs {:?})",
            c.published_fingerprint(),
            rekey::cert::pem_certs(&staged, "s")
                .ok()
                .and_then(|d| d.first().map(|d| rekey::cert::fingerprint(d)))
        ));
    }
    Ok(())
}

/// What is published passes the same validation an issuer's answer must:
/// our key, the names, valid now, a chain that links up to the CA file.
pub fn published_valid(c: &Cred) -> Result<(), String> {
    let cert = std::fs::read_to_string(&c.cert).map_err(|e| e.to_string())?;
    let kb = std::fs::read(&c.key).map_err(|e| e.to_string())?;
    let kp = rekey::cert::pem_private_key(&kb).ok_or("no key")?;
    let key = rekey::cert::load_key(&kp, "key").map_err(|e| e.to_string())?;
    let chain = match &c.fullchain {
        Some(p) => {
            let full = std::fs::read(p).map_err(|e| e.to_string())?;
            let ders = rekey::cert::pem_certs(&full, "fullchain").map_err(|e| e.to_string())?;
            let first = ders.first().ok_or("empty fullchain")?;
            if rekey::cert::fingerprint(first) != c.published_fingerprint().unwrap_or_default() {
                return Err("fullchain and cert hold different leaves".into());
            }
            ders[1..]
                .iter()
                .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.to_vec())))
                .collect::<String>()
        }
        None => String::new(),
    };
    let ca = match &c.ca {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| e.to_string())?),
        None => None,
    };
    let names = rekey::cert::Names {
        common_name: c.dns_names.first().cloned().unwrap_or_default(),
        dns_names: c.dns_names.clone(),
        ip_addresses: vec![],
    };
    let issued = rekey::cert::IssuedPem {
        cert_pem: &cert,
        chain_pem: &chain,
        ca_pem: ca.as_deref(),
    };
    rekey::cert::validate_issued(&issued, &key.public_key(), &names, SystemTime::now())
        .map(|_| ())
        .map_err(|e| format!("the published certificate fails validation: {e}"))
}

/// Poll `/status` until `name` is valid with a settled handoff and the
/// journal has nothing pending; Err says what it was stuck at.
pub fn converges(
    addr: SocketAddr,
    c: &Cred,
    handoffs: &[Handoff],
    within: Duration,
) -> Result<CredentialStatus, String> {
    let mut last = String::from("no status");
    super::wait_until(Instant::now() + within, || {
        let s = super::cred(addr, &c.name)?;
        let pending = c.journal().map(|j| j.pending).unwrap_or(None);
        if s.state == State::Valid && handoffs.contains(&s.handoff) && pending.is_none() {
            return Some(s);
        }
        last = format!(
            "state={:?} handoff={:?} pending={pending:?}",
            s.state, s.handoff
        );
        None
    })
    .ok_or_else(|| format!("not converged within {within:?}: {last}"))
}
