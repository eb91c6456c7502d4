use super::*;
use std::time::Duration;

fn outcome(result: &str) -> RotateOutcome {
    RotateOutcome {
        credential: "web".into(),
        result: serde_json::from_value(serde_json::json!(result)).unwrap(),
        generation: Some(7),
        fingerprint: None,
        error: None,
        retry_at: None,
    }
}

fn rotate(tx: &Mailbox, reissue: bool) -> oneshot::Receiver<RotateOutcome> {
    let (reply, rx) = oneshot::channel();
    tx.rotate(reply, reissue).unwrap();
    rx
}

fn retire() -> (Command, oneshot::Receiver<super::super::RetireOutcome>) {
    let (tx, rx) = oneshot::channel();
    (Command::Retire(tx), rx)
}

#[test]
fn an_idle_mailbox_is_small() {
    // The Arc's allocation: two counts plus `Shared`. The target is
    // ≤ 150 bytes a task with nothing queued (it was ~1.4 KB).
    let bytes = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Shared>();
    assert!(bytes <= 150, "{bytes} bytes");
}

#[tokio::test]
async fn requests_come_before_flags() {
    let (tx, rx) = mailbox();
    tx.poke(Poke::Backstop);
    tx.poke(Poke::FilesChanged);
    let _a = rotate(&tx, false);
    let (c, _r) = retire();
    tx.request(c).unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(match rx.recv().await {
            Some(Command::Rotate { .. }) => "rotate",
            Some(Command::Retire(_)) => "retire",
            Some(Command::FilesChanged) => "files",
            Some(Command::Backstop) => "backstop",
            None => "none",
        });
    }
    assert_eq!(seen, ["rotate", "retire", "files", "backstop"]);
    assert!(rx.take().is_none());
}

#[tokio::test]
async fn a_burst_of_rotate_requests_is_one_rotation_and_all_get_its_outcome() {
    let (tx, rx) = mailbox();
    let waiters: Vec<_> = (0..100).map(|_| rotate(&tx, false)).collect();
    assert!(matches!(
        rx.recv().await,
        Some(Command::Rotate { reissue: false })
    ));
    // Requests while it runs join it: no second rotation is queued.
    let late: Vec<_> = (0..50).map(|_| rotate(&tx, false)).collect();
    assert!(rx.take().is_none(), "a second rotation was queued");
    rx.finish_rotation(&outcome("success"), false);
    for w in waiters.into_iter().chain(late) {
        assert_eq!(w.await.unwrap().result.as_str(), "success");
    }
    assert!(rx.take().is_none());
    assert!(
        tx.shared.lock().rotations.is_none(),
        "the box is given back"
    );
}

#[tokio::test]
async fn a_reissue_joins_only_a_rotation_that_issues() {
    let (tx, rx) = mailbox();
    let plain = rotate(&tx, false);
    assert!(matches!(
        rx.recv().await,
        Some(Command::Rotate { reissue: false })
    ));
    // A plain rotation (maybe a handoff retry) is running: a reissue waits for the next.
    let re = rotate(&tx, true);
    let plain2 = rotate(&tx, false);
    rx.finish_rotation(&outcome("rolled_back"), false);
    assert_eq!(plain.await.unwrap().result.as_str(), "rolled_back");
    assert_eq!(
        plain2.await.unwrap().result.as_str(),
        "rolled_back",
        "joined the running one"
    );
    assert!(matches!(
        rx.recv().await,
        Some(Command::Rotate { reissue: true })
    ));
    // Plain requests join a running reissue.
    let plain3 = rotate(&tx, false);
    assert!(rx.take().is_none());
    rx.finish_rotation(&outcome("success"), false);
    for w in [re, plain3] {
        assert_eq!(w.await.unwrap().result.as_str(), "success");
    }
}

#[tokio::test]
async fn a_request_that_joined_a_failed_handoff_gets_another_attempt() {
    let (tx, rx) = mailbox();
    // A timer-driven retry of a staged handoff is under way...
    rx.begin_rotation();
    // ...when the operator, who just fixed the app, asks again.
    let late = rotate(&tx, false);
    rx.finish_rotation(&outcome("rolled_back"), true);
    // Not answered with the attempt that began before the fix:
    assert!(matches!(
        rx.take(),
        Some(Command::Rotate { reissue: false })
    ));
    rx.finish_rotation(&outcome("success"), false);
    assert_eq!(late.await.unwrap().result.as_str(), "success");
    assert!(tx.shared.lock().rotations.is_none());
    // A failed issuance (nothing staged) is not repeated for it.
    rx.begin_rotation();
    let late = rotate(&tx, false);
    rx.finish_rotation(&outcome("failed"), false);
    assert_eq!(late.await.unwrap().result.as_str(), "failed");
    assert!(rx.take().is_none());
}

#[tokio::test]
async fn a_due_rotation_is_joined_too() {
    let (tx, rx) = mailbox();
    // Queued just before the task found the rotation due: answered by it.
    let early = rotate(&tx, false);
    rx.begin_rotation();
    let w = rotate(&tx, false);
    assert!(rx.take().is_none());
    rx.finish_rotation(&outcome("success"), false);
    assert_eq!(w.await.unwrap().result.as_str(), "success");
    assert_eq!(early.await.unwrap().result.as_str(), "success");
    // A queued reissue still gets a rotation of its own.
    let re = rotate(&tx, true);
    rx.begin_rotation();
    rx.finish_rotation(&outcome("success"), false);
    assert!(matches!(rx.take(), Some(Command::Rotate { reissue: true })));
    // Told apart from the first by its generation.
    let mut issued = outcome("success");
    issued.generation = Some(8);
    rx.finish_rotation(&issued, false);
    assert_eq!(re.await.unwrap().generation, Some(8));
}

#[tokio::test]
async fn waiters_and_retires_are_bounded() {
    let (tx, rx) = mailbox();
    let mut replies = Vec::new();
    for _ in 0..MAX_WAITERS {
        replies.push(rotate(&tx, false));
    }
    let (reply, _r) = oneshot::channel();
    assert_eq!(tx.rotate(reply, false).unwrap_err(), Full);
    let mut retires = Vec::new();
    for _ in 0..MAX_REQUESTS {
        let (c, r) = retire();
        tx.request(c).unwrap();
        retires.push(r);
    }
    let (c, _r) = retire();
    assert_eq!(tx.request(c).unwrap_err(), Full);
    // Flags still get through when the queue is full.
    tx.poke(Poke::FilesChanged);
    assert!(matches!(rx.recv().await, Some(Command::Rotate { .. })));
    rx.finish_rotation(&outcome("success"), false);
    let (reply, _r) = oneshot::channel();
    tx.rotate(reply, false).unwrap();
}

#[tokio::test]
async fn stop_comes_before_queued_work() {
    let (tx, rx) = mailbox();
    let mut reply = rotate(&tx, false);
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
    let queued = rotate(&tx, false);
    rx.begin_rotation();
    let running = rotate(&tx, false);
    drop(rx);
    assert!(queued.await.is_err(), "queued reply dropped on end");
    assert!(running.await.is_err(), "running reply dropped on end");
    let (reply, _r) = oneshot::channel();
    assert_eq!(tx.rotate(reply, false).unwrap_err(), Closed);
    let (c, _r) = retire();
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
        Box::new(|tx: &Mailbox| drop(rotate(tx, false))),
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

#[tokio::test]
async fn a_request_after_the_outcome_is_decided_gets_a_rotation_of_its_own() {
    let (tx, rx) = mailbox();
    // A due rotation runs; one caller joins it while it runs.
    rx.begin_rotation();
    let mut joined = rotate(&tx, false);
    // Its outcome is decided (and about to be in the status): a caller who
    // comes now may have seen that status and wants a new rotation.
    rx.seal_rotation();
    let mut after = rotate(&tx, false);
    rx.finish_rotation(&outcome("success"), false);
    assert_eq!(joined.try_recv().unwrap().generation, Some(7));
    assert!(
        after.try_recv().is_err(),
        "the late caller got the old outcome"
    );
    assert!(matches!(
        rx.recv().await,
        Some(Command::Rotate { reissue: false })
    ));
    rx.finish_rotation(&outcome("rolled_back"), false);
    let r = after.try_recv().unwrap();
    assert_eq!(r.result.as_str(), "rolled_back");
}
