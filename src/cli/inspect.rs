//! `rekey inspect FILE...`: the certificates and keys in files, and whether
//! the keys match. Reads the files, changes nothing.

use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use crate::cert::{self, CertInfo};

/// `rekey inspect`: 0 when every file was read, 1 (with the text on stderr) otherwise.
pub fn command(files: &[impl AsRef<Path>]) -> ExitCode {
    match inspect(files, SystemTime::now()) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(text) => {
            eprintln!("{text}");
            ExitCode::from(1)
        }
    }
}

fn describe_cert(out: &mut String, info: &CertInfo, now: SystemTime) {
    let _ = writeln!(out, "  subject:     {}", info.subject);
    let mut sans: Vec<String> = info.dns_names.clone();
    sans.extend(info.ip_addresses.iter().map(|i| i.to_string()));
    let _ = writeln!(out, "  names:       {}", sans.join(", "));
    let _ = writeln!(out, "  issuer:      {}", info.issuer);
    let left = match info.not_after.duration_since(now) {
        Ok(d) => format!(
            "{} left",
            humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
        ),
        Err(_) => "EXPIRED".to_string(),
    };
    let _ = writeln!(
        out,
        "  validity:    {} .. {} ({left})",
        crate::timestamp::rfc3339(info.not_before),
        crate::timestamp::rfc3339(info.not_after)
    );
    let _ = writeln!(out, "  serial:      {}", info.serial);
    let _ = writeln!(out, "  fingerprint: {}", info.fingerprint);
    let _ = writeln!(
        out,
        "  key:         {}{}",
        info.key_type,
        if info.is_ca { " (CA)" } else { "" }
    );
}

/// `rekey inspect FILE...`: every certificate and key in the files, and
/// whether each key matches each certificate. Err lists unreadable files.
pub fn inspect(files: &[impl AsRef<Path>], now: SystemTime) -> Result<String, String> {
    let mut out = String::new();
    let mut certs: Vec<(String, CertInfo)> = Vec::new();
    let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        let path = f.as_ref();
        let shown = path.display().to_string();
        // Never blocks on a FIFO, refuses devices, reads at most MAX_READ.
        let bytes = match crate::fs::safefile::read(path) {
            Ok(b) => b,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            // A chain file is empty when the issuer has no intermediates.
            let _ = writeln!(out, "{shown}: empty");
            continue;
        }
        let ders = cert::pem_certs(&bytes, &shown).unwrap_or_default();
        for (i, der) in ders.iter().enumerate() {
            match cert::parse_der(der) {
                Ok(info) => {
                    let _ = writeln!(out, "{shown}: certificate #{}", i + 1);
                    describe_cert(&mut out, &info, now);
                    certs.push((format!("{shown} #{}", i + 1), info));
                }
                Err(e) => errors.push(format!("{shown}: certificate #{}: {e}", i + 1)),
            }
        }
        if let Some(pem) = cert::pem_private_key(&bytes) {
            match cert::load_key(&pem, &shown) {
                Ok(k) => {
                    let _ = writeln!(out, "{shown}: private key ({})", key_kind(&k));
                    keys.push((shown.clone(), k.public_key()));
                }
                Err(e) => errors.push(e.to_string()),
            }
        } else if ders.is_empty() {
            errors.push(format!(
                "{shown}: no certificate or private key PEM block found"
            ));
        }
    }
    for (kname, kpub) in &keys {
        for (cname, info) in certs.iter().filter(|(_, i)| !i.is_ca) {
            let verdict = if &info.public_key == kpub {
                "MATCHES"
            } else {
                "does NOT match"
            };
            let _ = writeln!(out, "key {kname} {verdict} certificate {cname}");
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(format!("{out}{}", errors.join("\n")))
    }
}

fn key_kind(k: &cert::PrivateKey) -> &'static str {
    let alg = k.pair().algorithm();
    if alg == &rcgen::PKCS_ED25519 {
        "ed25519"
    } else if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        "ecdsa-p256"
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        "ecdsa-p384"
    } else {
        "rsa"
    }
}
