//! The `rekey` command line. Exit codes: 0 success, 1 runtime failure,
//! 2 bad usage or invalid config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Parser, Subcommand};
use hyper::Method;

use rekey::config::{Config, LogFormat};
use rekey::metrics::Metrics;
use rekey::safefile::{self, Guard};
use rekey::status::CredentialStatus;
use rekey::{cert, client, daemon, demo, notify, report, status};

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

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(invalid)
}

/// [`load`] for commands that only read the state dir (root may inspect
/// rekey's).
fn load_to_inspect(path: &Path) -> Result<Config, ExitCode> {
    Config::load_to_inspect(path).map_err(invalid)
}

fn invalid(e: rekey::config::ConfigError) -> ExitCode {
    eprintln!("rekey: invalid config: {e}");
    ExitCode::from(2)
}

fn init_logging(format: LogFormat) {
    init_logging_level(format, "info");
}

fn init_logging_level(format: LogFormat, default: &str) {
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
    let journal = rekey::journald::stderr_is_journal();
    use rekey::journald::LevelPrefix;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    match format {
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(LevelPrefix::new(rekey::logfmt::JsonLines, journal))
            .finish()
            .with(filter)
            .init(),
        LogFormat::Text => builder
            .fmt_fields(rekey::logfmt::TextFields)
            .map_event_format(|f| LevelPrefix::new(f, journal))
            .finish()
            .with(filter)
            .init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
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

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let violations = rekey::config::evaluate_policy(&config);
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
            init_logging(config.daemon.log_format);
            // Before the runtime starts threads: init edits the environment.
            notify::init();
            let metrics =
                Metrics::with_compat(env!("CARGO_PKG_VERSION"), &config.daemon.compat_metrics);
            runtime()?.block_on(daemon::run(config, metrics))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => {
            let config = match load_to_inspect(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            print!("{}", report::check(&config, SystemTime::now()));
            let violations = rekey::config::evaluate_policy(&config);
            if violations.is_empty() {
                if config.policy.is_some() {
                    println!("policy: every credential complies");
                }
                return Ok(ExitCode::SUCCESS);
            }
            println!("policy: {} violation(s):", violations.len());
            for v in &violations {
                println!("  {v}");
            }
            Ok(ExitCode::from(1))
        }
        Command::Discover { paths, json } => match rekey::discover::discover(&paths) {
            Ok(d) if json => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rekey::discover::json(&d))?
                );
                Ok(ExitCode::SUCCESS)
            }
            Ok(d) => {
                print!("{}", rekey::discover::toml(&d, SystemTime::now()));
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("rekey: discover: {e}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Inspect { files } => match report::inspect(&files, SystemTime::now()) {
            Ok(text) => {
                print!("{text}");
                Ok(ExitCode::SUCCESS)
            }
            Err(text) => {
                eprintln!("{text}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Demo {
            lifetime,
            exit_after_rollback,
        } => {
            init_logging_level(LogFormat::Text, "warn");
            let opts = demo::DemoOptions {
                lifetime,
                exit_after_rollback,
            };
            runtime()?.block_on(demo::run(opts))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DemoApp {
            cert,
            key,
            listen,
            pid_file,
        } => {
            let opts = demo::app::AppOptions {
                cert,
                key,
                listen,
                pid_file,
            };
            runtime()?.block_on(demo::app::run(opts))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            action: Some(AuditAction::Verify { config, file }),
            ..
        } => {
            let path = match audit_path(&config, file) {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            audit_cmd::verify(&path)
        }
        Command::Audit {
            action: None,
            config,
            file,
            credential,
            since,
        } => {
            let path = match audit_path(&config, file) {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            audit_cmd::show(&path, credential, since.as_deref())
        }
        Command::Retire { name, via } => {
            let (target, token) = match admin_target(via)? {
                Ok(t) => t,
                Err(code) => return Ok(code),
            };
            runtime()?.block_on(retire(&target, &name, token.as_deref().map(|t| t.as_str())))
        }
        Command::Report { config, json } => {
            let config = match load_to_inspect(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let now = SystemTime::now();
            let mut r = rekey::evidence::build(&config, now)?;
            if !config.watches.is_empty() {
                r.watches = runtime()?.block_on(rekey::evidence::watches(&config));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", rekey::evidence::text(&r, now));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { addr, json, strict } => runtime()?.block_on(status(addr, json, strict)),
        Command::Rotate { name, via, reissue } => {
            let (target, token) = match admin_target(via)? {
                Ok(t) => t,
                Err(code) => return Ok(code),
            };
            let token = token.as_deref().map(|t| t.as_str());
            runtime()?.block_on(rotate(&target, &name, token, reissue))
        }
    }
}

async fn status(addr: SocketAddr, json: bool, strict: bool) -> anyhow::Result<ExitCode> {
    let reply = client::request(addr, Method::GET, "/status", Duration::from_secs(10)).await?;
    let list: Vec<CredentialStatus> = serde_json::from_str(&reply.body).with_context(|| {
        format!(
            "unexpected /status answer from {addr} (HTTP {})",
            reply.status
        )
    })?;
    if json {
        println!("{}", reply.body.trim_end());
    } else {
        print!("{}", status_table(&list, SystemTime::now()));
    }
    // The same rule as /readyz (or /readyz?strict), so `rekey status` works
    // as a health check.
    let strictness = if strict {
        status::Strictness::HandoffOk
    } else {
        status::Strictness::Usable
    };
    let not_ready = status::readiness_with(&list, SystemTime::now(), strictness);
    for r in &not_ready {
        eprintln!("rekey: not ready: {}: {}", r.credential, r.reason);
    }
    Ok(if not_ready.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Where `rotate`/`retire` send their request, with the token for TCP:
/// `--socket`, else TCP when `--addr` or `--token-file` is given, else the
/// admin socket of the `-c` config. Err(2) when the config cannot be read.
#[allow(clippy::type_complexity)]
fn admin_target(
    a: AdminArgs,
) -> anyhow::Result<Result<(client::Target, Option<zeroize::Zeroizing<String>>), ExitCode>> {
    if let Some(socket) = a.socket {
        return Ok(Ok((client::Target::Socket(socket), None)));
    }
    if a.addr.is_some() || a.token_file.is_some() {
        let addr = match a.addr {
            Some(addr) => addr,
            None => rekey::config::DEFAULT_LISTEN.parse()?,
        };
        let token = a.token_file.map(|p| read_token(&p)).transpose()?;
        return Ok(Ok((client::Target::Tcp(addr), token)));
    }
    match rekey::config::admin_socket(&a.config) {
        Ok(socket) => Ok(Ok((client::Target::Socket(socket), None))),
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

fn status_table(list: &[CredentialStatus], now: SystemTime) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:<16} {:<10} {:<10} {:<12} {:<21} {}\n",
        "NAME", "STATE", "HANDOFF", "EXPIRES IN", "NEXT RENEWAL", "LAST ERROR"
    );
    let parse = |s: &Option<status::Timestamp>| s.map(status::Timestamp::time);
    for c in list {
        let expires = match parse(&c.not_after) {
            Some(t) => match t.duration_since(now) {
                Ok(d) => humantime::format_duration(Duration::from_secs(d.as_secs())).to_string(),
                Err(_) => "expired".into(),
            },
            None => "-".into(),
        };
        let next = parse(&c.next_renewal)
            .map(cert::rfc3339)
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<16} {:<10} {:<10} {:<12} {:<21} {}",
            c.name,
            c.state.as_str(),
            c.handoff.as_str(),
            expires,
            next,
            problem(c)
        );
        // What waits, under the row: a staged handoff, a used-up budget.
        if let Some(st) = &c.staged {
            let _ = writeln!(
                out,
                "  staged: generation {} ({}) waits for its handoff; {} failed so far, retried without a new issuance",
                st.generation, st.fingerprint, st.attempts
            );
        }
        if let Some(x) = c
            .issuance_budget
            .as_ref()
            .and_then(|b| b.exhausted.as_ref())
        {
            let _ = writeln!(
                out,
                "  issuance budget exhausted: {}; frees up at {}",
                x.budget, x.frees_at
            );
        }
    }
    out
}

/// The table's last column: the last error, why the handoff is not
/// verified when something said why, and why the certificate is short.
fn problem(c: &CredentialStatus) -> String {
    let mut out = match (&c.last_error, &c.handoff_reason) {
        (Some(e), Some(h)) if e != h => format!("{e}; handoff {}: {h}", c.handoff.as_str()),
        (Some(e), _) => e.clone(),
        (None, Some(h)) => format!("handoff {}: {h}", c.handoff.as_str()),
        (None, None) => String::new(),
    };
    if let Some(why) = &c.shortened_by_ca {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str("shortened by its CA: ");
        out.push_str(why);
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

async fn rotate(
    target: &client::Target,
    name: &str,
    token: Option<&str>,
    reissue: bool,
) -> anyhow::Result<ExitCode> {
    let path = if reissue {
        format!("/v1/rotate/{name}?reissue=1")
    } else {
        format!("/v1/rotate/{name}")
    };
    let reply = client::send(target, Method::POST, &path, Duration::from_secs(130), token).await?;
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

/// The audit log named by `--file`, else by the config's `daemon.audit_log`.
fn audit_path(config: &Path, file: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    if let Some(f) = file {
        return Ok(f);
    }
    let config = load_to_inspect(config)?;
    config.daemon.audit_log.ok_or_else(|| {
        eprintln!(
            "rekey: {} sets no daemon.audit_log; set it, or pass --file PATH",
            config.path.display()
        );
        ExitCode::from(2)
    })
}

/// `rekey audit` and `rekey audit verify`.
mod audit_cmd {
    use std::path::Path;
    use std::process::ExitCode;
    use std::time::SystemTime;

    use rekey::audit;

    /// Check the chain; 0 when intact, 1 naming the first bad line.
    pub fn verify(path: &Path) -> anyhow::Result<ExitCode> {
        if audit::files(path).is_empty() {
            eprintln!("rekey: audit log {} does not exist", path.display());
            return Ok(ExitCode::from(1));
        }
        match audit::verify(path)? {
            Ok(ok) => {
                println!(
                    "audit log intact: {} records in {} file(s), oldest first: {}",
                    ok.records,
                    ok.files.len(),
                    ok.files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if ok.first_seq > 1 {
                    println!(
                        "the oldest file kept starts at record #{}: older files were rotated away",
                        ok.first_seq
                    );
                }
                if !ok.compressed.is_empty() {
                    println!(
                        "not read (compressed; decompress them next to the log, e.g. gunzip -k, to check them too): {}",
                        ok.compressed
                            .iter()
                            .map(|f| f.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(broken) => {
                println!("audit log BROKEN at {broken}");
                Ok(ExitCode::from(1))
            }
        }
    }

    /// Print the records, filtered.
    pub fn show(
        path: &Path,
        credential: Option<String>,
        since: Option<&str>,
    ) -> anyhow::Result<ExitCode> {
        let since = match since {
            None => None,
            Some(s) => match humantime::parse_rfc3339_weak(s) {
                Ok(t) => Some(t),
                Err(_) => match humantime::parse_duration(s) {
                    Ok(d) => SystemTime::now().checked_sub(d),
                    Err(_) => {
                        eprintln!("rekey: --since {s:?}: write a time like 2026-11-23T19:00:00Z or a duration ago like 24h");
                        return Ok(ExitCode::from(2));
                    }
                },
            },
        };
        let filter = audit::Filter { credential, since };
        for (_, _, r) in audit::read_all(path)? {
            if filter.accepts(&r) {
                println!("{}", audit::format(&r));
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// `rekey retire NAME`: 0 retired (revoked, or the issuer cannot revoke),
/// 1 failed (files not removed, or the issuer failed to revoke), 2 unknown
/// name or refused.
async fn retire(
    target: &client::Target,
    name: &str,
    token: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/retire/{name}");
    let reply = client::send(target, Method::POST, &path, Duration::from_secs(130), token).await?;
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
        502 if serde_json::from_value::<rekey::engine::RetireOutcome>(v.clone())
            .is_ok_and(|o| o.result == rekey::engine::RetireResult::Retired) =>
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
