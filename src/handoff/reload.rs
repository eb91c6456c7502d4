//! Reload backends: a signal (to a PID or a pid file re-read every time), a
//! command, an HTTP request, or nothing.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{Generation, HandoffError, Reload};
use crate::httpc;

/// A process may start this long after its pid file's mtime and still count
/// as the one the file names (the file is usually written just after start,
/// but filesystems round mtimes).
const PIDFILE_SLACK: Duration = Duration::from_secs(2);
/// Linux reports process start times in USER_HZ ticks, fixed at 100 for the
/// user-space ABI on every architecture rekey targets.
const USER_HZ: u64 = 100;

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

impl SignalReload {
    /// `signal` is a name without `SIG` (validated by the config).
    pub fn new(signal: &str, target: Target) -> Result<SignalReload, String> {
        let signal = Signal::from_str(&format!("SIG{signal}"))
            .map_err(|_| format!("unknown signal {signal}"))?;
        Ok(SignalReload { signal, target })
    }

    /// The PID to signal, refusing a stale pid file.
    fn pid(&self, credential: &str) -> Result<i32, HandoffError> {
        let fail = |why: String| HandoffError::Signal {
            credential: credential.to_string(),
            why,
        };
        match &self.target {
            Target::Pid(p) => {
                start_time(*p).map_err(|_| {
                    fail(format!("no process {p} (reload.pid); is the app running?"))
                })?;
                Ok(*p)
            }
            Target::PidFile(file) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    fail(format!(
                        "cannot read pid file {} ({e}); is the app running?",
                        file.display()
                    ))
                })?;
                let pid: i32 = text.trim().parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                    fail(format!(
                        "pid file {} does not hold a process id (found {:?})",
                        file.display(),
                        text.trim()
                    ))
                })?;
                let written = std::fs::metadata(file)
                    .and_then(|m| m.modified())
                    .map_err(|e| fail(format!("cannot stat pid file {}: {e}", file.display())))?;
                let started = start_time(pid).map_err(|_| {
                    fail(format!(
                        "pid file {} names process {pid}, which does not exist: the pid file is stale (did the app exit?); not signalling",
                        file.display()
                    ))
                })?;
                if started > written + PIDFILE_SLACK {
                    return Err(fail(format!(
                        "pid file {} names process {pid}, but that process started at {} after the file was written at {}: the PID was reused by another program; not signalling",
                        file.display(),
                        crate::cert::rfc3339(started),
                        crate::cert::rfc3339(written)
                    )));
                }
                Ok(pid)
            }
        }
    }
}

/// When process `pid` started, from /proc.
fn start_time(pid: i32) -> Result<SystemTime, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Field 22 (starttime); the command name (field 2) may contain spaces and
    // parentheses, so count from the last ')'.
    let after = stat.rsplit_once(')').map(|x| x.1).ok_or("bad /proc stat")?;
    let ticks: u64 = after
        .split_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .ok_or("bad /proc stat")?;
    Ok(boot_time()? + Duration::from_millis(ticks * 1000 / USER_HZ))
}

fn boot_time() -> Result<SystemTime, String> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| e.to_string())?;
    let secs: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no btime in /proc/stat")?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

#[async_trait]
impl Reload for SignalReload {
    async fn reload(&self, g: &Generation) -> Result<(), HandoffError> {
        let pid = self.pid(&g.credential)?;
        kill(Pid::from_raw(pid), self.signal).map_err(|e| HandoffError::Signal {
            credential: g.credential.clone(),
            why: format!("cannot send {} to process {pid}: {e}", self.signal.as_str()),
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
    /// TLS for https URLs (the local app: any certificate is accepted).
    pub tls: Arc<rustls::ClientConfig>,
}

#[async_trait]
impl Reload for HttpReload {
    async fn reload(&self, g: &Generation) -> Result<(), HandoffError> {
        let fail = |why: String| HandoffError::Http {
            credential: g.credential.clone(),
            why,
        };
        let r = httpc::send(
            &self.method,
            &self.url,
            &self.headers,
            None,
            self.timeout,
            self.tls.clone(),
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
        if (200..300).contains(&r.status) {
            Ok(())
        } else {
            Err(fail(format!(
                "{} {} answered HTTP {}; expected 2xx",
                self.method, self.url, r.status
            )))
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
            not_after: "2030-01-01T00:00:00Z".into(),
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
