//! The subcommands of the `rekey` binary, one module each; `main.rs` parses
//! the arguments and calls them. Each returns the process's exit code: 0
//! success, 1 runtime failure, 2 bad usage or invalid config. This is the
//! top of the module tree: nothing else in the crate imports it, and it is
//! the one place besides `main.rs` where `anyhow` is used (both checked by
//! `src/layering.rs`).

pub mod admin;
pub mod audit;
pub mod check;
pub mod demo;
pub mod discover;
pub mod inspect;
pub mod report;
pub mod run;
pub mod status;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::{Config, ConfigError, LogFormat};

/// The config at `path`, or exit code 2 after printing why.
pub fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(invalid)
}

/// [`load`] for commands that only read the state dir (root may inspect
/// rekey's).
pub fn load_to_inspect(path: &Path) -> Result<Config, ExitCode> {
    Config::load_to_inspect(path).map_err(invalid)
}

fn invalid(e: ConfigError) -> ExitCode {
    eprintln!("rekey: invalid config: {e}");
    ExitCode::from(2)
}

/// Log to stderr at `info` unless `REKEY_LOG` says otherwise.
pub fn init_logging(format: LogFormat) {
    init_logging_level(format, "info");
}

/// Log to stderr at `default` unless `REKEY_LOG` says otherwise.
pub fn init_logging_level(format: LogFormat, default: &str) {
    // `target=level` directives (`debug`, `rekey::engine=trace,info`), read
    // with `Targets` rather than `EnvFilter`: the same syntax without span
    // and field filters, and without the regex engine they need, which is
    // code resident on every host (docs/development.md, "Decisions").
    let parse = |s: &str| s.parse::<tracing_subscriber::filter::Targets>();
    let filter = match std::env::var("REKEY_LOG") {
        Ok(v) if !v.trim().is_empty() => parse(&v).unwrap_or_else(|e| {
            eprintln!("rekey: REKEY_LOG={v:?} is not a log filter ({e}); using \"{default}\"; write it like \"debug\" or \"rekey::engine=trace,info\"");
            parse(default).unwrap_or_default()
        }),
        _ => parse(default).unwrap_or_default(),
    };
    // Colour codes only on a terminal: journald and log files show them raw.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The filter decides; the formatter itself lets every level through.
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // Under systemd, `<N>` prefixes file warnings and errors at their
    // priority in the journal.
    let journal = crate::journald::stderr_is_journal();
    use crate::journald::LevelPrefix;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    match format {
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(LevelPrefix::new(crate::logfmt::JsonLines, journal))
            .finish()
            .with(filter)
            .init(),
        LogFormat::Text => builder
            .fmt_fields(crate::logfmt::TextFields)
            .map_event_format(|f| LevelPrefix::new(f, journal))
            .finish()
            .with(filter)
            .init(),
    }
}

/// The async runtime every subcommand that talks or runs uses.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // File I/O runs on blocking threads. Tokio's default allows 512: a
        // start with 10,000 credentials grew 300+ threads, each with its own
        // stack and malloc arena, and the backstop's steady trickle of jobs
        // kept them all from ever idling out (130 MiB resident). Eight keep
        // the disk busy without that.
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
