//! API keys under kill -9, at the `apikey.*` failpoints: after a mint (the
//! id is journaled, nothing published) and after publish (the new key is in
//! the app's file, not committed). The invariant, checked against the key
//! backend itself: at most one unrevoked extra key ever exists, and the next
//! start revokes it and serves the committed key again. Two backends: the
//! generic HTTP key service (`support::keyservice`) and real OpenBao tokens.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::bao_keys;
use super::common::bao::Bao;
use super::common::keyservice;
use super::common::scorecard::Scenario;
use super::common::*;
use super::died;
use rekey::status::{CredentialStatus, Handoff, State};

/// The API-key failpoints, in rotation order.
pub const POINTS: &[&str] = &["apikey.mint.after", "apikey.publish.after"];

/// Crashes per point, on the same state: a second crash must find the
/// first one fully cleaned up.
const ROUNDS_PER_POINT: usize = 2;

/// A key backend, seen from outside rekey.
trait Keys {
    /// Ids of the minted keys that still work, sorted.
    fn live(&self) -> Vec<String>;
    /// How many keys were ever minted.
    fn minted(&self) -> usize;
}

struct Service(Arc<Mutex<keyservice::Keys>>);

impl Keys for Service {
    fn live(&self) -> Vec<String> {
        keyservice::live(&self.0)
    }
    fn minted(&self) -> usize {
        self.0.lock().unwrap().by_id.len()
    }
}

/// OpenBao, and how many `auth/token/create` calls came before rekey's
/// (the dev server makes its root token that way).
struct OpenBao(Bao, usize);

impl Keys for OpenBao {
    /// Tokens made by `auth/token/create` for the app: not the root token,
    /// not rekey's own approle logins.
    fn live(&self) -> Vec<String> {
        bao_keys::accessors(&self.0)
            .into_iter()
            .filter(|acc| {
                let (st, v) = self.0.call_as(
                    &self.0.root.clone(),
                    "POST",
                    "auth/token/lookup-accessor",
                    Some(json!({ "accessor": acc })),
                );
                let root = v["data"]["policies"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p == "root"));
                st == 200 && v["data"]["path"] == "auth/token/create" && !root
            })
            .collect()
    }
    fn minted(&self) -> usize {
        self.0.audited("auth/token/create") - self.1
    }
}

/// The credential's status once it is valid with a verified handoff.
fn settled(addr: std::net::SocketAddr, name: &str) -> Option<CredentialStatus> {
    wait_until(Instant::now() + Duration::from_secs(30), || {
        let s = cred(addr, name)?;
        (s.state == State::Valid && s.handoff == Handoff::Verified).then_some(s)
    })
}

/// The id of the key the journal holds as pending (minted, not committed).
fn pending_id(env: &Env, name: &str) -> Option<String> {
    let p = env.path(&format!("state/certs/{name}/journal.json"));
    let j: Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    j["pending"]["key"]["id"].as_str().map(str::to_owned)
}

/// Crash at every API-key point, restart, check; then a normal rotation.
fn crash_rounds(sc: &mut Scenario, env: &Env, name: &str, key_file: &Path, keys: &dyn Keys) {
    // A new `apikey.*` point in the source must be crashed at here too.
    let in_source: Vec<&str> = rekey::failpoint::POINTS
        .iter()
        .copied()
        .filter(|p| p.starts_with("apikey."))
        .collect();
    sc.check("every API-key point covered", in_source == POINTS, || {
        format!("the source has {in_source:?}")
    });
    let d = env.start();
    let first = settled(d.addr, name).expect("the first key is handed over");
    assert_eq!(d.terminate(), Some(0));
    let committed = first.serial.as_deref().unwrap_or_default().to_string();
    let file = std::fs::read(key_file).unwrap();
    for point in POINTS {
        for _ in 0..ROUNDS_PER_POINT {
            sc.round();
            let minted_before = keys.minted();
            let mut d = env.start_with_env(&[("REKEY_FAILPOINT", point)]);
            // The answer never comes: the daemon dies mid-rotation.
            let _ = d.post(&format!("/v1/rotate/{name}"));
            let sig = died(&mut d, Duration::from_secs(10));
            sc.check("killed at the point", sig == Some(9), || {
                format!("{point}: {sig:?}")
            });
            let live = keys.live();
            sc.check(
                "one extra key after the crash, no more",
                live.len() == 2 && live.contains(&committed),
                || format!("{point}: live {live:?}, committed {committed}"),
            );
            let extra: Vec<&String> = live.iter().filter(|k| **k != committed).collect();
            let journaled = pending_id(env, name);
            sc.check(
                "the extra key is journaled",
                extra.len() == 1 && journaled.as_ref() == Some(extra[0]),
                || format!("{point}: journal says {journaled:?}, extra {extra:?}"),
            );

            let d = env.start();
            let revoked = wait_until(Instant::now() + Duration::from_secs(20), || {
                (keys.live() == [committed.clone()]).then_some(())
            });
            sc.check(
                "the extra key is revoked on restart",
                revoked.is_some(),
                || format!("{point}: live {:?}", keys.live()),
            );
            let n = keys.minted() - minted_before;
            sc.check("at most one extra key ever existed", n == 1, || {
                format!("{point}: {n} keys minted by the crash and the restart")
            });
            let s = settled(d.addr, name);
            sc.check(
                "the committed key is served again",
                s.as_ref()
                    .is_some_and(|s| s.serial.as_deref() == Some(committed.as_str())),
                || format!("{point}: {s:?}"),
            );
            sc.check(
                "the key file holds the committed key",
                std::fs::read(key_file).ok().as_ref() == Some(&file),
                || format!("{point}: the key file differs from before the crash"),
            );
            sc.check("clean shutdown", d.terminate() == Some(0), || {
                format!("{point}: SIGTERM did not exit 0")
            });
        }
    }
    // The crashes left nothing behind that stops the next rotation.
    let d = env.start();
    let (code, body) = d.post(&format!("/v1/rotate/{name}")).unwrap();
    let s = cred(d.addr, name);
    let new = s
        .as_ref()
        .and_then(|s| s.serial.clone())
        .unwrap_or_default();
    sc.check(
        "rotates after the crashes",
        code == 200
            && s.as_ref().is_some_and(|s| s.handoff == Handoff::Verified)
            && new != committed,
        || format!("{code} {body}; {s:?}"),
    );
    let only_new = wait_until(Instant::now() + Duration::from_secs(20), || {
        (keys.live() == [new.clone()]).then_some(())
    });
    sc.check(
        "the old key is revoked after the overlap",
        only_new.is_some(),
        || format!("live {:?}, new {new}", keys.live()),
    );
    sc.check("clean shutdown", d.terminate() == Some(0), || {
        "SIGTERM did not exit 0".into()
    });
    sc.note(format!(
        "{} crashes at {}; {} keys minted in all",
        POINTS.len() * ROUNDS_PER_POINT,
        POINTS.join(", "),
        keys.minted()
    ));
}

#[test]
fn kill9_at_apikey_points_http_key_service() {
    let mut sc = Scenario::new(
        "faults_crash",
        "API key: kill -9 after mint and after publish (HTTP key service)",
    );
    let env = Env::new();
    let key_file = env.path("app/svc.json");
    let (svc, keys) = keyservice::key_service(key_file.clone());
    keyservice::http_config(&env, svc, None);
    // Mint after mint on purpose: the issuance budget is not under test here.
    env.issuer_line("keys", "max_issuances = \"unlimited\"");
    crash_rounds(&mut sc, &env, "svc", &key_file, &Service(keys));
    sc.finish();
}

#[test]
fn kill9_at_apikey_points_openbao_tokens() {
    let mut sc = Scenario::new(
        "faults_crash",
        "API key: kill -9 after mint and after publish (OpenBao tokens)",
    );
    let env = Env::new();
    let Some((bao, role)) = bao_keys::setup(&env) else {
        sc.skip("bao is not installed");
        return;
    };
    let key_file = env.path("app/token");
    let app = bao_keys::app(bao.addr, key_file.clone(), Default::default());
    bao_keys::config(&env, &bao, &role, app, "");
    env.issuer_line("bao", "max_issuances = \"unlimited\"");
    let before = bao.audited("auth/token/create");
    crash_rounds(&mut sc, &env, "app-token", &key_file, &OpenBao(bao, before));
    sc.finish();
}
