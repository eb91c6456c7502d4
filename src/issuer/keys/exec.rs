//! API keys from commands (argv, never a shell): the mint command prints
//! `{"secret", "id", "expires_at"}` as JSON on stdout; the revoke command
//! gets the key id as `REKEY_KEY_ID`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use zeroize::Zeroizing;

use super::{read_answer, KeyError, KeyIssuer, MintedKey};
use crate::config::{ExecKeysConfig, MintConfig, RevokeConfig};
use crate::exec::{exit_status, Exec, ExecError, STDOUT_CAP};

/// How much of stderr goes into an error.
const STDERR_TAIL: usize = 300;

/// One `[[api_key]]` minted by a `type = "exec"` issuer.
pub struct ExecKeys {
    /// Issuer name.
    pub name: String,
    /// Issuer settings.
    pub cfg: ExecKeysConfig,
    /// The mint command.
    pub mint: MintConfig,
    /// The revoke command, if any.
    pub revoke: Option<RevokeConfig>,
    /// The credential, as `REKEY_CREDENTIAL`.
    pub credential: String,
}

impl ExecKeys {
    /// Run `argv` (see [`crate::exec`]) with the issuer's `env` and `vars`;
    /// its stdout (zeroized) on exit 0.
    async fn run(
        &self,
        op: &'static str,
        argv: &[String],
        vars: &[(&str, String)],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let fail = |why: String| KeyError::Request {
            issuer: self.name.clone(),
            op,
            path: format!("{:?}", argv.join(" ")),
            why,
        };
        let mut run = Exec::new(argv, self.cfg.timeout)
            .env(&self.cfg.env)
            .var("REKEY_CREDENTIAL", &self.credential)
            .capture_stdout();
        for (k, v) in vars {
            run = run.var(*k, v);
        }
        let out = run.run().await.map_err(|e| fail(tail(e)))?;
        if out.stdout_truncated {
            return Err(fail(format!(
                "printed more than {} KiB on stdout; a key answer is one small JSON object",
                STDOUT_CAP / 1024
            )));
        }
        Ok(out.stdout)
    }
}

/// The error, its stderr cut to its last [`STDERR_TAIL`] characters.
fn tail(e: ExecError) -> String {
    match e {
        ExecError::Exit {
            code,
            signal,
            stderr,
        } => {
            let text = stderr.trim();
            let start = text
                .char_indices()
                .rev()
                .nth(STDERR_TAIL.saturating_sub(1))
                .map_or(0, |(i, _)| i);
            format!("{}; stderr: {}", exit_status(code, signal), &text[start..])
        }
        other => other.to_string(),
    }
}

#[async_trait]
impl KeyIssuer for ExecKeys {
    fn name(&self) -> &str {
        &self.name
    }

    async fn mint(&self, lifetime: Duration) -> Result<MintedKey, KeyError> {
        let env = [("REKEY_LIFETIME", lifetime.as_secs().to_string())];
        let out = self.run("mint", &self.mint.command, &env).await?;
        let answer: Value = serde_json::from_slice(&out).map_err(|e| KeyError::Request {
            issuer: self.name.clone(),
            op: "mint",
            path: format!("{:?}", self.mint.command.join(" ")),
            why: format!(
                "stdout is not JSON like {{\"secret\", \"id\", \"expires_at\"}} ({})",
                e.classify_name()
            ),
        })?;
        read_answer(&self.name, &self.mint, &answer, lifetime)
    }

    async fn revoke(&self, id: &str, _lease: Option<&str>) -> Result<(), KeyError> {
        let Some(RevokeConfig::Command(argv)) = &self.revoke else {
            return Ok(());
        };
        self.run("revoke", argv, &[("REKEY_KEY_ID", id.to_string())])
            .await
            .map(|_| ())
    }
}

/// serde_json's error category, without the position (which could point into a secret).
trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong data",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}
