//! `[[certificate]]` entries: each read on its own (`entry`), then the
//! checks across entries: unique names, an issuer that signs, every file
//! path claimed once, one directory per symlink swap.

mod entry;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::convert::value;
use super::error::{line_col, ConfigError, Src};
use super::raw::RawCertificate;
use super::{values, CertificateConfig, FileKind, IssuerConfig, SwapMode};

/// Where a file path was configured, to name both sides of a clash.
struct FileUse {
    key: String,
    cert: String,
    /// Byte offset in the config text; turned into a line only for an error
    /// (counting lines for every entry made loading 10,000 entries quadratic).
    at: Option<usize>,
}

/// Convert every entry, then check names, file paths and symlink dirs across them.
pub(super) fn certificates(
    src: &Src<'_>,
    base: &Path,
    issuers: &BTreeMap<String, IssuerConfig>,
    groups: &mut super::reload_group::Resolver,
    raw: Vec<Spanned<RawCertificate>>,
) -> Result<Vec<CertificateConfig>, ConfigError> {
    // Name -> byte offset of its first definition (a line only for an error).
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut paths: HashMap<PathBuf, FileUse> = HashMap::new();
    let mut symlink_dirs: HashMap<PathBuf, FileUse> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, rc) in raw.into_iter().enumerate() {
        let at = format!("certificate[{i}]");
        let span = rc.span();
        let rc = rc.into_inner();
        unique_name(src, &at, &rc.name, &names)?;
        names.insert(rc.name.get_ref().clone(), rc.name.span().start);
        issuer_signs(src, &at, &rc.issuer, issuers)?;
        let c = entry::certificate(src, base, &at, span.clone(), groups, rc)?;
        if let Some(IssuerConfig::Acme(acme)) = issuers.get(&c.issuer) {
            super::acme::check_names(acme, &c)
                .map_err(|m| src.err(format!("{at}.dns_names"), Some(span.clone()), m))?;
        }
        claim_files(src, &at, &c, &mut paths)?;
        if c.config.swap == SwapMode::Symlink {
            claim_symlink_dir(src, &at, &c, &mut symlink_dirs)?;
        }
        out.push(c.config);
    }
    Ok(out)
}

/// The line of a byte offset in the config (0 when unknown).
fn line(src: &Src<'_>, at: Option<usize>) -> usize {
    at.map_or(0, |o| line_col(src.text, o).0)
}

/// Check `name` is valid and not taken (`names`: name → byte offset).
fn unique_name(
    src: &Src<'_>,
    at: &str,
    name: &Spanned<String>,
    names: &HashMap<String, usize>,
) -> Result<(), ConfigError> {
    value(src, &format!("{at}.name"), name, values::cert_name)?;
    if let Some(&first) = names.get(name.get_ref()) {
        let first = line(src, Some(first));
        return Err(src.err(
            format!("{at}.name"),
            Some(name.span()),
            format!("duplicate certificate name \"{}\" (first defined on line {first}); names must be unique", name.get_ref()),
        ));
    }
    Ok(())
}

/// Check `issuer` is defined and issues certificates.
fn issuer_signs(
    src: &Src<'_>,
    at: &str,
    issuer: &Spanned<String>,
    issuers: &BTreeMap<String, IssuerConfig>,
) -> Result<(), ConfigError> {
    match issuers.get(issuer.get_ref()) {
        None => {
            let defined: Vec<&str> = issuers.keys().map(String::as_str).collect();
            let msg = if defined.is_empty() {
                format!("issuer \"{}\" is not defined; no issuers are defined: add an [issuer.{}] table", issuer.get_ref(), issuer.get_ref())
            } else {
                format!(
                    "issuer \"{}\" is not defined; defined issuers: {}",
                    issuer.get_ref(),
                    defined.join(", ")
                )
            };
            Err(src.err(format!("{at}.issuer"), Some(issuer.span()), msg))
        }
        Some(i @ (IssuerConfig::HttpKeys(_) | IssuerConfig::ExecKeys(_))) => {
            let msg = format!("issuer \"{}\" is of type {}, which mints API keys only; use it from an [[api_key]]", issuer.get_ref(), i.type_name());
            Err(src.err(format!("{at}.issuer"), Some(issuer.span()), msg))
        }
        Some(_) => Ok(()),
    }
}

/// Every file must belong to exactly one credential and kind: record
/// `c`'s files in `paths`, refusing one already there.
fn claim_files(
    src: &Src<'_>,
    at: &str,
    c: &Checked,
    paths: &mut HashMap<PathBuf, FileUse>,
) -> Result<(), ConfigError> {
    for (kind, path) in c.files.entries() {
        let key = format!("{at}.files.{}", kind.as_str());
        if let Some(prev) = paths.get(path) {
            return Err(src.err(
                key,
                file_span(&c.files_spans, kind),
                format!(
                    "path {} is also used by {} (certificate \"{}\", line {}); each file needs its own path",
                    path.display(), prev.key, prev.cert, line(src, prev.at)
                ),
            ));
        }
        let at = file_span(&c.files_spans, kind).map(|s| s.start);
        let cert = c.name.clone();
        paths.insert(path.to_path_buf(), FileUse { key, cert, at });
    }
    Ok(())
}

/// With `swap = "symlink"`, `c`'s files share one directory that no other
/// symlink-swapped certificate uses (recorded in `symlink_dirs`).
fn claim_symlink_dir(
    src: &Src<'_>,
    at: &str,
    c: &Checked,
    symlink_dirs: &mut HashMap<PathBuf, FileUse>,
) -> Result<(), ConfigError> {
    let entries = c.config.files.entries();
    let Some((first_kind, first)) = entries.first() else {
        return Ok(());
    };
    let dir = first.parent().unwrap_or(Path::new(""));
    for (kind, path) in &entries[1..] {
        if path.parent().unwrap_or(Path::new("")) != dir {
            return Err(src.err(
                format!("{at}.files.{}", kind.as_str()),
                file_span(&c.files_spans, *kind),
                format!(
                    "with swap = \"symlink\" all files must be in one directory (the ..data swap is per directory), but {} is in {} and {} is in {}; move them together or use swap = \"rename\"",
                    kind.as_str(), path.parent().unwrap_or(Path::new("")).display(), first_kind.as_str(), dir.display()
                ),
            ));
        }
    }
    // Two symlink swaps in one directory would fight over `..data`.
    if let Some(prev) = symlink_dirs.get(dir) {
        return Err(src.err(
            format!("{at}.swap"),
            c.swap_span.clone(),
            format!(
                "certificate \"{}\" already uses swap = \"symlink\" in {} (line {}); give each symlink-swapped certificate its own directory",
                prev.cert, dir.display(), line(src, prev.at)
            ),
        ));
    }
    let swap_at = c.swap_span.as_ref().map(|s| s.start);
    symlink_dirs.insert(
        dir.to_path_buf(),
        FileUse {
            key: format!("{at}.swap"),
            cert: c.name.clone(),
            at: swap_at,
        },
    );
    Ok(())
}

/// A converted certificate plus the spans needed by the cross-certificate checks.
struct Checked {
    config: CertificateConfig,
    files_spans: Vec<(FileKind, Range<usize>)>,
    swap_span: Option<Range<usize>>,
}

impl std::ops::Deref for Checked {
    type Target = CertificateConfig;
    fn deref(&self) -> &CertificateConfig {
        &self.config
    }
}

/// The span of the `files.KIND` value, if it was written.
fn file_span(spans: &[(FileKind, Range<usize>)], kind: FileKind) -> Option<Range<usize>> {
    spans
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, s)| s.clone())
}

/// A free-text key (`team`, `policy_waiver`) that must not be blank when
/// written; `empty` says what to write instead.
pub(super) fn not_blank(
    src: &Src<'_>,
    key: String,
    raw: Option<&Spanned<String>>,
    empty: &str,
) -> Result<Option<String>, ConfigError> {
    match raw {
        Some(s) if s.get_ref().trim().is_empty() => Err(src.err(key, Some(s.span()), empty)),
        Some(s) => Ok(Some(s.get_ref().clone())),
        None => Ok(None),
    }
}

/// `labels`: no empty label name.
pub(super) fn labels(
    src: &Src<'_>,
    key: String,
    raw: Option<&Spanned<BTreeMap<String, Spanned<String>>>>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    if let Some(l) = raw {
        for (name, v) in l.get_ref() {
            if name.is_empty() {
                return Err(src.err(key, Some(l.span()), "a label name must not be empty"));
            }
            out.insert(name.clone(), v.get_ref().clone());
        }
    }
    Ok(out)
}
