//! The per-credential journal: which generation is committed, which one is
//! kept for rollback, and which step of a rotation was under way. It is
//! saved (atomically, by the store) before every step starts, so a restart
//! after a crash knows exactly what to finish or undo.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A rotation step, recorded before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Key generation, CSR, issuer call and validation: nothing on disk yet.
    Issuing,
    /// Writing the generation into the state dir.
    Staging,
    /// Copying the staged generation to the application's paths.
    Publishing,
    /// Published; reloading the app and waiting for it to serve the generation.
    Handoff,
    /// The handoff failed; putting the committed generation back.
    RollingBack,
}

/// A rotation that had started and not yet committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The generation being made.
    pub generation: u64,
    /// The step that had started.
    pub step: Step,
}

/// What the CA said about renewing the committed certificate (ACME ARI).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ari {
    /// The suggested window, when it was valid.
    pub window: Option<(SystemTime, SystemTime)>,
    /// When to ask again.
    pub recheck_at: SystemTime,
}

/// A generation that was issued, validated and staged, whose handoff failed:
/// its handoff is retried (publish, reload, verify) without asking the
/// issuer again while it is fresh enough to install
/// ([`crate::schedule::retry_staged`]). With `on_failure = "keep"` it is the
/// committed generation itself, whose reload and verify are retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// The generation (complete under `gen-N/`, kept by [`Journal::keep`]).
    pub generation: u64,
    /// `sha256:` of its leaf.
    pub fingerprint: String,
    /// Its validity.
    pub not_before: SystemTime,
    /// Its validity.
    pub not_after: SystemTime,
    /// When the issuer issued it.
    pub issued_at: SystemTime,
    /// Failed handoffs so far.
    pub attempts: u32,
}

/// What is persisted per credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    /// The last committed generation.
    pub committed: Option<u64>,
    /// The one before it, kept for rollback.
    pub previous: Option<u64>,
    /// Next generation number to hand out (numbers are never reused).
    pub next_generation: u64,
    /// A rotation in flight.
    pub pending: Option<Pending>,
    /// The jitter draw (0..1) for the committed generation, so the renewal
    /// point stays the same across restarts.
    pub jitter_draw: f64,
    /// The CA's renewal window for the committed generation, if it has one.
    /// Boxed: only an ACME CA with ARI gives one.
    #[serde(default)]
    pub ari: Option<Box<Ari>>,
    /// Why the committed certificate is shorter than asked, when its issuer
    /// said (the local CA ends sooner); shown in `/status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortened_by_ca: Option<String>,
    /// A staged generation waiting for its handoff to be retried. Boxed: an
    /// idle credential keeps only the pointer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<Box<Staged>>,
    /// When the issuer was asked for this credential (Unix seconds, oldest
    /// first, within the budget's window): the ledger of its issuance budget.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuances: Vec<u64>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            committed: None,
            previous: None,
            next_generation: 1,
            pending: None,
            jitter_draw: fastrand::f64(),
            ari: None,
            shortened_by_ca: None,
            staged: None,
            issuances: Vec::new(),
        }
    }
}

/// What to do at start about an interrupted rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing was in flight.
    Nothing,
    /// The app's files were not touched yet: drop the partial generation.
    Discard(u64),
    /// Publishing (or the handoff) had begun and the staged generation is
    /// complete: publish it again in full (publishing is idempotent) and run
    /// the handoff, so the app ends up with a whole new pair rather than a mix.
    RollForward(u64),
    /// A rollback was under way: put the committed generation back and
    /// reload, then drop the failed one.
    RollBack(u64),
}

/// Decide how to recover from `journal`; `staged_complete` says whether the
/// pending generation is complete in the state dir.
pub fn recovery(journal: &Journal, staged_complete: bool) -> Recovery {
    match journal.pending {
        None => Recovery::Nothing,
        Some(Pending {
            generation,
            step: Step::Issuing | Step::Staging,
        }) => Recovery::Discard(generation),
        Some(Pending {
            generation,
            step: Step::RollingBack,
        }) => Recovery::RollBack(generation),
        Some(Pending {
            generation,
            step: Step::Publishing | Step::Handoff,
        }) => {
            if staged_complete {
                Recovery::RollForward(generation)
            } else {
                // Staging completes (rename into place) before Publishing is
                // journaled, so this only happens if the state dir was damaged.
                Recovery::Discard(generation)
            }
        }
    }
}

impl Journal {
    /// Record `generation` as committed, keeping the old one for rollback.
    pub fn commit(&mut self, generation: u64, jitter_draw: f64) {
        if self.committed != Some(generation) {
            self.previous = self.committed;
            // A renewal window belongs to one certificate.
            self.ari = None;
        }
        self.committed = Some(generation);
        self.pending = None;
        // Whatever was waiting for a handoff is superseded by what is committed.
        self.staged = None;
        self.jitter_draw = jitter_draw;
        // Saturating: a corrupted journal near u64::MAX must not panic or wrap
        // back to generation numbers that are still on disk.
        self.next_generation = self.next_generation.max(generation.saturating_add(1));
    }

    /// Hand out the next generation number.
    pub fn allocate(&mut self) -> u64 {
        let floor = self
            .committed
            .unwrap_or(0)
            .max(self.previous.unwrap_or(0))
            .saturating_add(1);
        let g = self.next_generation.max(floor);
        self.next_generation = g.saturating_add(1);
        g
    }

    /// Generations worth keeping on disk: the committed one, the one before
    /// it (for rollback) and a staged one waiting for its handoff.
    pub fn keep(&self) -> Vec<u64> {
        self.committed
            .into_iter()
            .chain(self.previous)
            .chain(self.staged.as_ref().map(|s| s.generation))
            .collect()
    }
}

impl crate::engine::task::Journaled for Journal {
    fn allocate(&mut self) -> u64 {
        Journal::allocate(self)
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
    use proptest::prelude::*;

    fn step() -> impl Strategy<Value = Option<Step>> {
        prop_oneof![
            Just(None),
            Just(Some(Step::Issuing)),
            Just(Some(Step::Staging)),
            Just(Some(Step::Publishing)),
            Just(Some(Step::Handoff)),
            Just(Some(Step::RollingBack)),
        ]
    }

    proptest! {
        /// Whatever the journal says, recovery never rolls forward to a
        /// generation that is not completely staged, and never touches the
        /// committed one.
        #[test]
        fn recovery_is_safe(committed in proptest::option::of(1u64..100), s in step(), staged in any::<bool>()) {
            let mut j = Journal { committed, ..Journal::default() };
            let g = j.allocate();
            j.pending = s.map(|step| Pending { generation: g, step });
            match recovery(&j, staged) {
                Recovery::Nothing => prop_assert!(s.is_none()),
                Recovery::Discard(x) => { prop_assert_eq!(x, g); prop_assert!(Some(x) != committed); }
                Recovery::RollForward(x) => {
                    prop_assert!(staged && matches!(s, Some(Step::Publishing | Step::Handoff)));
                    prop_assert_eq!(x, g);
                }
                Recovery::RollBack(x) => {
                    prop_assert_eq!(s, Some(Step::RollingBack));
                    prop_assert_eq!(x, g);
                }
            }
            prop_assert!(g > committed.unwrap_or(0));
        }
    }

    #[test]
    fn commit_keeps_previous_and_numbers_never_repeat() {
        let mut j = Journal::default();
        let a = j.allocate();
        j.commit(a, 0.5);
        let b = j.allocate();
        let c = j.allocate(); // an abandoned attempt burns a number
        j.commit(c, 0.1);
        assert!(a < b && b < c);
        assert_eq!((j.committed, j.previous), (Some(c), Some(a)));
        assert_eq!(j.keep(), vec![c, a]);
        j.commit(c, 0.2); // re-commit (roll forward twice) keeps previous
        assert_eq!(j.previous, Some(a));
    }

    #[test]
    fn a_staged_generation_is_kept_until_something_is_committed() {
        let mut j = Journal::default();
        let a = j.allocate();
        j.commit(a, 0.5);
        let b = j.allocate();
        j.staged = Some(Box::new(Staged {
            generation: b,
            fingerprint: "sha256:00".into(),
            not_before: SystemTime::UNIX_EPOCH,
            not_after: SystemTime::UNIX_EPOCH,
            issued_at: SystemTime::UNIX_EPOCH,
            attempts: 1,
        }));
        assert_eq!(j.keep(), vec![a, b]);
        j.commit(b, 0.1);
        assert_eq!(j.staged, None);
        assert_eq!(j.keep(), vec![b, a]);
    }

    #[test]
    fn a_journal_written_before_budgets_and_staging_still_reads() {
        // The shape every earlier rekey wrote: no `staged`, no `issuances`.
        let old = r#"{"committed": 3, "previous": 2, "next_generation": 4, "pending": null,
                      "jitter_draw": 0.25, "ari": null}"#;
        let j: Journal = serde_json::from_str(old).unwrap();
        assert_eq!(
            (j.committed, j.previous, j.staged.is_none()),
            (Some(3), Some(2), true)
        );
        assert!(j.issuances.is_empty());
        // And what is written without them is what the earlier rekey reads.
        let text = serde_json::to_string(&j).unwrap();
        assert!(
            !text.contains("staged") && !text.contains("issuances"),
            "{text}"
        );
    }
}
