//! The API key journal: the committed key, a rotation in flight (with the
//! new key's id recorded right after minting, before anything is
//! published), and revocations still owed. Saved before every step, so a
//! restart revokes an uncommitted key: at most one extra key ever lives.

use serde::{Deserialize, Serialize};

/// One minted key, without its secret (staged separately, 0600).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Generation number.
    pub generation: u64,
    /// The key's id (safe to show).
    pub id: String,
    /// Its lease id, if any.
    pub lease: Option<String>,
    /// Unix seconds.
    pub minted_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
    /// `sha256:` + 12 hex of the secret, for status.
    pub hash: String,
}

/// A rotation step, recorded before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStep {
    /// Asking the issuer; the key is not known yet.
    Minting,
    /// Minted, id recorded; staging, publishing and handing over follow.
    Minted,
    /// Published; reloading and verifying.
    Handoff,
    /// Putting the committed key back.
    RollingBack,
}

/// A rotation in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingKey {
    /// Generation number.
    pub generation: u64,
    /// The step that had started.
    pub step: KeyStep,
    /// The new key, once minted.
    pub key: Option<KeyRecord>,
}

/// A key to revoke at `at` (unix seconds); kept until it succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Key id.
    pub id: String,
    /// Lease id.
    pub lease: Option<String>,
    /// Generation, to remove its staged secret.
    pub generation: u64,
    /// Not before this (unix seconds).
    pub at: u64,
    /// When the key expires anyway (unix seconds).
    pub expires_at: u64,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// What is persisted per API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyJournal {
    /// The key the app uses.
    pub committed: Option<KeyRecord>,
    /// Next generation number.
    pub next_generation: u64,
    /// A rotation in flight.
    pub pending: Option<PendingKey>,
    /// Revocations owed.
    pub revokes: Vec<Revocation>,
    /// Jitter draw for the committed key's renewal point.
    pub jitter_draw: f64,
    /// When the issuer was asked to mint (Unix seconds, oldest first, within
    /// the budget's window): the ledger of its issuance budget.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuances: Vec<u64>,
}

impl Default for KeyJournal {
    fn default() -> Self {
        KeyJournal {
            committed: None,
            next_generation: 1,
            pending: None,
            revokes: Vec::new(),
            jitter_draw: fastrand::f64(),
            issuances: Vec::new(),
        }
    }
}

impl KeyJournal {
    /// Hand out the next generation number.
    pub fn allocate(&mut self) -> u64 {
        let floor = self.committed.as_ref().map_or(0, |k| k.generation) + 1;
        let g = self.next_generation.max(floor);
        self.next_generation = g + 1;
        g
    }

    /// Owe a revocation of `key` at `at`.
    pub fn owe(&mut self, key: &KeyRecord, at: u64) {
        if self.revokes.iter().any(|r| r.id == key.id) {
            return;
        }
        self.revokes.push(Revocation {
            id: key.id.clone(),
            lease: key.lease.clone(),
            generation: key.generation,
            at,
            expires_at: key.expires_at,
            attempts: 0,
        });
    }

    /// The uncommitted key of an interrupted rotation, if one was minted.
    pub fn orphan(&self) -> Option<&KeyRecord> {
        self.pending.as_ref().and_then(|p| p.key.as_ref())
    }
}

impl crate::engine::task::Journaled for KeyJournal {
    fn allocate(&mut self) -> u64 {
        KeyJournal::allocate(self)
    }
    fn issuances(&self) -> &[u64] {
        &self.issuances
    }
    fn issuances_mut(&mut self) -> &mut Vec<u64> {
        &mut self.issuances
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(g: u64) -> KeyRecord {
        KeyRecord {
            generation: g,
            id: format!("id{g}"),
            lease: None,
            minted_at: 0,
            expires_at: 100,
            hash: String::new(),
        }
    }

    #[test]
    fn a_minted_key_is_recorded_and_owed_once() {
        let mut j = KeyJournal::default();
        let g = j.allocate();
        j.pending = Some(PendingKey {
            generation: g,
            step: KeyStep::Minted,
            key: Some(key(g)),
        });
        let k = j.orphan().cloned().unwrap();
        j.owe(&k, 5);
        j.owe(&k, 9);
        assert_eq!(j.revokes.len(), 1);
        assert!(j.allocate() > g);
    }
}
