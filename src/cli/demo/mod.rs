//! `rekey demo`: a self-contained tour. In a temporary directory it runs the
//! real daemon on the local CA next to a tiny TLS app that reloads on SIGHUP,
//! shows verified handoffs live, and breaks one handoff on purpose so the
//! rollback and its alert can be seen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::daemon;
use crate::status::{Handoff, RotateResult, Snapshot, State};

pub mod app;

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The demo app failed.
    #[error("demo app: {0}")]
    App(String),
    /// Setting up the tour failed.
    #[error("demo: {0}")]
    Setup(String),
    /// The daemon failed.
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
}

/// Tour options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Certificate lifetime (renewed at half of it).
    pub lifetime: Duration,
    /// Stop after the first rolled-back handoff (for tests).
    pub exit_after_rollback: bool,
}

fn say(msg: impl AsRef<str>) {
    let t = crate::timestamp::rfc3339(SystemTime::now());
    println!("[{}] {}", &t[11..19], msg.as_ref());
}

fn config_text(dir: &Path, app_port: u16, lifetime: Duration) -> String {
    let d = dir.display();
    let life = humantime::format_duration(lifetime);
    format!(
        r#"# Written by `rekey demo`.
[daemon]
state_dir = "{d}/state"
listen = "127.0.0.1:0"

[issuer.demo]
type = "local-ca"
common_name = "rekey demo CA"

# The app: reloaded with SIGHUP through its pid file, verified over TLS.
[[certificate]]
name = "app"
issuer = "demo"
dns_names = ["localhost"]
ip_addresses = ["127.0.0.1"]
lifetime = "{life}"
renew_before = "50%"
files = {{ cert = "{d}/tls/app/cert.pem", key = "{d}/tls/app/key.pem", fullchain = "{d}/tls/app/fullchain.pem", ca = "{d}/tls/app/ca.pem" }}
reload = {{ type = "signal", signal = "HUP", pid_file = "{d}/app.pid" }}
verify = {{ type = "tls", connect = "127.0.0.1:{app_port}", server_name = "localhost", timeout = "10s" }}

# Broken on purpose: nobody reloads anything with these files, so the probe
# keeps seeing the app's certificate and the handoff fails.
[[certificate]]
name = "broken"
issuer = "demo"
dns_names = ["broken.localhost"]
lifetime = "{life}"
files = {{ cert = "{d}/tls/broken/cert.pem", key = "{d}/tls/broken/key.pem" }}
reload = {{ type = "none" }}
verify = {{ type = "tls", connect = "127.0.0.1:{app_port}", server_name = "localhost", timeout = "2s" }}
"#
    )
}

/// Print what changed between two snapshots.
fn narrate(old: &Snapshot, new: &Snapshot) {
    for (name, s) in new {
        let before = old.get(name);
        // Generations and handoffs tell the story; renewing/backoff flips are noise here.
        let changed = before.is_none_or(|b| b.generation != s.generation || b.handoff != s.handoff);
        if !changed || s.state == State::Starting || s.generation.is_none() {
            continue;
        }
        let fp = s
            .fingerprint
            .as_deref()
            .map(|f| &f[..f.len().min(19)])
            .unwrap_or("-");
        let handoff = match s.handoff {
            Handoff::Verified => "VERIFIED: the app serves it",
            Handoff::Pending => "pending: waiting for the app",
            Handoff::Failed => "FAILED",
            Handoff::Unverified => "unverified",
            Handoff::Unmanaged => "unmanaged",
        };
        let mut line = format!(
            "{name}: generation {} ({fp}…), {:?}, handoff {handoff}",
            s.generation.unwrap_or(0),
            s.state
        );
        if let Some(e) = &s.last_error {
            if s.handoff == Handoff::Failed {
                line.push_str(&format!("\n           why: {e}"));
            }
        }
        say(line);
    }
}

fn free_port() -> Result<u16, DemoError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| DemoError::Setup(format!("no free port on 127.0.0.1: {e}")))
}

/// `rekey demo`: the tour, logging only warnings.
pub fn command(opts: DemoOptions) -> anyhow::Result<std::process::ExitCode> {
    super::init_logging_level(crate::config::LogFormat::Text, "warn");
    super::runtime()?.block_on(run(opts))?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Run the tour.
pub async fn run(opts: DemoOptions) -> Result<(), DemoError> {
    let dir: PathBuf = std::env::temp_dir().join(format!("rekey-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| DemoError::Setup(format!("{}: {e}", dir.display())))?;
    let result = tour(&dir, &opts).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn tour(dir: &Path, opts: &DemoOptions) -> Result<(), DemoError> {
    let app_port = free_port()?;
    let path = dir.join("rekey.toml");
    std::fs::write(&path, config_text(dir, app_port, opts.lifetime))
        .map_err(|e| DemoError::Setup(format!("{}: {e}", path.display())))?;
    let config = Config::load(&path).map_err(|e| DemoError::Setup(e.to_string()))?;
    say(format!(
        "rekey demo in {} (config: {})",
        dir.display(),
        path.display()
    ));
    say("starting the daemon on an embedded local CA; the app is not running yet");
    let metrics = crate::metrics::Metrics::new(env!("CARGO_PKG_VERSION"));
    let alerter = daemon::build_alerter(&config, &metrics)?;
    let running = daemon::start(&config, alerter, metrics).await?;
    if let Some(a) = running.addr {
        say(format!(
            "status: curl -s http://{a}/status   (or: rekey status --addr {a})"
        ));
    }
    let handle = running.handle();
    let mut rx = handle.subscribe();
    let narrator = tokio::spawn(async move {
        let mut last: Snapshot = BTreeMap::new();
        loop {
            let snap = rx.borrow_and_update().clone();
            narrate(&last, &snap);
            last = snap;
            if rx.changed().await.is_err() {
                break;
            }
        }
    });
    let wait = |name: &'static str,
                what: &'static str,
                f: fn(&crate::status::CredentialStatus) -> bool| {
        let mut rx = handle.subscribe();
        async move {
            let ok = tokio::time::timeout(
                Duration::from_secs(60),
                rx.wait_for(|s| s.get(name).is_some_and(|c| f(c))),
            )
            .await;
            match ok {
                Ok(Ok(_)) => Ok(()),
                _ => Err(DemoError::Setup(format!(
                    "gave up waiting for {name} to be {what}"
                ))),
            }
        }
    };
    wait("app", "issued", |s| s.generation.is_some()).await?;
    let exe = std::env::current_exe().map_err(|e| DemoError::Setup(e.to_string()))?;
    let d = dir.display();
    say(format!(
        "starting the demo app on 127.0.0.1:{app_port} with the published files"
    ));
    let mut app = tokio::process::Command::new(exe)
        .args([
            "demo-app",
            "--cert",
            &format!("{d}/tls/app/fullchain.pem"),
            "--key",
            &format!("{d}/tls/app/key.pem"),
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{app_port}"),
            "--pid-file",
            &format!("{d}/app.pid"),
        ])
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| DemoError::Setup(format!("cannot start the demo app: {e}")))?;
    wait("app", "verified", |s| s.handoff == Handoff::Verified).await?;
    say("rotating app now (SIGHUP, then a TLS probe proves the app took it)");
    let out = handle
        .rotate("app")
        .await
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    say(format!("app: rotation {}", out.result));
    wait("broken", "issued", |s| s.generation.is_some()).await?;
    say("rotating broken now: its reload is `none`, so the app never takes it");
    let out = handle
        .rotate("broken")
        .await
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    // Said here, not left to the narrator: the handoff retry may already
    // have moved the status on when it looks.
    if out.result == RotateResult::RolledBack {
        say("broken: rotation rolled back, handoff FAILED (the previous generation is back in place; see the alert above)");
    } else {
        say(format!(
            "broken: rotation {}",
            out.result.as_str().replace('_', " ")
        ));
    }
    if !opts.exit_after_rollback {
        say(format!(
            "app renews every ~{}; watch it here. Ctrl-C ends the demo.",
            humantime::format_duration(opts.lifetime / 2)
        ));
        let _ = tokio::signal::ctrl_c().await;
    }
    running.shutdown().await;
    narrator.abort();
    let _ = app.kill().await;
    say("demo finished");
    Ok(())
}
