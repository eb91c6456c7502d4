//! `[[api_key]]` from the generic issuers, against an in-test key service
//! (`type = "http"`) and scripts (`type = "exec"`): mint, hand over, revoke
//! the old key after `overlap`; revocation failures retried and alerted.

mod common;
#[path = "alert/support.rs"]
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A key: its secret, whether it still works.
#[derive(Default)]
struct Keys {
    by_id: BTreeMap<String, (String, bool)>,
    /// DELETEs to refuse with 500 before accepting.
    refuse_revokes: usize,
    /// Authorization headers seen on mint.
    auth: Vec<String>,
    /// The app "never re-reads its file": /whoami uses this content.
    frozen: Option<String>,
}

/// POST /keys mints, DELETE /keys/ID revokes, GET /whoami?file reads the
/// app's key file and answers with the id of the key in it if it works.
fn key_service(app_file: std::path::PathBuf) -> (SocketAddr, Arc<Mutex<Keys>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let keys = Arc::new(Mutex::new(Keys::default()));
    let k = keys.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            handle(conn, &k, &app_file);
        }
    });
    (addr, keys)
}

fn handle(conn: TcpStream, keys: &Mutex<Keys>, app_file: &std::path::Path) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut len = 0;
    let mut auth = String::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or(("", ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => len = value.trim().parse().unwrap_or(0),
            "authorization" => auth = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    let _ = r.read_exact(&mut body);
    let mut k = keys.lock().unwrap();
    let (status, answer) = if method == "POST" && path == "/v1/keys" {
        k.auth.push(auth);
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let n = k.by_id.len() + 1;
        let (id, secret) = (
            format!("key-{n}"),
            format!("secret-{n}-{}", fastrand::u64(..)),
        );
        k.by_id.insert(id.clone(), (secret.clone(), true));
        let ttl = req["ttl"].as_str().unwrap_or("").to_string();
        (200, json!({"key": {"value": secret, "name": id, "ttl_asked": ttl}, "expires_at": "2099-01-01T00:00:00Z"}).to_string())
    } else if method == "DELETE" && path.starts_with("/v1/keys/") {
        if k.refuse_revokes > 0 {
            k.refuse_revokes -= 1;
            (500, "{}".to_string())
        } else {
            let id = path.trim_start_matches("/v1/keys/").to_string();
            match k.by_id.get_mut(&id) {
                Some(e) => {
                    e.1 = false;
                    (204, String::new())
                }
                None => (404, "{}".to_string()),
            }
        }
    } else if path == "/whoami" {
        let secret = k
            .frozen
            .clone()
            .unwrap_or_else(|| std::fs::read_to_string(app_file).unwrap_or_default());
        let id = k
            .by_id
            .iter()
            .find(|(_, (s, live))| *live && secret.contains(s.as_str()))
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| "none".into());
        (200, id)
    } else {
        (404, String::new())
    };
    drop(k);
    let mut c = conn;
    let _ = write!(
        c,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

fn live(keys: &Mutex<Keys>) -> Vec<String> {
    let k = keys.lock().unwrap();
    k.by_id
        .iter()
        .filter(|(_, (_, l))| *l)
        .map(|(id, _)| id.clone())
        .collect()
}

fn rotate(env: &Env) -> std::process::Output {
    std::process::Command::new(bin())
        .args(["rotate", "svc", "--addr", &env.addr.to_string()])
        .output()
        .unwrap()
}

fn valid(d: &Daemon) -> Value {
    wait_for(Duration::from_secs(30), "svc valid", || {
        let s = cred_status(d.addr, "svc")?;
        (s["state"] == "valid").then_some(s)
    })
}

fn http_config(env: &Env, svc: SocketAddr, alert_url: &str) -> std::path::PathBuf {
    let key = env.path("app/svc.json");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    let token = env.path("svc-token");
    std::fs::write(&token, "Bearer from-a-file\n").unwrap();
    env.write_config(&format!(
        "[issuer.keys]\ntype = \"http\"\nbase_url = \"http://{svc}/v1\"\nheaders = {{ Authorization = {{ file = \"{token}\" }} }}\n\n\
         [[api_key]]\nname = \"svc\"\nissuer = \"keys\"\nfile = \"{key}\"\nformat = \"json\"\nlifetime = \"1h\"\noverlap = \"1s\"\n\
         mint = {{ path = \"keys\", body = {{ ttl = \"{{lifetime}}\" }}, secret = \"key.value\", id = \"key.name\", expires = \"expires_at\" }}\n\
         revoke = {{ method = \"DELETE\", path = \"keys/{{id}}\" }}\n\
         verify = {{ type = \"http\", url = \"http://{svc}/whoami\", expect_body = \"{{key_id}}\", timeout = \"3s\" }}\n\n\
         [[alert]]\ntype = \"webhook\"\nurl = \"{alert_url}\"\n",
        token = token.display(),
        key = key.display(),
    ));
    key
}

#[test]
fn http_key_service_mints_hands_over_and_revokes_the_old_key() {
    let env = Env::new();
    let key = env.path("app/svc.json");
    let (svc, keys) = key_service(key.clone());
    let hook = support::Receiver::start(Some(200));
    http_config(&env, svc, &hook.url("/hook"));
    let d = env.start();
    let s = valid(&d);
    assert_eq!(s["kind"], "api_key");
    assert_eq!(s["serial"], "key-1");
    assert_eq!(mode(&key), 0o600);
    let file: Value = serde_json::from_slice(&std::fs::read(&key).unwrap()).unwrap();
    assert_eq!(file["id"], "key-1");
    assert!(file["secret"].as_str().unwrap().starts_with("secret-1-"));
    assert_eq!(file["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(keys.lock().unwrap().auth[0], "Bearer from-a-file");

    let out = rotate(&env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = cred_status(d.addr, "svc").unwrap();
    assert_eq!(
        (s["serial"].as_str(), s["handoff"].as_str()),
        (Some("key-2"), Some("verified"))
    );
    // key-1 is revoked after the 1 s overlap, key-2 stays.
    wait_for(Duration::from_secs(10), "key-1 revoked", || {
        (live(&keys) == ["key-2"]).then_some(())
    });
    let log = env.log();
    let secret2 = serde_json::from_slice::<Value>(&std::fs::read(&key).unwrap()).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!log.contains(&secret2), "the secret is in the log");
    let status = http(d.addr, "GET", "/status").unwrap().1;
    assert!(!status.contains(&secret2), "the secret is in /status");
}

#[test]
fn revocation_failures_are_retried_and_alerted() {
    let env = Env::new();
    let key = env.path("app/svc.json");
    let (svc, keys) = key_service(key.clone());
    let hook = support::Receiver::start(Some(200));
    http_config(&env, svc, &hook.url("/hook"));
    let d = env.start();
    valid(&d);
    keys.lock().unwrap().refuse_revokes = 2;
    let out = rotate(&env);
    assert!(out.status.success());
    // Two refusals (retried after about 2 s and 4 s), then revoked.
    wait_for(
        Duration::from_secs(20),
        "key-1 revoked after retries",
        || (live(&keys) == ["key-2"]).then_some(()),
    );
    let alerts: Vec<Value> = hook.requests().iter().map(|r| r.json()).collect();
    assert!(
        alerts.iter().any(|a| a["kind"] == "api_key"
            && a["message"]
                .as_str()
                .unwrap_or("")
                .contains("cannot revoke key key-1")),
        "{alerts:?}"
    );
    assert!(env.log().contains("revoke_failed"));
}

#[test]
fn failed_handoff_with_the_http_service_revokes_the_new_key_and_alerts() {
    let env = Env::new();
    let key = env.path("app/svc.json");
    let (svc, keys) = key_service(key.clone());
    let hook = support::Receiver::start(Some(200));
    http_config(&env, svc, &hook.url("/hook"));
    let d = env.start();
    valid(&d);
    // From now on the app never re-reads its key file.
    keys.lock().unwrap().frozen = Some(std::fs::read_to_string(&key).unwrap());
    let first = std::fs::read(&key).unwrap();
    let out = rotate(&env);
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&key).unwrap(), first, "the old key is back");
    assert_eq!(live(&keys), ["key-1"], "the new key was revoked");
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
    assert_eq!(
        (a["kind"].as_str(), a["rolled_back"].as_bool()),
        (Some("api_key"), Some(true))
    );
    let s = cred_status(d.addr, "svc").unwrap();
    assert_eq!(s["handoff"], "failed");
    assert_eq!(s["serial"], "key-1");
}

#[test]
fn exec_commands_mint_and_revoke() {
    let env = Env::new();
    let dir = env.path("scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let mint = dir.join("mint");
    let revoke = dir.join("revoke");
    let counter = dir.join("n");
    let revoked = dir.join("revoked");
    std::fs::write(
        &mint,
        format!(
            "#!/bin/sh\nn=$(($(cat {c} 2>/dev/null || echo 0) + 1))\necho $n > {c}\n\
             printf '{{\"secret\": \"s3cret-%s\", \"id\": \"exec-%s\", \"expires_at\": \"2099-01-01T00:00:00Z\", \"lifetime\": \"%s\"}}' $n $n \"$REKEY_LIFETIME\"\n",
            c = counter.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &revoke,
        format!(
            "#!/bin/sh\necho \"$REKEY_KEY_ID\" >> {}\n",
            revoked.display()
        ),
    )
    .unwrap();
    for p in [&mint, &revoke] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let key = env.path("app/token.env");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    env.write_config(&format!(
        "[issuer.cmd]\ntype = \"exec\"\n\n\
         [[api_key]]\nname = \"svc\"\nissuer = \"cmd\"\nfile = \"{key}\"\nformat = \"env\"\noverlap = \"1s\"\n\
         mint = {{ command = [\"{mint}\"] }}\nrevoke = {{ command = [\"{revoke}\"] }}\n",
        key = key.display(),
        mint = mint.display(),
        revoke = revoke.display(),
    ));
    let d = env.start();
    let s = valid(&d);
    assert_eq!(s["serial"], "exec-1");
    assert_eq!(s["handoff"], "unverified");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "SVC=s3cret-1\n");
    let out = rotate(&env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "SVC=s3cret-2\n");
    wait_for(Duration::from_secs(10), "exec-1 revoked", || {
        let r = std::fs::read_to_string(&revoked).ok()?;
        (r == "exec-1\n").then_some(())
    });
    assert!(!env.log().contains("s3cret-2"), "the secret is in the log");
}
