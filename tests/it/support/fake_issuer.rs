//! What the issuer fault tests share: a CA with an intermediate, like a
//! public one, for the fakes to sign with, and the checks every failed
//! rotation against a misbehaving issuer must pass.

use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rekey::status::{CredentialStatus, State};

use super::invariants::Cred;
use super::scorecard::Scenario;
use super::Daemon;

/// CA parameters with common name `cn`.
pub fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p
}

/// A root and the intermediate that signs, named `NAME root` and `NAME intermediate`.
pub struct Pki {
    pub root: CertifiedIssuer<'static, KeyPair>,
    pub inter: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let root = CertifiedIssuer::self_signed(
            ca_params(&format!("{name} root")),
            KeyPair::generate().unwrap(),
        )
        .unwrap();
        let inter = CertifiedIssuer::signed_by(
            ca_params(&format!("{name} intermediate")),
            KeyPair::generate().unwrap(),
            &root,
        )
        .unwrap();
        Pki { root, inter }
    }

    /// `p` signed by the intermediate for `key`, valid from a minute ago
    /// for an hour; its PEM.
    pub fn leaf(&self, mut p: CertificateParams, key: &impl rcgen::PublicKeyData) -> String {
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::seconds(60);
        p.not_after = now + time::Duration::hours(1);
        p.signed_by(key, &self.inter).unwrap().pem()
    }
}

/// Wait for `web` to adopt the pair published before the start, then ask
/// for `attempts` rotations against an issuer that misbehaves and check
/// what each must leave: an answer of 502, nothing installed, the old
/// credential kept, backoff counting every failure, the next renewal no
/// earlier than `min_wait` seconds after the last request (Retry-After),
/// and `last_error` containing `why`. Returns the adopted status.
pub fn rotations_fail(
    sc: &mut Scenario,
    daemon: &Daemon,
    c: &Cred,
    attempts: usize,
    min_wait: u64,
    why: &str,
) -> CredentialStatus {
    let adopted = super::wait_valid(daemon.addr, "web", Duration::from_secs(15));
    // Adoption re-publishes with the configured modes; compare from here.
    let files = c.snapshot();
    let mut asked = SystemTime::now();
    for _ in 0..attempts {
        sc.round();
        asked = SystemTime::now();
        let (code, body) = daemon.post("/v1/rotate/web").unwrap();
        sc.check("rotation reported failed", code == 502, || {
            format!("{code} {body}")
        });
    }
    let s = super::cred(daemon.addr, "web").unwrap();
    sc.check("nothing installed", c.snapshot() == files, || {
        "published files changed".into()
    });
    sc.check(
        "old credential kept",
        s.fingerprint == adopted.fingerprint,
        || format!("{s:?}"),
    );
    sc.check(
        "backoff",
        u64::from(s.consecutive_failures) >= attempts as u64 && s.state == State::Backoff,
        || format!("{s:?}"),
    );
    // Measured from the last request, not from now: with no Retry-After the
    // first retry comes 0.5-1 s after a failure that itself took 30 s (the
    // stall), and `next_renewal` is whole seconds, so "after now" raced.
    let next = s.next_renewal.map_or(SystemTime::UNIX_EPOCH, |t| t.time());
    sc.check(
        "next renewal after the failed attempt (Retry-After honoured)",
        next + Duration::from_secs(1) > asked + Duration::from_secs(min_wait),
        || {
            format!(
                "next_renewal {:?} (wanted > the last request + {min_wait}s)",
                s.next_renewal
            )
        },
    );
    let err = s.last_error.clone().unwrap_or_default();
    sc.check("error names the fault", err.contains(why), || err.clone());
    adopted
}
