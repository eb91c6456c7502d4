//! Security checks on the real daemon: file and directory modes; no secret
//! (private key PEM, CA key, admin token, alert header secrets) in trace
//! logs, /status, /metrics or alerts; the endpoint binds loopback by
//! default and enforces the admin token; exec commands get no shell; TLS
//! to an issuer with an untrusted certificate is refused.

use crate::support as common;
use crate::support::alert as support;
use crate::support::pebble as acme_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::invariants::{self as inv, Cred};
use common::scorecard::Scenario;
use common::*;
use rekey::status::{Handoff, State};

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0)
}

/// Base64 body lines of every PEM private key in `text`.
fn key_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("-----BEGIN") && line.contains("PRIVATE KEY") {
            inside = true;
        } else if line.starts_with("-----END") {
            inside = false;
        } else if inside && line.trim().len() >= 16 {
            out.push(line.trim().to_string());
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn modes_and_no_secret_anywhere() {
    let mut sc = Scenario::new(
        "security",
        "modes; no secret in logs (trace), /status, /metrics, alerts",
    );
    let env = Env::new();
    let hook = support::Receiver::start(Some(200));
    let token = "admin-token-3f9c1e7d0b2a4c6e8f10";
    let header_secret = "hdr-secret-9a8b7c6d5e4f3a2b1c0d";
    let inline_secret = "inline-secret-0f1e2d3c4b5a6978";
    std::fs::write(env.path("token"), format!("{token}\n")).unwrap();
    std::fs::write(env.path("hook-secret"), format!("{header_secret}\n")).unwrap();
    let d = env.path("tls/web");
    env.write_config(&format!(
        "[[certificate]]\nname = \"web\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\nlifetime = \"1h\"\n\
         files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\", fullchain = \"{d}/fullchain.pem\", ca = \"{d}/ca.pem\" }}\n\
         [[certificate]]\nname = \"api\"\nissuer = \"dev\"\ndns_names = [\"api.localhost\"]\nkey_type = \"rsa-2048\"\nswap = \"symlink\"\nlifetime = \"1h\"\n\
         files = {{ bundle = \"{e}/bundle.pem\" }}\n\
         [[alert]]\ntype = \"webhook\"\nurl = \"{u}\"\nheaders = {{ Authorization = {{ file = \"{h}\" }}, X-Inline = \"{inline_secret}\" }}\n",
        d = d.display(),
        e = env.path("tls/api").display(),
        u = hook.url("/hook"),
        h = env.path("hook-secret").display(),
    ));
    let text = std::fs::read_to_string(env.path("rekey.toml"))
        .unwrap()
        .replace(
            "[daemon]\n",
            &format!(
                "[daemon]\nadmin_token_file = \"{}\"\n",
                env.path("token").display()
            ),
        );
    std::fs::write(env.path("rekey.toml"), text).unwrap();
    let daemon = env.start_with_env(&[("REKEY_LOG", "trace")]);
    sc.round();
    let c = Cred::under(env.dir.path(), "web");
    inv::converges(
        daemon.addr,
        &c,
        &[Handoff::Unverified],
        Duration::from_secs(15),
    )
    .unwrap();
    wait_valid(daemon.addr, "api", Duration::from_secs(15));
    // A rotation with the token, and a tampered file so alerts go out.
    let rotate = Command::new(bin())
        .args([
            "rotate",
            "web",
            "--addr",
            &daemon.addr.to_string(),
            "--token-file",
        ])
        .arg(env.path("token"))
        .output()
        .unwrap();
    sc.check("rotation with the token", rotate.status.success(), || {
        String::from_utf8_lossy(&rotate.stderr).into_owned()
    });
    std::fs::write(&c.key, "tampered\n").unwrap();
    wait_for(Duration::from_secs(10), "the tampered alert", || {
        hook.requests()
            .iter()
            .any(|r| r.json()["event"] == "tampered")
            .then_some(())
    });
    wait_for(Duration::from_secs(10), "restore", || {
        inv::pair_matches(&c).ok()
    });

    // Modes.
    let state = env.path("state");
    sc.check("state dir 0700", mode_of(&state) == 0o700, || {
        format!("{:o}", mode_of(&state))
    });
    let mut files = Vec::new();
    walk(&state, &mut files);
    for f in &files {
        let m = mode_of(f);
        let name = f.file_name().unwrap().to_string_lossy();
        if f.is_dir() {
            continue;
        }
        if name.ends_with(".key")
            || name == "key.pem"
            || name == "journal.json"
            || f.starts_with(state.join("certs"))
        {
            sc.check("state files 0600", m & 0o077 == 0, || {
                format!("{} is {m:o}", f.display())
            });
        }
    }
    let mut dirs = vec![state.clone()];
    for f in &files {
        let mut p = f.parent();
        while let Some(d) = p {
            if d.starts_with(&state) && !dirs.contains(&d.to_path_buf()) {
                dirs.push(d.to_path_buf());
            }
            p = d.parent();
        }
    }
    for dir in &dirs {
        sc.check("state dirs 0700", mode_of(dir) == 0o700, || {
            format!("{} is {:o}", dir.display(), mode_of(dir))
        });
    }
    sc.check("published key 0600", mode_of(&c.key) == 0o600, || {
        format!("{:o}", mode_of(&c.key))
    });
    sc.check("published cert 0644", mode_of(&c.cert) == 0o644, || {
        format!("{:o}", mode_of(&c.cert))
    });
    let bundle = env.path("tls/api/..data/bundle.pem");
    sc.check(
        "bundle (holds a key) 0600",
        mode_of(&bundle) == 0o600,
        || format!("{:o}", mode_of(&bundle)),
    );

    // Secrets: every key body under state/ and tls/, the token, header values.
    let mut secrets: Vec<String> = vec![token.into(), header_secret.into(), inline_secret.into()];
    let mut all = Vec::new();
    walk(env.dir.path(), &mut all);
    for f in all.iter().filter(|f| !f.ends_with("daemon.log")) {
        if let Ok(t) = std::fs::read_to_string(f) {
            secrets.extend(key_lines(&t));
        }
    }
    let ca_key = state.join("ca/dev/ca.key");
    sc.check(
        "the CA key is among the secrets checked",
        !key_lines(&std::fs::read_to_string(&ca_key).unwrap_or_default()).is_empty(),
        || format!("{} unreadable", ca_key.display()),
    );
    sc.note(format!("{} secret strings checked", secrets.len()));
    // Raw bodies: a secret must appear nowhere in them, in any field.
    let status = http(daemon.addr, "GET", "/status").unwrap().1;
    let metrics = http(daemon.addr, "GET", "/metrics").unwrap().1;
    let readyz = http(daemon.addr, "GET", "/readyz").unwrap().1;
    let alerts: String = hook
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    drop(daemon);
    let log = env.log();
    sc.check(
        "trace logs are long enough to mean something",
        log.lines().count() > 50,
        || format!("{} lines", log.lines().count()),
    );
    for (place, text) in [
        ("log", &log),
        ("/status", &status),
        ("/metrics", &metrics),
        ("/readyz", &readyz),
        ("alerts", &alerts),
    ] {
        let leaked: Vec<&String> = secrets
            .iter()
            .filter(|s| text.contains(s.as_str()))
            .collect();
        sc.check(&format!("no secret in {place}"), leaked.is_empty(), || {
            format!(
                "{} secret(s) found, e.g. {}…",
                leaked.len(),
                &leaked[0][..8]
            )
        });
    }
    // The header secrets did go where they belong: the request headers.
    let got = hook.requests();
    sc.check(
        "header secret sent as a header",
        got.iter()
            .all(|r| r.headers.get("authorization").map(String::as_str) == Some(header_secret)),
        || "missing Authorization header".into(),
    );
    sc.finish();
}

#[test]
fn loopback_by_default_and_admin_token_enforced() {
    let mut sc = Scenario::new(
        "security",
        "endpoint: loopback by default, admin token enforced",
    );
    let cfg = rekey::config::Config::parse(
        "[daemon]\nstate_dir = \"/tmp/x\"\n",
        Path::new("/etc/rekey/rekey.toml"),
    )
    .unwrap();
    let default = cfg.daemon.listen;
    sc.round();
    sc.check(
        "default listen is loopback",
        default.is_some_and(|a| a.ip().is_loopback()),
        || format!("{default:?}"),
    );
    // Live: the daemon with the default listen address binds 127.0.0.1 only.
    let env = Env::new();
    env.write_config(&env.cert_section("web", ""));
    let text = std::fs::read_to_string(env.path("rekey.toml")).unwrap();
    let text = text
        .lines()
        .filter(|l| !l.starts_with("listen"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(env.path("rekey.toml"), text).unwrap();
    let log = std::fs::File::create(env.path("daemon.log")).unwrap();
    let child = Command::new(bin())
        .args(["run", "-c"])
        .arg(env.path("rekey.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let addr = default.unwrap();
    let _d = Daemon {
        child,
        addr,
        socket: env.socket(),
    };
    let listening = wait_for(Duration::from_secs(20), "the default endpoint", || {
        let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
        let tcp6 = std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
        let port = format!(":{:04X}", addr.port());
        let lines: Vec<String> = tcp
            .lines()
            .chain(tcp6.lines())
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(&port))
                    && l.split_whitespace().nth(3) == Some("0A")
            })
            .map(str::to_string)
            .collect();
        (!lines.is_empty()).then_some(lines)
    });
    let loopback = listening.iter().all(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|a| a.starts_with("0100007F:"))
    });
    sc.check("bound to 127.0.0.1 only", loopback, || {
        format!("{listening:?}")
    });

    // The admin token: 401 without or with a wrong one, 200 with it.
    let env = Env::new();
    std::fs::write(env.path("token"), "s3cret-token\n").unwrap();
    env.write_config(&env.cert_section("web", ""));
    let text = std::fs::read_to_string(env.path("rekey.toml"))
        .unwrap()
        .replace(
            "[daemon]\n",
            &format!(
                "[daemon]\nadmin_token_file = \"{}\"\n",
                env.path("token").display()
            ),
        );
    std::fs::write(env.path("rekey.toml"), text).unwrap();
    let d = env.start();
    wait_valid(d.addr, "web", Duration::from_secs(15));
    let post = |auth: Option<&str>| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(d.addr).unwrap();
        let h = auth
            .map(|a| format!("Authorization: Bearer {a}\r\n"))
            .unwrap_or_default();
        write!(s, "POST /v1/rotate/web HTTP/1.1\r\nHost: x\r\n{h}Connection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(0)
    };
    sc.check("401 without a token", post(None) == 401, || {
        "not 401".into()
    });
    sc.check("401 with a wrong token", post(Some("nope")) == 401, || {
        "not 401".into()
    });
    sc.check(
        "200 with the token",
        post(Some("s3cret-token")) == 200,
        || "not 200".into(),
    );
    sc.check(
        "token never logged",
        !env.log().contains("s3cret-token"),
        || "logged".into(),
    );
    sc.finish();
}

#[test]
fn exec_commands_get_no_shell() {
    let mut sc = Scenario::new("security", "exec commands get no shell");
    let env = Env::new();
    let pwned = env.path("PWNED");
    let p = pwned.display().to_string();
    // Every shell construct in one argument: a shell would create PWNED.
    let arg = format!("x; touch {p} && touch {p} | touch {p} $(touch {p}) `touch {p}`");
    let out = env.path("probed");
    // `web`: a whole shell line as argv[0] is one (missing) program name.
    // `api`: the probe runs tee with the shell constructs as one argument.
    let web = env.cert_section(
        "web",
        &format!("reload = {{ type = \"exec\", command = [\"touch {p}; true\"] }}\n"),
    );
    let api = env.cert_section(
        "api",
        &format!(
            "verify = {{ type = \"exec\", command = [\"/usr/bin/tee\", \"{o}\", \"{arg}\"], timeout = \"1s\" }}\n",
            o = out.display()
        ),
    );
    env.write_config(&format!("{web}\n{api}"));
    let d = env.start();
    wait_for(Duration::from_secs(15), "issuance", || {
        (cred(d.addr, "web")?.state == State::Valid && cred(d.addr, "api")?.generation.is_some())
            .then_some(())
    });
    sc.round();
    let (code, body) = d.post("/v1/rotate/web").unwrap();
    sc.check("a shell line as argv[0] is not run", code == 502, || {
        format!("{code} {body}")
    });
    sc.round();
    let _ = d.post("/v1/rotate/api").unwrap();
    sc.check("the probe ran, as argv", out.exists(), || {
        format!("{} not created by tee", out.display())
    });
    sc.check("no shell ran", !pwned.exists(), || {
        format!("{p} was created")
    });
    sc.finish();
}

#[test]
fn issuer_tls_rejects_an_untrusted_certificate() {
    let mut sc = Scenario::new(
        "security",
        "TLS to an issuer rejects an untrusted certificate",
    );
    let env = Env::new();
    let tls = acme_support::test_tls(env.dir.path());
    let dir = r#"{"newNonce":"https://127.0.0.1/n","newAccount":"https://127.0.0.1/a","newOrder":"https://127.0.0.1/o"}"#;
    let server = acme_support::Server::start(
        free_addr(),
        Some(&tls),
        std::sync::Arc::new(move |_m: &str, _p: &str| (200, vec![], dir.as_bytes().to_vec())),
    );
    let d = env.path("tls/web");
    env.write_config(&format!(
        "[issuer.le]\ntype = \"acme\"\ndirectory = \"https://{a}/dir\"\nchallenge = {{ type = \"http-01\", listen = \"{l}\" }}\n\n\
         [[certificate]]\nname = \"web\"\nissuer = \"le\"\ndns_names = [\"localhost\"]\nfiles = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\" }}\n",
        a = server.addr,
        l = free_addr(),
        d = d.display(),
    ));
    // The system roots only (no trust_bundle): the test CA is not among them.
    let daemon = env.start();
    sc.round();
    let s = wait_for(Duration::from_secs(20), "the first attempt to fail", || {
        let s = cred(daemon.addr, "web")?;
        (s.consecutive_failures >= 1).then_some(s)
    });
    let err = s.last_error.as_deref().unwrap_or_default().to_lowercase();
    sc.check(
        "refused for the certificate",
        err.contains("certificate")
            && (err.contains("unknownissuer")
                || err.contains("unknown issuer")
                || err.contains("invalid peer")),
        || err.clone(),
    );
    sc.check("nothing installed", !d.join("cert.pem").exists(), || {
        "a certificate was written".into()
    });
    sc.finish();
}
