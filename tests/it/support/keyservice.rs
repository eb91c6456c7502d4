//! A generic HTTP key service for the `[[api_key]]` tests (`type = "http"`
//! issuer): POST mints, DELETE revokes, and `/whoami` plays an app that
//! answers with the id of the key in its file. It keeps every key it ever
//! minted, so a test can tell how many existed and which still work.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::fake_http::{self, Request};

/// A key: its secret, whether it still works.
#[derive(Default)]
pub struct Keys {
    pub by_id: BTreeMap<String, (String, bool)>,
    /// DELETEs to refuse with 500 before accepting.
    pub refuse_revokes: usize,
    /// Authorization headers seen on mint.
    pub auth: Vec<String>,
    /// The app "never re-reads its file": /whoami uses this content.
    pub frozen: Option<String>,
}

/// POST /keys mints, DELETE /keys/ID revokes, GET /whoami?file reads the
/// app's key file and answers with the id of the key in it if it works.
pub fn key_service(app_file: PathBuf) -> (SocketAddr, Arc<Mutex<Keys>>) {
    let keys = Arc::new(Mutex::new(Keys::default()));
    let k = keys.clone();
    let addr = fake_http::serve(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        None,
        Arc::new(move |req, w| {
            let (status, answer) = handle(&req, &k, &app_file);
            fake_http::respond(w, &format!("{status} X"), "", answer.as_bytes());
        }),
    );
    (addr, keys)
}

/// The status and body for one request.
fn handle(req: &Request, keys: &Mutex<Keys>, app_file: &std::path::Path) -> (u16, String) {
    let (method, path, body) = (&req.method, &req.path, &req.body);
    let mut k = keys.lock().unwrap();
    let (status, answer) = if method == "POST" && path == "/v1/keys" {
        k.auth
            .push(req.header("authorization").unwrap_or_default().to_string());
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
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
    (status, answer)
}

pub fn live(keys: &Mutex<Keys>) -> Vec<String> {
    let k = keys.lock().unwrap();
    k.by_id
        .iter()
        .filter(|(_, (_, l))| *l)
        .map(|(id, _)| id.clone())
        .collect()
}

/// Write `rekey.toml` for the api_key `svc` from the key service at `svc`
/// (JSON key file `app/svc.json`, verified through `/whoami`, 1 s overlap),
/// with a webhook alert sink when `alert_url` is given. Returns the key file.
pub fn http_config(env: &super::Env, svc: SocketAddr, alert_url: Option<&str>) -> PathBuf {
    let key = env.path("app/svc.json");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    let token = env.path("svc-token");
    std::fs::write(&token, "Bearer from-a-file\n").unwrap();
    let alert = alert_url
        .map(|u| format!("[[alert]]\ntype = \"webhook\"\nurl = \"{u}\"\n"))
        .unwrap_or_default();
    env.write_config(&format!(
        "[issuer.keys]\ntype = \"http\"\nbase_url = \"http://{svc}/v1\"\nheaders = {{ Authorization = {{ file = \"{token}\" }} }}\n\n\
         [[api_key]]\nname = \"svc\"\nissuer = \"keys\"\nfile = \"{key}\"\nformat = \"json\"\nlifetime = \"1h\"\noverlap = \"1s\"\n\
         mint = {{ path = \"keys\", body = {{ ttl = \"{{lifetime}}\" }}, secret = \"key.value\", id = \"key.name\", expires = \"expires_at\" }}\n\
         revoke = {{ method = \"DELETE\", path = \"keys/{{id}}\" }}\n\
         verify = {{ type = \"http\", url = \"http://{svc}/whoami\", expect_body = \"{{key_id}}\", timeout = \"3s\" }}\n\n{alert}",
        token = token.display(),
        key = key.display(),
    ));
    key
}
