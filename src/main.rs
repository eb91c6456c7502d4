//! The `rekey` command line: parses the arguments and hands each subcommand
//! to its module in `rekey::cli`. Exit codes: 0 success, 1 runtime failure,
//! 2 bad usage or invalid config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use rekey::cli;

#[derive(Parser)]
#[command(
    name = "rekey",
    version,
    about = "Keeps certificates fresh and proves the app picked them up"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check the hash chain over the rotated files and the current one; exit 1 naming the first bad line.
    Verify {
        /// Config file (its daemon.audit_log is read).
        #[arg(
            short,
            long,
            env = "REKEY_CONFIG",
            default_value = "/etc/rekey/rekey.toml"
        )]
        config: PathBuf,
        /// The audit log itself, instead of the config's daemon.audit_log.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

/// How `rotate` and `retire` reach the daemon: its admin socket by default
/// (found through the config), or TCP with the admin token.
#[derive(clap::Args)]
struct AdminArgs {
    /// Config file: the request goes to the admin socket in its daemon.state_dir.
    #[arg(
        short,
        long,
        env = "REKEY_CONFIG",
        default_value = "/etc/rekey/rekey.toml"
    )]
    config: PathBuf,
    /// The admin socket itself (STATE_DIR/rekey.sock), instead of -c.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Ask over TCP instead, at the daemon's daemon.listen (default 127.0.0.1:9464); needs --token-file.
    #[arg(long, env = "REKEY_ADDR")]
    addr: Option<SocketAddr>,
    /// File holding the admin token (the daemon's daemon.admin_token_file); implies TCP.
    #[arg(long, env = "REKEY_ADMIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Config file.
        #[arg(
            short,
            long,
            env = "REKEY_CONFIG",
            default_value = "/etc/rekey/rekey.toml"
        )]
        config: PathBuf,
    },
    /// Validate the config and show each credential's state and next renewal.
    Check {
        /// Config file.
        #[arg(
            short,
            long,
            env = "REKEY_CONFIG",
            default_value = "/etc/rekey/rekey.toml"
        )]
        config: PathBuf,
    },
    /// Ask a running daemon for its status.
    Status {
        /// The daemon's endpoint (daemon.listen).
        #[arg(long, env = "REKEY_ADDR", default_value = "127.0.0.1:9464")]
        addr: SocketAddr,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        /// Also exit 1 when a handoff failed (like /readyz?strict), even
        /// though the app still serves a valid credential.
        #[arg(long)]
        strict: bool,
    },
    /// Ask a running daemon to rotate NAME now, and wait for the outcome.
    Rotate {
        /// Credential name.
        name: String,
        #[command(flatten)]
        via: AdminArgs,
        /// Issue a new credential even when a staged one waits for its
        /// handoff (counts against the issuance budget).
        #[arg(long)]
        reissue: bool,
    },
    /// A self-contained tour: local CA, a tiny TLS app, live rotations, one rollback.
    Demo {
        /// Certificate lifetime (renewed at half of it).
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        lifetime: Duration,
        /// Stop after the rolled-back handoff instead of running until Ctrl-C.
        #[arg(long)]
        exit_after_rollback: bool,
    },
    /// The demo's TLS app (started by `rekey demo`).
    #[command(hide = true)]
    DemoApp {
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        pid_file: PathBuf,
    },
    /// Ask a running daemon to retire NAME: revoke it at the issuer where possible, remove its published files, record and alert `retired`.
    Retire {
        /// Credential name.
        name: String,
        #[command(flatten)]
        via: AdminArgs,
    },
    /// Print the audit log readably, or check its hash chain (`audit verify`).
    Audit {
        #[command(subcommand)]
        action: Option<AuditAction>,
        /// Config file (its daemon.audit_log is read).
        #[arg(
            short,
            long,
            env = "REKEY_CONFIG",
            default_value = "/etc/rekey/rekey.toml"
        )]
        config: PathBuf,
        /// The audit log itself, instead of the config's daemon.audit_log.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Only this credential's records.
        #[arg(long)]
        credential: Option<String>,
        /// Only records since T (RFC 3339 like 2026-11-23T19:00:00Z, or a duration ago like 24h).
        #[arg(long)]
        since: Option<String>,
    },
    /// Evidence for an access review: per credential team, issuer, age, last verified handoff, rotations, failures, policy.
    Report {
        /// Config file.
        #[arg(
            short,
            long,
            env = "REKEY_CONFIG",
            default_value = "/etc/rekey/rekey.toml"
        )]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Find certificates and keys under PATHs and print a starter config: a [[certificate]] for each key with its certificate, a [[watch]] for the rest.
    Discover {
        /// Files or directories to search (nothing outside them is read).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print the findings as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Show the certificates and keys in files, and whether keys match.
    Inspect {
        /// PEM files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    rekey::heap::limit_arenas();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rekey: {e:#}");
            ExitCode::from(1)
        }
    }
}

impl From<AdminArgs> for cli::admin::Via {
    fn from(a: AdminArgs) -> Self {
        cli::admin::Via {
            config: a.config,
            socket: a.socket,
            addr: a.addr,
            token_file: a.token_file,
        }
    }
}

fn dispatch(args: Cli) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Run { config } => cli::run::command(&config),
        Command::Check { config } => Ok(cli::check::command(&config)),
        Command::Discover { paths, json } => cli::discover::command(&paths, json),
        Command::Inspect { files } => Ok(cli::inspect::command(&files)),
        Command::Demo {
            lifetime,
            exit_after_rollback,
        } => cli::demo::command(cli::demo::DemoOptions {
            lifetime,
            exit_after_rollback,
        }),
        Command::DemoApp {
            cert,
            key,
            listen,
            pid_file,
        } => cli::demo::app::command(cli::demo::app::AppOptions {
            cert,
            key,
            listen,
            pid_file,
        }),
        Command::Audit {
            action: Some(AuditAction::Verify { config, file }),
            ..
        } => cli::audit::verify_command(&config, file),
        Command::Audit {
            action: None,
            config,
            file,
            credential,
            since,
        } => cli::audit::show_command(&config, file, credential, since.as_deref()),
        Command::Retire { name, via } => cli::admin::retire_command(&name, via.into()),
        Command::Report { config, json } => cli::report::command(&config, json),
        Command::Status { addr, json, strict } => cli::status::command(addr, json, strict),
        Command::Rotate { name, via, reissue } => {
            cli::admin::rotate_command(&name, via.into(), reissue)
        }
    }
}
