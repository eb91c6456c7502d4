//! Reload backends: a signal (to a PID or a pid file re-read every time), a
//! command, an HTTP request, or nothing.
//!
//! A signal reload trusts nothing the pid file says. The file is read with
//! [`crate::fs::safefile`] (a FIFO cannot block, `/dev/zero` cannot fill memory,
//! 64 bytes at most), its pid must be plain ASCII digits, and rekey never
//! signals PID 1, itself, or a process group. Before signalling it asks the
//! kernel (`kill(pid, 0)`) whether the process exists and may be signalled,
//! and reads the process's start time from `/proc/PID/stat` to refuse a pid
//! file older than the process it names (a reused PID). The start time is
//! turned into wall-clock time with the boot-time clock, not `/proc/stat`,
//! so systemd's `ProcSubset=pid` does not get in the way.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{Generation, HandoffError, Reload};
use crate::fs::safefile;
use crate::net::httpc::{self, Call};

/// A process may start this long after its pid file's mtime and still count
/// as the one the file names (the file is usually written just after start,
/// but filesystems round mtimes).
const PIDFILE_SLACK: Duration = Duration::from_secs(2);
/// Linux reports process start times in USER_HZ ticks, fixed at 100 for the
/// user-space ABI on every architecture rekey targets.
const USER_HZ: u64 = 100;
/// A pid file holds a pid and a newline; anything longer is not one.
pub const PID_FILE_MAX: u64 = 64;

/// The application watches its files itself.
pub struct NoReload;

#[async_trait]
impl Reload for NoReload {
    async fn reload(&self, _g: &Generation) -> Result<(), HandoffError> {
        Ok(())
    }
}

/// Where the signal goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A fixed PID.
    Pid(i32),
    /// Read before every signal.
    PidFile(PathBuf),
}

/// Send a signal.
pub struct SignalReload {
    signal: Signal,
    target: Target,
}

/// Parse a pid file's contents strictly: ASCII digits, no sign, no leading
/// zero, no spaces, at most one trailing newline. `+1`, ` 1 ` and `00001`
/// are not pids (a lenient parse turned them into PID 1).
pub fn parse_pid(bytes: &[u8]) -> Option<i32> {
    let digits = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if digits.is_empty() || digits[0] == b'0' || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // All digits, so UTF-8; too many digits overflow i32 and fail here.
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Why `pid` must never be signalled, if it must not.
fn forbidden(pid: i32) -> Option<&'static str> {
    if pid <= 0 {
        Some("0 or a negative number would signal a whole process group")
    } else if pid == 1 {
        Some("that is PID 1 (init, or the container's first process); rekey never signals it")
    } else if u32::try_from(pid).ok() == Some(std::process::id()) {
        Some("that is rekey's own process; rekey never signals itself")
    } else {
        None
    }
}

/// The wall-clock time the system booted: now on the real-time clock minus
/// the boot-time clock (suspend included, like the start times in
/// `/proc/PID/stat`). Unlike `btime` in `/proc/stat` it needs no file, so it
/// works under systemd's `ProcSubset=pid`.
fn boot_time() -> Result<SystemTime, Errno> {
    use nix::time::{clock_gettime, ClockId};
    let real = clock_gettime(ClockId::CLOCK_REALTIME)?;
    let since_boot = clock_gettime(ClockId::CLOCK_BOOTTIME)?;
    let real = Duration::new(real.tv_sec().max(0) as u64, real.tv_nsec() as u32);
    let since_boot = Duration::new(
        since_boot.tv_sec().max(0) as u64,
        since_boot.tv_nsec() as u32,
    );
    Ok(SystemTime::UNIX_EPOCH + real.saturating_sub(since_boot))
}

/// What reading a process's start time from /proc found.
enum StartTime {
    At(SystemTime),
    /// /proc/PID is absent or unreadable although the process exists.
    Hidden(std::io::Error),
}

/// When process `pid` started, from `/proc/PID/stat` (field 22, in ticks
/// since boot).
fn start_time(pid: i32) -> Result<StartTime, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) => return Ok(StartTime::Hidden(e)),
    };
    // The command name (field 2) may contain spaces and parentheses, so
    // count from the last ')'.
    let ticks: u64 = stat
        .rsplit_once(')')
        .and_then(|(_, after)| after.split_whitespace().nth(19))
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("{path} has no start time field"))?;
    let boot = boot_time().map_err(|e| format!("cannot read the boot-time clock: {e}"))?;
    Ok(StartTime::At(
        boot + Duration::from_millis(ticks * 1000 / USER_HZ),
    ))
}

/// Who rekey runs as, for messages about permissions.
fn whoami() -> String {
    format!("uid {}", nix::unistd::geteuid())
}

impl SignalReload {
    /// `signal` is a name without `SIG` (validated by the config).
    pub fn new(signal: &str, target: Target) -> Result<SignalReload, String> {
        let signal = Signal::from_str(&format!("SIG{signal}"))
            .map_err(|_| format!("unknown signal {signal}"))?;
        Ok(SignalReload { signal, target })
    }

    /// The PID to signal: read and checked, never PID 1, rekey or a group,
    /// refusing a stale or reused pid file and a process rekey cannot see.
    fn pid(&self, credential: &str) -> Result<i32, HandoffError> {
        match &self.target {
            Target::Pid(p) => {
                let fail = |why: String| HandoffError::Signal {
                    credential: credential.to_string(),
                    why: format!("reload.pid {p}: {why}"),
                };
                if let Some(why) = forbidden(*p) {
                    return Err(fail(why.into()));
                }
                match kill(Pid::from_raw(*p), None) {
                    Ok(()) => Ok(*p),
                    Err(Errno::ESRCH) => Err(fail(
                        "no such process; is the app running? a fixed pid goes stale when the app restarts: prefer reload.pid_file".into(),
                    )),
                    Err(Errno::EPERM) => Err(fail(not_permitted(*p))),
                    Err(e) => Err(fail(format!("cannot check the process: {e}"))),
                }
            }
            Target::PidFile(file) => self.pid_from_file(credential, file),
        }
    }

    fn pid_from_file(&self, credential: &str, file: &Path) -> Result<i32, HandoffError> {
        let fail = |why: String| HandoffError::PidFile {
            credential: credential.to_string(),
            path: file.to_path_buf(),
            why,
        };
        let opts = safefile::Options {
            follow: true,
            max: PID_FILE_MAX,
        };
        let (bytes, meta) = safefile::read_with(file, opts).map_err(|e| {
            fail(match e.io_kind() {
                Some(std::io::ErrorKind::NotFound) => {
                    format!("{e}; is the app running, and is this the path it writes its pid to?")
                }
                _ => e.to_string(),
            })
        })?;
        let pid = parse_pid(&bytes).ok_or_else(|| {
            fail(format!(
                "does not hold a process id (found {:?}); a pid file holds ASCII digits and at most one newline",
                String::from_utf8_lossy(&bytes)
            ))
        })?;
        if let Some(why) = forbidden(pid) {
            return Err(fail(format!(
                "names process {pid}: {why}; point reload.pid_file at the application's own pid file"
            )));
        }
        match kill(Pid::from_raw(pid), None) {
            Ok(()) => {}
            Err(Errno::ESRCH) => {
                return Err(fail(format!(
                    "names process {pid}, which does not exist: the pid file is stale (did the app exit?); not signalling"
                )))
            }
            Err(Errno::EPERM) => return Err(fail(not_permitted(pid))),
            Err(e) => return Err(fail(format!("cannot check process {pid}: {e}"))),
        }
        let written = meta
            .modified()
            .map_err(|e| fail(format!("has no modification time: {e}")))?;
        let started = match start_time(pid).map_err(&fail)? {
            StartTime::At(t) => t,
            StartTime::Hidden(e) => {
                return Err(fail(format!(
                    "names process {pid}, which exists (the kernel accepts a signal to it) but /proc/{pid} is hidden from rekey ({e}), so rekey cannot check that the pid file is not stale; not signalling. \
                     systemd's ProtectProc=invisible or noaccess (or /proc mounted with hidepid=) hides other users' processes: use ProtectProc=default in rekey's unit"
                )))
            }
        };
        if started > written + PIDFILE_SLACK {
            return Err(fail(format!(
                "names process {pid}, but that process started at {} after the file was written at {}: the PID was reused by another program; not signalling",
                crate::timestamp::rfc3339(started),
                crate::timestamp::rfc3339(written)
            )));
        }
        Ok(pid)
    }
}

/// The message for EPERM: the process exists, rekey may not signal it.
fn not_permitted(pid: i32) -> String {
    format!(
        "process {pid} exists but rekey ({}) is not allowed to signal it (EPERM): run rekey as the application's user, \
         or give it CAP_KILL (systemd: AmbientCapabilities=CAP_KILL with CAP_KILL in CapabilityBoundingSet=)",
        whoami()
    )
}

#[async_trait]
impl Reload for SignalReload {
    async fn reload(&self, g: &Generation) -> Result<(), HandoffError> {
        let pid = self.pid(&g.credential)?;
        kill(Pid::from_raw(pid), self.signal).map_err(|e| HandoffError::Signal {
            credential: g.credential.clone(),
            why: match e {
                Errno::EPERM => not_permitted(pid),
                Errno::ESRCH => format!(
                    "process {pid} exited before the signal reached it; is the app restarting?"
                ),
                e => format!("cannot send {} to process {pid}: {e}", self.signal.as_str()),
            },
        })?;
        tracing::debug!(credential = %g.credential, pid, signal = self.signal.as_str(), "signalled the app");
        Ok(())
    }
}

/// Run a command (argv, no shell; see [`crate::exec`]) with the `REKEY_*`
/// environment: success is its exit status.
pub struct ExecReload {
    /// argv.
    pub command: Vec<String>,
    /// Deadline; the command's process group is killed after it.
    pub timeout: Duration,
    /// Extra environment from the config.
    pub env: Vec<(String, String)>,
}

#[async_trait]
impl Reload for ExecReload {
    async fn reload(&self, g: &Generation) -> Result<(), HandoffError> {
        crate::exec::Exec::new(&self.command, self.timeout)
            .env(&self.env)
            .vars(g.env())
            .run()
            .await
            .map(drop)
            .map_err(|e| HandoffError::Exec {
                credential: g.credential.clone(),
                why: format!("command {:?} {e}", self.command.join(" ")),
            })
    }
}

/// Send an HTTP request; 2xx is success.
pub struct HttpReload {
    /// URL.
    pub url: String,
    /// Method.
    pub method: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Deadline.
    pub timeout: Duration,
    /// The client for the local app ([`httpc::Client::local`]: no proxy,
    /// any certificate accepted).
    pub http: httpc::Client,
}

#[async_trait]
impl Reload for HttpReload {
    async fn reload(&self, g: &Generation) -> Result<(), HandoffError> {
        let fail = |source| HandoffError::Http {
            credential: g.credential.clone(),
            method: self.method.clone(),
            url: self.url.clone(),
            source,
        };
        let mut call = Call::named(&self.method, self.url.as_str(), self.timeout).map_err(fail)?;
        for (k, v) in &self.headers {
            call = call.header(k, v).map_err(fail)?;
        }
        let r = self.http.send(call).await.map_err(fail)?;
        if r.is_success() {
            Ok(())
        } else {
            Err(HandoffError::HttpStatus {
                credential: g.credential.clone(),
                method: self.method.clone(),
                url: self.url.clone(),
                status: r.status,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g() -> Generation {
        Generation {
            credential: "web".into(),
            generation: 1,
            fingerprint: "sha256:x".into(),
            serial: "01".into(),
            not_after: crate::timestamp::Timestamp::parse("2030-01-01T00:00:00Z").unwrap(),
            files: vec![],
            ..Generation::default()
        }
    }

    #[tokio::test]
    async fn signals_through_a_fresh_pid_file_and_refuses_stale_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("app.pid");
        // A child that exits 0 on SIGHUP's default action? No: HUP kills it, which we observe.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&pidfile, child.id().to_string()).unwrap();
        let r = SignalReload::new("HUP", Target::PidFile(pidfile.clone())).unwrap();
        r.reload(&g()).await.unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "SIGHUP was not delivered");

        // The process is gone: stale pid file.
        let err = r.reload(&g()).await.unwrap_err().to_string();
        assert!(err.contains("stale") && err.contains("web"), "{err}");

        // A pid file older than the process it names: PID reuse.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&pidfile, other.id().to_string()).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        let f = std::fs::File::options().write(true).open(&pidfile).unwrap();
        f.set_modified(old).unwrap();
        let err = r.reload(&g()).await.unwrap_err().to_string();
        assert!(err.contains("reused"), "{err}");
        other.kill().unwrap();
        let _ = other.wait();
    }

    #[test]
    fn pids_parse_strictly() {
        for (text, want) in [
            (&b"4242"[..], Some(4242)),
            (b"4242\n", Some(4242)),
            (b"2147483647", Some(i32::MAX)),
            (b"+1", None),
            (b" 1 ", None),
            (b"00001", None),
            (b"0", None),
            (b"-1", None),
            (b"1\n\n", None),
            (b"1\r\n", None),
            (b"", None),
            (b"\n", None),
            (b"12a", None),
            (b"2147483648", None),
            ("٣".as_bytes(), None),
        ] {
            assert_eq!(parse_pid(text), want, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn pid_1_rekey_and_groups_are_never_signalled() {
        assert!(forbidden(1).is_some_and(|w| w.contains("PID 1")));
        assert!(forbidden(0).is_some_and(|w| w.contains("group")));
        assert!(forbidden(-7).is_some_and(|w| w.contains("group")));
        let me = std::process::id() as i32;
        assert!(forbidden(me).is_some_and(|w| w.contains("rekey's own")));
        assert!(forbidden(me + 1).is_none());
    }

    /// The boot-time clock agrees with the kernel's own `btime` (whole seconds).
    #[test]
    fn boot_time_from_the_clocks_matches_proc_stat() {
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let btime: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let ours = boot_time()
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((ours - btime as f64).abs() < 2.0, "{ours} vs btime {btime}");
        // And a process started now is placed now.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let StartTime::At(t) = start_time(child.id() as i32).unwrap() else {
            panic!("/proc hides our own child")
        };
        let skew = SystemTime::now()
            .duration_since(t)
            .unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(2), "{skew:?}");
        child.kill().unwrap();
        let _ = child.wait();
    }

    #[tokio::test]
    async fn a_fixed_pid_is_checked_too() {
        let r = SignalReload::new("HUP", Target::Pid(1)).unwrap();
        let err = r.reload(&g()).await.unwrap_err().to_string();
        assert!(err.contains("PID 1") && err.contains("reload.pid"), "{err}");
        let dead = {
            let mut c = std::process::Command::new("true").spawn().unwrap();
            let pid = c.id() as i32;
            c.wait().unwrap();
            pid
        };
        let r = SignalReload::new("HUP", Target::Pid(dead)).unwrap();
        let err = r.reload(&g()).await.unwrap_err().to_string();
        assert!(err.contains("no such process"), "{err}");
    }

    #[tokio::test]
    async fn exec_reload_reports_exit_status_and_stderr() {
        let r = ExecReload {
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo nginx: bad config >&2; exit 1".into(),
            ],
            timeout: Duration::from_secs(5),
            env: Vec::new(),
        };
        let err = r.reload(&g()).await.unwrap_err().to_string();
        assert!(
            err.contains("status 1") && err.contains("nginx: bad config"),
            "{err}"
        );
    }
}
