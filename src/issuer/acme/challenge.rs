//! Answering challenges: the built-in http-01 responder (listening only
//! while an order is pending), webroot files, and the dns-01 hook.
//!
//! A [`Solver`] records everything it set up; `cleanup` undoes it, and so
//! does `Drop` (best effort) when an issuance is cancelled half-way.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::task::JoinSet;

use super::AcmeError;
use crate::config::ChallengeConfig;

/// The longest a dns-01 hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(120);
/// Where http-01 tokens are served from.
const WELL_KNOWN: &str = "/.well-known/acme-challenge/";

/// One challenge to answer.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    /// The identifier as shown to people (`*.example.com` for a wildcard).
    pub identifier: String,
    /// The bare name the record or file is for (`example.com`).
    pub domain: String,
    /// The challenge token.
    pub token: String,
    /// `token.thumbprint` (http-01 body).
    pub key_auth: String,
    /// base64url(SHA-256(key_auth)) (dns-01 TXT value).
    pub dns_value: String,
}

/// Sets up and tears down challenge answers for one order.
pub(super) struct Solver<'a> {
    cfg: &'a ChallengeConfig,
    listener: Option<&'a Http01Listener>,
    lease: Option<Lease>,
    files: Vec<PathBuf>,
    dns: Vec<Pending>,
}

impl<'a> Solver<'a> {
    pub(super) fn new(
        cfg: &'a ChallengeConfig,
        listener: Option<&'a Http01Listener>,
    ) -> Solver<'a> {
        Solver {
            cfg,
            listener,
            lease: None,
            files: Vec::new(),
            dns: Vec::new(),
        }
    }

    /// Make every answer in `items` visible to the CA.
    pub(super) async fn present(&mut self, items: &[Pending]) -> Result<(), AcmeError> {
        let Some(first) = items.first() else {
            return Ok(());
        };
        let kind = self.cfg.type_name();
        let fail = |identifier: &str, reason: String| AcmeError::Challenge {
            identifier: identifier.to_string(),
            challenge: kind,
            reason,
        };
        match self.cfg {
            ChallengeConfig::Http01Listen { .. } => {
                let Some(listener) = self.listener else {
                    return Err(fail(&first.identifier, "no responder was set up".into()));
                };
                let tokens = items
                    .iter()
                    .map(|p| (p.token.clone(), p.key_auth.clone()))
                    .collect();
                self.lease = Some(
                    listener
                        .lease(tokens)
                        .map_err(|e| fail(&first.identifier, e))?,
                );
            }
            ChallengeConfig::Http01Webroot { webroot } => {
                for p in items {
                    let path = write_token(webroot, &p.token, &p.key_auth)
                        .map_err(|e| fail(&p.identifier, e))?;
                    self.files.push(path);
                }
            }
            ChallengeConfig::Dns01 {
                command,
                propagation_wait,
                env,
            } => {
                for p in items {
                    // Recorded first: a hook that fails half-way still gets its cleanup.
                    self.dns.push(p.clone());
                    run_hook(command, env, "present", p)
                        .await
                        .map_err(|e| fail(&p.identifier, e))?;
                }
                if !propagation_wait.is_zero() {
                    tracing::debug!(wait = ?propagation_wait, "waiting for DNS propagation");
                    tokio::time::sleep(*propagation_wait).await;
                }
            }
        }
        Ok(())
    }

    /// Undo everything `present` did; problems are logged, not returned,
    /// because the order's own outcome is what matters.
    pub(super) async fn cleanup(&mut self) {
        self.lease = None;
        for path in self.files.drain(..) {
            remove_token(&path);
        }
        if let ChallengeConfig::Dns01 { command, env, .. } = self.cfg {
            for p in std::mem::take(&mut self.dns) {
                if let Err(e) = run_hook(command, env, "cleanup", &p).await {
                    tracing::warn!(identifier = %p.identifier, error = %e, "dns-01 cleanup hook failed; remove the record by hand");
                }
            }
        }
    }
}

impl Drop for Solver<'_> {
    fn drop(&mut self) {
        for path in self.files.drain(..) {
            remove_token(&path);
        }
        if let ChallengeConfig::Dns01 { command, env, .. } = self.cfg {
            let left = std::mem::take(&mut self.dns);
            if left.is_empty() {
                return;
            }
            // Cancelled mid-order: finish the cleanup on its own task.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let command = command.clone();
                let env = env.clone();
                rt.spawn(async move {
                    for p in left {
                        if let Err(e) = run_hook(&command, &env, "cleanup", &p).await {
                            tracing::warn!(identifier = %p.identifier, error = %e, "dns-01 cleanup hook failed");
                        }
                    }
                });
            }
        }
    }
}

/// Write `DIR/.well-known/acme-challenge/TOKEN` (0644, world-readable so
/// the web server can serve it).
fn write_token(webroot: &Path, token: &str, key_auth: &str) -> Result<PathBuf, String> {
    // Tokens are base64url by spec; refuse anything that could leave the directory.
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("the CA sent a token that is not base64url".into());
    }
    let dir = webroot.join(".well-known").join("acme-challenge");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(token);
    crate::fs::write_file_atomic(&path, key_auth.as_bytes(), 0o644)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

fn remove_token(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the http-01 token file");
        }
    }
}

/// Run the dns-01 hook: argv + `action`, the record in the environment, no
/// shell (crate::exec: scrubbed environment plus `env`, own process group).
async fn run_hook(
    command: &[String],
    env: &[(String, String)],
    action: &str,
    p: &Pending,
) -> Result<(), String> {
    let prog = command.first().map(String::as_str).unwrap_or_default();
    let mut argv = command.to_vec();
    argv.push(action.to_string());
    crate::exec::Exec::new(&argv, HOOK_TIMEOUT)
        .env(env)
        .var("REKEY_DNS_NAME", format!("_acme-challenge.{}", p.domain))
        .var("REKEY_DNS_VALUE", &p.dns_value)
        .var("REKEY_DNS_DOMAIN", &p.domain)
        .run()
        .await
        .map(drop)
        .map_err(|e| format!("{prog} {action} {e}"))
}

/// The built-in http-01 responder of one issuer. Orders running at the same
/// time share it (they would otherwise fight over the port); it listens
/// only while at least one of them holds a [`Lease`].
pub(super) struct Http01Listener {
    addr: SocketAddr,
    state: Arc<Mutex<ListenState>>,
}

#[derive(Default)]
struct ListenState {
    tokens: HashMap<String, String>,
    users: usize,
    tasks: Option<JoinSet<()>>,
}

impl Http01Listener {
    pub(super) fn new(addr: SocketAddr) -> Http01Listener {
        Http01Listener {
            addr,
            state: Arc::default(),
        }
    }

    /// Serve `tokens` until the lease is dropped; binds the port for the first user.
    fn lease(&self, tokens: Vec<(String, String)>) -> Result<Lease, String> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| "responder state poisoned".to_string())?;
        if st.users == 0 {
            let addr = self.addr;
            let std_listener = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| {
                    format!("cannot listen on {addr} for the CA's validation request: {e}")
                })?;
            let listener = tokio::net::TcpListener::from_std(std_listener)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let mut tasks = JoinSet::new();
            tasks.spawn(serve(listener, self.state.clone()));
            st.tasks = Some(tasks);
            tracing::debug!(%addr, "http-01 responder listening");
        }
        st.users += 1;
        let keys = tokens.iter().map(|(t, _)| t.clone()).collect();
        st.tokens.extend(tokens);
        Ok(Lease {
            state: self.state.clone(),
            keys,
        })
    }
}

/// One order's use of the responder.
struct Lease {
    state: Arc<Mutex<ListenState>>,
    keys: Vec<String>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        for k in &self.keys {
            st.tokens.remove(k);
        }
        st.users = st.users.saturating_sub(1);
        if st.users == 0 {
            // Dropping the set aborts the accept loop and, with it, every connection.
            st.tasks = None;
        }
    }
}

/// Accept loop; connections live in a set owned by this task, so aborting
/// the task drops them all and frees the port.
async fn serve(listener: tokio::net::TcpListener, state: Arc<Mutex<ListenState>>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        conns.spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper::service::service_fn(move |req| answer(req, state.clone(), peer));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(io, svc);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
        while conns.try_join_next().is_some() {}
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    state: Arc<Mutex<ListenState>>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let found = req
        .uri()
        .path()
        .strip_prefix(WELL_KNOWN)
        .and_then(|t| state.lock().ok().and_then(|st| st.tokens.get(t).cloned()));
    tracing::debug!(%peer, path = req.uri().path(), found = found.is_some(), "http-01 request");
    let rsp = match found {
        Some(ka) => Response::builder()
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(ka))),
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new())),
    };
    Ok(rsp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(token: &str) -> Pending {
        Pending {
            identifier: "a.test".into(),
            domain: "a.test".into(),
            token: token.into(),
            key_auth: format!("{token}.thumb"),
            dns_value: "dnsvalue".into(),
        }
    }

    #[tokio::test]
    async fn webroot_writes_and_removes_the_token() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = ChallengeConfig::Http01Webroot {
            webroot: tmp.path().to_path_buf(),
        };
        let mut s = Solver::new(&cfg, None);
        s.present(&[pending("tok_1-A")]).await.unwrap();
        let p = tmp.path().join(".well-known/acme-challenge/tok_1-A");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "tok_1-A.thumb");
        s.cleanup().await;
        assert!(!p.exists());
        let err = s.present(&[pending("../evil")]).await.unwrap_err();
        assert!(err.to_string().contains("a.test"), "{err}");
    }

    #[tokio::test]
    async fn dns_hook_gets_argv_and_env_and_failures_say_why() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log");
        let script = tmp.path().join("hook");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$1 $2 $REKEY_DNS_NAME $REKEY_DNS_VALUE $REKEY_DNS_DOMAIN $DNS_ZONE\" >> {}\n[ \"$2\" = cleanup ] && {{ echo boom >&2; exit 3; }}\nexit 0\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let cmd = vec![script.display().to_string(), "arg1".into()];
        let p = pending("t");
        let env = vec![("DNS_ZONE".to_string(), "zone-a".to_string())];
        run_hook(&cmd, &env, "present", &p).await.unwrap();
        let err = run_hook(&cmd, &env, "cleanup", &p).await.unwrap_err();
        assert!(err.contains("boom"), "{err}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("arg1 present _acme-challenge.a.test dnsvalue a.test zone-a"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn responder_serves_tokens_only_while_leased() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<String, std::io::Error>(out)
        };
        let listener = Http01Listener::new(addr);
        let a = listener
            .lease(vec![("tok".into(), "tok.ka".into())])
            .unwrap();
        let b = listener
            .lease(vec![("tok2".into(), "tok2.ka".into())])
            .unwrap();
        let ok = get("/.well-known/acme-challenge/tok").await.unwrap();
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("tok.ka"),
            "{ok}"
        );
        drop(a);
        // The other order still holds the port; only its token is served.
        let gone = get("/.well-known/acme-challenge/tok").await.unwrap();
        assert!(gone.starts_with("HTTP/1.1 404"), "{gone}");
        let ok2 = get("/.well-known/acme-challenge/tok2").await.unwrap();
        assert!(ok2.ends_with("tok2.ka"), "{ok2}");
        drop(b);
        // Closed once nobody holds it: connections are refused.
        let mut refused = false;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(refused, "the responder still listens after the last lease");
        let again = listener.lease(Vec::new());
        assert!(again.is_ok());
    }
}
