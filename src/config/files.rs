//! `files = { ... }` of a `[[certificate]]`: which files rekey writes and
//! what each holds (PEM, DER, a PKCS#12 keystore), checked at load.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use zeroize::Zeroizing;

use super::convert::resolve;
use super::error::{ConfigError, Src};
use super::raw::RawFiles;
use crate::fs::safefile::{self, Guard};

/// The files of one certificate; relative paths are already resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Files {
    /// The leaf certificate.
    pub cert: Option<PathBuf>,
    /// The private key.
    pub key: Option<PathBuf>,
    /// The intermediates, without the leaf.
    pub chain: Option<PathBuf>,
    /// The leaf followed by the intermediates.
    pub fullchain: Option<PathBuf>,
    /// Key + fullchain in one PEM.
    pub bundle: Option<PathBuf>,
    /// The issuing CA certificate (the trust bundle, for the local CA).
    pub ca: Option<PathBuf>,
    /// The leaf certificate, DER.
    pub cert_der: Option<PathBuf>,
    /// The private key, PKCS#8 DER.
    pub key_der: Option<PathBuf>,
    /// Key, leaf and intermediates in a password-protected PKCS#12 keystore.
    pub pkcs12: Option<PathBuf>,
    /// How the PKCS#12 keystore is written; set exactly when `pkcs12` is.
    /// Boxed: most credentials have none, and every byte here is held once
    /// per credential.
    pub pkcs12_options: Option<Box<Pkcs12Options>>,
}

/// How a PKCS#12 keystore is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs12Options {
    /// The file holding the keystore password (a trailing newline is not
    /// part of it); read when a generation is staged, never kept.
    pub password_file: PathBuf,
    /// `pkcs12_legacy = true`: 3DES and SHA-1 for readers older than
    /// OpenSSL 1.1 / Java 8u301 / Windows Server 2019, instead of AES-256-CBC
    /// with PBKDF2 and HMAC-SHA-256.
    pub legacy: bool,
    /// The key entry's alias (friendly name); the credential name unless set.
    pub alias: String,
}

impl Files {
    /// Every configured (kind, path) pair, in publishing order: ca, chain,
    /// cert, cert_der, fullchain, key, key_der, bundle, pkcs12.
    pub fn entries(&self) -> Vec<(FileKind, &Path)> {
        [
            (FileKind::Ca, &self.ca),
            (FileKind::Chain, &self.chain),
            (FileKind::Cert, &self.cert),
            (FileKind::CertDer, &self.cert_der),
            (FileKind::Fullchain, &self.fullchain),
            (FileKind::Key, &self.key),
            (FileKind::KeyDer, &self.key_der),
            (FileKind::Bundle, &self.bundle),
            (FileKind::Pkcs12, &self.pkcs12),
        ]
        .into_iter()
        .filter_map(|(kind, path)| path.as_deref().map(|p| (kind, p)))
        .collect()
    }
}

/// Which file of a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// The leaf certificate.
    Cert,
    /// The private key.
    Key,
    /// The intermediates.
    Chain,
    /// Leaf + intermediates.
    Fullchain,
    /// Key + fullchain.
    Bundle,
    /// The CA certificate.
    Ca,
    /// The leaf certificate, DER.
    CertDer,
    /// The private key, PKCS#8 DER.
    KeyDer,
    /// A PKCS#12 keystore: key, leaf and intermediates.
    Pkcs12,
}

impl FileKind {
    /// The key name under `files`, e.g. "cert".
    pub fn as_str(&self) -> &'static str {
        match self {
            FileKind::Cert => "cert",
            FileKind::Key => "key",
            FileKind::Chain => "chain",
            FileKind::Fullchain => "fullchain",
            FileKind::Bundle => "bundle",
            FileKind::Ca => "ca",
            FileKind::CertDer => "cert_der",
            FileKind::KeyDer => "key_der",
            FileKind::Pkcs12 => "pkcs12",
        }
    }

    /// Whether the file holds the private key (and so gets `key_mode`).
    pub fn holds_key(&self) -> bool {
        matches!(
            self,
            FileKind::Key | FileKind::Bundle | FileKind::KeyDer | FileKind::Pkcs12
        )
    }
}

/// Why rekey writes no JKS keystore, for the config error.
const NO_JKS: &str = "rekey writes no JKS keystores: write `pkcs12` instead. Every JDK since 8u60 reads a PKCS#12 file through its JKS loader too (keystore.type.compat), JDK 9 and later use PKCS#12 by default, and `keytool -importkeystore` converts one for anything older. JKS protects keys with a SHA-1 based scheme of its own, and no well-kept Rust library writes it";

/// Where each `files` entry was written.
pub(super) type FileSpans = Vec<(FileKind, Range<usize>)>;

/// `files`: resolve the paths and the keystore settings; the key and the
/// certificate must each go somewhere. `name` is the credential's (the
/// default keystore alias).
pub(super) fn files(
    src: &Src<'_>,
    base: &Path,
    at: &str,
    name: &str,
    cert_span: Range<usize>,
    raw: Option<Spanned<RawFiles>>,
) -> Result<(Files, FileSpans), ConfigError> {
    let key = format!("{at}.files");
    let (span, raw) = match raw {
        Some(r) => (r.span(), Some(r.into_inner())),
        None => (cert_span, None),
    };
    let mut files = Files::default();
    let mut spans = Vec::new();
    if let Some(mut raw) = raw {
        if let Some(j) = &raw.jks {
            return Err(src.err(format!("{key}.jks"), Some(j.span()), NO_JKS));
        }
        let slots = [
            (FileKind::Ca, raw.ca.take(), &mut files.ca),
            (FileKind::Chain, raw.chain.take(), &mut files.chain),
            (FileKind::Cert, raw.cert.take(), &mut files.cert),
            (
                FileKind::Fullchain,
                raw.fullchain.take(),
                &mut files.fullchain,
            ),
            (FileKind::Key, raw.key.take(), &mut files.key),
            (FileKind::Bundle, raw.bundle.take(), &mut files.bundle),
            (FileKind::CertDer, raw.cert_der.take(), &mut files.cert_der),
            (FileKind::KeyDer, raw.key_der.take(), &mut files.key_der),
            (FileKind::Pkcs12, raw.pkcs12.take(), &mut files.pkcs12),
        ];
        for (kind, p, slot) in slots {
            let Some(p) = p else { continue };
            if p.get_ref().is_empty() {
                return Err(src.err(
                    format!("{key}.{}", kind.as_str()),
                    Some(p.span()),
                    "path must not be empty",
                ));
            }
            *slot = Some(resolve(base, p.get_ref()));
            spans.push((kind, p.span()));
        }
        let p12_span = spans
            .iter()
            .find(|(k, _)| *k == FileKind::Pkcs12)
            .map(|(_, s)| s.clone());
        files.pkcs12_options =
            pkcs12_options(src, base, &key, name, &files, p12_span, raw)?.map(Box::new);
    }
    let mut missing = Vec::new();
    let f = &files;
    if [&f.key, &f.bundle, &f.key_der, &f.pkcs12]
        .iter()
        .all(|p| p.is_none())
    {
        missing
            .push("the private key is written nowhere: set `key`, `bundle`, `key_der` or `pkcs12`");
    }
    if [&f.cert, &f.fullchain, &f.bundle, &f.cert_der, &f.pkcs12]
        .iter()
        .all(|p| p.is_none())
    {
        missing.push("the certificate is written nowhere: set `cert`, `fullchain`, `bundle`, `cert_der` or `pkcs12`");
    }
    if !missing.is_empty() {
        return Err(src.err(key, Some(span), missing.join("; ")));
    }
    Ok((files, spans))
}

/// `pkcs12_password`, `pkcs12_legacy` and `pkcs12_alias`: required (the
/// password) with `pkcs12` and refused without it. The password file is read
/// once here, through the secret-file rules, so a missing, unreadable or
/// empty one stops the load with its key named.
fn pkcs12_options(
    src: &Src<'_>,
    base: &Path,
    key: &str,
    name: &str,
    files: &Files,
    p12_span: Option<Range<usize>>,
    raw: RawFiles,
) -> Result<Option<Pkcs12Options>, ConfigError> {
    let Some(p12) = &files.pkcs12 else {
        let stray = [
            (
                "pkcs12_password",
                raw.pkcs12_password.as_ref().map(Spanned::span),
            ),
            (
                "pkcs12_legacy",
                raw.pkcs12_legacy.as_ref().map(Spanned::span),
            ),
            ("pkcs12_alias", raw.pkcs12_alias.as_ref().map(Spanned::span)),
        ];
        if let Some((k, sp)) = stray.into_iter().find(|(_, sp)| sp.is_some()) {
            return Err(src.err(
                format!("{key}.{k}"),
                sp,
                format!(
                    "{k} belongs to a PKCS#12 keystore: set `pkcs12 = \"PATH\"` too, or remove it"
                ),
            ));
        }
        return Ok(None);
    };
    let pkey = format!("{key}.pkcs12_password");
    let example = "write it like pkcs12_password = { file = \"/etc/rekey/keystore-password\" }; the password itself never goes in the config";
    let Some(pw) = raw.pkcs12_password else {
        return Err(src.err(
            pkey,
            p12_span,
            format!("required with pkcs12 ({}): {example}", p12.display()),
        ));
    };
    let pw_span = pw.span();
    let file = match pw.into_inner() {
        toml::Value::Table(mut t) if t.len() == 1 => match t.remove("file") {
            Some(toml::Value::String(f)) if !f.is_empty() => resolve(base, &f),
            _ => return Err(src.err(pkey, Some(pw_span), example)),
        },
        _ => return Err(src.err(pkey, Some(pw_span), example)),
    };
    let fkey = format!("{pkey}.file");
    check_password_file(&file, &fkey).map_err(|m| src.err(fkey, Some(pw_span), m))?;
    let alias = match raw.pkcs12_alias {
        Some(a) if a.get_ref().trim().is_empty() => {
            return Err(src.err(
                format!("{key}.pkcs12_alias"),
                Some(a.span()),
                "must not be empty; leave it out to use the credential name",
            ))
        }
        Some(a) => a.into_inner(),
        None => name.to_string(),
    };
    Ok(Some(Pkcs12Options {
        password_file: file,
        legacy: raw.pkcs12_legacy.is_some_and(|l| *l.get_ref()),
        alias,
    }))
}

/// The load-time check of the password file: readable under the secret
/// rules and not empty. The password is dropped (zeroized) at once.
fn check_password_file(path: &Path, key: &str) -> Result<(), String> {
    read_keystore_password(path, key)
        .map(drop)
        .map_err(|reason| format!("{key}: {reason}"))
}

/// Read the keystore password from `path` (a secret file: refused when
/// others can write it, a WARN when others can read it), without a trailing
/// newline; the error says what is wrong and what to do (`key` names the
/// setting). `crate::keystore::read_password` reads it through this when
/// a generation is staged.
pub fn read_keystore_password(path: &Path, key: &str) -> Result<Zeroizing<String>, String> {
    let bytes = safefile::read_guarded(path, key, Guard::Secret, safefile::MAX_SECRET)
        .map_err(|e| e.to_string())?;
    let mut text = safefile::text(path, bytes).map_err(|e| e.to_string())?;
    let keep = text.trim_end_matches(['\r', '\n']).len();
    text.truncate(keep);
    if text.is_empty() {
        return Err(format!(
            "{} is empty; put the keystore password in it (a trailing newline is ignored)",
            path.display()
        ));
    }
    Ok(text)
}
