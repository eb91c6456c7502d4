//! `[[api_key]]` against a real OpenBao dev server: a token from
//! `auth/token/create` handed over to a small app that proves it uses it,
//! the old token revoked after `overlap`; a failed handoff; a crash.

mod common;
#[path = "alert/support.rs"]
#[allow(dead_code)]
mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::bao::Bao;
use common::*;
use serde_json::{json, Value};

const KEYS_POLICY: &str = "path \"auth/token/create\" { capabilities = [\"create\", \"update\"] }\npath \"auth/token/revoke-accessor\" { capabilities = [\"update\"] }";

/// `auth/token/lookup-self` with `token`: its accessor, or None when refused.
fn accessor_of(bao: &Bao, token: &str) -> Option<String> {
    BaoAddr(bao.addr).accessor(token)
}

/// A tiny app: answers every request with the accessor of the token in
/// `file` (re-read each time, or only once when `sticky`).
fn app(
    bao_addr: std::net::SocketAddr,
    file: PathBuf,
    sticky: Arc<AtomicBool>,
) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let bao = BaoAddr(bao_addr);
    std::thread::spawn(move || {
        let mut cached: Option<String> = None;
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let token = match (&cached, sticky.load(Ordering::SeqCst)) {
                (Some(t), true) => t.clone(),
                _ => std::fs::read_to_string(&file).unwrap_or_default(),
            };
            cached = Some(token.clone());
            let acc = bao.accessor(&token).unwrap_or_else(|| "none".into());
            let _ = write!(
                c,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{acc}",
                acc.len()
            );
        }
    });
    addr
}

/// The server's address alone (the app thread cannot share `Bao`).
struct BaoAddr(std::net::SocketAddr);
impl BaoAddr {
    /// `auth/token/lookup-self` with `token` over plain HTTP/1.0.
    fn accessor(&self, token: &str) -> Option<String> {
        let mut s = TcpStream::connect(self.0).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET /v1/auth/token/lookup-self HTTP/1.0\r\nHost: x\r\nX-Vault-Token: {token}\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        if !head.contains(" 200 ") {
            return None;
        }
        let v: Value = serde_json::from_str(body).ok()?;
        v["data"]["accessor"].as_str().map(str::to_owned)
    }
}

fn config(
    env: &Env,
    bao: &Bao,
    role: &(PathBuf, PathBuf),
    app: std::net::SocketAddr,
    extra: &str,
) -> PathBuf {
    let key = env.path("app/token");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    env.write_config(&format!(
        "[issuer.bao]\ntype = \"vault\"\naddress = \"{url}\"\nauth = {{ method = \"approle\", role_id_file = \"{r}\", secret_id_file = \"{s}\" }}\npki_role = \"unused\"\n\n\
         [[api_key]]\nname = \"app-token\"\nissuer = \"bao\"\nfile = \"{key}\"\nlifetime = \"1h\"\noverlap = \"2s\"\n\
         mint = {{ path = \"auth/token/create\", body = {{ policies = [\"default\"], ttl = \"{{lifetime}}\" }}, secret = \"auth.client_token\", id = \"auth.accessor\", ttl = \"auth.lease_duration\" }}\n\
         revoke = {{ path = \"auth/token/revoke-accessor\", body = {{ accessor = \"{{id}}\" }} }}\n\
         verify = {{ type = \"http\", url = \"http://{app}/whoami\", expect_body = \"{{key_id}}\", timeout = \"3s\" }}\n{extra}\n",
        url = bao.url,
        r = role.0.display(),
        s = role.1.display(),
        key = key.display(),
    ));
    key
}

fn token(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn rotate(env: &Env) -> std::process::Output {
    std::process::Command::new(bin())
        .args(["rotate", "app-token", "--addr", &env.addr.to_string()])
        .output()
        .unwrap()
}

fn setup(env: &Env) -> Option<(Bao, (PathBuf, PathBuf))> {
    let bao = Bao::start(&env.path("bao"), false)?;
    let role = bao.approle(env.dir.path(), "rekey", KEYS_POLICY, json!({}));
    Some((bao, role))
}

#[test]
fn token_is_handed_over_verified_and_the_old_one_revoked_after_overlap() {
    let env = Env::new();
    let Some((bao, role)) = setup(&env) else {
        return;
    };
    let sticky = Arc::new(AtomicBool::new(false));
    let key = env.path("app/token");
    let app = app(bao.addr, key.clone(), sticky);
    config(&env, &bao, &role, app, "");
    let d = env.start();
    let s = wait_for(Duration::from_secs(30), "app-token valid", || {
        let s = cred_status(d.addr, "app-token")?;
        (s["state"] == "valid").then_some(s)
    });
    assert_eq!(s["kind"], "api_key");
    assert_eq!(mode(&key), 0o600);
    let first = token(&key);
    let first_acc = accessor_of(&bao, &first).expect("the key file holds a working token");
    assert_eq!(s["serial"], first_acc.as_str());
    assert!(
        !serde_json::to_string(&s).unwrap().contains(&first),
        "the secret is in the status"
    );

    let out = rotate(&env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = token(&key);
    assert_ne!(first, second);
    assert!(accessor_of(&bao, &second).is_some(), "the new token works");
    let s = cred_status(d.addr, "app-token").unwrap();
    assert_eq!(s["handoff"], "verified");
    // The old token is still valid during the overlap, then revoked.
    assert!(
        accessor_of(&bao, &first).is_some(),
        "revoked before the overlap ran out"
    );
    wait_for(Duration::from_secs(15), "the old token revoked", || {
        accessor_of(&bao, &first).is_none().then_some(())
    });
    assert!(accessor_of(&bao, &second).is_some());
    assert!(!env.log().contains(&second), "the secret is in the log");
}

#[test]
fn failed_handoff_revokes_the_new_token_and_keeps_the_old() {
    let env = Env::new();
    let Some((bao, role)) = setup(&env) else {
        return;
    };
    let sticky = Arc::new(AtomicBool::new(false));
    let key = env.path("app/token");
    let app = app(bao.addr, key.clone(), sticky.clone());
    let hook = support::Receiver::start(Some(200));
    config(
        &env,
        &bao,
        &role,
        app,
        &format!(
            "\n[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\n",
            hook.url("/hook")
        ),
    );
    let d = env.start();
    wait_for(Duration::from_secs(30), "app-token valid", || {
        let s = cred_status(d.addr, "app-token")?;
        (s["state"] == "valid").then_some(s)
    });
    let first = token(&key);
    let tokens_before = accessors(&bao);
    // Make the app read the file once more, then never again.
    let _ = common::http(app, "GET", "/");
    sticky.store(true, Ordering::SeqCst);
    let out = rotate(&env);
    assert!(!out.status.success());
    assert_eq!(token(&key), first, "the old token is back in the file");
    assert!(
        accessor_of(&bao, &first).is_some(),
        "the old token still works"
    );
    // The new token was minted and revoked again: the live tokens are the same.
    assert_eq!(
        accessors(&bao),
        tokens_before,
        "the new token was not revoked"
    );
    assert!(bao.audited("auth/token/revoke-accessor") >= 1);
    let alerts = wait_for(Duration::from_secs(10), "handoff_failed alert", || {
        let a: Vec<Value> = hook.requests().iter().map(|r| r.json()).collect();
        a.iter()
            .any(|a| a["event"] == "handoff_failed")
            .then_some(a)
    });
    let a = alerts
        .iter()
        .find(|a| a["event"] == "handoff_failed")
        .unwrap();
    assert_eq!(a["kind"], "api_key");
    assert_eq!(a["rolled_back"], true);
    let s = cred_status(d.addr, "app-token").unwrap();
    assert_eq!(s["handoff"], "failed");
    assert!(!serde_json::to_string(&alerts).unwrap().contains(&first));
}

/// Accessors of every live token (root's view), sorted.
fn accessors(bao: &Bao) -> Vec<String> {
    let v = bao.root("GET", "auth/token/accessors?list=true", None);
    let mut out: Vec<String> = v["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

#[test]
fn a_crash_right_after_mint_revokes_the_extra_token_on_restart() {
    let env = Env::new();
    let Some((bao, role)) = setup(&env) else {
        return;
    };
    let key = env.path("app/token");
    let app = app(bao.addr, key.clone(), Arc::new(AtomicBool::new(false)));
    config(&env, &bao, &role, app, "");
    // The first mint kills the daemon (abort, like kill -9).
    let status = std::process::Command::new(bin())
        .args(["run", "-c"])
        .arg(env.path("rekey.toml"))
        .env("REKEY_TEST_CRASH_AFTER_MINT", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    let journal: Value = serde_json::from_slice(
        &std::fs::read(env.path("state/certs/app-token/journal.json")).unwrap(),
    )
    .unwrap();
    let orphan = journal["pending"]["key"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let lookup = |acc: &str| {
        let (st, _) = bao.call_as(
            &bao.root.clone(),
            "POST",
            "auth/token/lookup-accessor",
            Some(json!({"accessor": acc})),
        );
        st == 200
    };
    assert!(
        lookup(&orphan),
        "the minted token should exist before restart"
    );
    let d = env.start();
    wait_for(Duration::from_secs(30), "app-token valid", || {
        let s = cred_status(d.addr, "app-token")?;
        (s["state"] == "valid").then_some(s)
    });
    wait_for(Duration::from_secs(15), "the extra token revoked", || {
        (!lookup(&orphan)).then_some(())
    });
}
