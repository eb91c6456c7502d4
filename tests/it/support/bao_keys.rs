//! Helpers for the OpenBao api-key tests (tests/it/apikey.rs and the crash
//! suite): tokens from `auth/token/create` for `[[api_key]]`, and a small app
//! that proves which token it uses by answering that token's accessor.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::bao::Bao;
use super::Env;

pub const KEYS_POLICY: &str = "path \"auth/token/create\" { capabilities = [\"create\", \"update\"] }\npath \"auth/token/revoke-accessor\" { capabilities = [\"update\"] }";

/// `auth/token/lookup-self` with `token`: its accessor, or None when refused.
pub fn accessor_of(bao: &Bao, token: &str) -> Option<String> {
    BaoAddr(bao.addr).accessor(token)
}

/// A tiny app: answers every request with the accessor of the token in
/// `file` (re-read each time, or only once when `sticky`).
pub fn app(
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
pub struct BaoAddr(std::net::SocketAddr);
impl BaoAddr {
    /// `auth/token/lookup-self` with `token` over plain HTTP/1.0.
    pub fn accessor(&self, token: &str) -> Option<String> {
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

pub fn config(
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

pub fn setup(env: &Env) -> Option<(Bao, (PathBuf, PathBuf))> {
    let bao = Bao::start(&env.path("bao"), false)?;
    let role = bao.approle(env.dir.path(), "rekey", KEYS_POLICY, json!({}));
    Some((bao, role))
}

/// Accessors of every live token (root's view), sorted.
pub fn accessors(bao: &Bao) -> Vec<String> {
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
