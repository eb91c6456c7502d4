//! A credential task's mailbox: what the engine, the API, the file watcher
//! and the backstop ask of one task, in about a hundred bytes.
//!
//! It replaces a `tokio::sync::mpsc::channel(8)` plus a stop
//! `watch::channel(false)` per task (~1.4 KB each, 14 MB at 10,000
//! credentials) for traffic of a handful of messages a day. One `Arc` holds
//! a `std::sync::Mutex` over the pending work and a [`Notify`] to wake the
//! task:
//! - `stop` wins over everything queued: the task ends after its current step;
//! - `Rotate`/`Retire` carry a reply and are queued in order, at most
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

use tokio::sync::Notify;

use super::Command;

/// At most this many `Rotate`/`Retire` requests wait for one task; as many
/// as the channel this replaces held.
pub(crate) const MAX_REQUESTS: usize = 8;

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SendError {
    /// The task has ended (stopped, retired or shut down).
    #[error("the credential's task has ended")]
    Closed,
    /// [`MAX_REQUESTS`] requests are already waiting.
    #[error("{MAX_REQUESTS} rotate/retire requests are already waiting")]
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

/// What is waiting for the task. Empty, this allocates nothing beyond the
/// `Arc` (an empty `VecDeque` holds no buffer).
#[derive(Default)]
struct Pending {
    /// `Rotate`/`Retire`, oldest first; never longer than [`MAX_REQUESTS`].
    requests: VecDeque<Command>,
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
    /// Queue a `Rotate` or `Retire` (the commands that carry a reply).
    /// `FilesChanged`/`Backstop` go through [`Mailbox::poke`] instead; sent
    /// here they are poked too.
    pub(crate) fn request(&self, cmd: Command) -> Result<(), SendError> {
        let poke = match cmd {
            Command::FilesChanged => Some(Poke::FilesChanged),
            Command::Backstop => Some(Poke::Backstop),
            Command::Rotate(_) | Command::Retire(_) => None,
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

    /// The next thing to do, without waiting: `None` when a stop was asked
    /// for or nothing is pending. Replies first (a caller is waiting), then
    /// a file event, then the backstop.
    fn take(&self) -> Option<Command> {
        let mut p = self.shared.lock();
        if p.stop {
            return None;
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
            std::mem::take(&mut p.requests)
        };
        drop(requests);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::oneshot;

    fn rotate() -> (Command, oneshot::Receiver<crate::status::RotateOutcome>) {
        let (tx, rx) = oneshot::channel();
        (Command::Rotate(tx), rx)
    }

    #[test]
    fn an_idle_mailbox_is_small() {
        // The Arc's allocation: two counts plus `Shared`. The target is
        // ≤ 150 bytes a task with nothing queued (it was ~1.4 KB).
        let bytes = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Shared>();
        assert!(bytes <= 150, "{bytes} bytes");
    }

    #[tokio::test]
    async fn requests_come_in_order_before_flags() {
        let (tx, rx) = mailbox();
        tx.poke(Poke::Backstop);
        tx.poke(Poke::FilesChanged);
        let (a, _ra) = rotate();
        let (b, _rb) = rotate();
        tx.request(a).unwrap();
        tx.request(b).unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(match rx.recv().await {
                Some(Command::Rotate(_)) => "rotate",
                Some(Command::Retire(_)) => "retire",
                Some(Command::FilesChanged) => "files",
                Some(Command::Backstop) => "backstop",
                None => "none",
            });
        }
        assert_eq!(seen, ["rotate", "rotate", "files", "backstop"]);
        assert!(rx.take().is_none());
    }

    #[tokio::test]
    async fn flags_coalesce() {
        let (tx, rx) = mailbox();
        for _ in 0..10_000 {
            tx.poke(Poke::FilesChanged);
            tx.request(Command::Backstop).unwrap();
        }
        assert!(matches!(rx.recv().await, Some(Command::FilesChanged)));
        assert!(matches!(rx.recv().await, Some(Command::Backstop)));
        assert!(rx.take().is_none());
        // The stored permit left by the flood only costs a re-check.
        assert!(tokio::time::timeout(Duration::from_millis(20), rx.recv())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn requests_are_bounded() {
        let (tx, rx) = mailbox();
        let mut replies = Vec::new();
        for _ in 0..MAX_REQUESTS {
            let (c, r) = rotate();
            tx.request(c).unwrap();
            replies.push(r);
        }
        let (c, _r) = rotate();
        assert_eq!(tx.request(c).unwrap_err(), Full);
        // Flags still get through when the queue is full.
        tx.poke(Poke::FilesChanged);
        assert!(matches!(rx.recv().await, Some(Command::Rotate(_))));
        let (c, _r) = rotate();
        tx.request(c).unwrap();
    }

    #[tokio::test]
    async fn stop_comes_before_queued_work() {
        let (tx, rx) = mailbox();
        let (c, mut reply) = rotate();
        tx.request(c).unwrap();
        tx.poke(Poke::FilesChanged);
        tx.stop();
        assert!(rx.stopped());
        assert!(rx.recv().await.is_none());
        assert!(rx.recv().await.is_none());
        // The queued rotate is dropped with the receiver: its caller learns
        // the task stopped.
        assert!(reply.try_recv().is_err());
        drop(rx);
        assert_eq!(
            reply.try_recv().unwrap_err(),
            oneshot::error::TryRecvError::Closed
        );
    }

    #[tokio::test]
    async fn an_ended_task_refuses_and_drops_replies() {
        let (tx, rx) = mailbox();
        let (c, reply) = rotate();
        tx.request(c).unwrap();
        drop(rx);
        assert!(reply.await.is_err(), "queued reply dropped on end");
        let (c, _r) = rotate();
        assert_eq!(tx.request(c).unwrap_err(), Closed);
        // Pokes after the end are ignored, not kept.
        tx.poke(Poke::Backstop);
        assert!(!tx.shared.lock().backstop);
    }

    #[tokio::test]
    async fn a_waiting_task_wakes_for_each_kind() {
        let (tx, rx) = mailbox();
        let rx = Arc::new(rx);
        for send in [
            Box::new(|tx: &Mailbox| tx.poke(Poke::Backstop)) as Box<dyn Fn(&Mailbox)>,
            Box::new(|tx: &Mailbox| tx.poke(Poke::FilesChanged)),
            Box::new(|tx: &Mailbox| tx.request(rotate().0).unwrap()),
        ] {
            let waiter = {
                let rx = rx.clone();
                tokio::spawn(async move { rx.recv().await.is_some() })
            };
            tokio::time::sleep(Duration::from_millis(5)).await;
            send(&tx);
            let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
            assert!(got.unwrap().unwrap());
        }
        let waiter = {
            let rx = rx.clone();
            tokio::spawn(async move { rx.recv().await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        tx.stop();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(got.unwrap().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_cancelled_wait_loses_nothing() {
        // As in the task's select!: the wait is dropped when the timer wins;
        // what arrived meanwhile is found by the next wait.
        let (tx, rx) = mailbox();
        assert!(tokio::time::timeout(Duration::from_millis(5), rx.recv())
            .await
            .is_err());
        tx.poke(Poke::FilesChanged);
        let next = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(matches!(next, Ok(Some(Command::FilesChanged))));
    }
}
