//! `rekey rotate` and `rekey retire`: ask a running daemon over its admin
//! socket (found through the config) or over TCP with the admin token, wait
//! for the outcome, and exit with its code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use hyper::Method;

use crate::fs::safefile::{self, Guard};
use crate::net::admin;

/// How `rotate` and `retire` reach the daemon (the flags main.rs parsed).
pub struct Via {
    /// `-c`: the request goes to the admin socket in its daemon.state_dir.
    pub config: PathBuf,
    /// `--socket`: the admin socket itself.
    pub socket: Option<PathBuf>,
    /// `--addr`: TCP instead.
    pub addr: Option<SocketAddr>,
    /// `--token-file`: the admin token; implies TCP.
    pub token_file: Option<PathBuf>,
}

/// `rekey rotate NAME [--reissue]`: 0 rotated, 1 failed or refused by the
/// issuance budget, 2 unknown name or not allowed.
pub fn rotate_command(name: &str, via: Via, reissue: bool) -> anyhow::Result<ExitCode> {
    let (target, token) = match admin_target(via)? {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    let token = token.as_deref().map(|t| t.as_str());
    super::runtime()?.block_on(rotate(&target, name, token, reissue))
}

/// `rekey retire NAME`: see [`retire`].
pub fn retire_command(name: &str, via: Via) -> anyhow::Result<ExitCode> {
    let (target, token) = match admin_target(via)? {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    super::runtime()?.block_on(retire(&target, name, token.as_deref().map(|t| t.as_str())))
}

/// Where `rotate`/`retire` send their request, with the token for TCP:
/// `--socket`, else TCP when `--addr` or `--token-file` is given, else the
/// admin socket of the `-c` config. Err(2) when the config cannot be read.
#[allow(clippy::type_complexity)]
fn admin_target(
    a: Via,
) -> anyhow::Result<Result<(admin::Target, Option<zeroize::Zeroizing<String>>), ExitCode>> {
    if let Some(socket) = a.socket {
        return Ok(Ok((admin::Target::Socket(socket), None)));
    }
    if a.addr.is_some() || a.token_file.is_some() {
        let addr = match a.addr {
            Some(addr) => addr,
            None => crate::config::DEFAULT_LISTEN.parse()?,
        };
        let token = a.token_file.map(|p| read_token(&p)).transpose()?;
        return Ok(Ok((admin::Target::Tcp(addr), token)));
    }
    match crate::config::admin_socket(&a.config) {
        Ok(socket) => Ok(Ok((admin::Target::Socket(socket), None))),
        Err(e) => {
            eprintln!("rekey: {e}");
            eprintln!("rekey: the admin socket is found through the config's daemon.state_dir: pass -c FILE, or --socket STATE_DIR/rekey.sock, or --addr ADDR --token-file FILE");
            Ok(Err(ExitCode::from(2)))
        }
    }
}

/// The admin token in `path`, trimmed like the daemon trims it.
fn read_token(path: &Path) -> anyhow::Result<zeroize::Zeroizing<String>> {
    // A secret: bounded, never blocking, refused when other users can write it.
    let text = safefile::read_guarded(path, "--token-file", Guard::Secret, safefile::MAX_SECRET)
        .and_then(|b| safefile::text(path, b))
        .context("--token-file")?;
    let token = zeroize::Zeroizing::new(text.trim().to_string());
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        path.display()
    );
    Ok(token)
}

async fn rotate(
    target: &admin::Target,
    name: &str,
    token: Option<&str>,
    reissue: bool,
) -> anyhow::Result<ExitCode> {
    let path = if reissue {
        format!("/v1/rotate/{name}?reissue=1")
    } else {
        format!("/v1/rotate/{name}")
    };
    let reply = admin::send(target, Method::POST, &path, Duration::from_secs(130), token).await?;
    let v: serde_json::Value = serde_json::from_str(&reply.body)
        .with_context(|| format!("unexpected answer from {target} (HTTP {})", reply.status))?;
    match reply.status {
        200 => {
            println!(
                "{name}: rotated to generation {} ({})",
                v["generation"],
                v["fingerprint"].as_str().unwrap_or("-")
            );
            Ok(ExitCode::SUCCESS)
        }
        404 => {
            eprintln!(
                "rekey: {}",
                v["error"].as_str().unwrap_or("unknown credential")
            );
            Ok(ExitCode::from(2))
        }
        // The issuance budget is used up: nothing was asked of the issuer.
        429 => {
            eprintln!(
                "rekey: {name}: refused: {}",
                v["error"]
                    .as_str()
                    .unwrap_or("the issuance budget is used up")
            );
            Ok(ExitCode::from(1))
        }
        // Missing or wrong token, or TCP without one: a usage problem.
        401 | 403 => {
            eprintln!(
                "rekey: rotate refused (HTTP {}): {}",
                reply.status,
                v["error"].as_str().unwrap_or("not allowed")
            );
            Ok(ExitCode::from(2))
        }
        _ => {
            eprintln!(
                "rekey: {name}: rotation failed: {}",
                v["error"].as_str().unwrap_or("unknown error")
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// `rekey retire NAME`: 0 retired (revoked, or the issuer cannot revoke),
/// 1 failed (files not removed, or the issuer failed to revoke), 2 unknown
/// name or refused.
async fn retire(
    target: &admin::Target,
    name: &str,
    token: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/retire/{name}");
    let reply = admin::send(target, Method::POST, &path, Duration::from_secs(130), token).await?;
    let v: serde_json::Value = serde_json::from_str(&reply.body)
        .with_context(|| format!("unexpected answer from {target} (HTTP {})", reply.status))?;
    match reply.status {
        200 => {
            println!(
                "{name}: retired; removed {}; {}",
                v["removed"].as_array().map_or(0, Vec::len),
                v["detail"].as_str().unwrap_or("")
            );
            println!("remove it from the config too, or the next start issues it again");
            Ok(ExitCode::SUCCESS)
        }
        502 if serde_json::from_value::<crate::engine::RetireOutcome>(v.clone())
            .is_ok_and(|o| o.result == crate::engine::RetireResult::Retired) =>
        {
            eprintln!(
                "rekey: {name}: retired (removed {} file(s)) but {}",
                v["removed"].as_array().map_or(0, Vec::len),
                v["detail"]
                    .as_str()
                    .unwrap_or("the issuer did not revoke it")
            );
            eprintln!("remove it from the config too, or the next start issues it again");
            Ok(ExitCode::from(1))
        }
        401 | 403 | 404 => {
            eprintln!(
                "rekey: retire refused (HTTP {}): {}",
                reply.status,
                v["error"].as_str().unwrap_or("not allowed")
            );
            Ok(ExitCode::from(2))
        }
        _ => {
            eprintln!(
                "rekey: {name}: retire failed: {}",
                v["detail"]
                    .as_str()
                    .or(v["error"].as_str())
                    .unwrap_or("unknown error")
            );
            Ok(ExitCode::from(1))
        }
    }
}
