//! `rekey audit` and `rekey audit verify`: print the audit log readably,
//! filtered, or check its hash chain.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use crate::audit;

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

/// The audit log named by `--file`, else by the config's `daemon.audit_log`.
pub fn audit_path(config: &Path, file: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    if let Some(f) = file {
        return Ok(f);
    }
    let config = super::load_to_inspect(config)?;
    config.daemon.audit_log.ok_or_else(|| {
        eprintln!(
            "rekey: {} sets no daemon.audit_log; set it, or pass --file PATH",
            config.path.display()
        );
        ExitCode::from(2)
    })
}

/// `rekey audit verify`: the log named by `--file` or the config, checked.
pub fn verify_command(config: &Path, file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match audit_path(config, file) {
        Ok(path) => verify(&path),
        Err(code) => Ok(code),
    }
}

/// `rekey audit`: the log named by `--file` or the config, printed.
pub fn show_command(
    config: &Path,
    file: Option<PathBuf>,
    credential: Option<String>,
    since: Option<&str>,
) -> anyhow::Result<ExitCode> {
    match audit_path(config, file) {
        Ok(path) => show(&path, credential, since),
        Err(code) => Ok(code),
    }
}
