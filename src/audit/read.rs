//! Reading the log back for `rekey audit` and `rekey report`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::chain::files;
use super::file::Lines;
use super::{AuditError, Record};

/// Which records to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this credential's records.
    pub credential: Option<String>,
    /// Only records at or after this time.
    pub since: Option<SystemTime>,
}

impl Filter {
    /// Whether `r` passes.
    pub fn accepts(&self, r: &Record) -> bool {
        if self.credential.as_ref().is_some_and(|c| *c != r.credential) {
            return false;
        }
        self.since.is_none_or(|since| r.time.time() >= since)
    }
}

/// Every readable record of the log, oldest first, with its file and line;
/// lines that are not records are skipped (`rekey audit verify` names them).
pub fn read_all(path: &Path) -> Result<Vec<(PathBuf, usize, Record)>, AuditError> {
    let mut out = Vec::new();
    for file in files(path) {
        for (i, line) in Lines::open(&file)?.enumerate() {
            if let Ok(r) = serde_json::from_str::<Record>(&line?) {
                out.push((file.clone(), i + 1, r));
            }
        }
    }
    Ok(out)
}

/// One record as a readable line.
pub fn format(r: &Record) -> String {
    let mut s = format!("{} #{} {:<15}", r.time, r.seq, r.event.as_str());
    if !r.credential.is_empty() {
        s.push_str(&format!(" {}", r.credential));
    }
    if let Some(g) = r.generation {
        s.push_str(&format!(" gen {g}"));
    }
    s.push_str(&format!(" {}", r.outcome));
    for (k, v) in [
        ("team", &r.team),
        ("issuer", &r.issuer),
        ("fingerprint", &r.fingerprint),
        ("key_id", &r.key_id),
        ("reason", &r.reason),
    ] {
        if let Some(v) = v {
            s.push_str(&format!(" {k}={v}"));
        }
    }
    s
}
