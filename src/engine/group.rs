//! Handoff groups: credentials whose reload reaches one app (see
//! [`crate::config::ReloadGroup`]) share one reload when their handoffs
//! fall together, instead of reloading the app once each.
//!
//! Each member task publishes its own files (journaled as always), then
//! joins its group's open batch and waits. The batch fires one reload when
//! every running member of the group has joined, when `window` has passed
//! since the last one joined, or at the latest `max_wait` after the first
//! joined. Every member then runs its own probes and commits or rolls back
//! on its own; a member that rolls back joins the next batch with its old
//! files, so the members that failed are reloaded once more, together. A
//! group with one running member reloads at once: a credential that shares
//! its app with nobody never waits.
//!
//! The batch fires from a task of its own, so no member's step can strand
//! the others, and a group reloads one batch at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::config::ReloadGroup;
use crate::handoff::{Generation, HandoffError, Reload};

/// Why a member asks for a reload (the crash suite tells them apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A new generation was published.
    Handoff,
    /// The committed generation was published again (a rollback, a repair).
    Restore,
}

/// The engine's running groups, by [`ReloadGroup::key`].
#[derive(Default)]
pub(crate) struct Groups {
    live: Mutex<HashMap<String, Weak<Group>>>,
}

/// A poisoned lock only means a panic elsewhere; the data is still whole
/// (every critical section below leaves it consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Groups {
    /// Enrol a credential task in the group `spec`; it counts as a member
    /// until the returned [`Member`] is dropped (when the task ends).
    pub(crate) fn member(&self, spec: &Arc<ReloadGroup>) -> Member {
        let mut live = lock(&self.live);
        let group = match live.get(&spec.key).and_then(Weak::upgrade) {
            Some(g) => g,
            None => {
                live.retain(|_, g| g.strong_count() > 0);
                let g = Arc::new(Group {
                    label: spec.label.clone(),
                    members: AtomicUsize::new(0),
                    open: Mutex::new(None),
                    firing: tokio::sync::Mutex::new(()),
                });
                live.insert(spec.key.clone(), Arc::downgrade(&g));
                g
            }
        };
        group.members.fetch_add(1, Ordering::SeqCst);
        Member {
            group,
            window: spec.window,
            max_wait: spec.max_wait,
        }
    }
}

/// One group of running credentials.
struct Group {
    label: String,
    /// Running member tasks.
    members: AtomicUsize,
    /// The batch members are joining, if any.
    open: Mutex<Option<Batch>>,
    /// Held while a batch reloads: one reload of the app at a time.
    firing: tokio::sync::Mutex<()>,
}

/// Members waiting for one reload.
struct Batch {
    first: Instant,
    last: Instant,
    window: Duration,
    max_wait: Duration,
    joined: Vec<Joined>,
    /// Wakes the firing task to look again (someone joined or left).
    wake: Arc<Notify>,
}

/// One member waiting in a batch.
struct Joined {
    reload: Arc<dyn Reload>,
    generation: Generation,
    purpose: Purpose,
    reply: oneshot::Sender<Result<(), HandoffError>>,
}

/// A credential task's place in its group.
pub(crate) struct Member {
    group: Arc<Group>,
    window: Duration,
    max_wait: Duration,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.group.members.fetch_sub(1, Ordering::SeqCst);
        // The batch may now hold every member that is left.
        if let Some(b) = lock(&self.group.open).as_ref() {
            b.wake.notify_one();
        }
    }
}

impl Member {
    /// Whether no other running credential shares this reload.
    pub(crate) fn alone(&self) -> bool {
        self.group.members.load(Ordering::SeqCst) <= 1
    }

    /// Reload the app for `generation`, whose files are published: at once
    /// when the member is [alone](Member::alone), else once for the whole
    /// batch this member joins. Every member of a batch gets the one
    /// reload's result.
    pub(crate) async fn reload(
        &self,
        reload: &Arc<dyn Reload>,
        generation: &Generation,
        purpose: Purpose,
    ) -> Result<(), HandoffError> {
        if self.alone() {
            return reload.reload(generation).await;
        }
        let credential = generation.credential.clone();
        // A reload never needs an API key's secret; keep it out of the batch.
        let generation = Generation {
            secret: None,
            ..generation.clone()
        };
        let (reply, answer) = oneshot::channel();
        let joined = Joined {
            reload: reload.clone(),
            generation,
            purpose,
            reply,
        };
        {
            let mut open = lock(&self.group.open);
            let now = Instant::now();
            match open.as_mut() {
                Some(b) => {
                    b.joined.push(joined);
                    b.last = now;
                    b.wake.notify_one();
                }
                None => {
                    *open = Some(Batch {
                        first: now,
                        last: now,
                        window: self.window,
                        max_wait: self.max_wait,
                        joined: vec![joined],
                        wake: Arc::new(Notify::new()),
                    });
                    tokio::spawn(fire(self.group.clone()));
                }
            }
        }
        tracing::debug!(group = %self.group.label, "published; waiting for the group's reload");
        answer.await.unwrap_or_else(|_| {
            Err(HandoffError::Group {
                credential,
                why: format!(
                    "the one reload of {} did not run (the daemon is stopping); the next start hands this generation over again",
                    self.group.label
                ),
            })
        })
    }
}

/// Wait until the open batch of `group` is due, then reload once for it.
async fn fire(group: Arc<Group>) {
    loop {
        let (wake, at) = {
            let open = lock(&group.open);
            let Some(b) = open.as_ref() else { return };
            if b.joined.len() >= group.members.load(Ordering::SeqCst) {
                break; // everyone is here
            }
            let at = (b.last + b.window).min(b.first + b.max_wait);
            if at <= Instant::now() {
                break;
            }
            (b.wake.clone(), at)
        };
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = wake.notified() => {}
        }
    }
    // Members that join while an earlier batch still reloads join this one.
    let _one_at_a_time = group.firing.lock().await;
    let Some(batch) = lock(&group.open).take() else {
        return;
    };
    let mut joined = batch.joined;
    // The same member leads every time: with `reload_group = "NAME"` the
    // members' reloads may be written differently.
    joined.sort_by(|a, b| a.generation.credential.cmp(&b.generation.credential));
    let restoring = joined.iter().any(|j| j.purpose == Purpose::Restore);
    if restoring {
        failpoint!("group.rollback.before");
    } else {
        failpoint!("group.reload.before");
    }
    let Some(lead) = joined.first() else { return };
    let result = if joined.len() == 1 {
        lead.reload.reload(&lead.generation).await
    } else {
        let all = Generation {
            credential: format!(
                "{} and {} more credentials of {}",
                lead.generation.credential,
                joined.len() - 1,
                group.label
            ),
            members: joined
                .iter()
                .map(|j| j.generation.credential.clone())
                .collect(),
            ..Generation::default()
        };
        lead.reload.reload(&all).await
    };
    if restoring {
        failpoint!("group.rollback.after");
    } else {
        failpoint!("group.reload.after");
    }
    let waited_ms = batch.first.elapsed().as_millis() as u64;
    match &result {
        Ok(()) => {
            tracing::info!(group = %group.label, credentials = joined.len(), restoring, waited_ms, event = "group_reload", "one reload of the app for a batch of its group")
        }
        Err(e) => {
            tracing::warn!(group = %group.label, credentials = joined.len(), restoring, waited_ms, error = %e, event = "group_reload_failed", "the one reload of the app for a batch of its group failed")
        }
    }
    for j in joined {
        // A member that stopped waiting has nothing left to learn.
        let _ = j.reply.send(result.clone());
    }
}

#[cfg(test)]
mod tests {
    //! Virtual time (`start_paused`): the waits are exact, and a test that
    //! waits for nothing takes no time at all.
    use super::*;
    use async_trait::async_trait;

    /// Counts reloads and remembers whom each one covered; fails while
    /// `fail` is set. An in-test fake: the coordinator is under test, not
    /// a backend.
    #[derive(Default)]
    struct Counting {
        calls: Mutex<Vec<Vec<String>>>,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Reload for Counting {
        async fn reload(&self, g: &Generation) -> Result<(), HandoffError> {
            let who = if g.members.is_empty() {
                vec![g.credential.clone()]
            } else {
                g.members.clone()
            };
            lock(&self.calls).push(who);
            if self.fail.load(Ordering::SeqCst) {
                return Err(HandoffError::Signal {
                    credential: g.credential.clone(),
                    why: "no such process".into(),
                });
            }
            Ok(())
        }
    }

    fn spec(window_ms: u64, max_ms: u64) -> Arc<ReloadGroup> {
        Arc::new(ReloadGroup {
            key: "k".into(),
            label: "SIGHUP to the process in /run/app.pid".into(),
            window: Duration::from_millis(window_ms),
            max_wait: Duration::from_millis(max_ms),
        })
    }

    fn gen(name: &str) -> Generation {
        Generation {
            credential: name.into(),
            generation: 2,
            ..Generation::default()
        }
    }

    /// `n` members of one group and the reload they share.
    fn members(
        groups: &Groups,
        spec: &Arc<ReloadGroup>,
        n: usize,
    ) -> (Vec<Arc<Member>>, Arc<Counting>) {
        let m = (0..n).map(|_| Arc::new(groups.member(spec))).collect();
        (m, Arc::new(Counting::default()))
    }

    /// Member `i` joins after `delay`; returns when its reload came back.
    fn join(
        m: &Arc<Member>,
        r: &Arc<Counting>,
        name: &str,
        delay: Duration,
    ) -> tokio::task::JoinHandle<(Result<(), HandoffError>, Instant)> {
        let (m, r, g) = (m.clone(), r.clone() as Arc<dyn Reload>, gen(name));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let res = m.reload(&r, &g, Purpose::Handoff).await;
            (res, Instant::now())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_credential_alone_in_its_group_reloads_at_once() {
        let groups = Groups::default();
        let (m, r) = members(&groups, &spec(5000, 60_000), 1);
        let t0 = Instant::now();
        let (res, at) = join(&m[0], &r, "web", Duration::ZERO).await.unwrap();
        res.unwrap();
        assert_eq!(at - t0, Duration::ZERO, "a lone member waited");
        assert_eq!(lock(&r.calls).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_member_has_joined_the_batch_fires_without_waiting_out_the_window() {
        let groups = Groups::default();
        let (m, r) = members(&groups, &spec(200, 2000), 3);
        let t0 = Instant::now();
        let waits: Vec<_> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| join(&m[i], &r, n, Duration::from_millis(10 * i as u64)))
            .collect();
        for w in waits {
            let (res, at) = w.await.unwrap();
            res.unwrap();
            // The last joined at 20 ms: the batch fired then, not at 220 ms.
            assert_eq!(at - t0, Duration::from_millis(20));
        }
        assert_eq!(*lock(&r.calls), vec![vec!["a", "b", "c"]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_fires_one_window_after_its_last_member_joined() {
        let groups = Groups::default();
        let (m, r) = members(&groups, &spec(200, 2000), 3);
        let t0 = Instant::now();
        let a = join(&m[0], &r, "a", Duration::ZERO);
        let b = join(&m[1], &r, "b", Duration::from_millis(150));
        for w in [a, b] {
            let (res, at) = w.await.unwrap();
            res.unwrap();
            assert_eq!(at - t0, Duration::from_millis(350));
        }
        assert_eq!(*lock(&r.calls), vec![vec!["a", "b"]]);
        // The third, later, gets a batch (and a reload) of its own.
        let (res, at) = join(&m[2], &r, "c", Duration::ZERO).await.unwrap();
        res.unwrap();
        assert_eq!(at - t0, Duration::from_millis(550));
        assert_eq!(lock(&r.calls).len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn max_wait_caps_a_batch_that_keeps_growing() {
        let groups = Groups::default();
        let (m, r) = members(&groups, &spec(200, 500), 10);
        let t0 = Instant::now();
        // A member every 150 ms would keep a 200 ms window open for ever.
        let waits: Vec<_> = (0..6)
            .map(|i| {
                join(
                    &m[i],
                    &r,
                    &format!("m{i}"),
                    Duration::from_millis(150 * i as u64),
                )
            })
            .collect();
        let mut done = Vec::new();
        for w in waits {
            let (res, at) = w.await.unwrap();
            res.unwrap();
            done.push(at - t0);
        }
        // m0..m3 joined by 450 ms and fired at 500 ms (the cap); m4 (600 ms)
        // and m5 (750 ms) form the next batch, 200 ms after m5.
        let ms = Duration::from_millis;
        assert_eq!(
            done,
            vec![ms(500), ms(500), ms(500), ms(500), ms(950), ms(950)]
        );
        assert_eq!(lock(&r.calls).len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn every_member_gets_the_one_reloads_failure() {
        let groups = Groups::default();
        let (m, r) = members(&groups, &spec(200, 2000), 2);
        r.fail.store(true, Ordering::SeqCst);
        let a = join(&m[0], &r, "a", Duration::ZERO);
        let b = join(&m[1], &r, "b", Duration::ZERO);
        for w in [a, b] {
            let err = w.await.unwrap().0.unwrap_err().to_string();
            assert!(
                err.contains("no such process") && err.contains("a and 1 more"),
                "{err}"
            );
        }
        assert_eq!(lock(&r.calls).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_that_stops_lets_the_batch_of_the_others_fire() {
        let groups = Groups::default();
        let (mut m, r) = members(&groups, &spec(1000, 5000), 3);
        let t0 = Instant::now();
        let a = join(&m[0], &r, "a", Duration::ZERO);
        let b = join(&m[1], &r, "b", Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The third task ends (its credential was removed by a config reload).
        drop(m.pop());
        for w in [a, b] {
            let (res, at) = w.await.unwrap();
            res.unwrap();
            assert_eq!(at - t0, Duration::from_millis(100));
        }
    }
}
