//! Vault/OpenBao issuer faults: the real `vault` issuer in the real daemon
//! against an in-test Vault HTTP server that misbehaves on purpose (a real
//! OpenBao cannot be told to stall mid-body, rate-limit one request or sign
//! for the wrong key). Every time: nothing is installed, the task backs off
//! (honouring Retry-After), exactly one `renewal_failed` alert reaches a
//! webhook, the old credential stays served, and once the server behaves
//! the next rotation installs a valid certificate and sends `recovered`.

use crate::support as common;
use crate::support::alert as support;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use serde_json::{json, Value};

use common::fake_http::{self, Request, Stream};
use common::fake_issuer::{rotations_fail, Pki};
use common::invariants::{self as inv, Cred};
use common::scorecard::Scenario;

/// How the fake Vault misbehaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// A well-behaved PKI mount: signs the CSR, answers with the chain.
    None,
    /// Nothing listens on the address.
    Refused,
    /// `pki/sign` sends headers and half a body, then goes silent.
    StallMidBody,
    /// A proxy in front of Vault answers every path 503, HTML, Retry-After.
    Unavailable,
    /// A rate-limit quota on `pki/sign`: 429 with Retry-After.
    RateLimited,
    /// `pki/sign` answers 200 with a body that is not JSON.
    NotJson,
    /// 200 with an empty `certificate`, `issuing_ca` and `ca_chain`.
    EmptyCertificate,
    /// A good leaf, but an empty `issuing_ca` and `ca_chain`.
    EmptyChain,
    /// A certificate for a key that is not the CSR's.
    OtherKey,
}

/// A fake Vault on 127.0.0.1; the fault can change between requests.
struct FakeVault {
    addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    pki: Arc<Pki>,
}

impl FakeVault {
    fn start(fault: Fault) -> FakeVault {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let v = FakeVault {
            addr: listener.local_addr().unwrap(),
            fault: Arc::new(Mutex::new(fault)),
            pki: Arc::new(Pki::new("vault")),
        };
        if fault != Fault::Refused {
            v.serve(listener);
        }
        // Refused: the listener is dropped here, so the port is closed.
        v
    }

    fn serve(&self, listener: TcpListener) {
        let (fault, pki) = (self.fault.clone(), self.pki.clone());
        fake_http::serve(
            listener,
            None,
            Arc::new(move |req, w| handle(req, w, &fault, &pki)),
        );
    }

    /// From now on answer like a healthy Vault (listening again if refused).
    fn behave(&self) {
        let was = std::mem::replace(&mut *self.fault.lock().unwrap(), Fault::None);
        if was == Fault::Refused {
            self.serve(TcpListener::bind(self.addr).unwrap());
        }
    }
}

/// One request, answered as the current fault says.
fn handle(req: Request, c: &mut dyn Stream, fault: &Mutex<Fault>, pki: &Pki) {
    let (path, body) = (req.path, req.body);
    let fault = *fault.lock().unwrap();
    let (status, ctype, answer, extra) = match (fault, path.as_str()) {
        (Fault::Unavailable, _) => (
            "503 Service Unavailable",
            "text/html",
            "<html><body>503 Service Unavailable</body></html>".to_string(),
            "Retry-After: 120\r\n",
        ),
        // The token file's token: no expiry, so rekey never renews it.
        (_, "/v1/auth/token/lookup-self") => (
            "200 OK",
            "application/json",
            json!({"data": {"ttl": 0, "creation_ttl": 0, "renewable": false}}).to_string(),
            "",
        ),
        (Fault::StallMidBody, "/v1/pki/sign/web") => {
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\nConnection: close\r\n\r\n{{\"data\":{{\"certificate\":\"-----BEGIN"
            );
            let _ = c.flush();
            // Longer than the client's 2 s deadline; the thread then ends.
            std::thread::sleep(Duration::from_secs(10));
            return;
        }
        (Fault::RateLimited, "/v1/pki/sign/web") => (
            "429 Too Many Requests",
            "application/json",
            json!({"errors": ["request path \"pki/sign/web\": rate limit quota exceeded"]})
                .to_string(),
            "Retry-After: 120\r\n",
        ),
        (Fault::NotJson, "/v1/pki/sign/web") => (
            "200 OK",
            "text/html",
            "<html>maintenance</html>".to_string(),
            "",
        ),
        (_, "/v1/pki/sign/web") => ("200 OK", "application/json", sign(fault, &body, pki), ""),
        _ => (
            "404 Not Found",
            "application/json",
            json!({"errors": []}).to_string(),
            "",
        ),
    };
    fake_http::respond(
        c,
        status,
        &format!("Content-Type: {ctype}\r\n{extra}"),
        answer.as_bytes(),
    );
}

/// A `pki/sign` answer for the CSR in `body`, broken as `fault` says.
fn sign(fault: Fault, body: &[u8], pki: &Pki) -> String {
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let csr_pem = req["csr"].as_str().unwrap_or_default();
    let der = pem::parse(csr_pem).unwrap().into_contents();
    let csr = rcgen::CertificateSigningRequestParams::from_der(&der.into()).unwrap();
    let leaf = if fault == Fault::OtherKey {
        pki.leaf(csr.params, &KeyPair::generate().unwrap())
    } else {
        pki.leaf(csr.params, &csr.public_key)
    };
    let (inter, root) = (pki.inter.pem(), pki.root.pem());
    let data = match fault {
        Fault::EmptyCertificate => {
            json!({"certificate": "", "issuing_ca": "", "ca_chain": [], "serial_number": ""})
        }
        Fault::EmptyChain => json!({"certificate": leaf, "issuing_ca": "", "ca_chain": []}),
        _ => json!({"certificate": leaf, "issuing_ca": inter, "ca_chain": [inter, root]}),
    };
    json!({"data": data, "warnings": null}).to_string()
}

/// A pair from an earlier Vault issuance, published before rekey starts
/// (it adopts it): the credential a failed renewal must leave in place.
fn publish_earlier_pair(env: &common::Env, pki: &Pki) {
    let key = KeyPair::generate().unwrap();
    let leaf = pki.leaf(
        CertificateParams::new(vec!["localhost".to_string()]).unwrap(),
        &key,
    );
    let d = env.path("tls/web");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("cert.pem"), &leaf).unwrap();
    std::fs::write(d.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(
        d.join("fullchain.pem"),
        format!("{leaf}{}", pki.inter.pem()),
    )
    .unwrap();
    std::fs::write(d.join("ca.pem"), pki.root.pem()).unwrap();
}

/// Run `fault` against the daemon `attempts` times, check the invariants,
/// then let the server behave and check that the next rotation recovers.
fn vault_fault(fault: Fault, name: &str, why: &str, min_wait: u64, attempts: usize) {
    let env = common::Env::new();
    let mut sc = Scenario::new("faults_vault", &format!("Vault daemon: {name}"));
    let vault = FakeVault::start(fault);
    let hook = support::Receiver::start(Some(200));
    publish_earlier_pair(&env, &vault.pki);
    // The PKI root in trust_bundle: what lets rekey adopt that pair.
    let roots = env.path("vault-root.pem");
    std::fs::write(&roots, vault.pki.root.pem()).unwrap();
    let token = env.path("vault-token");
    std::fs::write(&token, "s.faketoken\n").unwrap();
    let d = env.path("tls/web");
    // A 2 s request deadline keeps the stall scenario short.
    env.write_config(&format!(
        "[issuer.vault]\ntype = \"vault\"\naddress = \"http://{a}\"\npki_role = \"web\"\ntimeout = \"2s\"\n\
         trust_bundle = \"{r}\"\nauth = {{ method = \"token\", token_file = \"{t}\" }}\n\n\
         [[certificate]]\nname = \"web\"\nissuer = \"vault\"\ndns_names = [\"localhost\"]\nlifetime = \"1h\"\n\
         files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\", fullchain = \"{d}/fullchain.pem\", ca = \"{d}/ca.pem\" }}\n\n\
         [[alert]]\ntype = \"webhook\"\nurl = \"{u}\"\n",
        a = vault.addr,
        t = token.display(),
        r = roots.display(),
        d = d.display(),
        u = hook.url("/hook"),
    ));
    let c = Cred::under(env.dir.path(), "web");
    let daemon = env.start();
    let adopted = rotations_fail(&mut sc, &daemon, &c, attempts, min_wait, why);

    // The server behaves again: a rotation asked for now installs.
    vault.behave();
    let (code, body) = daemon.post("/v1/rotate/web").unwrap();
    sc.check("recovers once fixed", code == 200, || {
        format!("{code} {body}")
    });
    sc.check_ok("published passes validation", inv::published_valid(&c));
    let s = common::cred(daemon.addr, "web").unwrap();
    sc.check(
        "new credential served",
        s.fingerprint != adopted.fingerprint
            && c.published_fingerprint().as_deref() == s.fingerprint.as_deref(),
        || format!("{s:?}"),
    );
    // One sink gets its alerts in raise order: once `recovered` is in, a
    // second `renewal_failed` would already be there too.
    common::wait_for(Duration::from_secs(10), "the recovered alert", || {
        (hook.events("recovered") > 0).then_some(())
    });
    let n = hook.events("renewal_failed");
    sc.check("exactly one renewal_failed alert", n == 1, || {
        format!("{n} alerts")
    });
    sc.check("recovered alert", hook.events("recovered") == 1, || {
        format!("{} recovered alerts", hook.events("recovered"))
    });
    sc.finish();
}

#[test]
fn vault_connection_refused() {
    vault_fault(Fault::Refused, "connection refused", "cannot connect", 0, 2);
}

#[test]
fn vault_timeout_mid_response() {
    vault_fault(
        Fault::StallMidBody,
        "timeout mid-response",
        "no complete answer within 2s",
        0,
        2,
    );
}

#[test]
fn vault_5xx_with_retry_after() {
    vault_fault(
        Fault::Unavailable,
        "503 from a proxy (HTML body, Retry-After)",
        "HTTP 503",
        110,
        2,
    );
}

#[test]
fn vault_429_with_retry_after() {
    vault_fault(
        Fault::RateLimited,
        "429 rate limit quota with Retry-After",
        "rate limit quota exceeded",
        110,
        2,
    );
}

#[test]
fn vault_body_not_json() {
    vault_fault(
        Fault::NotJson,
        "body that is not JSON",
        "the body is not JSON",
        0,
        2,
    );
}

#[test]
fn vault_empty_certificate() {
    vault_fault(
        Fault::EmptyCertificate,
        "success with an empty certificate and issuing_ca",
        "no data.certificate",
        0,
        2,
    );
}

#[test]
fn vault_empty_chain() {
    vault_fault(
        Fault::EmptyChain,
        "success with a certificate but an empty chain",
        "no chain",
        0,
        2,
    );
}

#[test]
fn vault_certificate_for_another_key() {
    vault_fault(
        Fault::OtherKey,
        "certificate for another key",
        "key mismatch",
        0,
        2,
    );
}
