//! App faults with a real TLS app (`rekey demo-app`, which reloads its files
//! on SIGHUP like nginx) and a real TLS probe: the app crashes during the
//! reload, never reloads, serves a different certificate, or restarts with
//! a new PID (pid file rewritten) around the reload. Expected: a failed
//! handoff is rolled back to the committed generation, alerted once
//! (`handoff_failed`, `rolled_back: true`), and the daemon converges to a
//! verified handoff once the app behaves, with one `recovered` alert. What
//! the app serves is read independently (Python's ssl module).

use crate::support as common;
use crate::support::alert as support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::invariants::{self as inv, Cred};
use common::scorecard::Scenario;
use common::*;
use rekey::status::{Handoff, RotateResult, State};

/// The demo app on `addr`, serving `cert`/`key`; killed on drop.
struct App {
    child: Child,
}

impl App {
    fn start(cert: &Path, key: &Path, addr: SocketAddr, pid_file: &Path) -> App {
        let log = pid_file.with_extension("log");
        let mut child = Command::new(bin())
            .arg("demo-app")
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(["--listen", &addr.to_string()])
            .arg("--pid-file")
            .arg(pid_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // A busy machine may be slow to start it; an app that exited (its
        // port taken, its files unreadable) fails at once with its own words.
        wait_for(Duration::from_secs(30), "the app to serve TLS", || {
            if let Ok(Some(status)) = child.try_wait() {
                let why = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("the app exited ({status}) before serving TLS on {addr}: {why}");
            }
            served_fingerprint(addr, "localhost")
        });
        App { child }
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    env: Env,
    c: Cred,
    app_addr: SocketAddr,
    pid_file: PathBuf,
    mode: PathBuf,
    hook: support::Receiver,
}

impl Setup {
    /// `reload` is a TOML value; `{pid}` and `{mode}` are filled in.
    fn new(reload: &str) -> Setup {
        let env = Env::new();
        let app_addr = free_addr();
        let pid_file = env.path("app.pid");
        let mode = env.path("mode");
        std::fs::write(&mode, "hup").unwrap();
        let hook = support::Receiver::start(Some(200));
        let d = env.path("tls/web");
        let reload = reload
            .replace("{pid}", &pid_file.display().to_string())
            .replace("{mode}", &mode.display().to_string());
        env.write_config(&format!(
            "[[certificate]]\nname = \"web\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\nlifetime = \"1h\"\n\
             files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\", fullchain = \"{d}/fullchain.pem\", ca = \"{d}/ca.pem\" }}\n\
             reload = {reload}\n\
             verify = {{ type = \"tls\", connect = \"{app_addr}\", server_name = \"localhost\", timeout = \"2s\" }}\n\n\
             [[alert]]\ntype = \"webhook\"\nurl = \"{u}\"\n",
            d = d.display(),
            u = hook.url("/hook"),
        ));
        // Rotation after rotation against a misbehaving app: the issuance
        // budget is not under test here (tests/it/budget.rs).
        env.dev_issuer("max_issuances = \"unlimited\"");
        let c = Cred::under(env.dir.path(), "web");
        Setup {
            env,
            c,
            app_addr,
            pid_file,
            mode,
            hook,
        }
    }

    fn app(&self) -> App {
        App::start(
            self.c.fullchain.as_ref().unwrap(),
            &self.c.key,
            self.app_addr,
            &self.pid_file,
        )
    }

    fn served(&self) -> Option<String> {
        served_fingerprint(self.app_addr, "localhost")
    }

    fn alerts(&self, event: &str) -> Vec<serde_json::Value> {
        self.hook
            .requests()
            .iter()
            .map(|r| r.json())
            .filter(|j| j["event"] == event)
            .collect()
    }
}

/// The reload used by the fault switches: `mode` says what the "app" does
/// with it (a shell in argv, test only): hup reloads, crash kills it,
/// ignore does nothing.
const SWITCHED_RELOAD: &str = "{ type = \"exec\", command = [\"sh\", \"-c\", \"case $(cat {mode}) in hup) kill -HUP $(cat {pid});; crash) kill -9 $(cat {pid});; esac\"] }";

/// Bootstrap, then one verified rotation, as every scenario's start.
fn verified_start(s: &Setup) -> (Daemon, Option<App>) {
    let d = s.env.start();
    wait_for(Duration::from_secs(10), "first issuance", || {
        let st = cred(d.addr, "web")?;
        (st.state == State::Valid).then_some(())
    });
    let app = s.app();
    inv::converges(d.addr, &s.c, &[Handoff::Verified], Duration::from_secs(15)).unwrap();
    (d, Some(app))
}

/// A failed handoff: rolled back to `old`, one alert, files are the committed pair.
fn check_rolled_back(sc: &mut Scenario, s: &Setup, d: &Daemon, old: &str, served: Option<&str>) {
    sc.round();
    let (code, body) = d.post("/v1/rotate/web").unwrap();
    sc.check(
        "rotation reported rolled back",
        code == 502 && body.contains("rolled back"),
        || format!("{code} {body}"),
    );
    sc.check(
        "old generation published again",
        s.c.published_fingerprint().as_deref() == Some(old),
        || format!("{:?} instead of {old}", s.c.published_fingerprint()),
    );
    sc.check_ok("pair matches", inv::pair_matches(&s.c).map(|_| ()));
    sc.check_ok("published is committed", inv::published_is_committed(&s.c));
    let st = cred(d.addr, "web").unwrap();
    sc.check(
        "status says failed and rolled back",
        st.handoff == Handoff::Failed
            && st.last_rotation.as_ref().map(|r| r.result) == Some(RotateResult::RolledBack),
        || format!("{st:?}"),
    );
    let alerts = wait_for(Duration::from_secs(5), "handoff_failed", || {
        let a = s.alerts("handoff_failed");
        (!a.is_empty()).then_some(a)
    });
    std::thread::sleep(Duration::from_millis(300));
    let alerts = if s.alerts("handoff_failed").len() > alerts.len() {
        s.alerts("handoff_failed")
    } else {
        alerts
    };
    sc.check(
        "exactly one handoff_failed alert",
        alerts.len() == 1,
        || format!("{alerts:?}"),
    );
    sc.check(
        "alert says rolled back",
        alerts[0]["rolled_back"] == true,
        || alerts[0].to_string(),
    );
    if let Some(fp) = served {
        sc.check(
            "alert names what the app serves",
            alerts[0]["served_fingerprint"] == fp,
            || alerts[0].to_string(),
        );
    }
}

/// The app behaves again: the backoff retry hands over, verified, recovered once.
fn check_recovers(sc: &mut Scenario, s: &Setup, d: &Daemon, old: &str) {
    let st = inv::converges(d.addr, &s.c, &[Handoff::Verified], Duration::from_secs(30));
    let st = sc.check_ok("converges to a verified handoff", st);
    if let Some(st) = st {
        sc.check(
            "a new generation",
            st.fingerprint.as_deref() != Some(old),
            || "still the old one".into(),
        );
        sc.check(
            "the app serves what status says",
            s.served().as_deref() == st.fingerprint.as_deref(),
            || format!("{:?} vs {:?}", s.served(), st.fingerprint),
        );
    }
    let rec = wait_for(Duration::from_secs(5), "recovered", || {
        let a = s.alerts("recovered");
        (!a.is_empty()).then_some(a.len())
    });
    sc.check("exactly one recovered alert", rec == 1, || format!("{rec}"));
    sc.check_ok("published is committed", inv::published_is_committed(&s.c));
}

#[test]
fn app_crashes_during_reload() {
    let mut sc = Scenario::new("faults_app", "app crashes during reload");
    let s = Setup::new(SWITCHED_RELOAD);
    let (d, mut app) = verified_start(&s);
    let old = s.c.published_fingerprint().unwrap();
    std::fs::write(&s.mode, "crash").unwrap();
    check_rolled_back(&mut sc, &s, &d, &old, None);
    sc.check("the app is down", s.served().is_none(), || {
        "still serving".into()
    });
    // The app comes back (systemd restarts it) on the rolled-back files.
    std::fs::write(&s.mode, "hup").unwrap();
    drop(app.take());
    let _app = s.app();
    check_recovers(&mut sc, &s, &d, &old);
    sc.finish();
}

#[test]
fn app_never_reloads() {
    let mut sc = Scenario::new("faults_app", "app never reloads");
    let s = Setup::new(SWITCHED_RELOAD);
    let (d, _app) = verified_start(&s);
    let old = s.c.published_fingerprint().unwrap();
    std::fs::write(&s.mode, "ignore").unwrap();
    check_rolled_back(&mut sc, &s, &d, &old, Some(&old));
    sc.check(
        "the app still serves the old generation",
        s.served().as_deref() == Some(old.as_str()),
        || format!("{:?}", s.served()),
    );
    std::fs::write(&s.mode, "hup").unwrap();
    check_recovers(&mut sc, &s, &d, &old);
    sc.finish();
}

#[test]
fn app_serves_a_different_certificate() {
    let mut sc = Scenario::new("faults_app", "app serves a different certificate");
    let s = Setup::new(SWITCHED_RELOAD);
    let (d, mut app) = verified_start(&s);
    let old = s.c.published_fingerprint().unwrap();
    // The app is (mis)configured with someone else's files.
    let other = s.env.path("other");
    std::fs::create_dir_all(&other).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(other.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(other.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    drop(app.take());
    let foreign = App::start(
        &other.join("cert.pem"),
        &other.join("key.pem"),
        s.app_addr,
        &s.pid_file,
    );
    let foreign_fp = s.served().unwrap();
    check_rolled_back(&mut sc, &s, &d, &old, Some(&foreign_fp));
    // Fixed: the app goes back to the managed files.
    drop(foreign);
    let _app = s.app();
    check_recovers(&mut sc, &s, &d, &old);
    sc.finish();
}

#[test]
fn app_restarts_with_a_new_pid() {
    let mut sc = Scenario::new(
        "faults_app",
        "app restarts with a new PID around the reload",
    );
    let s = Setup::new("{ type = \"signal\", signal = \"HUP\", pid_file = \"{pid}\" }");
    let (d, mut app) = verified_start(&s);
    // Restarted between two rotations: the pid file is read again each time.
    for _ in 0..3 {
        sc.round();
        let before = app.as_ref().map(App::pid);
        drop(app.take());
        app = Some(s.app());
        sc.check("new pid", app.as_ref().map(App::pid) != before, || {
            "same pid".into()
        });
        let (code, body) = d.post("/v1/rotate/web").unwrap();
        sc.check("verified after a restart", code == 200, || {
            format!("{code} {body}")
        });
        let st = cred(d.addr, "web").unwrap();
        sc.check(
            "the app serves the new generation",
            s.served().as_deref() == st.fingerprint.as_deref(),
            || format!("{:?} vs {:?}", s.served(), st.fingerprint),
        );
    }
    // Restarts racing the rotations: a restart may land between publish
    // and reload (it then reads the new files itself) or between reload and
    // verify. Every outcome must leave a matching, committed pair.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        let (cert, key, addr, pid) = (
            s.c.fullchain.clone().unwrap(),
            s.c.key.clone(),
            s.app_addr,
            s.pid_file.clone(),
        );
        let mut current = app.take();
        std::thread::spawn(move || {
            let mut restarts = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                drop(current.take());
                current = Some(App::start(&cert, &key, addr, &pid));
                restarts += 1;
                std::thread::sleep(Duration::from_millis(fastrand::u64(20..150)));
            }
            (current, restarts)
        })
    };
    let (mut ok, mut rolled) = (0, 0);
    for _ in 0..10 {
        sc.round();
        let (code, body) = d.post("/v1/rotate/web").unwrap();
        match code {
            200 => ok += 1,
            502 if body.contains("rolled back") => rolled += 1,
            _ => {
                sc.check("success or rolled back", false, || format!("{code} {body}"));
            }
        }
        sc.check_ok("pair matches", inv::pair_matches(&s.c).map(|_| ()));
        sc.check_ok("published is committed", inv::published_is_committed(&s.c));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (_app, restarts) = churn.join().unwrap();
    sc.note(format!(
        "{restarts} restarts during 10 rotations: {ok} verified, {rolled} rolled back"
    ));
    let (code, body) = d.post("/v1/rotate/web").unwrap();
    sc.check("verified once the restarts stop", code == 200, || {
        format!("{code} {body}")
    });
    let st = sc.check_ok(
        "converges",
        inv::converges(d.addr, &s.c, &[Handoff::Verified], Duration::from_secs(30)),
    );
    if let Some(st) = st {
        sc.check(
            "the app serves the committed generation",
            s.served().as_deref() == st.fingerprint.as_deref(),
            || format!("{:?} vs {:?}", s.served(), st.fingerprint),
        );
    }
    sc.finish();
}
