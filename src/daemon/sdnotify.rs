//! systemd's notification protocol (`sd_notify`), without libsystemd: one
//! datagram per message to the `AF_UNIX` socket in `$NOTIFY_SOCKET` (a path,
//! or an abstract name written `@name`).
//!
//! [`init`] reads the environment once, at the start of `rekey run`, and
//! removes the variables so commands rekey runs later cannot speak for it.
//! Every sender is a no-op when rekey is not started by systemd with
//! `Type=notify`. Sending is best-effort and never blocks: a notification
//! that cannot be delivered is logged at debug level and dropped.
//!
//! The watchdog ([`watchdog_task`]) pings from a task of the daemon's own
//! runtime, and only while the engine's status channel is alive, so a dead
//! engine or a stalled runtime stops the pings and systemd restarts rekey.
//! Limitation: it does not go through each credential task's loop, so one
//! credential task stuck inside a step while the others run is not caught
//! by it (rotations have their own timeouts for that).

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::engine::Handle;
use crate::status::{self, CredentialStatus, Handoff, Snapshot, State};

/// Where notifications go, when systemd asked for them.
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Half of `WATCHDOG_USEC`, when the watchdog is on and meant for us.
    watchdog: Option<Duration>,
}

static TARGET: OnceLock<Option<Target>> = OnceLock::new();

/// Read `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, then remove them
/// from the environment. Call once, before any thread is started (removing
/// environment variables is only sound while the process has one thread).
pub fn init() {
    let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
        let path = path.to_string_lossy().into_owned();
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        match open(&path) {
            Ok((socket, addr)) => Some(Target {
                socket,
                addr,
                watchdog,
            }),
            Err(e) => {
                eprintln!(
                    "rekey: NOTIFY_SOCKET={path} is unusable, systemd notifications are off: {e}"
                );
                None
            }
        }
    });
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        std::env::remove_var(var);
    }
    let _ = TARGET.set(target);
}

fn open(path: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    let addr = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None => SocketAddr::from_pathname(path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    Ok((socket, addr))
}

/// The watchdog ping interval: half of `WATCHDOG_USEC` (as systemd
/// recommends), when it is set, positive, and `WATCHDOG_PID` is unset or `pid`.
pub fn watchdog_interval(usec: Option<&str>, wpid: Option<&str>, pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(w) = wpid {
        if w.trim().parse::<u32>().ok() != Some(pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Send one notification (lines of `KEY=VALUE`); false when there is no
/// socket or the datagram could not be sent.
fn send(message: &str) -> bool {
    let Some(Some(t)) = TARGET.get() else {
        return false;
    };
    match t.socket.send_to_addr(message.as_bytes(), &t.addr) {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(error = %e, "sd_notify failed");
            false
        }
    }
}

/// `READY=1`: start-up (or a reload) is complete.
pub fn ready() -> bool {
    send("READY=1")
}

/// `RELOADING=1` with the monotonic timestamp systemd ≥ 253 wants; follow
/// it with [`ready`] when the reload is done.
pub fn reloading() -> bool {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0);
    send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"))
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping() -> bool {
    send("STOPPING=1")
}

/// `STATUS=line`: free text shown by `systemctl status`.
pub fn status(line: &str) -> bool {
    // One notification is newline-separated assignments: keep it one line.
    send(&format!("STATUS={}", line.replace('\n', " ")))
}

/// `WATCHDOG=1`: still alive.
pub fn watchdog() -> bool {
    send("WATCHDOG=1")
}

/// The watchdog ping interval systemd asked for, if any.
pub fn watchdog_period() -> Option<Duration> {
    TARGET
        .get()
        .and_then(|t| t.as_ref())
        .and_then(|t| t.watchdog)
}

/// The one-line `STATUS=` summary: counts per state, readiness, a handoff
/// that is stuck and why, and the next renewal, e.g. `3 credentials: 2
/// valid, 1 backoff; ready; handoff failed (web: …); next renewal web at
/// 2026-11-24T19:00:00Z`.
pub fn summary(snapshot: &Snapshot, now: SystemTime) -> String {
    let mut counts: Vec<(State, usize)> = Vec::new();
    for c in snapshot.values() {
        match counts.iter_mut().find(|(s, _)| *s == c.state) {
            Some((_, n)) => *n += 1,
            None => counts.push((c.state, 1)),
        }
    }
    counts.sort_by_key(|(s, _)| s.as_str());
    let n = snapshot.len();
    let mut line = format!("{n} credential{}", if n == 1 { "" } else { "s" });
    if !counts.is_empty() {
        let parts: Vec<String> = counts
            .iter()
            .map(|(s, n)| format!("{n} {}", s.as_str()))
            .collect();
        line.push_str(&format!(": {}", parts.join(", ")));
    }
    let not_ready = status::readiness(snapshot.values().map(|c| &**c), now);
    match not_ready.first() {
        None => line.push_str("; ready"),
        Some(r) => line.push_str(&format!(
            "; not ready ({}: {}{})",
            r.credential,
            r.reason,
            match not_ready.len() {
                1 => String::new(),
                k => format!(", and {} more", k - 1),
            }
        )),
    }
    // A handoff that is stuck says so even while ready: a reload that
    // cannot be delivered leaves the app on what it had.
    let stuck: Vec<(&CredentialStatus, &str)> = snapshot
        .values()
        .map(|c| &**c)
        .filter_map(|c| {
            let why = match c.handoff {
                Handoff::Pending => c.handoff_reason.as_deref()?,
                Handoff::Failed => c.handoff_reason.as_deref().or(c.last_error.as_deref())?,
                Handoff::Verified | Handoff::Unverified | Handoff::Unmanaged => return None,
            };
            Some((c, why))
        })
        .collect();
    if let Some((c, why)) = stuck.first() {
        // Most messages already start with the credential's name.
        let who = if why.contains(c.name.as_str()) {
            String::new()
        } else {
            format!("{}: ", c.name)
        };
        line.push_str(&format!(
            "; handoff {} ({who}{why}{})",
            c.handoff.as_str(),
            match stuck.len() {
                1 => String::new(),
                k => format!(", and {} more", k - 1),
            }
        ));
    }
    let next = snapshot
        .values()
        .filter_map(|c| Some((c.next_renewal?, c)))
        .min_by_key(|(t, _)| *t);
    if let Some((at, c)) = next {
        line.push_str(&format!("; next renewal {} at {at}", c.name));
    }
    line
}

/// Send `STATUS=` now and after every status change that alters the line,
/// until the engine's status channel closes or `shutdown` turns true.
pub async fn status_task(handle: Handle, mut shutdown: watch::Receiver<bool>) {
    let mut rx = handle.subscribe();
    let mut last = String::new();
    loop {
        let line = summary(&rx.borrow_and_update(), SystemTime::now());
        if line != last {
            status(&line);
            last = line;
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// Ping the watchdog every `period` while the engine answers: its status
/// snapshot can be read and its status channel is still open (it closes when
/// every credential task has ended). When the engine is gone the pings stop,
/// and systemd restarts rekey after `WatchdogSec`.
pub async fn watchdog_task(handle: Handle, period: Duration, shutdown: watch::Receiver<bool>) {
    watchdog_loop(handle, period, shutdown, watchdog).await
}

/// [`watchdog_task`] with the ping as a parameter, for tests.
async fn watchdog_loop(
    handle: Handle,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
    ping: impl Fn() -> bool,
) {
    let rx = handle.subscribe();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        // With no credentials there are no tasks to keep the channel open.
        let alive = handle.with_snapshot(|s| s.is_empty()) || rx.has_changed().is_ok();
        if alive {
            ping();
        } else if !warned {
            tracing::error!(
                "the engine stopped; no more watchdog pings, systemd will restart rekey"
            );
            warned = true;
        }
    }
}

#[cfg(test)]
#[path = "sdnotify_tests.rs"]
mod tests;
