use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

const LONG: Duration = Duration::from_secs(20);

/// Whether `pid` is gone (or a zombie nobody reaped: it runs no more).
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name.
        Ok(s) => s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')),
    }
}

fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(p) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return p;
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_dead(pid: i32) {
    let deadline = Instant::now() + LONG;
    while !dead(pid) {
        assert!(Instant::now() < deadline, "process {pid} still runs");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
}

#[tokio::test]
async fn success_failure_timeout_and_no_shell() {
    assert!(Exec::new(&argv(&["true"]), LONG).run().await.is_ok());
    let err = Exec::new(&argv(&["sh", "-c", "echo boom >&2; exit 3"]), LONG)
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "exited with status 3; stderr: boom");
    let err = Exec::new(&argv(&["sh", "-c", "kill -TERM $$"]), LONG)
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "was killed by signal 15");
    let err = Exec::new(
        &argv(&["sh", "-c", "echo slow >&2; sleep 5"]),
        Duration::from_millis(200),
    )
    .run()
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ExecError::Timeout { after, stderr } if *after == Duration::from_millis(200) && stderr.trim() == "slow"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "did not finish within 200ms and was killed (with its process group); stderr: slow"
    );
    // A shell line is one program name, not a command line.
    let err = Exec::new(&argv(&["true; false"]), LONG)
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Spawn { .. }), "{err:?}");
    assert!(matches!(
        Exec::new(&[], LONG).run().await,
        Err(ExecError::Empty)
    ));
}

#[tokio::test]
async fn stdin_env_and_stdout_arrive() {
    let env = vec![("APP_MODE".to_string(), "blue".to_string())];
    let out = Exec::new(
        &argv(&[
            "sh",
            "-c",
            "test \"$APP_MODE\" = blue && test \"$REKEY_X\" = 42 && cat",
        ]),
        LONG,
    )
    .env(&env)
    .var("REKEY_X", "42")
    .stdin(b"hello")
    .capture_stdout()
    .run()
    .await
    .unwrap();
    assert_eq!(&out.stdout[..], b"hello");
    assert!(!out.stdout_truncated);
}

/// The shape of `apachectl graceful`: the command starts a background
/// child and exits 0 at once. That is success, right away, and the child
/// is left alone.
#[tokio::test]
async fn a_background_child_neither_delays_nor_fails_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let script = format!(
        "sleep 30 & echo $! > {}; echo started; echo note >&2; exit 0",
        pidfile.display()
    );
    let started = Instant::now();
    // The child holds stdout and stderr open for 30 s; waiting for them
    // would run into this 10 s deadline and fail.
    let out = Exec::new(&argv(&["sh", "-c", &script]), Duration::from_secs(10))
        .capture_stdout()
        .run()
        .await
        .unwrap();
    let took = started.elapsed();
    // What the command printed before it exited is kept.
    assert_eq!(&out.stdout[..], b"started\n");
    assert_eq!(out.stderr, "note\n");
    let pid = read_pid(&pidfile);
    assert!(
        !dead(pid),
        "the background child was killed after a successful exit"
    );
    kill(pid);
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let script = format!("sleep 30 & echo $! > {}; sleep 30", pidfile.display());
    let err = Exec::new(&argv(&["sh", "-c", &script]), Duration::from_secs(2))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Timeout { .. }), "{err:?}");
    let pid = read_pid(&pidfile);
    wait_dead(pid);
}

#[tokio::test]
async fn giving_up_on_a_command_kills_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let script = format!("sleep 30 & echo $! > {}; sleep 30", pidfile.display());
    let a = argv(&["sh", "-c", &script]);
    // A caller's own deadline (the alerter's) drops the future, here once
    // the background child exists.
    let appeared = async {
        while !pidfile.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        r = Exec::new(&a, LONG).run() => panic!("finished: {r:?}"),
        () = appeared => {}
    }
    let pid = read_pid(&pidfile);
    wait_dead(pid);
}

#[test]
fn the_environment_is_scrubbed() {
    let parent: Vec<(OsString, OsString)> = [
        ("PATH", "/opt/bin:/usr/bin"),
        ("HOME", "/var/lib/rekey"),
        ("LANG", "C.UTF-8"),
        ("LC_ALL", "C"),
        ("VAULT_TOKEN", "hvs.secret"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret"),
        ("HTTPS_PROXY", "http://user:pw@proxy:3128"),
        ("REKEY_CONFIG", "/etc/rekey/rekey.toml"),
        ("NOTIFY_SOCKET", "/run/systemd/notify"),
    ]
    .iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect();
    let env = vec![
        ("HOME".to_string(), "/srv/app".to_string()),
        ("DNS_API".to_string(), "https://dns.internal".to_string()),
    ];
    let a = argv(&["x"]);
    let e = Exec::new(&a, LONG)
        .env(&env)
        .var("REKEY_CREDENTIAL", "web")
        .environment(parent);
    let got: Vec<(String, String)> = e
        .into_iter()
        .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
        .collect();
    let mut names: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "DNS_API",
            "HOME",
            "LANG",
            "LC_ALL",
            "PATH",
            "REKEY_CREDENTIAL"
        ]
    );
    let get = |k: &str| got.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("PATH"), Some("/opt/bin:/usr/bin"));
    assert_eq!(get("HOME"), Some("/srv/app"), "env overrides the parent");
    assert_eq!(get("REKEY_CREDENTIAL"), Some("web"));
    // Without a PATH of its own, a command still finds programs.
    let e = Exec::new(&a, LONG).environment(Vec::new());
    assert_eq!(
        e,
        vec![(OsString::from("PATH"), OsString::from(DEFAULT_PATH))]
    );
}

#[tokio::test]
async fn a_real_command_sees_only_the_scrubbed_environment() {
    let env = vec![("APP_MODE".to_string(), "blue".to_string())];
    let out = Exec::new(&argv(&["env"]), LONG)
        .env(&env)
        .var("REKEY_CREDENTIAL", "web")
        .capture_stdout()
        .run()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in text.lines() {
        let name = line.split('=').next().unwrap();
        assert!(
            ALLOWED_ENV.contains(&name)
                || name.starts_with("LC_")
                || name == "APP_MODE"
                || name == "REKEY_CREDENTIAL",
            "{name} leaked into the command's environment:\n{text}"
        );
    }
    assert!(text.contains("APP_MODE=blue\n") && text.contains("REKEY_CREDENTIAL=web\n"));
    assert!(text.contains("PATH="));
}

#[tokio::test]
async fn output_is_capped() {
    let out = Exec::new(&argv(&["head", "-c", "200000", "/dev/zero"]), LONG)
        .capture_stdout()
        .run()
        .await
        .unwrap();
    assert_eq!(out.stdout.len(), STDOUT_CAP);
    assert!(out.stdout_truncated);
    // stderr keeps its end, where the reason usually is.
    let err = Exec::new(
        &argv(&[
            "sh",
            "-c",
            "head -c 100000 /dev/zero | tr '\\0' x >&2; echo; echo the-reason >&2; exit 1",
        ]),
        LONG,
    )
    .run()
    .await
    .unwrap_err();
    let ExecError::Exit { stderr, .. } = err else {
        panic!("{err:?}")
    };
    assert!(stderr.len() <= STDERR_KEEP, "{}", stderr.len());
    assert!(stderr.ends_with("the-reason\n"), "{stderr:?}");
}
