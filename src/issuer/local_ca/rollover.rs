//! The local CA's rollover: when to create the next CA, when to sign with
//! it, when to drop the old one. A pure plan over the generations and the
//! journaled state, so every step can be tested without waiting for time.
//!
//! 1. **Next CA**: when the newest CA reaches `ca_renew_before` of its
//!    life, the next generation is created. The trust bundle (every live
//!    generation, oldest first) now holds both.
//! 2. **Bundle delivered**: each credential that publishes the bundle (a
//!    `ca` file) reports its completed handoff of it.
//! 3. **Switch**: once all of them have, leaves are signed by the newest CA.
//!    If they have not by the time the old CA can no longer sign, the
//!    switch is forced (a WARN names who is missing); until then leaves the
//!    old CA would outlive are shortened, each with a WARN and a status field.
//! 4. **Drop**: an old generation leaves the bundle once the last leaf it
//!    signed has expired (recorded before each signature; unknown: its own
//!    end). The bundle shrinks and is delivered again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::gens::Gen;
use crate::config::Share;

/// The old CA keeps signing while it can give a leaf at least this long;
/// after that the switch is forced (no leaf is shorter than the shortest
/// lifetime a config may ask for).
pub const MIN_SIGN: Duration = Duration::from_secs(10);

/// What is journaled (`rollover.json`), replaced atomically after each step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The generation that signs leaves; unset: the oldest.
    #[serde(default)]
    pub signer: Option<u64>,
    /// Per generation, the latest end of a leaf it signed.
    #[serde(default)]
    pub last_leaf: BTreeMap<u64, SystemTime>,
    /// Per credential, the hex SHA-256 of the bundle it delivered.
    #[serde(default)]
    pub delivered: BTreeMap<String, String>,
}

impl State {
    /// The signing generation among `gens`: the journaled one if it still
    /// exists, else the oldest.
    pub fn signer_of(&self, gens: &[Gen]) -> Option<u64> {
        self.signer
            .filter(|s| gens.iter().any(|g| g.n == *s))
            .or(gens.first().map(|g| g.n))
    }
}

/// When the generation after `g` is due.
pub fn renew_at(g: &Gen, renew_before: Share) -> SystemTime {
    let life = g.not_after.duration_since(g.not_before).unwrap_or_default();
    g.not_after - renew_before.of(life)
}

/// When old generation `g` may leave the bundle: its last leaf's end, at
/// the latest its own.
pub fn drop_at(g: &Gen, st: &State) -> SystemTime {
    st.last_leaf
        .get(&g.n)
        .map_or(g.not_after, |t| (*t).min(g.not_after))
}

/// The steps due now, and when to look again.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Create the generation after the newest.
    pub create_next: bool,
    /// Sign with this generation from now on; `forced` when not every
    /// consumer had delivered the bundle (they are named).
    pub switch_to: Option<(u64, Vec<String>)>,
    /// Old generations to drop from the bundle.
    pub drop: Vec<u64>,
    /// The next moment something may be due.
    pub next: Option<SystemTime>,
}

/// The plan at `now`. `consumers`: the credentials that publish the bundle
/// (None until the engine says; nothing is switched unforced before that);
/// `bundle`: the hex digest of the current bundle.
pub fn plan(
    now: SystemTime,
    gens: &[Gen],
    st: &State,
    consumers: Option<&BTreeSet<String>>,
    bundle: &str,
    renew_before: Share,
) -> Plan {
    let mut p = Plan::default();
    let (Some(newest), Some(signer)) = (gens.last(), st.signer_of(gens)) else {
        return p;
    };
    let mut next = None;
    let mut wake = |t: SystemTime| next = Some(next.map_or(t, |n: SystemTime| n.min(t)));
    let renew = renew_at(newest, renew_before);
    if now >= renew {
        p.create_next = true;
    } else {
        wake(renew);
    }
    let mut signer = signer;
    if newest.n > signer {
        let missing: Vec<String> = match consumers {
            Some(c) => c
                .iter()
                .filter(|name| st.delivered.get(*name).map(String::as_str) != Some(bundle))
                .cloned()
                .collect(),
            None => vec!["(the engine has not started yet)".into()],
        };
        let old = gens.iter().find(|g| g.n == signer);
        let old_end = old.map_or(now, |g| g.not_after);
        let can_sign = old_end > now + MIN_SIGN;
        if consumers.is_some() && missing.is_empty() {
            p.switch_to = Some((newest.n, Vec::new()));
            signer = newest.n;
        } else if !can_sign {
            p.switch_to = Some((newest.n, missing));
            signer = newest.n;
        } else {
            wake(old_end - MIN_SIGN);
        }
    }
    for g in gens.iter().filter(|g| g.n < signer) {
        let at = drop_at(g, st);
        if now >= at {
            p.drop.push(g.n);
        } else {
            wake(at);
        }
    }
    p.next = next;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn gen(n: u64, start_min: u64, life_min: u64) -> Gen {
        let nb = SystemTime::UNIX_EPOCH + MIN * start_min as u32;
        Gen {
            n,
            pem: String::new(),
            not_before: nb,
            not_after: nb + MIN * life_min as u32,
        }
    }

    fn at(min: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + MIN * min as u32
    }

    fn consumers(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    const RB: Share = Share::Fraction(0.2);

    #[test]
    fn the_next_ca_is_created_at_its_share_of_life_and_not_before() {
        let gens = [gen(1, 0, 100)];
        let st = State::default();
        let c = consumers(&["web"]);
        let early = plan(at(79), &gens, &st, Some(&c), "b1", RB);
        assert!(!early.create_next);
        assert_eq!(early.next, Some(at(80)));
        assert!(plan(at(80), &gens, &st, Some(&c), "b1", RB).create_next);
    }

    #[test]
    fn the_switch_waits_for_every_consumer_then_the_old_ca_drops_after_its_last_leaf() {
        let gens = [gen(1, 0, 100), gen(2, 80, 100)];
        let c = consumers(&["web", "api"]);
        let mut st = State::default();
        st.last_leaf.insert(1, at(90));
        // Only web has the two-CA bundle: keep signing with 1, look again
        // when 1 could no longer sign.
        st.delivered.insert("web".into(), "b12".into());
        st.delivered.insert("api".into(), "b1".into());
        let p = plan(at(81), &gens, &st, Some(&c), "b12", RB);
        assert_eq!(p.switch_to, None);
        assert!(p.drop.is_empty(), "1 still signs");
        assert_eq!(p.next, Some(at(100) - MIN_SIGN));
        // Nobody known yet (the engine has not said): no switch either.
        assert_eq!(
            plan(at(81), &gens, &State::default(), None, "b12", RB).switch_to,
            None
        );
        // api delivers: switch to 2; 1 stays until its last leaf ends.
        st.delivered.insert("api".into(), "b12".into());
        let p = plan(at(81), &gens, &st, Some(&c), "b12", RB);
        assert_eq!(p.switch_to, Some((2, vec![])));
        assert!(p.drop.is_empty());
        assert_eq!(p.next, Some(at(90)));
        st.signer = Some(2);
        assert_eq!(plan(at(90), &gens, &st, Some(&c), "b12", RB).drop, vec![1]);
        // No record of its leaves (a CA from before rollover existed): its own end.
        st.last_leaf.clear();
        assert!(plan(at(99), &gens, &st, Some(&c), "b12", RB)
            .drop
            .is_empty());
        assert_eq!(plan(at(100), &gens, &st, Some(&c), "b12", RB).drop, vec![1]);
    }

    #[test]
    fn the_switch_is_forced_when_the_old_ca_can_no_longer_sign_and_names_who_is_missing() {
        let gens = [gen(1, 0, 100), gen(2, 80, 100)];
        let c = consumers(&["web", "api"]);
        let mut st = State::default();
        st.delivered.insert("web".into(), "b12".into());
        let p = plan(at(100) - MIN_SIGN, &gens, &st, Some(&c), "b12", RB);
        assert_eq!(p.switch_to, Some((2, vec!["api".to_string()])));
    }

    #[test]
    fn no_consumers_switch_at_once_and_a_removed_signer_falls_back_to_the_oldest() {
        let gens = [gen(1, 0, 100), gen(2, 80, 100)];
        let none = BTreeSet::new();
        let p = plan(at(81), &gens, &State::default(), Some(&none), "b12", RB);
        assert_eq!(p.switch_to, Some((2, vec![])));
        let st = State {
            signer: Some(7),
            ..State::default()
        };
        assert_eq!(st.signer_of(&gens), Some(1));
    }
}
