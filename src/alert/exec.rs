//! The `exec` sink: run a command (argv, no shell) with the alert JSON on stdin.

use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use super::error::last_bytes;
use super::{Alert, AlertError, AlertSink, Policy};
use crate::config::ExecConfig;

/// How much of the command's stderr goes into an error.
const STDERR_TAIL: usize = 500;

/// Runs a command per alert.
#[derive(Debug)]
pub struct ExecSink {
    name: String,
    command: Vec<String>,
    policy: Policy,
}

impl ExecSink {
    /// A sink running `cfg.command`, killed after `cfg.timeout`.
    pub fn new(name: &str, cfg: &ExecConfig) -> ExecSink {
        ExecSink {
            name: name.to_string(),
            command: cfg.command.clone(),
            policy: Policy {
                attempts: 1,
                timeout: cfg.timeout,
                ..Policy::default()
            },
        }
    }

    fn shown(&self) -> String {
        format!("{:?}", self.command)
    }
}

#[async_trait]
impl AlertSink for ExecSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn target(&self) -> String {
        self.shown()
    }

    fn policy(&self) -> Policy {
        self.policy
    }

    async fn send(&self, alert: &Alert) -> Result<(), AlertError> {
        let Some((program, args)) = self.command.split_first() else {
            return Err(AlertError::Setup {
                sink: self.name.clone(),
                message: "command is empty".to_string(),
            });
        };
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env("REKEY_ALERT_EVENT", alert.event.as_str())
            .env("REKEY_ALERT_SEVERITY", alert.severity.as_str())
            .env("REKEY_CREDENTIAL", &alert.credential)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // The Alerter drops this future on timeout: the command must die with it.
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| AlertError::Spawn {
                sink: self.name.clone(),
                command: self.shown(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A command that ignores stdin and exits early is not a failure.
            let _ = stdin.write_all(&alert.to_json()).await;
            let _ = stdin.write_all(b"\n").await;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| AlertError::Spawn {
                sink: self.name.clone(),
                command: self.shown(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        let status = match (
            out.status.code(),
            std::os::unix::process::ExitStatusExt::signal(&out.status),
        ) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            (None, None) => "failed".to_string(),
        };
        Err(AlertError::Exit {
            sink: self.name.clone(),
            command: self.shown(),
            status,
            stderr: last_bytes(&out.stderr, STDERR_TAIL),
        })
    }
}
