//! Paths rekey reads: a FIFO, a symlink to /dev/zero or an oversized file
//! at every path the config names, and a secret file turned into a FIFO
//! while the daemon runs.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::support::scorecard::Scenario;

/// One path the config names, set up with `special` put there: the argv to
/// run, and what the refusal must name (the config key, or `None` where
/// the path alone says it).
fn setup(case: &str, env: &Env, p: &Path) -> (Vec<OsString>, Option<&'static str>) {
    let cfg = env.path("rekey.toml");
    let run = vec![OsString::from("run"), "-c".into(), cfg.clone().into()];
    let d = env.path("tls/web");
    std::fs::create_dir_all(&d).unwrap();
    let plain = |name: &str, text: &str| {
        let f = env.path(name);
        std::fs::write(&f, text).unwrap();
        set_mode(&f, 0o600);
        f
    };
    match case {
        "config file" => {
            let args = vec![OsString::from("check"), "-c".into(), p.into()];
            (args, Some("cannot read config file"))
        }
        "daemon.admin_token_file" => {
            env.write_config(&env.cert_section("web", ""));
            daemon_lines(env, &format!("admin_token_file = \"{}\"", p.display()));
            (run, Some("daemon.admin_token_file"))
        }
        "daemon.audit_log" => {
            env.write_config(&env.cert_section("web", ""));
            daemon_lines(env, &format!("audit_log = \"{}\"", p.display()));
            (run, Some("daemon.audit_log"))
        }
        "issuer.le.trust_bundle" => {
            env.write_config(&format!(
                "[issuer.le]\ntype = \"acme\"\ndirectory = \"https://127.0.0.1:9/dir\"\ntrust_bundle = \"{}\"\n\
                 challenge = {{ type = \"http-01\", listen = \"127.0.0.1:0\" }}\n\n{}",
                p.display(),
                env.cert_section("web", "")
            ));
            (run, Some("trust_bundle"))
        }
        "issuer.le.eab.hmac_key_file" => {
            env.write_config(&format!(
                "[issuer.le]\ntype = \"acme\"\ndirectory = \"https://127.0.0.1:9/dir\"\n\
                 eab = {{ kid = \"k1\", hmac_key_file = \"{}\" }}\n\
                 challenge = {{ type = \"http-01\", listen = \"127.0.0.1:0\" }}\n\n{}",
                p.display(),
                env.cert_section("web", "")
            ));
            (run, Some("eab.hmac_key_file"))
        }
        "issuer.vault.auth.secret_id_file" => {
            let role = plain("role-id", "role\n");
            env.write_config(&format!(
                "[issuer.vault]\ntype = \"vault\"\naddress = \"http://127.0.0.1:9\"\npki_role = \"web\"\n\
                 auth = {{ method = \"approle\", role_id_file = \"{}\", secret_id_file = \"{}\" }}\n\n{}",
                role.display(),
                p.display(),
                env.cert_section("web", "")
            ));
            (run, Some("secret_id_file"))
        }
        "alert.headers (file)" => {
            env.write_config(&format!(
                "{}\n[[alert]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\
                 headers = {{ Authorization = {{ file = \"{}\" }} }}\n",
                env.cert_section("web", ""),
                p.display()
            ));
            (run, Some("header Authorization file"))
        }
        "alert.url_file" => {
            env.write_config(&format!(
                "{}\n[[alert]]\ntype = \"webhook\"\nurl_file = \"{}\"\n",
                env.cert_section("web", ""),
                p.display()
            ));
            (run, Some("url_file"))
        }
        "issuer.keys.headers (file)" => {
            env.write_config(&format!(
                "[issuer.keys]\ntype = \"http\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
                 headers = {{ Authorization = {{ file = \"{}\" }} }}\n\n\
                 [[api_key]]\nname = \"svc\"\nissuer = \"keys\"\nfile = \"{}\"\nlifetime = \"1h\"\n\
                 mint = {{ path = \"keys\", secret = \"key.value\", id = \"key.name\" }}\n",
                p.display(),
                env.path("app/svc.key").display()
            ));
            (run, Some("header Authorization"))
        }
        "certificate.verify.client_key" => {
            let (cert, _, _) = self_signed(1);
            let c = plain("client.pem", &cert);
            env.write_config(&env.cert_section(
                "web",
                &format!(
                    "verify = {{ type = \"tls\", connect = \"127.0.0.1:9\", server_name = \"localhost\", client_cert = \"{}\", client_key = \"{}\" }}",
                    c.display(),
                    p.display()
                ),
            ));
            (run, Some("client_key"))
        }
        "rekey inspect FILE" => (vec![OsString::from("inspect"), p.into()], None),
        "certificate.files.cert (rekey check)" => {
            env.write_config(&format!(
                "[[certificate]]\nname = \"web\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\n\
                 files = {{ cert = \"{}\", key = \"{}/key.pem\" }}\n",
                p.display(),
                d.display()
            ));
            (
                vec![OsString::from("check"), "-c".into(), cfg.into()],
                Some("unreadable"),
            )
        }
        other => panic!("unknown case {other}"),
    }
}

#[test]
fn special_files_at_configured_paths_are_refused_at_once() {
    let mut sc = Scenario::new(
        SUITE,
        "FIFO, /dev/zero or oversized file at every path the config names",
    );
    let secret = Special::TooBig(100 * 1024);
    let cases: &[(&str, &[Special])] = &[
        (
            "config file",
            &[Special::Fifo, Special::DevZero, Special::TooBig(33 << 20)],
        ),
        (
            "daemon.admin_token_file",
            &[Special::Fifo, Special::DevZero, secret],
        ),
        ("daemon.audit_log", &[Special::Fifo, Special::DevZero]),
        (
            "issuer.le.trust_bundle",
            &[Special::Fifo, Special::DevZero, Special::TooBig(5 << 20)],
        ),
        (
            "issuer.le.eab.hmac_key_file",
            &[Special::Fifo, Special::DevZero, secret],
        ),
        (
            "issuer.vault.auth.secret_id_file",
            &[Special::Fifo, Special::DevZero, secret],
        ),
        (
            "alert.headers (file)",
            &[Special::Fifo, Special::DevZero, secret],
        ),
        ("alert.url_file", &[Special::Fifo, Special::DevZero, secret]),
        (
            "issuer.keys.headers (file)",
            &[Special::Fifo, Special::DevZero, secret],
        ),
        (
            "certificate.verify.client_key",
            &[Special::Fifo, Special::DevZero, Special::TooBig(5 << 20)],
        ),
        (
            "rekey inspect FILE",
            &[Special::Fifo, Special::DevZero, Special::TooBig(5 << 20)],
        ),
        (
            "certificate.files.cert (rekey check)",
            &[Special::Fifo, Special::DevZero, Special::TooBig(5 << 20)],
        ),
    ];
    for (case, specials) in cases {
        for special in specials.iter().copied() {
            sc.round();
            let env = Env::new();
            let p = env.path("special");
            special.make(&p);
            let (args, key) = setup(case, &env, &p);
            let what = format!("{case}: {special:?}");
            let Some((code, out)) = sc.check_ok(
                "returns within the deadline",
                run_to_end(env.dir.path(), &args),
            ) else {
                continue;
            };
            let reading = *case == "certificate.files.cert (rekey check)";
            sc.check(
                "exit code says it failed",
                if reading {
                    code == 0
                } else {
                    code == 1 || code == 2
                },
                || format!("{what}: exit {code}: {out}"),
            );
            let p_shown = p.display().to_string();
            sc.check("names the path", out.contains(&p_shown), || {
                format!("{what}: {out}")
            });
            if let Some(key) = key {
                sc.check("names the config key", out.contains(key), || {
                    format!("{what}: wanted {key:?} in: {out}")
                });
            }
            // The audit log refuses a FIFO and a symlink its own way.
            let why_ok = match (*case, special) {
                ("daemon.audit_log", Special::Fifo) => out.contains("FIFO"),
                ("daemon.audit_log", Special::DevZero) => out.contains("symlink"),
                _ => out.contains(special.says()),
            };
            sc.check("says what is wrong with it", why_ok, || {
                format!("{what}: wanted {:?} in: {out}", special.says())
            });
        }
    }
    sc.note("12 config keys and commands × FIFO, /dev/zero symlink, oversized file");
    sc.finish();
}

#[test]
fn a_secret_file_turned_into_a_fifo_while_running_hangs_nothing() {
    let mut sc = Scenario::new(SUITE, "alert header file replaced by a FIFO while running");
    let env = Env::new();
    let hook = support::Receiver::start(Some(200));
    let token = env.path("hook-token");
    std::fs::write(&token, "Bearer t0ken\n").unwrap();
    set_mode(&token, 0o600);
    env.write_config(&format!(
        "{}\n[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\nheaders = {{ Authorization = {{ file = \"{}\" }} }}\n",
        env.cert_section("web", ""),
        hook.url("/hook"),
        token.display()
    ));
    let d = env.start();
    let c = inv_cred(&env);
    wait_for(Duration::from_secs(20), "issuance", || {
        pair(&c.0, &c.1).ok()
    });
    sc.round();
    Special::Fifo.make(&token);
    // Tampering raises an alert, whose sink reads the header file.
    std::fs::remove_file(&c.0).unwrap();
    let repaired = wait_until(Instant::now() + Duration::from_secs(20), || {
        pair(&c.0, &c.1).ok()
    });
    sc.check(
        "the engine still repairs the file",
        repaired.is_some(),
        || env.log(),
    );
    let logged = wait_until(Instant::now() + Duration::from_secs(20), || {
        let log = env.log();
        (log.contains(&token.display().to_string()) && log.contains("FIFO")).then_some(())
    });
    sc.check(
        "the failed send names the file and says FIFO",
        logged.is_some(),
        || env.log(),
    );
    sc.check(
        "/healthz answers",
        http(d.addr, "GET", "/healthz").is_ok_and(|r| r.0 == 200),
        String::new,
    );
    let started = Instant::now();
    let code = d.terminate();
    sc.check(
        "SIGTERM exits within its deadline",
        code.is_some() && started.elapsed() < Duration::from_secs(15),
        || format!("exit {code:?} after {:?}", started.elapsed()),
    );
    sc.finish();
}
