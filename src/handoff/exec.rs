//! Run a command as an argv array (never a shell), with a deadline, extra
//! environment and optional stdin; report exit status and the stderr tail.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How much of stderr is kept for error messages.
const STDERR_TAIL: usize = 512;

/// How a command ended, when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecFailure {
    /// It could not be started.
    Spawn(String),
    /// It exited non-zero (or by a signal).
    Exit {
        /// Exit code, None when killed by a signal.
        code: Option<i32>,
        /// Last bytes of its stderr.
        stderr: String,
    },
    /// It ran past the deadline and was killed.
    Timeout(Duration),
}

impl std::fmt::Display for ExecFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecFailure::Spawn(e) => write!(f, "cannot start: {e}"),
            ExecFailure::Exit { code, stderr } => {
                match code {
                    Some(c) => write!(f, "exited with status {c}")?,
                    None => write!(f, "was killed by a signal")?,
                }
                if !stderr.trim().is_empty() {
                    write!(f, "; stderr: {}", stderr.trim())?;
                }
                Ok(())
            }
            ExecFailure::Timeout(t) => write!(f, "did not finish within {t:?} and was killed"),
        }
    }
}

/// Run `argv` with `env` added; feed `stdin` if given. Ok on exit 0.
pub async fn run(
    argv: &[String],
    env: &[(String, String)],
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(), ExecFailure> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| ExecFailure::Spawn("empty command".into()))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| ExecFailure::Spawn(format!("{program}: {e}")))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A command that ignores stdin must not make us fail.
        let _ = pipe.write_all(&data).await;
        drop(pipe);
    }
    let mut stderr = child.stderr.take();
    let work = async {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf).await;
        }
        let status = child.wait().await;
        (status, buf)
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(ExecFailure::Timeout(timeout)),
        Ok((Err(e), _)) => Err(ExecFailure::Spawn(e.to_string())),
        Ok((Ok(status), buf)) if status.success() => {
            drop(buf);
            Ok(())
        }
        Ok((Ok(status), buf)) => {
            let tail = &buf[buf.len().saturating_sub(STDERR_TAIL)..];
            Err(ExecFailure::Exit {
                code: status.code(),
                stderr: String::from_utf8_lossy(tail).into_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn success_failure_timeout_and_no_shell() {
        assert_eq!(
            run(&argv(&["true"]), &[], None, Duration::from_secs(5)).await,
            Ok(())
        );
        let err = run(
            &argv(&["sh", "-c", "echo boom >&2; exit 3"]),
            &[],
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "exited with status 3; stderr: boom");
        let err = run(
            &argv(&["sleep", "5"]),
            &[],
            None,
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert_eq!(err, ExecFailure::Timeout(Duration::from_millis(100)));
        // A shell string is one program name, not a command line.
        let err = run(&argv(&["true; false"]), &[], None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ExecFailure::Spawn(_)), "{err:?}");
        // Environment and stdin arrive.
        let env = vec![("REKEY_X".to_string(), "42".to_string())];
        let ok = run(
            &argv(&["sh", "-c", "test \"$REKEY_X\" = 42 && grep -q hello"]),
            &env,
            Some(b"hello".to_vec()),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(ok, Ok(()));
    }
}
