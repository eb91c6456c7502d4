//! Apps that are not nginx, each against its real reader or server on
//! loopback: PKCS#12 keystores and DER files read by OpenSSL and Java's
//! keytool; STARTTLS verification against a real PostgreSQL, a real Postfix
//! and a real slapd, with rotations verified and a withheld reload rolled
//! back. What the servers serve is read independently with
//! `openssl s_client -starttls`, not with rekey's probe.

use crate::support as common;
mod keystores;
mod servers;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use rekey::status::{CredentialStatus, Handoff, RotateOutcome, RotateResult};

/// Run a program; its output.
pub(crate) fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()))
}

pub(crate) fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

/// The credential's status once it is valid (first issuance done).
pub(crate) fn valid(env: &Env, name: &str) -> CredentialStatus {
    wait_valid(env.addr, name, Duration::from_secs(20))
}

/// The `/status` object of a credential once `handoff` is `want`.
fn handoff_is(env: &Env, name: &str, want: Handoff, within: Duration) -> CredentialStatus {
    wait_for(within, &format!("{name} handoff {want:?}"), || {
        cred(env.addr, name).filter(|s| s.handoff == want)
    })
}

/// Rotate `name` on the admin socket; the reply's JSON.
fn rotate(d: &Daemon, name: &str) -> RotateOutcome {
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
        let before = cred(env.addr, name).unwrap().fingerprint;
        let out = rotate(d, name);
        assert_eq!(out.result, RotateResult::Success, "{out:?}");
        let s = handoff_is(env, name, Handoff::Verified, Duration::from_secs(5));
        assert_ne!(s.fingerprint, before);
        assert_eq!(served(), s.fingerprint, "served independently");
    }
    let committed = cred(env.addr, name).unwrap().fingerprint.unwrap();
    std::fs::write(hold, "").unwrap();
    let out = rotate(d, name);
    std::fs::remove_file(hold).unwrap();
    assert_eq!(out.result, RotateResult::RolledBack, "{out:?}");
    let err = out.error.unwrap_or_default();
    assert!(
        err.contains(&format!("app still serves {committed}")),
        "{err}"
    );
    let s = cred(env.addr, name).unwrap();
    assert_eq!(s.fingerprint.as_deref(), Some(committed.as_str()));
    assert_eq!(s.handoff, Handoff::Failed);
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
            cred(env.addr, "db").filter(|s| {
                s.handoff_reason
                    .as_deref()
                    .is_some_and(|r| r.contains("does not offer TLS"))
            })
        },
    );
    assert_ne!(s.handoff, Handoff::Verified, "{s:?}");
    server.enable_ssl();
    handoff_is(&env, "db", Handoff::Verified, Duration::from_secs(40));
    let served = || servers::served_starttls(&openssl, addr, "postgres");
    assert_eq!(served(), cred(env.addr, "db").unwrap().fingerprint);
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
    handoff_is(&env, "mx", Handoff::Verified, Duration::from_secs(40));
    let served = || servers::served_starttls(&openssl, addr, "smtp");
    assert_eq!(served(), cred(env.addr, "mx").unwrap().fingerprint);
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
        cred(env.addr, "ldap")
            .filter(|s| s.watch.as_ref().is_some_and(|w| !w.certificates.is_empty()))
    });
    assert_eq!(
        s.watch.unwrap().certificates[0].fingerprint,
        ldap.fingerprint.as_str()
    );
    let s = wait_for(
        Duration::from_secs(20),
        "the plain server's verdict",
        || cred(env.addr, "plain").filter(|s| s.last_error.is_some()),
    );
    let err = s.last_error.unwrap();
    assert!(
        err.contains("does not offer TLS") && err.contains("StartTLS answered result code"),
        "{err}"
    );
}
