//! The engine's one backstop task: a slow re-check of every credential's
//! published files, in case a file event was missed, paced so that 10,000
//! credentials cost one wake-up a second, not 10,000 timers.

use std::ops::Bound;
use std::time::Duration;

use super::{mailbox, Senders};

/// The backstop never wakes more often than this, however many credentials.
pub const BACKSTOP_MIN_TICK: Duration = Duration::from_secs(1);

/// How the backstop walks `n` credentials once per `period`: wake every
/// `tick` and re-check the next `batch` of them. One wake-up per credential
/// spread evenly over the period, or, with many credentials, one wake-up per
/// [`BACKSTOP_MIN_TICK`] re-checking several (10,000 credentials and a 5 min
/// period: 34 every second).
pub fn backstop_pace(n: usize, period: Duration) -> (Duration, usize) {
    if n == 0 {
        return (period, 0);
    }
    let tick = (period / n.min(u32::MAX as usize) as u32).max(BACKSTOP_MIN_TICK);
    let batch = (n as f64 * tick.as_secs_f64() / period.as_secs_f64().max(1e-9)).ceil() as usize;
    (tick, batch.clamp(1, n))
}

/// The engine's one backstop task: walks the credentials in name order, a
/// batch per tick, and asks each to re-check its published files. Each step
/// costs O(log n) (a range lookup in the sender map) plus the batch.
pub(super) async fn backstop_loop(senders: Senders, period: Duration) {
    let mut cursor: Option<String> = None;
    loop {
        let n = senders
            .read()
            .map(|m| m.len())
            .unwrap_or_else(|e| e.into_inner().len());
        let (tick, batch) = backstop_pace(n, period);
        tokio::time::sleep(tick).await;
        let due: Vec<mailbox::Mailbox> = {
            let map = senders.read().unwrap_or_else(|e| e.into_inner());
            let after = match &cursor {
                Some(c) => map.range::<String, _>((Bound::Excluded(c), Bound::Unbounded)),
                None => map.range::<String, _>(..),
            };
            let picked: Vec<(&String, &mailbox::Mailbox)> = after.take(batch).collect();
            // Past the last name: start the next round from the first.
            cursor = match picked.last() {
                Some((name, _)) if picked.len() == batch => Some((*name).clone()),
                _ => None,
            };
            picked.into_iter().map(|(_, tx)| tx.clone()).collect()
        };
        for tx in due {
            // Coalesces with a re-check already pending.
            tx.poke(mailbox::Poke::Backstop);
        }
    }
}
