//! A credential task's mailbox: what the engine, the API, the file watcher
//! and the backstop ask of one task, in about a hundred bytes.
//!
//! It replaces a `tokio::sync::mpsc::channel(8)` plus a stop
//! `watch::channel(false)` per task (~1.4 KB each, 14 MB at 10,000
//! credentials) for traffic of a handful of messages a day. One `Arc` holds
//! a `std::sync::Mutex` over the pending work and a [`Notify`] to wake the
//! task:
//! - `stop` wins over everything queued: the task ends after its current step;
//! - rotate requests coalesce: a request that comes while a rotation runs
//!   joins it (a `--reissue` joins only a rotation that issues anew), and
//!   requests that come before the next one starts share that one, so a
//!   burst of requests is one rotation, whose outcome every waiter gets. A
//!   request that joined a rotation already under way, which then failed
//!   its handoff and left the new generation staged, gets one more handoff
//!   attempt of its own (the operator may have just fixed the app, after
//!   that attempt had signalled it); a failed issuance is not repeated. At
//!   most [`MAX_WAITERS`] callers wait at once; more are refused ([`Full`]);
//! - `Retire` carries a reply and is queued in order, at most
//!   [`MAX_REQUESTS`]; more are refused ([`Full`]) rather than awaited;
//! - `FilesChanged`/`Backstop` are flags: any number of events while one is
//!   pending cost nothing more;
//! - when the task's [`Receiver`] goes (the loop ended, returned or
//!   panicked), the queued replies are dropped, so their callers see the
//!   task stopped, and later sends are refused ([`Closed`]).
//!
//! The mutex is held only to flip a flag or move a reply sender, never
//! across an await.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, Notify};

use super::Command;
use crate::status::RotateOutcome;

/// At most this many `Retire` requests wait for one task; as many as the
/// channel this replaces held.
pub(crate) const MAX_REQUESTS: usize = 8;
/// At most this many callers wait for one task's rotations (queued and
/// running together); each costs one reply sender.
pub(crate) const MAX_WAITERS: usize = 1024;

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SendError {
    /// The task has ended (stopped, retired or shut down).
    #[error("the credential's task has ended")]
    Closed,
    /// [`MAX_REQUESTS`] retire requests or [`MAX_WAITERS`] rotate callers
    /// are already waiting.
    #[error("too many rotate/retire requests are already waiting")]
    Full,
}
pub(crate) use SendError::{Closed, Full};

/// Work that needs no reply, kept as a flag so repeats coalesce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Poke {
    /// Something changed in a directory holding the task's files.
    FilesChanged,
    /// The backstop re-check came round to the task.
    Backstop,
}

/// The callers waiting for one rotation, and whether one of them asked for a
/// new issuance.
#[derive(Default)]
struct Rotation {
    reissue: bool,
    replies: Vec<oneshot::Sender<RotateOutcome>>,
    /// Callers that joined after the rotation had started.
    late: Vec<oneshot::Sender<RotateOutcome>>,
    /// Its outcome is decided and in the status: later callers wait for
    /// the next rotation instead of getting this one's outcome.
    sealed: bool,
}

/// The rotations of one task that callers wait for.
#[derive(Default)]
struct Rotations {
    /// The next rotation's callers, before it starts.
    next: Option<Rotation>,
    /// The running rotation's callers (requested or not: a timer-driven
    /// rotation is joined too).
    running: Option<Rotation>,
}

/// What is waiting for the task. Empty, this allocates nothing beyond the
/// `Arc` (an empty `VecDeque` holds no buffer).
#[derive(Default)]
struct Pending {
    /// `Retire`, oldest first; never longer than [`MAX_REQUESTS`].
    requests: VecDeque<Command>,
    /// Rotations asked for or running; boxed, so an idle task's mailbox
    /// stays a pointer larger (10,000 of them are resident).
    rotations: Option<Box<Rotations>>,
    files_changed: bool,
    backstop: bool,
    stop: bool,
    /// The receiver is gone: nothing will be read again.
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Rung after every change; the task is its only waiter.
    bell: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A poisoned lock only means a panic elsewhere while holding it; every
        // change under it is a single assignment or push, so the state is
        // whole and still usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side: cheap to clone, kept in the engine's sender map.
#[derive(Clone)]
pub(crate) struct Mailbox {
    shared: Arc<Shared>,
}

/// The task's side; dropping it closes the mailbox.
pub(crate) struct Receiver {
    shared: Arc<Shared>,
}

/// A new mailbox and the receiver for its task.
pub(crate) fn mailbox() -> (Mailbox, Receiver) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        bell: Notify::new(),
    });
    (
        Mailbox {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl Mailbox {
    /// Ask for a rotation (`reissue`: with a new issuance, not the retry of
    /// a staged handoff) and have its outcome sent to `reply`. Joins the
    /// rotation running now when that one does what is asked, else the next
    /// one, which starts once the current step is done.
    pub(crate) fn rotate(
        &self,
        reply: oneshot::Sender<RotateOutcome>,
        reissue: bool,
    ) -> Result<(), SendError> {
        {
            let mut p = self.shared.lock();
            if p.closed {
                return Err(Closed);
            }
            let rs = p.rotations.get_or_insert_with(Box::default);
            let waiting = rs
                .running
                .as_ref()
                .map_or(0, |r| r.replies.len() + r.late.len())
                + rs.next.as_ref().map_or(0, |r| r.replies.len());
            if waiting >= MAX_WAITERS {
                return Err(Full);
            }
            if let Some(r) = rs
                .running
                .as_mut()
                .filter(|r| !r.sealed && (r.reissue || !reissue))
            {
                // Its outcome is this request's outcome (see
                // `finish_rotation` for a failed handoff): nothing to wake.
                r.late.push(reply);
                return Ok(());
            }
            let next = rs.next.get_or_insert_with(Rotation::default);
            next.reissue |= reissue;
            next.replies.push(reply);
        }
        self.shared.bell.notify_one();
        Ok(())
    }

    /// Queue a `Retire` (the command that carries a reply).
    /// `FilesChanged`/`Backstop` go through [`Mailbox::poke`] instead; sent
    /// here they are poked too, and a `Rotate` asks for a plain rotation
    /// nobody waits for.
    pub(crate) fn request(&self, cmd: Command) -> Result<(), SendError> {
        let poke = match cmd {
            Command::FilesChanged => Some(Poke::FilesChanged),
            Command::Backstop => Some(Poke::Backstop),
            Command::Rotate { reissue } => {
                let (reply, _) = oneshot::channel();
                return self.rotate(reply, reissue);
            }
            Command::Retire(_) => None,
        };
        if let Some(p) = poke {
            self.poke(p);
            return Ok(());
        }
        {
            let mut p = self.shared.lock();
            if p.closed {
                return Err(Closed);
            }
            if p.requests.len() >= MAX_REQUESTS {
                return Err(Full);
            }
            p.requests.push_back(cmd);
        }
        self.shared.bell.notify_one();
        Ok(())
    }

    /// Set a flag; a no-op when it is already set or the task has ended.
    pub(crate) fn poke(&self, what: Poke) {
        {
            let mut p = self.shared.lock();
            if p.closed {
                return;
            }
            let flag = match what {
                Poke::FilesChanged => &mut p.files_changed,
                Poke::Backstop => &mut p.backstop,
            };
            if *flag {
                // Already pending, so the task has been rung for it.
                return;
            }
            *flag = true;
        }
        self.shared.bell.notify_one();
    }

    /// Ask the task to end after its current step, before any queued work.
    pub(crate) fn stop(&self) {
        self.shared.lock().stop = true;
        self.shared.bell.notify_one();
    }
}

impl Receiver {
    /// Whether a stop was asked for.
    pub(crate) fn stopped(&self) -> bool {
        self.shared.lock().stop
    }

    /// A rotation starts that no request asked for (it was due): requests
    /// that come while it runs join it. Pair with [`Receiver::finish_rotation`].
    pub(crate) fn begin_rotation(&self) {
        let mut p = self.shared.lock();
        let rs = p.rotations.get_or_insert_with(Box::default);
        // Plain requests already queued are answered by this rotation too,
        // rather than by a second one right after it.
        let queued = rs.next.take_if(|n| !n.reissue);
        let running = rs.running.get_or_insert_with(Rotation::default);
        if let Some(q) = queued {
            running.replies.extend(q.replies);
            running.late.extend(q.late);
        }
    }

    /// The running rotation's outcome is decided and about to be published
    /// in the status: a caller that comes from now on (it may have seen
    /// that status) waits for a rotation of its own.
    pub(crate) fn seal_rotation(&self) {
        let mut p = self.shared.lock();
        if let Some(r) = p.rotations.as_mut().and_then(|rs| rs.running.as_mut()) {
            r.sealed = true;
        }
    }

    /// The running rotation ended with `outcome`: every caller waiting for
    /// it gets a copy, except that with `staged_waits` (its handoff failed
    /// and the new generation stays staged) the callers that joined after
    /// it started are queued for one more handoff attempt instead.
    pub(crate) fn finish_rotation(&self, outcome: &RotateOutcome, staged_waits: bool) {
        // Taken out under the lock and answered after it (see Drop).
        let (running, again) = {
            let mut p = self.shared.lock();
            let mut running = p.rotations.as_mut().and_then(|rs| rs.running.take());
            let late = running
                .as_mut()
                .filter(|_| staged_waits)
                .map(|r| std::mem::take(&mut r.late))
                .filter(|late| !late.is_empty());
            if let (Some(late), Some(rs)) = (late, p.rotations.as_mut()) {
                let next = rs.next.get_or_insert_with(Rotation::default);
                next.replies.extend(late);
            }
            if p.rotations.as_ref().is_some_and(|rs| rs.next.is_none()) {
                // Nothing else waits: give the box back.
                p.rotations = None;
            }
            let again = p.rotations.as_ref().is_some_and(|rs| rs.next.is_some());
            (running, again)
        };
        if again {
            self.shared.bell.notify_one();
        }
        for reply in running
            .into_iter()
            .flat_map(|r| r.replies.into_iter().chain(r.late))
        {
            let _ = reply.send(outcome.clone());
        }
    }

    /// The next thing to do, without waiting: `None` when a stop was asked
    /// for or nothing is pending. Requests first (a caller is waiting), then
    /// a file event, then the backstop. A rotation taken here is running:
    /// later requests join it until [`Receiver::finish_rotation`].
    fn take(&self) -> Option<Command> {
        let mut p = self.shared.lock();
        if p.stop {
            return None;
        }
        if let Some(rs) = p.rotations.as_mut() {
            if let Some(next) = rs.next.take() {
                let reissue = next.reissue;
                match rs.running.as_mut() {
                    // Only when a caller of `take` left a rotation unfinished.
                    Some(r) => {
                        r.reissue |= next.reissue;
                        r.replies.extend(next.replies);
                        r.late.extend(next.late);
                    }
                    None => rs.running = Some(next),
                }
                return Some(Command::Rotate { reissue });
            }
        }
        if let Some(cmd) = p.requests.pop_front() {
            if p.requests.is_empty() {
                // Give back the buffer: an idle task keeps only the Arc.
                p.requests = VecDeque::new();
            }
            return Some(cmd);
        }
        if std::mem::take(&mut p.files_changed) {
            return Some(Command::FilesChanged);
        }
        if std::mem::take(&mut p.backstop) {
            return Some(Command::Backstop);
        }
        None
    }

    /// Wait for the next command; `None` once a stop was asked for (queued
    /// work is then left for [`Drop`] to discard).
    ///
    /// Cancel-safe (it sits in a `select!` beside the task's timer): a
    /// command leaves the mailbox only in the poll that returns it.
    pub(crate) async fn recv(&self) -> Option<Command> {
        loop {
            if self.stopped() {
                return None;
            }
            if let Some(cmd) = self.take() {
                return Some(cmd);
            }
            // No lost wake-up between the check above and this wait: every
            // sender changes the state *then* calls `notify_one`, which
            // stores a permit when nobody is waiting yet, so this completes
            // at once. A stale permit only costs one more look at the state.
            self.shared.bell.notified().await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Taken out under the lock and dropped after it: dropping a reply
        // sender wakes its caller, who may call in here again.
        let requests = {
            let mut p = self.shared.lock();
            p.closed = true;
            p.files_changed = false;
            p.backstop = false;
            (std::mem::take(&mut p.requests), p.rotations.take())
        };
        drop(requests);
    }
}

#[cfg(test)]
#[path = "mailbox_tests.rs"]
mod tests;
