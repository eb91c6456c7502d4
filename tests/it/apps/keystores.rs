//! PKCS#12 keystores and DER files read by real readers: OpenSSL and
//! Java's keytool (as PKCS12 and through its JKS loader).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::common::*;
use super::{run, text, valid};

/// The `sha256:` fingerprint of the first certificate in PEM `text`.
fn fp_of_pem(text: &str) -> String {
    let ders = rekey::cert::pem_certs(text.as_bytes(), "pem").unwrap();
    rekey::cert::fingerprint(&ders[0])
}

/// `AB:CD:..` as printed by openssl and keytool, to `sha256:abcd..`.
fn fp_of_colons(s: &str) -> String {
    format!("sha256:{}", s.trim().replace(':', "").to_ascii_lowercase())
}

/// What OpenSSL finds in a PKCS#12 file with the password in `pw`: the
/// leaf's fingerprint, whether the key matches it, and `-info`'s report.
fn openssl_reads(openssl: &Path, p12: &Path, pw: &Path) -> (String, bool, String) {
    let passin = format!("file:{}", pw.display());
    let p = p12.to_str().unwrap();
    let certs = run(
        openssl,
        &[
            "pkcs12", "-in", p, "-passin", &passin, "-nokeys", "-clcerts",
        ],
    );
    assert!(
        certs.status.success(),
        "openssl pkcs12 -nokeys: {}",
        text(&certs)
    );
    let keys = run(
        openssl,
        &["pkcs12", "-in", p, "-passin", &passin, "-nocerts", "-nodes"],
    );
    assert!(
        keys.status.success(),
        "openssl pkcs12 -nocerts: {}",
        text(&keys)
    );
    let (fp, matches) = pair_bytes(&certs.stdout, &keys.stdout).unwrap();
    let info = run(
        openssl,
        &["pkcs12", "-in", p, "-passin", &passin, "-info", "-noout"],
    );
    assert!(
        info.status.success(),
        "openssl pkcs12 -info: {}",
        text(&info)
    );
    (fp, matches, text(&info))
}

/// What keytool lists in `p12` as `storetype`: alias, entry type, fingerprint.
fn keytool_lists(keytool: &Path, p12: &Path, pw: &Path, storetype: &str) -> String {
    let out = run(
        keytool,
        &[
            "-list",
            "-v",
            "-keystore",
            p12.to_str().unwrap(),
            "-storetype",
            storetype,
            "-storepass:file",
            pw.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "keytool -list: {}", text(&out));
    text(&out)
}

/// The SHA-256 fingerprint keytool prints for the entry's first certificate.
fn keytool_fp(listing: &str) -> String {
    let line = listing
        .lines()
        .find_map(|l| l.trim().strip_prefix("SHA256:"))
        .unwrap_or_else(|| panic!("no SHA256 line in {listing}"));
    fp_of_colons(line)
}

#[test]
fn keystores_and_der_files_are_read_by_openssl_and_keytool_and_rotate_with_the_set() {
    let Some(openssl) = live_binary("openssl", "Debian package openssl") else {
        return;
    };
    let Some(keytool) = live_binary("keytool", "Debian package openjdk-17-jre-headless") else {
        return;
    };
    let env = Env::new();
    let pw = env.path("p12-pass");
    std::fs::write(&pw, "change-it-now\n").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (web, old) = (env.path("tls/web"), env.path("tls/old"));
    env.write_config(&format!(
        "[[certificate]]\nname = \"web\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\n\
         files = {{ cert = \"{w}/cert.pem\", cert_der = \"{w}/cert.der\", key_der = \"{w}/key.der\", pkcs12 = \"{w}/web.p12\", pkcs12_password = {{ file = \"{pw}\" }} }}\n\n\
         [[certificate]]\nname = \"old\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\nkey_type = \"rsa-2048\"\nswap = \"symlink\"\n\
         files = {{ pkcs12 = \"{o}/old.p12\", pkcs12_password = {{ file = \"{pw}\" }}, pkcs12_legacy = true, pkcs12_alias = \"tomcat\" }}\n",
        w = web.display(),
        o = old.display(),
        pw = pw.display(),
    ));
    let d = env.start();
    let fp = valid(&env, "web").fingerprint.unwrap();
    let old_fp = valid(&env, "old").fingerprint.unwrap();

    // Modern profile: AES-256-CBC with PBKDF2/HMAC-SHA-256, MAC SHA-256.
    let (p12_fp, matches, info) = openssl_reads(&openssl, &web.join("web.p12"), &pw);
    assert_eq!((p12_fp.as_str(), matches), (fp.as_str(), true));
    assert!(
        info.contains("PBES2, PBKDF2, AES-256-CBC") && info.contains("hmacWithSHA256"),
        "{info}"
    );
    assert!(info.contains("MAC: sha256"), "{info}");
    // Legacy profile, for old readers: 3DES and SHA-1.
    let (p12_fp, matches, info) = openssl_reads(&openssl, &old.join("old.p12"), &pw);
    assert_eq!((p12_fp.as_str(), matches), (old_fp.as_str(), true));
    assert!(
        info.contains("pbeWithSHA1And3-KeyTripleDES-CBC") && info.contains("MAC: sha1"),
        "{info}"
    );
    // A wrong password is refused by the reader.
    let bad = run(
        &openssl,
        &[
            "pkcs12",
            "-in",
            web.join("web.p12").to_str().unwrap(),
            "-passin",
            "pass:wrong",
            "-noout",
        ],
    );
    assert!(
        !bad.status.success() && text(&bad).contains("Mac verify error"),
        "{}",
        text(&bad)
    );

    // Java reads both, as PKCS12 and through its JKS loader (keystore.type.compat).
    for storetype in ["PKCS12", "JKS"] {
        let l = keytool_lists(&keytool, &web.join("web.p12"), &pw, storetype);
        assert!(
            l.contains("Alias name: web") && l.contains("Entry type: PrivateKeyEntry"),
            "{l}"
        );
        assert_eq!(keytool_fp(&l), fp);
        let l = keytool_lists(&keytool, &old.join("old.p12"), &pw, storetype);
        assert!(l.contains("Alias name: tomcat"), "{l}");
        assert_eq!(keytool_fp(&l), old_fp);
    }

    // DER: the leaf, and the key (PKCS#8) that belongs to it.
    let der_fp = run(
        &openssl,
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            web.join("cert.der").to_str().unwrap(),
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
    );
    let printed = text(&der_fp);
    assert_eq!(fp_of_colons(printed.split('=').nth(1).unwrap()), fp);
    let pubkey_der = run(
        &openssl,
        &[
            "pkey",
            "-inform",
            "DER",
            "-in",
            web.join("key.der").to_str().unwrap(),
            "-pubout",
        ],
    );
    let pubkey_cert = run(
        &openssl,
        &[
            "x509",
            "-in",
            web.join("cert.pem").to_str().unwrap(),
            "-pubkey",
            "-noout",
        ],
    );
    assert!(pubkey_der.status.success(), "{}", text(&pubkey_der));
    assert_eq!(pubkey_der.stdout, pubkey_cert.stdout);
    // The keystore and the DER key get key_mode, the DER cert cert_mode.
    assert_eq!(mode(&web.join("web.p12")), 0o600);
    assert_eq!(mode(&web.join("key.der")), 0o600);
    assert_eq!(mode(&web.join("cert.der")), 0o644);

    // A rotation replaces the keystore with the rest of the set.
    let (code, body) = d.post("/v1/rotate/web").unwrap();
    assert_eq!(code, 200, "{body}");
    let fp2 = cred(env.addr, "web").unwrap().fingerprint.unwrap();
    assert_ne!(fp2, fp);
    assert_eq!(
        fp_of_pem(&std::fs::read_to_string(web.join("cert.pem")).unwrap()),
        fp2
    );
    assert_eq!(openssl_reads(&openssl, &web.join("web.p12"), &pw).0, fp2);
    let l = keytool_lists(&keytool, &web.join("web.p12"), &pw, "PKCS12");
    assert_eq!(keytool_fp(&l), fp2);

    // Encoded once per generation: a restart neither re-encodes nor calls
    // the keystore (whose salt is random) tampered.
    let p12 = std::fs::read(web.join("web.p12")).unwrap();
    let legacy_p12 = std::fs::read(old.join("old.p12")).unwrap();
    drop(d);
    let d = env.start();
    valid(&env, "web");
    valid(&env, "old");
    assert!(
        std::fs::read(web.join("web.p12")).unwrap() == p12,
        "the keystore was re-encoded at start"
    );
    assert!(
        std::fs::read(old.join("old.p12")).unwrap() == legacy_p12,
        "the legacy keystore was re-encoded at start"
    );
    assert!(!env.log().contains("event=\"tampered\""), "{}", env.log());

    // A keystore changed behind rekey's back gets its staged bytes back.
    std::fs::write(web.join("web.p12"), b"not a keystore").unwrap();
    wait_for(Duration::from_secs(20), "the keystore restored", || {
        (std::fs::read(web.join("web.p12")).ok()? == p12).then_some(())
    });
    assert!(env.log().contains("event=\"tampered\""), "{}", env.log());

    // A new password: the next start encodes the keystore again for it.
    std::fs::write(&pw, "another-pass").unwrap();
    drop(d);
    let _d = env.start();
    valid(&env, "web");
    wait_for(
        Duration::from_secs(20),
        "the keystore encoded for the new password",
        || {
            let o = run(
                &openssl,
                &[
                    "pkcs12",
                    "-in",
                    web.join("web.p12").to_str().unwrap(),
                    "-passin",
                    "pass:another-pass",
                    "-noout",
                ],
            );
            o.status.success().then_some(())
        },
    );
    assert_eq!(
        openssl_reads(&openssl, &web.join("web.p12"), &pw).0,
        fp2,
        "the same certificate, in a new generation"
    );
    assert!(env.log().contains("keystore_encoded"), "{}", env.log());

    // No password file: the config does not load, and says which key.
    std::fs::remove_file(&pw).unwrap();
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(env.path("rekey.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("certificate[0].files.pkcs12_password.file"),
        "{}",
        text(&out)
    );
}
