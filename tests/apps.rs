//! Apps that are not nginx, each against its real reader or server on
//! loopback: PKCS#12 keystores and DER files read by OpenSSL and Java's
//! keytool; STARTTLS verification against a real PostgreSQL, a real Postfix
//! and a real slapd, with rotations verified and a withheld reload rolled
//! back. What the servers serve is read independently with
//! `openssl s_client -starttls`, not with rekey's probe.

mod common;
#[path = "apps/servers.rs"]
mod servers;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// Run a program; its output.
fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()))
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

/// The `sha256:` fingerprint of the first certificate in PEM `text`.
fn fp_of_pem(text: &str) -> String {
    let ders = rekey::cert::pem_certs(text.as_bytes(), "pem").unwrap();
    rekey::cert::fingerprint(&ders[0])
}

/// `AB:CD:..` as printed by openssl and keytool, to `sha256:abcd..`.
fn fp_of_colons(s: &str) -> String {
    format!("sha256:{}", s.trim().replace(':', "").to_ascii_lowercase())
}

/// The credential's status once it is valid (first issuance done).
fn valid(env: &Env, name: &str) -> serde_json::Value {
    wait_for(Duration::from_secs(20), &format!("{name} valid"), || {
        cred_status(env.addr, name).filter(|s| s["state"] == "valid")
    })
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
    let fp = valid(&env, "web")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let old_fp = valid(&env, "old")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();

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
    let fp2 = cred_status(env.addr, "web").unwrap()["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
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
            let passin = format!("pass:another-pass");
            let o = run(
                &openssl,
                &[
                    "pkcs12",
                    "-in",
                    web.join("web.p12").to_str().unwrap(),
                    "-passin",
                    &passin,
                    "-noout",
                ],
            );
            o.status.success().then_some(())
        },
    );
    assert_eq!(
        openssl_reads(&openssl, &web.join("web.p12"), &pw).0,
        fp2,
        "same generation"
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

/// The `/status` object of a credential once `handoff` is `want`.
fn handoff_is(env: &Env, name: &str, want: &str, within: Duration) -> serde_json::Value {
    wait_for(within, &format!("{name} handoff {want}"), || {
        cred_status(env.addr, name).filter(|s| s["handoff"] == want)
    })
}

/// Rotate `name` on the admin socket; the reply's JSON.
fn rotate(d: &Daemon, name: &str) -> serde_json::Value {
    let (code, body) = d.post(&format!("/v1/rotate/{name}")).unwrap();
    assert!(matches!(code, 200 | 502), "{code} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A certificate `name` for a server at `addr` speaking `proto`, whose
/// files are owned by `owner` and reloaded by `reload` (argv, TOML).
fn starttls_cert(
    name: &str,
    dir: &Path,
    addr: std::net::SocketAddr,
    proto: &str,
    owner: &str,
    reload: &str,
) -> String {
    format!(
        "[[certificate]]\nname = \"{name}\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\nowner = \"{owner}\"\nlifetime = \"1h\"\n\
         files = {{ fullchain = \"{d}/fullchain.pem\", key = \"{d}/key.pem\" }}\n\
         reload = {{ type = \"exec\", command = {reload}, timeout = \"20s\" }}\n\
         verify = {{ type = \"tls\", connect = \"{addr}\", server_name = \"localhost\", starttls = \"{proto}\", timeout = \"6s\" }}\n",
        d = dir.display()
    )
}

/// The gate a test closes to withhold a reload: the reload command exits 0
/// without telling the app while `hold` exists (a broken reload script).
fn gated(hold: &Path, argv: &[&str]) -> String {
    let cmd = argv
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "[\"/bin/sh\", \"-c\", \"[ -e '{}' ] && exit 0; exec {}\"]",
        hold.display(),
        cmd.replace('"', "\\\"")
    )
}

/// Rotations verified against a real server, then a withheld reload rolled
/// back: the server keeps serving the committed certificate.
fn rotate_verify_and_roll_back(
    env: &Env,
    d: &Daemon,
    name: &str,
    hold: &Path,
    served: impl Fn() -> Option<String>,
) {
    for _ in 0..2 {
        let before = cred_status(env.addr, name).unwrap()["fingerprint"].clone();
        let out = rotate(d, name);
        assert_eq!(out["result"], "success", "{out}");
        let s = handoff_is(env, name, "verified", Duration::from_secs(5));
        assert_ne!(s["fingerprint"], before);
        assert_eq!(
            served().as_deref(),
            s["fingerprint"].as_str(),
            "served independently"
        );
    }
    let committed = cred_status(env.addr, name).unwrap()["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(hold, "").unwrap();
    let out = rotate(d, name);
    std::fs::remove_file(hold).unwrap();
    assert_eq!(out["result"], "rolled_back", "{out}");
    let err = out["error"].as_str().unwrap_or_default();
    assert!(
        err.contains(&format!("app still serves {committed}")),
        "{err}"
    );
    let s = cred_status(env.addr, name).unwrap();
    assert_eq!(s["fingerprint"], committed.as_str());
    assert_eq!(s["handoff"], "failed");
    assert_eq!(
        served().as_deref(),
        Some(committed.as_str()),
        "the server kept the committed certificate"
    );
}

#[test]
fn postgres_rotations_are_verified_through_sslrequest_and_a_withheld_reload_rolls_back() {
    let Some(pg) = servers::Postgres::find() else {
        return;
    };
    let Some(openssl) = live_binary("openssl", "Debian package openssl") else {
        return;
    };
    let env = Env::new();
    servers::open_to_all(env.dir.path());
    let tls = env.path("tls/db");
    let data = env.path("pgdata");
    let hold = env.path("hold");
    let addr = free_addr();
    let reload = gated(
        &hold,
        &[
            "runuser",
            "-u",
            "postgres",
            "--",
            pg.pg_ctl.to_str().unwrap(),
            "reload",
            "-s",
            "-D",
            data.to_str().unwrap(),
        ],
    );
    env.write_config(&starttls_cert(
        "db", &tls, addr, "postgres", "postgres", &reload,
    ));
    // rekey first: the server needs its files to start with ssl = on.
    let d = env.start();
    valid(&env, "db");
    assert_eq!(mode(&tls.join("key.pem")), 0o600);
    // PostgreSQL without TLS at first: the handoff says the server does not offer it.
    let server = pg.start(&data, addr, &tls, false);
    let s = wait_for(
        Duration::from_secs(30),
        "the probe's verdict on a server without TLS",
        || {
            cred_status(env.addr, "db").filter(|s| {
                s["handoff_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("does not offer TLS"))
            })
        },
    );
    assert_ne!(s["handoff"], "verified", "{s}");
    server.enable_ssl();
    handoff_is(&env, "db", "verified", Duration::from_secs(40));
    let served = || servers::served_starttls(&openssl, addr, "postgres");
    assert_eq!(
        served().as_deref(),
        cred_status(env.addr, "db").unwrap()["fingerprint"].as_str()
    );
    rotate_verify_and_roll_back(&env, &d, "db", &hold, served);
}

#[test]
fn postfix_rotations_are_verified_through_starttls_and_a_withheld_reload_rolls_back() {
    let Some(postfix) = live_binary("postfix", "Debian package postfix") else {
        return;
    };
    let Some(openssl) = live_binary("openssl", "Debian package openssl") else {
        return;
    };
    let env = Env::new();
    servers::open_to_all(env.dir.path());
    let tls = env.path("tls/mx");
    let conf = env.path("postfix/conf");
    let hold = env.path("hold");
    let addr = free_addr();
    let reload = gated(
        &hold,
        &[
            postfix.to_str().unwrap(),
            "-c",
            conf.to_str().unwrap(),
            "reload",
        ],
    );
    env.write_config(&starttls_cert("mx", &tls, addr, "smtp", "root", &reload));
    let d = env.start();
    valid(&env, "mx");
    let _mx = servers::Postfix::start(&postfix, &env.path("postfix"), addr, &tls);
    // The first generation reaches Postfix at its start, before any reload.
    handoff_is(&env, "mx", "verified", Duration::from_secs(40));
    let served = || servers::served_starttls(&openssl, addr, "smtp");
    assert_eq!(
        served().as_deref(),
        cred_status(env.addr, "mx").unwrap()["fingerprint"].as_str()
    );
    rotate_verify_and_roll_back(&env, &d, "mx", &hold, served);
}

#[test]
fn an_endpoint_watch_reads_slapd_through_ldap_starttls() {
    let Some(slapd) = live_binary("slapd", "Debian package slapd") else {
        return;
    };
    let env = Env::new();
    servers::open_to_all(env.dir.path());
    let addr = free_addr();
    let ldap = servers::Slapd::start(&slapd, &env.path("ldap"), addr);
    let no_tls = free_addr();
    let _plain = servers::Slapd::start_without_tls(&slapd, &env.path("ldap-plain"), no_tls);
    env.write_config(&format!(
        "[[watch]]\nname = \"ldap\"\nendpoint = \"{addr}\"\nserver_name = \"localhost\"\nstarttls = \"ldap\"\n\n\
         [[watch]]\nname = \"plain\"\nendpoint = \"{no_tls}\"\nstarttls = \"ldap\"\n"
    ));
    let _d = env.start();
    let s = wait_for(Duration::from_secs(20), "the watch's first probe", || {
        cred_status(env.addr, "ldap").filter(|s| {
            s["watch"]["certificates"]
                .as_array()
                .is_some_and(|c| !c.is_empty())
        })
    });
    assert_eq!(
        s["watch"]["certificates"][0]["fingerprint"],
        ldap.fingerprint.as_str()
    );
    let s = wait_for(
        Duration::from_secs(20),
        "the plain server's verdict",
        || cred_status(env.addr, "plain").filter(|s| s["last_error"].is_string()),
    );
    let err = s["last_error"].as_str().unwrap();
    assert!(
        err.contains("does not offer TLS") && err.contains("StartTLS answered result code"),
        "{err}"
    );
}
