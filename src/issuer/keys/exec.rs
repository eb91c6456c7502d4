//! API keys from commands (argv, never a shell): the mint command prints
//! `{"secret", "id", "expires_at"}` as JSON on stdout; the revoke command
//! gets the key id as `REKEY_KEY_ID`.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use zeroize::Zeroizing;

use super::{read_answer, KeyError, KeyIssuer, MintedKey};
use crate::config::{ExecKeysConfig, MintConfig, RevokeConfig};

/// At most this much stdout is read (a key is small).
const MAX_STDOUT: u64 = 64 * 1024;
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
    /// Run `argv` with `env`; its stdout (zeroized) on exit 0.
    async fn run(
        &self,
        op: &'static str,
        argv: &[String],
        env: &[(&str, String)],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let fail = |why: String| KeyError::Request {
            issuer: self.name.clone(),
            op,
            path: format!("{:?}", argv.join(" ")),
            why,
        };
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| fail("empty command".into()))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("REKEY_CREDENTIAL", &self.credential)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot start: {e}")))?;
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let work = async {
            let mut out = Zeroizing::new(Vec::new());
            let mut err = Vec::new();
            if let Some(s) = stdout.as_mut() {
                let _ = s.take(MAX_STDOUT).read_to_end(&mut out).await;
            }
            if let Some(s) = stderr.as_mut() {
                let _ = s.take(MAX_STDOUT).read_to_end(&mut err).await;
            }
            let status = child.wait().await;
            (out, err, status)
        };
        let (out, err, status) = tokio::time::timeout(self.cfg.timeout, work)
            .await
            .map_err(|_| fail(format!("did not finish within {:?}", self.cfg.timeout)))?;
        let status = status.map_err(|e| fail(e.to_string()))?;
        if !status.success() {
            let text = String::from_utf8_lossy(&err);
            let tail: String = text
                .trim()
                .chars()
                .rev()
                .take(STDERR_TAIL)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(fail(match status.code() {
                Some(c) => format!("exited with status {c}; stderr: {tail}"),
                None => format!("was killed by a signal; stderr: {tail}"),
            }));
        }
        Ok(out)
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
