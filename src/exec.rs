//! The one way rekey runs a command: reload and verify commands, exec alert
//! sinks, exec key issuers and dns-01 hooks all come through [`Exec::run`].
//!
//! - **argv, never a shell.** The program is looked up in `PATH`; nothing is
//!   interpolated.
//! - **A scrubbed environment.** A command sees only the variables named by
//!   [`ALLOWED_ENV`] (and `LC_*`) from rekey's own environment, then the
//!   command's `env = { ... }` from the config, then the `REKEY_*` variables
//!   its caller adds. Tokens and cloud keys in rekey's environment
//!   (`VAULT_TOKEN`, `AWS_SECRET_ACCESS_KEY`, ...) never reach it.
//! - **Its own process group.** The command leads a new process group. When
//!   it runs past its deadline, or rekey stops waiting for it (shutdown, a
//!   sink's timeout), the whole group is killed with SIGKILL. After the
//!   command itself exits, descendants it left running are left alone:
//!   `apachectl graceful` and many init scripts start a daemon on purpose.
//! - **Success is the exit status.** stdout (when captured) and stderr are
//!   read into memory while waiting, up to a cap, and reading stops as soon
//!   as the command exits: a background child that keeps the pipes open does
//!   not hold rekey up. What is already in the pipes is still collected;
//!   later writes by such a child are discarded (it gets EPIPE), so a
//!   daemon started this way should send its output elsewhere.

use std::os::fd::AsFd;
use std::pin::pin;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

/// Variables passed through from rekey's environment (plus every `LC_*`).
/// Nothing here carries a secret: a proxy URL may hold a password, so the
/// proxy variables are not passed; set them in `env` when a command needs
/// them.
pub const ALLOWED_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
];

/// `PATH` for commands when rekey itself has none (systemd always sets one).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// At most this much of stdout is kept (a key or a small JSON answer).
pub const STDOUT_CAP: usize = 64 * 1024;

/// The last this-many bytes of stderr are kept for error messages.
pub const STDERR_KEEP: usize = 4 * 1024;

/// After the command exits, at most this much is drained from a pipe that
/// a descendant keeps writing to (bounds the work, not the result).
const DRAIN_LIMIT: usize = 1024 * 1024;

/// How long to wait for a killed command to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(5);

/// Why a command did not succeed. Messages say what happened; the caller
/// adds which credential, sink or issuer and which command.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The argv was empty (config validation prevents this).
    #[error("the command is empty")]
    Empty,
    /// The program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// argv[0].
        program: String,
        /// OS error.
        source: std::io::Error,
    },
    /// Waiting for it failed (should not happen).
    #[error("cannot wait for {program}: {source}")]
    Wait {
        /// argv[0].
        program: String,
        /// OS error.
        source: std::io::Error,
    },
    /// It exited non-zero or was killed by a signal.
    #[error("{}{}", exit_status(*code, *signal), stderr_text(stderr))]
    Exit {
        /// Exit code, None when a signal ended it.
        code: Option<i32>,
        /// The signal that ended it.
        signal: Option<i32>,
        /// The end of its stderr.
        stderr: String,
    },
    /// It ran past its deadline; its process group was killed.
    #[error("did not finish within {} and was killed (with its process group){}", humantime::format_duration(*after), stderr_text(stderr))]
    Timeout {
        /// The deadline.
        after: Duration,
        /// The end of its stderr so far.
        stderr: String,
    },
}

/// "exited with status 3", "was killed by signal 9".
pub fn exit_status(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        (None, None) => "failed".to_string(),
    }
}

fn stderr_text(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!("; stderr: {s}")
    }
}

/// What a successful command printed. `Debug` leaves stdout out: a mint
/// command prints a secret.
#[derive(Default)]
pub struct Output {
    /// The first [`STDOUT_CAP`] bytes of stdout (empty unless captured);
    /// zeroized on drop, since a mint command prints a secret.
    pub stdout: Zeroizing<Vec<u8>>,
    /// Whether stdout was longer than the cap.
    pub stdout_truncated: bool,
    /// The end of stderr.
    pub stderr: String,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("stdout", &format_args!("<{} bytes>", self.stdout.len()))
            .field("stdout_truncated", &self.stdout_truncated)
            .field("stderr", &self.stderr)
            .finish()
    }
}

/// One command to run: argv, environment, stdin, deadline. (No `Debug`:
/// stdin can be an alert and `env` is the operator's.)
pub struct Exec<'a> {
    argv: &'a [String],
    env: &'a [(String, String)],
    vars: Vec<(String, String)>,
    stdin: Option<&'a [u8]>,
    timeout: Duration,
    capture_stdout: bool,
}

impl<'a> Exec<'a> {
    /// `argv` (program first), killed with its process group after `timeout`.
    pub fn new(argv: &'a [String], timeout: Duration) -> Exec<'a> {
        Exec {
            argv,
            env: &[],
            vars: Vec::new(),
            stdin: None,
            timeout,
            capture_stdout: false,
        }
    }

    /// The command's `env = { ... }` from the config.
    pub fn env(mut self, env: &'a [(String, String)]) -> Self {
        self.env = env;
        self
    }

    /// One variable rekey adds (`REKEY_*`); applied last.
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.push((name.into(), value.into()));
        self
    }

    /// Several variables rekey adds.
    pub fn vars(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.vars.extend(vars);
        self
    }

    /// Bytes written to the command's stdin (otherwise /dev/null).
    pub fn stdin(mut self, data: &'a [u8]) -> Self {
        self.stdin = Some(data);
        self
    }

    /// Keep stdout (otherwise it goes to /dev/null).
    pub fn capture_stdout(mut self) -> Self {
        self.capture_stdout = true;
        self
    }

    /// The environment the command gets: the allowlist from `parent`, then
    /// the config's `env`, then rekey's variables.
    pub fn environment(
        &self,
        parent: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        let mut out: Vec<(std::ffi::OsString, std::ffi::OsString)> = parent
            .into_iter()
            .filter(|(k, _)| {
                k.to_str()
                    .is_some_and(|k| ALLOWED_ENV.contains(&k) || k.starts_with("LC_"))
            })
            .collect();
        if !out.iter().any(|(k, _)| k == "PATH") {
            out.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        for (k, v) in self.env.iter().chain(self.vars.iter()) {
            out.retain(|(name, _)| name != k.as_str());
            out.push((k.into(), v.into()));
        }
        out
    }

    /// Run it. Ok when it exits 0 within the deadline.
    pub async fn run(self) -> Result<Output, ExecError> {
        let (program, args) = self.argv.split_first().ok_or(ExecError::Empty)?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(self.environment(std::env::vars_os()))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if self.capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            // A new process group led by the command, so a timeout can kill
            // everything it started.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
            program: program.clone(),
            source,
        })?;
        // `id` is Some until the child is reaped, which has not happened yet.
        let group = Group::new(child.id());

        let stdin_data = self.stdin.unwrap_or_default();
        let mut stdin_pipe = child.stdin.take();
        let mut feed = pin!(async move {
            if let Some(p) = stdin_pipe.as_mut() {
                // A command that ignores its stdin and exits is not a failure.
                let _ = p.write_all(stdin_data).await;
            }
            drop(stdin_pipe);
        });
        let mut out = Sink::keep_head(STDOUT_CAP);
        let mut err = Sink::keep_tail(STDERR_KEEP);
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let mut out_chunk = Zeroizing::new(vec![0u8; 8192]);
        let mut err_chunk = vec![0u8; 8192];
        let mut fed = false;
        let deadline = tokio::time::sleep(self.timeout);
        let mut deadline = pin!(deadline);

        let status = loop {
            tokio::select! {
                st = child.wait() => break st,
                () = &mut feed, if !fed => fed = true,
                n = read_some(&mut stdout, &mut out_chunk), if stdout.is_some() => {
                    out.take(&out_chunk, n, &mut stdout);
                }
                n = read_some(&mut stderr, &mut err_chunk), if stderr.is_some() => {
                    err.take(&err_chunk, n, &mut stderr);
                }
                () = &mut deadline => {
                    group.kill();
                    // Reap it; SIGKILL cannot be ignored, so this is quick.
                    let _ = tokio::time::timeout(REAP_WAIT, child.wait()).await;
                    group.disarm();
                    return Err(ExecError::Timeout {
                        after: self.timeout,
                        stderr: err.text(),
                    });
                }
            }
        };
        // Reaped: the group id may be reused from now on, never signal it.
        group.disarm();
        let status = status.map_err(|source| ExecError::Wait {
            program: program.clone(),
            source,
        })?;
        // What the command wrote before it exited is in the pipes already;
        // take it without waiting for descendants that hold them open.
        if let Some(p) = &stdout {
            out.drain(p, &mut out_chunk);
        }
        if let Some(p) = &stderr {
            err.drain(p, &mut err_chunk);
        }
        if status.success() {
            return Ok(Output {
                stdout_truncated: out.dropped,
                stdout: out.buf,
                stderr: err.text(),
            });
        }
        Err(ExecError::Exit {
            code: status.code(),
            signal: std::os::unix::process::ExitStatusExt::signal(&status),
            stderr: err.text(),
        })
    }
}

/// Read once from a pipe; Ok(0) at end of file.
async fn read_some<R: AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Collected output: either the first `cap` bytes or the last `cap` bytes.
struct Sink {
    buf: Zeroizing<Vec<u8>>,
    cap: usize,
    tail: bool,
    dropped: bool,
}

impl Sink {
    fn keep_head(cap: usize) -> Sink {
        Sink {
            buf: Zeroizing::new(Vec::new()),
            cap,
            tail: false,
            dropped: false,
        }
    }

    fn keep_tail(cap: usize) -> Sink {
        Sink {
            tail: true,
            ..Sink::keep_head(cap)
        }
    }

    fn push(&mut self, data: &[u8]) {
        if self.tail {
            self.buf.extend_from_slice(data);
            if self.buf.len() > 2 * self.cap {
                let cut = self.buf.len() - self.cap;
                self.buf.drain(..cut);
                self.dropped = true;
            }
        } else {
            let room = self.cap.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&data[..data.len().min(room)]);
            self.dropped |= data.len() > room;
        }
    }

    /// Handle one read result; the pipe is closed at end of file or error.
    fn take<R>(&mut self, chunk: &[u8], n: std::io::Result<usize>, pipe: &mut Option<R>) {
        match n {
            Ok(0) | Err(_) => *pipe = None,
            Ok(n) => self.push(&chunk[..n]),
        }
    }

    /// Take what is in the pipe now, without waiting for more.
    fn drain(&mut self, pipe: &impl AsFd, chunk: &mut [u8]) {
        let mut total = 0;
        while total < DRAIN_LIMIT {
            // The pipe is non-blocking (tokio set it up so): EAGAIN means empty.
            match nix::unistd::read(pipe.as_fd(), chunk) {
                Ok(0) => return,
                Ok(n) => {
                    total += n;
                    self.push(&chunk[..n]);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    fn text(&self) -> String {
        let b: &[u8] = &self.buf;
        let b = if self.tail && b.len() > self.cap {
            &b[b.len() - self.cap..]
        } else {
            b
        };
        String::from_utf8_lossy(b).into_owned()
    }
}

/// The command's process group, killed on drop until the command is reaped.
struct Group {
    pgid: Option<Pid>,
}

impl Group {
    fn new(pid: Option<u32>) -> Group {
        Group {
            pgid: pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw),
        }
    }

    fn kill(&self) {
        if let Some(g) = self.pgid {
            let _ = killpg(g, Signal::SIGKILL);
        }
    }

    fn disarm(mut self) {
        self.pgid = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // Dropped while the command still runs: rekey stopped waiting for it
        // (shutdown, a sink's timeout), so nothing it started may outlive it.
        self.kill();
    }
}

#[cfg(test)]
#[path = "exec_tests.rs"]
mod tests;
