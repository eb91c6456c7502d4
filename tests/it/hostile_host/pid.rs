//! The pid file of a signal reload, written by someone else: a FIFO (an
//! `open` that never returns), a symlink to `/dev/zero` (endless bytes), a
//! file naming PID 1 or rekey itself, pids written loosely (`+1`, ` 1 `,
//! `00001`). Plus the careless host: a process rekey may not signal
//! (EPERM), and one that /proc hides from it (`hidepid=invisible`, what
//! systemd's `ProtectProc=invisible` does). Each refusal must be prompt, say
//! which credential, config key and path, and leave the daemon stoppable.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::support::scorecard::Scenario;
use crate::support::*;
use rekey::status::{CredentialStatus, Handoff, RotateOutcome, State};

const SUITE: &str = "hostile_host";
/// A refused reload answers at once; this only bounds a hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// A `web` certificate whose reload sends `signal` through `pid_file`; no
/// probe, so a delivered signal is a successful rotation.
fn config(env: &Env, pid_file: &Path, signal: &str) {
    let d = env.path("tls/web");
    env.write_config(&format!(
        "[[certificate]]\nname = \"web\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\n\
         files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\" }}\n\
         reload = {{ type = \"signal\", signal = \"{signal}\", pid_file = \"{p}\" }}\n",
        d = d.display(),
        p = pid_file.display(),
    ));
}

/// Wait until the first certificate is issued (the bootstrap reload may fail).
fn issued(env: &Env) -> Option<CredentialStatus> {
    wait_until(std::time::Instant::now() + Duration::from_secs(20), || {
        cred(env.addr, "web").filter(|s| s.state == State::Valid)
    })
}

/// `POST /v1/rotate/web` on the admin socket, or None when no answer came
/// within [`ANSWER_WITHIN`].
fn rotate(socket: std::path::PathBuf) -> Option<(u16, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(http_unix(&socket, "POST", "/v1/rotate/web").ok());
    });
    rx.recv_timeout(ANSWER_WITHIN).ok().flatten()
}

/// Rotate once with a pid file that must be refused: the answer comes at
/// once, is a failed rotation, and its error (also in `/status`) contains
/// every word of `words`.
fn refused(sc: &mut Scenario, env: &Env, what: &str, words: &[&str]) {
    sc.round();
    let Some((code, body)) = rotate(env.socket()) else {
        sc.check(&format!("{what}: answered promptly"), false, || {
            format!("no answer within {ANSWER_WITHIN:?}")
        });
        return;
    };
    sc.check(&format!("{what}: answered promptly"), true, String::new);
    sc.check(
        "a refused reload fails the rotation (502)",
        code == 502,
        || format!("HTTP {code}: {body}"),
    );
    let error = serde_json::from_str::<RotateOutcome>(&body)
        .ok()
        .and_then(|o| o.error)
        .unwrap_or_default();
    let missing: Vec<&&str> = words.iter().filter(|w| !error.contains(**w)).collect();
    sc.check(
        "the error names credential, key, path and cause",
        missing.is_empty(),
        || format!("{what}: missing {missing:?} in {error:?}"),
    );
    let s = cred(env.addr, "web");
    sc.check(
        "/status shows the failed handoff and why",
        s.as_ref().is_some_and(|s| {
            s.handoff == Handoff::Failed && s.last_error.as_deref() == Some(error.as_str())
        }),
        || format!("{s:?}"),
    );
}

/// The daemon still answers and SIGTERM stops it cleanly.
fn stops(sc: &mut Scenario, d: Daemon) {
    let alive = http(d.addr, "GET", "/healthz").is_ok_and(|r| r.0 == 200);
    sc.check("the daemon is alive after the refusals", alive, String::new);
    let code = d.terminate();
    sc.check(
        "SIGTERM stops the daemon within its deadline",
        code == Some(0),
        || format!("exit {code:?}"),
    );
}

#[test]
fn a_fifo_pid_file_is_refused_at_once_and_the_daemon_still_stops() {
    let mut sc = Scenario::new(SUITE, "pid file is a FIFO (open would block forever)");
    let env = Env::new();
    let fifo = env.path("app.pid");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    config(&env, &fifo, "HUP");
    let d = env.start();
    // The first issuance's reload reads the FIFO too: it must not hang.
    let first = issued(&env);
    sc.check("the first certificate is issued", first.is_some(), || {
        env.log()
    });
    let path = fifo.display().to_string();
    refused(
        &mut sc,
        &env,
        "FIFO",
        &[
            "web",
            "reload.pid_file",
            &path,
            "FIFO",
            "not a regular file",
        ],
    );
    stops(&mut sc, d);
    sc.finish();
}

#[test]
fn a_pid_file_linked_to_dev_zero_is_refused_without_reading_it() {
    let mut sc = Scenario::new(SUITE, "pid file is a symlink to /dev/zero");
    let env = Env::new();
    let link = env.path("app.pid");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    config(&env, &link, "HUP");
    let d = env.start();
    let first = issued(&env);
    sc.check("the first certificate is issued", first.is_some(), || {
        env.log()
    });
    let path = link.display().to_string();
    refused(
        &mut sc,
        &env,
        "/dev/zero",
        &["web", "reload.pid_file", &path, "character device"],
    );
    // A bounded read: nothing near the 4 MiB general cap, let alone more.
    let rss = rss_kib(d.child.id());
    sc.check("memory stays bounded", rss > 0 && rss < 256 * 1024, || {
        format!("VmRSS {rss} KiB")
    });
    sc.note(format!("VmRSS after the refusals: {} MiB", rss / 1024));
    // A regular file that is too large is refused the same way.
    std::fs::remove_file(&link).unwrap();
    std::fs::write(&link, format!("{}\n", " ".repeat(200))).unwrap();
    refused(
        &mut sc,
        &env,
        "oversized",
        &["web", "reload.pid_file", &path, "more than the 64"],
    );
    stops(&mut sc, d);
    sc.finish();
}

#[test]
fn a_pid_file_naming_rekey_itself_is_refused() {
    let mut sc = Scenario::new(SUITE, "pid file names rekey's own process (signal TERM)");
    let env = Env::new();
    let pid_file = env.path("app.pid");
    std::fs::write(&pid_file, "999999999\n").unwrap();
    config(&env, &pid_file, "TERM");
    let d = env.start();
    let first = issued(&env);
    sc.check("the first certificate is issued", first.is_some(), || {
        env.log()
    });
    std::fs::write(&pid_file, format!("{}\n", d.child.id())).unwrap();
    refused(
        &mut sc,
        &env,
        "own pid",
        &["web", "reload.pid_file", "rekey's own process"],
    );
    stops(&mut sc, d);
    sc.finish();
}

/// rekey inside a PID namespace of its own, like a container's: PID 1 there
/// is a shell that appends `init` to `marks` on every HUP, and a second
/// shell (the app, its namespace pid in `app.pid.real`) appends `app`.
/// Killing the `unshare` process (the daemon's child) ends the namespace.
struct PidNamespace {
    _unshare: Daemon,
    marks: PathBuf,
}

impl PidNamespace {
    fn start(env: &Env) -> PidNamespace {
        let marks = env.path("marks");
        std::fs::write(&marks, "").unwrap();
        let script = r#"
trap 'echo init >> "$MARKS"' HUP
sh -c 'trap "echo app >> \"$MARKS\"" HUP; echo $$ > "$APP_PID"; while :; do sleep 1 & wait $!; done' &
"$REKEY" run -c "$CONFIG" &
r=$!
while kill -0 "$r" 2>/dev/null; do wait "$r"; done
"#;
        let unshare = env.spawn(
            Command::new("unshare")
                .args(["--pid", "--fork", "--kill-child", "--", "sh", "-c", script])
                .env("MARKS", &marks)
                .env("APP_PID", env.path("app.pid.real"))
                .env("REKEY", bin())
                .env("CONFIG", env.path("rekey.toml"))
                .env("REKEY_LOG", "debug"),
        );
        wait_for(Duration::from_secs(20), "the daemon's endpoint", || {
            http(env.addr, "GET", "/healthz")
                .ok()
                .filter(|r| r.0 == 200)
        });
        PidNamespace {
            _unshare: unshare,
            marks,
        }
    }

    fn marks(&self) -> String {
        std::fs::read_to_string(&self.marks).unwrap_or_default()
    }
}

#[test]
fn pid_1_and_loosely_written_pids_are_never_signalled() {
    let mut sc = Scenario::new(
        SUITE,
        "pid file names PID 1 (1, +1, \" 1 \", 00001) in a PID namespace",
    );
    let env = Env::new();
    let pid_file = env.path("app.pid");
    std::fs::write(&pid_file, "1\n").unwrap();
    config(&env, &pid_file, "HUP");
    let ns = PidNamespace::start(&env);
    let first = issued(&env);
    sc.check("the first certificate is issued", first.is_some(), || {
        env.log()
    });
    for (text, words) in [
        (
            "1\n",
            &["web", "reload.pid_file", "PID 1", "never signals it"][..],
        ),
        ("1", &["PID 1"][..]),
        ("+1", &["does not hold a process id", "ASCII digits"][..]),
        (" 1 ", &["does not hold a process id"][..]),
        ("00001", &["does not hold a process id"][..]),
        ("0", &["does not hold a process id"][..]),
        ("-1", &["does not hold a process id"][..]),
    ] {
        std::fs::write(&pid_file, text).unwrap();
        refused(&mut sc, &env, &format!("{text:?}"), words);
    }
    // Signals are delivered to a real pid in the same namespace, so a
    // missing `init` mark means PID 1 was never signalled, not that the
    // harness cannot tell.
    let app = wait_for(Duration::from_secs(10), "the app's pid", || {
        std::fs::read_to_string(env.path("app.pid.real")).ok()
    });
    std::fs::write(&pid_file, &app).unwrap();
    sc.round();
    let ok = rotate(env.socket()).is_some_and(|(code, _)| code == 200);
    sc.check("the app's own pid is signalled", ok, || env.log());
    let got = wait_for(Duration::from_secs(10), "the app's HUP mark", || {
        let m = ns.marks();
        m.contains("app").then_some(m)
    });
    sc.check("PID 1 never got a signal", !got.contains("init"), || {
        got.clone()
    });
    sc.finish();
}

/// A root process for rekey to (fail to) signal, killed on drop.
struct RootApp(Child);

impl RootApp {
    fn start(pid_file: &Path) -> RootApp {
        let c = Command::new("sleep").arg("300").spawn().unwrap();
        std::fs::write(pid_file, format!("{}\n", c.id())).unwrap();
        RootApp(c)
    }
    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for RootApp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scenario run as root: a `web` certificate whose reload sends TERM to
/// a root process through `app.pid`, in a temp dir `nobody` owns (for a
/// daemon that runs as nobody).
fn with_root_app(name: &str) -> Option<(Scenario, Env, RootApp)> {
    let sc =
        Scenario::new(SUITE, name).require_root("needs root to run the daemon as another user")?;
    let env = Env::new();
    let pid_file = env.path("app.pid");
    config(&env, &pid_file, "TERM");
    env.hand_to_nobody();
    let app = RootApp::start(&pid_file);
    Some((sc, env, app))
}

#[test]
fn a_process_rekey_may_not_signal_is_named_as_such() {
    let Some((mut sc, env, mut app)) =
        with_root_app("pid file names a root process, rekey runs as nobody (EPERM)")
    else {
        return;
    };
    let d = env.spawn(env.run_command().uid(NOBODY).gid(NOBODY));
    let first = issued(&env);
    sc.check("the first certificate is issued", first.is_some(), || {
        env.log()
    });
    // The bootstrap reload already failed: a warning, and the reason shown.
    let s = cred(env.addr, "web");
    sc.check(
        "the bootstrap failure shows as handoff_reason",
        s.as_ref().is_some_and(|s| {
            s.handoff == Handoff::Pending
                && s.handoff_reason
                    .as_deref()
                    .is_some_and(|r| r.contains("EPERM"))
        }),
        || format!("{s:?}"),
    );
    sc.check(
        "and is a warning in the log",
        env.log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("EPERM")),
        || env.log(),
    );
    refused(
        &mut sc,
        &env,
        "EPERM",
        &[
            "web",
            "reload.pid_file",
            "not allowed to signal",
            "EPERM",
            "CAP_KILL",
            "uid 65534",
        ],
    );
    sc.check("the process was not signalled", app.alive(), String::new);
    stops(&mut sc, d);
    sc.finish();
}

#[test]
fn a_process_proc_hides_is_named_as_such() {
    let Some((mut sc, env, mut app)) =
        with_root_app("the app exists but /proc hides it (hidepid=invisible, CAP_KILL)")
    else {
        return;
    };
    // What ProtectProc=invisible sets up: a /proc that shows only the
    // service's own processes, and CAP_KILL for a non-root service user.
    let d = env.spawn(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "mount -t proc -o hidepid=invisible proc /proc && exec setpriv --reuid=65534 --regid=65534 \
                 --clear-groups --inh-caps=+kill --ambient-caps=+kill -- \"$REKEY\" run -c \"$CONFIG\"",
            )
            .env("REKEY", bin())
            .env("CONFIG", env.path("rekey.toml")),
    );
    let first = issued(&env);
    sc.check("the first certificate is issued", first.is_some(), || {
        env.log()
    });
    refused(
        &mut sc,
        &env,
        "hidden",
        &[
            "web",
            "reload.pid_file",
            "is hidden from rekey",
            "ProtectProc=default",
        ],
    );
    sc.check("the process was not signalled", app.alive(), String::new);
    stops(&mut sc, d);
    sc.finish();
}
