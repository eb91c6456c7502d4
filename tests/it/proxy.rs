//! Outbound traffic through a real forward proxy (Debian `tinyproxy`) on
//! loopback: ACME issuance from a real Pebble and an OpenBao sign go
//! through it (its log shows the CONNECTs), by the issuer's `proxy` key and
//! by `HTTPS_PROXY` in the daemon's environment; an alert reaches its
//! receiver through it; the app's HTTP reload and probe and the CLI never
//! do; `proxy = "none"` ignores the environment; a proxy that is down or
//! refuses fails the rotation naming the proxy, and the old certificate
//! stays.

use crate::support as common;
use crate::support::alert as alert_support;
use crate::support::pebble as support;
use crate::support::vault as vault_support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bao::Bao;
use common::tinyproxy::Tinyproxy;
use common::*;
use rekey::status::{CredentialStatus, Handoff, State};
use serde_json::json;
use support::{have_pebble, Opts, Pebble};

/// Environment variables that make the daemon's proxies exactly `proxy`
/// (the test's own environment may set any of them).
fn proxy_env(proxy: &str) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    for k in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        v.push((k, proxy.to_string()));
    }
    for k in ["ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"] {
        v.push((k, String::new()));
    }
    v
}

/// Start the daemon with `vars`.
fn start(env: &Env, vars: &[(&'static str, String)]) -> Daemon {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.start_with_env(&vars)
}

/// A certificate `web` on `issuer`, files under `tls/web/`, and `extra` keys.
fn web(env: &Env, issuer: &str, extra: &str) -> String {
    let d = env.path("tls/web");
    format!(
        "[[certificate]]\nname = \"web\"\nissuer = \"{issuer}\"\ndns_names = [\"web.rekey.test\"]\nlifetime = \"1h\"\n\
         files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\", fullchain = \"{d}/fullchain.pem\" }}\n{extra}\n",
        d = d.display()
    )
}

fn valid(addr: std::net::SocketAddr, name: &str) -> CredentialStatus {
    wait_for(
        Duration::from_secs(60),
        &format!("{name} to be valid"),
        || {
            let s = cred(addr, name)?;
            (s.state == State::Valid).then_some(s)
        },
    )
}

#[test]
fn acme_through_the_issuers_proxy_and_a_proxy_that_is_down_keeps_the_old_certificate() {
    let Some(()) = have_pebble() else { return };
    let env = Env::new();
    let Some(mut proxy) = Tinyproxy::start(&env.path("proxy"), "") else {
        return;
    };
    let pebble = Pebble::start(Opts::default());
    env.write_config(&format!(
        "{}\n{}",
        pebble.issuer_toml(
            "pebble",
            &pebble.listen_challenge(),
            &format!("proxy = \"{}\"", proxy.url)
        ),
        web(&env, "pebble", "")
    ));
    // A dead proxy in the environment: the issuer's key wins over it.
    let dead = format!("http://{}", free_addr());
    let d = start(&env, &proxy_env(&dead));
    let first = valid(d.addr, "web");
    let tunnel = format!("CONNECT {}", pebble.addr);
    assert!(
        proxy.relayed(&tunnel),
        "no {tunnel} in the proxy's log: {:?}",
        proxy.requests()
    );
    let (cert, key) = (env.path("tls/web/cert.pem"), env.path("tls/web/key.pem"));
    let (old, ok) = pair(&cert, &key).unwrap();
    assert!(
        ok && first.fingerprint.as_deref() == Some(old.as_str()),
        "{first:?}"
    );

    // The proxy goes down: the rotation fails naming it, nothing is touched.
    proxy.stop();
    let out = Command::new(bin())
        .args(["rotate", "web", "-c"])
        .arg(env.path("rekey.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let named = format!("through proxy {} (from the proxy key)", proxy.url);
    assert!(
        stderr.contains("cannot reach the ACME CA")
            && stderr.contains(&named)
            && stderr.contains("cannot connect"),
        "{stderr}"
    );
    assert_eq!(pair(&cert, &key).unwrap(), (old.clone(), true));
    let s = cred(d.addr, "web").unwrap();
    assert_eq!(s.fingerprint.as_deref(), Some(old.as_str()), "{s:?}");
    // Still the old, valid certificate; a retry is scheduled.
    assert_eq!(s.state, State::Backoff, "{s:?}");
    assert_eq!(http(d.addr, "GET", "/readyz").unwrap().0, 200);
    assert!(
        s.last_error.as_deref().unwrap_or_default().contains(&named),
        "{s:?}"
    );
}

#[test]
fn environment_proxies_carry_the_ca_but_never_the_apps_reload_probe_or_the_cli() {
    let Some(()) = have_pebble() else { return };
    let env = Env::new();
    let Some(proxy) = Tinyproxy::start(&env.path("proxy"), "") else {
        return;
    };
    let pebble = Pebble::start(Opts::default());
    // The app: answers its reload and the probe.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let s = seen.clone();
    let app = support::Server::start(
        free_addr(),
        None,
        Arc::new(move |method: &str, path: &str| {
            s.lock().unwrap().push(format!("{method} {path}"));
            (200, vec![], b"ok".to_vec())
        }),
    );
    let handoff = format!(
        "reload = {{ type = \"http\", url = \"http://{a}/reload\", method = \"POST\" }}\n\
         verify = {{ type = \"http\", url = \"http://{a}/health\", expect_status = 200 }}\n",
        a = app.addr
    );
    // No proxy key: the environment decides, loopback included.
    env.write_config(&format!(
        "{}\n{}",
        pebble.issuer_toml("pebble", &pebble.listen_challenge(), ""),
        web(&env, "pebble", &handoff)
    ));
    let vars = proxy_env(&proxy.url);
    let d = start(&env, &vars);
    let s = wait_for(Duration::from_secs(60), "a verified handoff", || {
        let s = cred(d.addr, "web")?;
        (s.state == State::Valid && s.handoff == Handoff::Verified).then_some(s)
    });
    assert_eq!(s.generation, Some(1), "{s:?}");
    let tunnel = format!("CONNECT {}", pebble.addr);
    assert!(proxy.relayed(&tunnel), "{:?}", proxy.requests());
    let got = seen.lock().unwrap().clone();
    assert!(
        got.contains(&"POST /reload".to_string()) && got.contains(&"GET /health".to_string()),
        "{got:?}"
    );

    // The CLI, with the same environment, over TCP and the admin socket.
    let cli = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cli(&["status", "--addr", &d.addr.to_string()]);
    let config = env.path("rekey.toml");
    cli(&["rotate", "web", "-c", config.to_str().unwrap()]);
    let s = cred(d.addr, "web").unwrap();
    assert_eq!(
        (s.generation, s.handoff),
        (Some(2), Handoff::Verified),
        "{s:?}"
    );

    // The proxy carried the CA's traffic and nothing else.
    let relayed = proxy.requests();
    for not in [app.addr.to_string(), d.addr.to_string()] {
        assert!(
            !relayed.iter().any(|r| r.contains(&not)),
            "{not} went through the proxy: {relayed:?}"
        );
    }
    assert!(
        relayed.iter().all(|r| r.contains(&pebble.addr.to_string())),
        "{relayed:?}"
    );
}

#[test]
fn openbao_sign_through_the_proxy_and_proxy_none_ignores_the_environment() {
    let env = Env::new();
    let Some(bao) = Bao::start(&env.path("bao"), true) else {
        return;
    };
    let Some(proxy) = Tinyproxy::start(&env.path("proxy"), "") else {
        return;
    };
    bao.setup_pki("web");
    let role = bao.approle(env.dir.path(), "rekey", vault_support::SIGN_ONLY, json!({}));
    let auth = vault_support::approle_auth(&role);
    let ca = bao.ca.clone().unwrap();
    let via = |p: &str| format!("trust_bundle = \"{}\"\nproxy = \"{p}\"", ca.display());
    env.write_config(&format!(
        "{}{}{}{}",
        vault_support::issuer("proxied", &bao, &auth, &via(&proxy.url)),
        vault_support::issuer("direct", &bao, &auth, &via("none")),
        vault_support::cert(&env, "web", "proxied"),
        vault_support::cert(&env, "api", "direct"),
    ));
    // The environment points at a proxy that is down: "api" can only have
    // been signed directly, and "web" only through the issuer's proxy.
    let d = start(&env, &proxy_env(&format!("http://{}", free_addr())));
    valid(d.addr, "web");
    valid(d.addr, "api");
    let tunnel = format!("CONNECT {}", bao.addr);
    let relayed = proxy.requests();
    assert!(relayed.iter().any(|r| r.contains(&tunnel)), "{relayed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_reaches_its_receiver_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let Some(proxy) = Tinyproxy::start(dir.path(), "") else {
        return;
    };
    let plain = alert_support::Receiver::start(Some(200));
    let (tls_addr, pem, tls_count) = alert_support::tls_receiver().await;
    let bundle = dir.path().join("receiver-ca.pem");
    std::fs::write(&bundle, pem).unwrap();
    let results = alert_support::Results::default();
    let alerter = alert_support::start(
        &format!(
            "[[alert]]\ntype = \"webhook\"\nname = \"plain\"\nurl = \"{}\"\nproxy = \"{p}\"\n\n\
             [[alert]]\ntype = \"webhook\"\nname = \"tls\"\nurl = \"https://{tls_addr}/hook\"\ntrust_bundle = \"{}\"\nproxy = \"{p}\"\n",
            plain.url("/hook"),
            bundle.display(),
            p = proxy.url,
        ),
        &results,
    );
    alerter.raise(alert_support::handoff_failed("web"));
    assert!(alerter.flush(Duration::from_secs(20)).await);
    assert_eq!(plain.requests().len(), 1);
    assert_eq!(*tls_count.lock().unwrap(), 1);
    let relayed = proxy.requests();
    assert!(
        relayed
            .iter()
            .any(|r| r.starts_with(&format!("POST http://{}/hook", plain.addr))),
        "{relayed:?}"
    );
    assert!(
        relayed
            .iter()
            .any(|r| r.starts_with(&format!("CONNECT {tls_addr}"))),
        "{relayed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_refuses_the_tunnel_is_named_and_typed() {
    use rekey::cert::{build_csr, generate_key, Names};
    use rekey::config::{Config, IssuerConfig, KeyType};
    use rekey::issuer::{IssueRequest, Issuer};
    let Some(()) = have_pebble() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Tunnels only to port 443: Pebble's port is refused (403).
    let Some(proxy) = Tinyproxy::start(dir.path(), "ConnectPort 443") else {
        return;
    };
    let pebble = Pebble::start(Opts::default());
    let text = format!(
        "[daemon]\nstate_dir = \"{}\"\n\n{}",
        dir.path().join("state").display(),
        pebble.issuer_toml(
            "pebble",
            &pebble.listen_challenge(),
            &format!("proxy = \"{}\"", proxy.url)
        )
    );
    let cfg = Config::parse(&text, &dir.path().join("rekey.toml")).unwrap();
    let Some(IssuerConfig::Acme(a)) = cfg.issuers.values().next() else {
        panic!("no acme issuer");
    };
    let acme = rekey::issuer::acme::Acme::open("pebble", &dir.path().join("state"), a).unwrap();
    let key = generate_key(KeyType::EcdsaP256).unwrap();
    let names = Names {
        common_name: "web.rekey.test".into(),
        dns_names: vec!["web.rekey.test".into()],
        ip_addresses: vec![],
    };
    let err = acme
        .issue(&IssueRequest {
            credential: "web".into(),
            csr_der: build_csr(&key, &names).unwrap(),
            names,
            lifetime: Duration::from_secs(3600),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.transport(),
            Some(rekey::net::httpc::HttpError::Proxy { .. })
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("through proxy {} (from the proxy key)", proxy.url))
            && text.contains("the proxy refused to open a tunnel"),
        "{text}"
    );
    assert!(
        proxy.relayed(&format!("CONNECT {}", pebble.addr)),
        "{:?}",
        proxy.requests()
    );
}
