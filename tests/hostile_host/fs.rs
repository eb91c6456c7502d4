//! Files, paths, planted credentials and ownership: what someone else on
//! the host (or a careless operator) can put where rekey reads or writes.
//!
//! - a FIFO, a symlink to /dev/zero or an oversized file at every path the
//!   config names: refused at once, naming the key and the path; never a
//!   hang, never unbounded memory, shutdown on time;
//! - a target directory moved away and replaced by a symlink: nothing is
//!   written through it, `tampered` is raised;
//! - a certificate planted before the first start: not adopted unless it
//!   chains to the issuer and passes `[policy]`; `rekey check` says so;
//! - a state dir another user owns, an admin token others can write.

use std::ffi::OsString;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::common::scorecard::Scenario;
use crate::common::*;

#[path = "../alert/support.rs"]
#[allow(dead_code)]
mod support;

const SUITE: &str = "hostile_host";
/// Far longer than any refusal takes: a hang shows up as this timeout.
const DEADLINE: Duration = Duration::from_secs(15);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// What is put at a configured path.
#[derive(Clone, Copy, Debug)]
enum Special {
    /// A FIFO nobody writes: a blocking open would hang forever.
    Fifo,
    /// A symlink to /dev/zero: a plain read would never end.
    DevZero,
    /// A regular file larger than anything that path may hold.
    TooBig(usize),
}

impl Special {
    fn make(self, p: &Path) {
        let _ = std::fs::remove_file(p);
        match self {
            Special::Fifo => {
                nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
            }
            Special::DevZero => symlink("/dev/zero", p).unwrap(),
            Special::TooBig(n) => {
                std::fs::write(p, vec![b'A'; n]).unwrap();
                set_mode(p, 0o600);
            }
        }
    }

    /// Words the refusal must contain.
    fn says(self) -> &'static str {
        match self {
            Special::Fifo => "FIFO",
            Special::DevZero => "character device",
            Special::TooBig(_) => "bytes is",
        }
    }
}

/// Run `rekey ARGS` to its end, or kill it at [`DEADLINE`]: its exit code
/// and output, or Err when it was still running.
fn run_to_end(dir: &Path, args: &[OsString]) -> Result<(i32, String), String> {
    let out_path = dir.join(format!("out-{}.log", fastrand::u64(..)));
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(bin())
        .args(args)
        .env("REKEY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            return Ok((st.code().unwrap_or(-1), text));
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            return Err(format!("still running after {DEADLINE:?}: {text}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Add lines to the `[daemon]` table of the config `env` wrote.
fn daemon_lines(env: &Env, lines: &str) {
    let p = env.path("rekey.toml");
    let text = std::fs::read_to_string(&p).unwrap().replacen(
        "[daemon]\n",
        &format!("[daemon]\n{lines}\n"),
        1,
    );
    std::fs::write(&p, text).unwrap();
}

/// A self-signed certificate and key for `localhost` valid `days` from
/// now: PEMs (cert, key) and the certificate's fingerprint.
fn self_signed(days: i64) -> (String, String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(1);
    p.not_after = now + time::Duration::days(days);
    let cert = p.self_signed(&key).unwrap();
    let fp = rekey::cert::fingerprint(cert.der());
    (cert.pem(), key.serialize_pem(), fp)
}

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
    let repaired = wait_for_opt(Duration::from_secs(20), || pair(&c.0, &c.1).ok());
    sc.check(
        "the engine still repairs the file",
        repaired.is_some(),
        || env.log(),
    );
    let logged = wait_for_opt(Duration::from_secs(20), || {
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

/// (cert, key) paths of `web` under `env` (the layout of `cert_section`).
fn inv_cred(env: &Env) -> (PathBuf, PathBuf) {
    let d = env.path("tls/web");
    (d.join("cert.pem"), d.join("key.pem"))
}

/// [`wait_for`] that returns None at the deadline instead of panicking.
fn wait_for_opt<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn directory_swapped_for_a_symlink(swap: &str) {
    let mut sc = Scenario::new(
        SUITE,
        &format!("target directory replaced by a symlink to another directory ({swap})"),
    );
    let env = Env::new();
    let hook = support::Receiver::start(Some(200));
    env.write_config_audited(&format!(
        "{}\n[[alert]]\ntype = \"webhook\"\nurl = \"{}\"\n",
        env.cert_section("web", &format!("swap = \"{swap}\"")),
        hook.url("/hook")
    ));
    let d = env.start();
    let (cert, key) = inv_cred(&env);
    let first = wait_for(Duration::from_secs(20), "issuance", || {
        pair(&cert, &key).ok().map(|p| p.0)
    });
    // Someone moves the directory away and puts a symlink to another
    // directory (holding its own key.pem) in its place.
    sc.round();
    let victim = env.path("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("key.pem"), "VICTIM").unwrap();
    let dir = env.path("tls/web");
    std::fs::rename(&dir, env.path("tls/web.moved")).unwrap();
    symlink(&victim, &dir).unwrap();
    let (code, body) = http(d.addr, "POST", "/v1/rotate/web").unwrap();
    sc.check("the rotation is refused", code != 200, || {
        format!("{code} {body}")
    });
    sc.check(
        "it says why: the directory was replaced",
        body.contains("refusing to write into") && body.contains(&dir.display().to_string()),
        || body.clone(),
    );
    let names: Vec<_> = std::fs::read_dir(&victim)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    sc.check(
        "nothing written through the symlink",
        std::fs::read(victim.join("key.pem")).unwrap() == b"VICTIM" && names.len() == 1,
        || format!("victim holds {names:?}"),
    );
    let alert = wait_for_opt(Duration::from_secs(15), || {
        hook.requests()
            .iter()
            .map(|r| r.json())
            .find(|j| j["event"] == "tampered" && j["credential"] == "web")
    });
    sc.check("a tampered alert is sent", alert.is_some(), || {
        format!(
            "{:?}",
            hook.requests().iter().map(|r| r.json()).collect::<Vec<_>>()
        )
    });
    let audited = env
        .audit()
        .iter()
        .any(|r| r["event"] == "tampered" && r["outcome"] == "refused");
    sc.check("the audit log records it", audited, || {
        format!("{:?}", env.audit())
    });
    // The backstop/file-event repair refuses the same way (no write).
    let s = cred_status(d.addr, "web").unwrap();
    sc.check(
        "the committed generation stays",
        s["fingerprint"] == first.as_str(),
        || s.to_string(),
    );
    // Put back: rotations work again.
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(env.path("tls/web.moved"), &dir).unwrap();
    let (code, body) = http(d.addr, "POST", "/v1/rotate/web").unwrap();
    sc.check(
        "rotates again once the directory is back",
        code == 200,
        || format!("{code} {body}"),
    );
    sc.check_ok(
        "the pair matches",
        pair(&cert, &key).and_then(|(fp, ok)| {
            (ok && fp != first)
                .then_some(())
                .ok_or(format!("{fp} matches={ok}"))
        }),
    );
    sc.finish();
}

#[test]
fn a_target_directory_swapped_for_a_symlink_is_never_written_through_rename() {
    directory_swapped_for_a_symlink("rename");
}

#[test]
fn a_target_directory_swapped_for_a_symlink_is_never_written_through_symlink() {
    directory_swapped_for_a_symlink("symlink");
}

fn line_of<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.trim_start().starts_with(name))
        .unwrap_or("")
}

#[test]
fn a_planted_certificate_is_not_adopted_unless_it_chains_and_complies() {
    let mut sc = Scenario::new(
        SUITE,
        "self-signed 100-year certificate planted before the first start",
    );
    let env = Env::new();
    let cfg = env.write_config_audited(&env.cert_section("web", ""));
    let (cert, key) = inv_cred(&env);
    let d = env.path("tls/web");
    std::fs::create_dir_all(&d).unwrap();
    let (pem, key_pem, planted) = self_signed(36500);
    for f in ["cert.pem", "fullchain.pem", "ca.pem"] {
        std::fs::write(d.join(f), &pem).unwrap();
    }
    std::fs::write(&key, &key_pem).unwrap();
    sc.round();
    let check = |env: &Env| {
        run_to_end(env.dir.path(), &os(&["check", "-c", cfg.to_str().unwrap()]))
            .map(|(_, out)| line_of(&out, "web").to_string())
            .unwrap_or_default()
    };
    let line = check(&env);
    sc.check(
        "rekey check does not call it valid",
        line.contains("NOT trusted") && !line.contains("valid until") && !line.contains("renews"),
        || line.clone(),
    );
    let daemon = env.start();
    let s = wait_for(Duration::from_secs(20), "a certificate of its own", || {
        let s = cred_status(daemon.addr, "web")?;
        (s["state"] == "valid" && s["fingerprint"] != planted.as_str()).then_some(s)
    });
    let renews = rekey::status::parse_time(s["next_renewal"].as_str());
    let day = SystemTime::now() + Duration::from_secs(2 * 86400);
    sc.check(
        "reissued by the configured CA, renewal within its lifetime",
        renews.is_some_and(|t| t < day) && pair(&cert, &key).is_ok_and(|p| p.0 != planted && p.1),
        || s.to_string(),
    );
    let refused = env.audit().into_iter().find(|r| r["event"] == "adopted");
    sc.check(
        "an audit record says why it was not adopted",
        refused.as_ref().is_some_and(|r| {
            r["outcome"] == "refused"
                && r["reason"]
                    .as_str()
                    .is_some_and(|w| w.contains("does not chain"))
        }),
        || format!("{refused:?}"),
    );
    sc.check(
        "a WARN says so",
        env.log().contains("not adopted") && env.log().contains("WARN"),
        || env.log(),
    );
    let ours = s["fingerprint"].as_str().unwrap().to_string();
    drop(daemon);

    // Control: the state dir's journal is lost but the local CA kept; the
    // published pair chains to it and is adopted, not reissued.
    sc.round();
    std::fs::remove_dir_all(env.path("state/certs")).unwrap();
    let line = check(&env);
    sc.check(
        "rekey check calls a pair from the CA valid",
        line.contains("valid until"),
        || line.clone(),
    );
    let daemon = env.start();
    let s = wait_for(Duration::from_secs(20), "adoption", || {
        let s = cred_status(daemon.addr, "web")?;
        (s["state"] == "valid").then_some(s)
    });
    sc.check(
        "adopted, not reissued",
        s["fingerprint"] == ours.as_str(),
        || s.to_string(),
    );
    drop(daemon);

    // A pair from the CA that lives longer than [policy] max_lifetime.
    sc.round();
    std::fs::remove_dir_all(env.path("state/certs")).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[[certificate]]\nname = \"web\"\n",
        "[policy]\nmax_lifetime = \"1h\"\n\n[[certificate]]\nname = \"web\"\nlifetime = \"1h\"\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let line = check(&env);
    sc.check(
        "rekey check names the policy",
        line.contains("NOT trusted") && line.contains("max_lifetime"),
        || line.clone(),
    );
    let daemon = env.start();
    let s = wait_for(Duration::from_secs(20), "a compliant certificate", || {
        let s = cred_status(daemon.addr, "web")?;
        (s["state"] == "valid" && s["fingerprint"] != ours.as_str()).then_some(s)
    });
    let nb = rekey::status::parse_time(s["not_before"].as_str());
    let na = rekey::status::parse_time(s["not_after"].as_str());
    sc.check(
        "reissued within max_lifetime",
        matches!((nb, na), (Some(b), Some(a)) if a.duration_since(b).unwrap() <= Duration::from_secs(3600)),
        || s.to_string(),
    );
    sc.finish();
}

#[test]
fn a_state_dir_another_user_owns_and_an_admin_token_others_can_write_are_refused() {
    let mut sc = Scenario::new(
        SUITE,
        "state dir owned by another user; admin token writable or readable by others",
    );
    if !is_root() {
        return sc.skip("needs root to give the state dir to another user");
    }
    // A state dir owned by nobody, mode 0700.
    sc.round();
    let env = Env::new();
    let cfg = env.write_config(&env.cert_section("web", ""));
    let state = env.path("state");
    std::fs::create_dir(&state).unwrap();
    set_mode(&state, 0o700);
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let args = os(&["run", "-c", cfg.to_str().unwrap()]);
    if let Some((code, out)) = sc.check_ok("returns", run_to_end(env.dir.path(), &args)) {
        sc.check("refused as a config error (exit 2)", code == 2, || {
            format!("exit {code}: {out}")
        });
        sc.check(
            "names the key, the owner and the fix",
            out.contains("daemon.state_dir") && out.contains("uid 65534") && out.contains("chown"),
            || out.clone(),
        );
    }
    sc.check(
        "nothing was written into it (no CA key)",
        std::fs::read_dir(&state).unwrap().count() == 0,
        || "the state dir is not empty".into(),
    );

    // An admin token file anyone may write.
    sc.round();
    let env = Env::new();
    let cfg = env.write_config(&env.cert_section("web", ""));
    let token = env.path("admin-token");
    std::fs::write(&token, "s3cret-admin\n").unwrap();
    set_mode(&token, 0o666);
    daemon_lines(&env, &format!("admin_token_file = \"{}\"", token.display()));
    let args = os(&["run", "-c", cfg.to_str().unwrap()]);
    if let Some((code, out)) = sc.check_ok("returns", run_to_end(env.dir.path(), &args)) {
        sc.check("refused", code != 0, || format!("exit {code}: {out}"));
        sc.check(
            "names the key, the mode and the fix",
            out.contains("daemon.admin_token_file")
                && out.contains("0666")
                && out.contains("chmod o-w"),
            || out.clone(),
        );
        sc.check(
            "never echoes the token",
            !out.contains("s3cret-admin"),
            || out.clone(),
        );
    }

    // Readable by others: it runs, and a WARN says so.
    sc.round();
    set_mode(&token, 0o644);
    let d = env.start();
    let warned = wait_for_opt(Duration::from_secs(10), || {
        let log = env.log();
        log.lines()
            .any(|l| {
                l.contains("WARN")
                    && l.contains("daemon.admin_token_file")
                    && l.contains("every user")
            })
            .then_some(())
    });
    sc.check(
        "a WARN names the key and what is wrong",
        warned.is_some(),
        || env.log(),
    );
    drop(d);
    sc.finish();
}

#[test]
fn an_api_key_file_planted_before_the_first_start_is_replaced_not_adopted() {
    let mut sc = Scenario::new(SUITE, "API key file planted before the first start");
    let env = Env::new();
    let key = env.path("app/svc.json");
    let (svc, keys) = crate::common::keyservice::key_service(key.clone());
    crate::common::keyservice::http_config(&env, svc, None);
    // No journal vouches for it, and a key cannot be checked offline.
    std::fs::write(
        &key,
        r#"{"secret":"planted-secret","id":"planted","expires_at":"2125-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    sc.round();
    let d = env.start();
    let s = wait_for(Duration::from_secs(30), "svc valid", || {
        let s = cred_status(d.addr, "svc")?;
        (s["state"] == "valid").then_some(s)
    });
    sc.check(
        "the key in use is one the issuer minted",
        s["serial"] == "key-1",
        || s.to_string(),
    );
    let file = std::fs::read_to_string(&key).unwrap_or_default();
    sc.check(
        "the planted file was replaced",
        file.contains("\"key-1\"") && !file.contains("planted"),
        || file.clone(),
    );
    let minted = keys.lock().unwrap().by_id.len();
    sc.check("exactly one key minted", minted == 1, || {
        format!("{minted} keys")
    });
    sc.finish();
}
