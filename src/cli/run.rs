//! `rekey run`: refuse a config that violates `[policy]`, then run the daemon.

use std::path::Path;
use std::process::ExitCode;

use crate::daemon::{self, sdnotify};
use crate::metrics::Metrics;

/// `rekey run -c FILE`: 2 for an invalid config or a policy violation,
/// else the daemon runs until a signal.
pub fn command(config: &Path) -> anyhow::Result<ExitCode> {
    let config = match super::load(config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let violations = crate::config::evaluate_policy(&config);
    if !violations.is_empty() {
        eprintln!(
            "rekey: {} violates [policy]; refusing to start:",
            config.path.display()
        );
        for v in &violations {
            eprintln!("  {v}");
        }
        return Ok(ExitCode::from(2));
    }
    super::init_logging(config.daemon.log_format);
    // Before the runtime starts threads: init edits the environment.
    sdnotify::init();
    let metrics = Metrics::with_compat(env!("CARGO_PKG_VERSION"), &config.daemon.compat_metrics);
    super::runtime()?.block_on(daemon::run(config, metrics))?;
    Ok(ExitCode::SUCCESS)
}
