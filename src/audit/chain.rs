//! The hash chain: encoding a line, finding the chain's tail, verifying files.

use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{digest, SHA256};

use super::file::{open_read, Lines, MAX_LINE};
use super::{io_err, AuditError, Record};

/// The first record's `prev` is the SHA-256 of this string.
pub const GENESIS: &str = "rekey audit log genesis";
/// How many rotated files are kept (PATH.1 … PATH.5).
pub const KEEP: u32 = 5;

/// Separator before the trailing `hash` member of a line.
const HASH_KEY: &str = ",\"hash\":\"";

/// `PATH.n`.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Hex SHA-256 of `s`.
fn sha256_hex(s: &str) -> String {
    crate::cert::hex(digest(&SHA256, s.as_bytes()).as_ref())
}

/// Hex SHA-256 of one line (without its newline): the next record's `prev`.
pub(super) fn hash_line(line: &str) -> String {
    sha256_hex(line)
}

/// The `prev` of the very first record.
pub(super) fn genesis_hash() -> String {
    sha256_hex(GENESIS)
}

/// One JSON line: the record, then `hash` = SHA-256 of the line without it.
pub(super) fn encode(record: &Record) -> Result<String, AuditError> {
    let body = serde_json::to_string(record)?;
    let hash = sha256_hex(&body);
    // body ends with '}': splice the hash in as the last member.
    let open = body.strip_suffix('}').unwrap_or(&body);
    Ok(format!("{open}{HASH_KEY}{hash}\"}}"))
}

/// Check a line's own hash and parse it.
fn decode(line: &str) -> Result<Record, String> {
    let Some(at) = line.rfind(HASH_KEY) else {
        return Err("not an audit record (no hash member)".to_string());
    };
    let hash = line[at + HASH_KEY.len()..]
        .strip_suffix("\"}")
        .ok_or_else(|| "not an audit record (hash is not the last member)".to_string())?;
    let body = format!("{}}}", &line[..at]);
    if sha256_hex(&body) != hash {
        return Err("the record was edited: its hash does not match its content".to_string());
    }
    serde_json::from_str(&body).map_err(|e| format!("not an audit record: {e}"))
}

/// The last line of the newest non-empty file, as (its hash, next seq).
/// Only the end of the file is read, whatever its size.
pub(super) fn tail(path: &Path) -> Result<(String, u64), AuditError> {
    for p in files(path).iter().rev() {
        let text = match last_bytes(p) {
            Ok(t) => t,
            Err(AuditError::Read { source, .. })
                if source.io_kind() == Some(std::io::ErrorKind::NotFound) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        if let Some(last) = text.lines().rev().find(|l| !l.is_empty()) {
            // A damaged last line still anchors the chain; verify reports it.
            let seq = decode(last).map(|r| r.seq).unwrap_or(0);
            return Ok((hash_line(last), seq + 1));
        }
    }
    let compressed = compressed(path);
    if !compressed.is_empty() {
        tracing::warn!(files = ?compressed, event = "audit_failed", "the audit log's newest records are only in compressed files, so its hash chain starts again at record 1 and `rekey audit verify` will say so; compress rotated audit files with logrotate's delaycompress");
    }
    Ok((genesis_hash(), 1))
}

/// The last two [`MAX_LINE`]s of the file at `path`, as text: enough to
/// hold its last line whole.
fn last_bytes(path: &Path) -> Result<String, AuditError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = open_read(path)?;
    let len = f.metadata().map_err(io_err(path))?.len();
    let start = len.saturating_sub(2 * MAX_LINE as u64);
    f.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
    let mut buf = Vec::new();
    f.take(2 * MAX_LINE as u64)
        .read_to_end(&mut buf)
        .map_err(io_err(path))?;
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        // The first line is cut: keep only what follows it.
        let cut = text.find('\n').map_or(text.len(), |i| i + 1);
        text.drain(..cut);
    }
    Ok(text)
}

/// An intact chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Files checked, oldest first.
    pub files: Vec<PathBuf>,
    /// Records checked.
    pub records: u64,
    /// The first record's `seq` (above 1 when older copies were rotated away).
    pub first_seq: u64,
    /// Compressed rotated copies, which were not read.
    pub compressed: Vec<PathBuf>,
}

/// The first bad line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The file holding it.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.why)
    }
}

/// What follows the log's name in a rotated copy: rekey's own `.1` … `.5`,
/// logrotate's `.N` and its `dateext` forms (`-20261201`, `-2026-12-01`,
/// `.20261201.1`): a separator, then digits, dots, dashes and underscores.
fn rotated_suffix(rest: &str) -> bool {
    let mut chars = rest.chars();
    matches!(chars.next(), Some('.' | '-'))
        && rest[1..].starts_with(|c: char| c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
}

/// The suffixes of compressed rotated copies, which rekey does not read.
const COMPRESSED: [&str; 6] = [".gz", ".xz", ".bz2", ".zst", ".lz4", ".Z"];

/// Regular files in the log's directory whose name is the log's name
/// followed by `suffix_ok`'s kind of suffix.
fn siblings(path: &Path, suffix_ok: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name().and_then(|b| b.to_str())) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(base))
                .is_some_and(&suffix_ok)
        })
        .map(|e| dir.join(e.file_name()))
        .collect()
}

/// Compressed rotated copies of the log (`audit.log.2.gz`), oldest name first.
pub fn compressed(path: &Path) -> Vec<PathBuf> {
    let mut out = siblings(path, |rest| {
        COMPRESSED
            .iter()
            .any(|ext| rest.strip_suffix(ext).is_some_and(rotated_suffix))
    });
    // A copy decompressed next to it is read instead.
    out.retain(|p| !p.with_extension("").exists());
    out.sort();
    out
}

/// The `seq` of a file's first record; None when it has none or the first
/// line is not a record.
fn first_seq(path: &Path) -> Option<u64> {
    use std::io::{BufRead, Read};
    // Bounded and through safefile, like every other read of the log: a
    // FIFO or a huge first line named like a rotated copy must not hang or
    // fill memory.
    let file = open_read(path).ok()?;
    let mut first = String::new();
    std::io::BufReader::new(file.take(MAX_LINE as u64))
        .read_line(&mut first)
        .ok()?;
    decode(first.trim_end_matches('\n')).ok().map(|r| r.seq)
}

/// The files of the log, oldest first: the rotated copies (rekey's own
/// `PATH.1` … and logrotate's, renamed or copied, numbered or dated; not
/// compressed ones), in the order of their first record, then the current
/// file. A copy whose first line is not a record goes first, so
/// verification names it at once.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(Option<u64>, PathBuf)> = siblings(path, rotated_suffix)
        .into_iter()
        .map(|p| (first_seq(&p), p))
        .collect();
    rotated.sort();
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
}

/// Check the chain over the rotated files and the current one.
pub fn verify(path: &Path) -> Result<Result<Verified, Broken>, AuditError> {
    let files = files(path);
    let mut prev: Option<(PathBuf, usize, String)> = None;
    let mut expected: Option<u64> = None;
    let mut records = 0;
    for file in &files {
        for (i, line) in Lines::open(file)?.enumerate() {
            let line = line?;
            let line = line.as_str();
            let ln = i + 1;
            let broken = |why: String| Broken {
                file: file.clone(),
                line: ln,
                why,
            };
            let rec = match decode(line) {
                Ok(r) => r,
                Err(why) => return Ok(Err(broken(why))),
            };
            match expected {
                Some(e) if rec.seq != e => {
                    return Ok(Err(broken(format!(
                        "expected record #{e}, found #{}: a record was removed or records were reordered",
                        rec.seq
                    ))));
                }
                // Rotation (rekey's past KEEP files, or logrotate's `rotate
                // N`) deletes the oldest copies, so the oldest one kept may
                // start anywhere; the current file alone must start at #1.
                None if rec.seq != 1 && file.as_path() == path => {
                    return Ok(Err(broken(format!(
                        "the log starts at record #{}, not #1: earlier records were removed",
                        rec.seq
                    ))));
                }
                _ => {}
            }
            let want = match &prev {
                Some((_, _, h)) => Some(h.clone()),
                None if rec.seq == 1 => Some(genesis_hash()),
                None => None,
            };
            if want.is_some_and(|w| w != rec.prev) {
                let what = match &prev {
                    Some((f, l, _)) => format!(
                        "its prev does not match line {l} of {}: that line was changed, or records were removed or reordered",
                        f.display()
                    ),
                    None => "its prev is not the genesis hash".to_string(),
                };
                return Ok(Err(broken(what)));
            }
            prev = Some((file.clone(), ln, hash_line(line)));
            expected = Some(rec.seq + 1);
            records += 1;
        }
    }
    let first_seq = match (&expected, records) {
        (Some(next), n) if n > 0 => next - n,
        _ => 1,
    };
    Ok(Ok(Verified {
        files,
        records,
        first_seq,
        compressed: compressed(path),
    }))
}
