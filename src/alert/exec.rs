//! The `exec` sink: run a command (argv, no shell) with the alert JSON on stdin.

use async_trait::async_trait;

use super::error::last_bytes;
use super::{Alert, AlertError, AlertSink, Policy};
use crate::config::ExecConfig;
use crate::exec::{exit_status, Exec, ExecError};

/// How much of the command's stderr goes into an error.
const STDERR_TAIL: usize = 500;

/// Runs a command per alert.
#[derive(Debug)]
pub struct ExecSink {
    name: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    policy: Policy,
}

impl ExecSink {
    /// A sink running `cfg.command`, killed after `cfg.timeout`.
    pub fn new(name: &str, cfg: &ExecConfig) -> ExecSink {
        ExecSink {
            name: name.to_string(),
            command: cfg.command.clone(),
            env: cfg.env.clone(),
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
        let json = [alert.to_json(), b"\n".to_vec()].concat();
        let run = Exec::new(&self.command, self.policy.timeout)
            .env(&self.env)
            .var("REKEY_ALERT_EVENT", alert.event.as_str())
            .var("REKEY_ALERT_SEVERITY", alert.severity.as_str())
            .var("REKEY_CREDENTIAL", &alert.credential)
            .stdin(&json)
            .run();
        // The Alerter drops this future on its own timeout: the runner then
        // kills the command's process group.
        match run.await {
            Ok(_) => Ok(()),
            Err(ExecError::Empty) => Err(AlertError::Setup {
                sink: self.name.clone(),
                message: "command is empty".to_string(),
            }),
            Err(ExecError::Spawn { source, .. } | ExecError::Wait { source, .. }) => {
                Err(AlertError::Spawn {
                    sink: self.name.clone(),
                    command: self.shown(),
                    source,
                })
            }
            Err(ExecError::Exit {
                code,
                signal,
                stderr,
            }) => Err(AlertError::Exit {
                sink: self.name.clone(),
                command: self.shown(),
                status: exit_status(code, signal),
                stderr: last_bytes(stderr.as_bytes(), STDERR_TAIL),
            }),
            Err(ExecError::Timeout { after, .. }) => Err(AlertError::Timeout {
                sink: self.name.clone(),
                target: self.shown(),
                after,
            }),
        }
    }
}
