//! Disk faults against the real daemon: a read-only target directory
//! (immutable attribute or a read-only bind mount, since root ignores
//! modes), permission denied (the daemon runs as `nobody`), a full
//! filesystem (a 64 KiB tmpfs), a managed path replaced by a directory or
//! by a symlink to another file, and the state dir deleted while running.
//! Expected: a clear error naming the path, the old credential kept, no
//! write through a foreign symlink, and recovery once the fault is fixed.

use crate::support as common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::invariants::{self as inv, Cred};
use common::scorecard::Scenario;
use common::*;
use rekey::status::{Handoff, RotateOutcome, State};

fn config(env: &Env, swap: &str) -> Cred {
    let d = env.path("tls/web");
    env.write_config(&format!(
        "[[certificate]]\nname = \"web\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\nswap = \"{swap}\"\nlifetime = \"1h\"\n\
         files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\", fullchain = \"{d}/fullchain.pem\", ca = \"{d}/ca.pem\" }}\n",
        d = d.display(),
    ));
    Cred::under(env.dir.path(), "web")
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Skip with a reason, or fail under REKEY_REQUIRE_LIVE (scripts/test).
fn unavailable(sc: Scenario, why: &str) {
    if std::env::var_os("REKEY_REQUIRE_LIVE").is_some() {
        panic!("{why}; scripts/test requires every disk fault to run");
    }
    sc.skip(why);
}

fn rotate(d: &Daemon) -> (u16, String) {
    d.post("/v1/rotate/web").unwrap()
}

fn started(env: &Env, c: &Cred) -> Daemon {
    let d = env.start();
    inv::converges(d.addr, c, &[Handoff::Unverified], Duration::from_secs(15)).unwrap();
    d
}

/// The common shape: the fault makes a rotation fail with an error naming
/// `path`, nothing changes, the status shows backoff; fixed, it recovers.
fn failed_rotation_kept_old(sc: &mut Scenario, d: &Daemon, c: &Cred, path: &Path, why: &str) {
    let before = c.snapshot();
    let fp = c.published_fingerprint();
    sc.round();
    let (code, body) = rotate(d);
    sc.check("rotation reported failed", code == 502, || {
        format!("{code} {body}")
    });
    let msg = serde_json::from_str::<RotateOutcome>(&body)
        .ok()
        .and_then(|o| o.error)
        .unwrap_or_else(|| body.clone());
    let p = path.display().to_string();
    sc.check("error names the path", msg.contains(&p), || {
        format!("{msg:?} lacks {p}")
    });
    sc.check("error says why", msg.contains(why), || {
        format!("{msg:?} lacks {why:?}")
    });
    sc.check("old credential kept", c.snapshot() == before, || {
        "published files changed".into()
    });
    sc.check_ok("pair matches", inv::pair_matches(c).map(|_| ()));
    let s = cred(d.addr, "web").unwrap();
    sc.check(
        "backoff",
        s.state == State::Backoff && s.fingerprint.as_deref() == Some(fp.as_deref().unwrap_or("-")),
        || format!("{s:?}"),
    );
}

fn recovers(sc: &mut Scenario, d: &Daemon, c: &Cred) {
    let old = c.published_fingerprint();
    let (code, body) = rotate(d);
    sc.check("recovers once fixed", code == 200, || {
        format!("{code} {body}")
    });
    sc.check(
        "new credential published",
        c.published_fingerprint() != old,
        || "unchanged".into(),
    );
    sc.check_ok(
        "pair matches after recovery",
        inv::pair_matches(c).map(|_| ()),
    );
    sc.check_ok("published passes validation", inv::published_valid(c));
    sc.check_ok("published is committed", inv::published_is_committed(c));
}

/// Makes `dir` unwritable even for root; undone on drop.
enum ReadOnly {
    Immutable(PathBuf),
    BindMount(PathBuf),
}

impl ReadOnly {
    fn apply(dir: &Path) -> Result<ReadOnly, String> {
        let d = dir.to_str().unwrap();
        let immutable = run("chattr", &["+i", d]).map(|_| ReadOnly::Immutable(dir.into()));
        immutable.or_else(|e1| {
            run("mount", &["--bind", d, d])
                .and_then(|_| run("mount", &["-o", "remount,ro,bind", d]))
                .map(|_| ReadOnly::BindMount(dir.into()))
                .map_err(|e2| format!("chattr +i: {e1}; read-only bind mount: {e2}"))
        })
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = match self {
            ReadOnly::Immutable(d) => run("chattr", &["-i", d.to_str().unwrap()]),
            ReadOnly::BindMount(d) => run("umount", &[d.to_str().unwrap()]),
        };
    }
}

#[test]
fn read_only_target_directory() {
    let Some(mut sc) = Scenario::new("faults_disk", "target directory read-only")
        .require_root("needs root (chattr +i or a bind mount)")
    else {
        return;
    };
    let env = Env::new();
    let c = config(&env, "rename");
    let d = started(&env, &c);
    let dir = env.path("tls/web");
    let ro = match ReadOnly::apply(&dir) {
        Ok(r) => r,
        Err(e) => return unavailable(sc, &format!("cannot make a directory read-only here: {e}")),
    };
    sc.note(match &ro {
        ReadOnly::Immutable(_) => "chattr +i",
        ReadOnly::BindMount(_) => "read-only bind mount",
    });
    failed_rotation_kept_old(&mut sc, &d, &c, &dir, "cannot create");
    drop(ro);
    recovers(&mut sc, &d, &c);
    sc.finish();
}

#[test]
fn permission_denied_as_an_unprivileged_user() {
    let Some(mut sc) = Scenario::new("faults_disk", "permission denied (daemon as nobody)")
        .require_root("needs root to run the daemon as nobody")
    else {
        return;
    };
    let env = Env::new();
    let c = config(&env, "rename");
    env.hand_to_nobody();
    let d = env.spawn(env.run_command().uid(NOBODY).gid(NOBODY));
    let ok = wait_for(Duration::from_secs(20), "the daemon as nobody", || {
        let s = cred(env.addr, "web")?;
        (s.state == State::Valid).then_some(true)
    });
    assert!(ok, "{}", env.log());
    // The app's directory now belongs to root: nobody may not create files in it.
    let dir = env.path("tls/web");
    nix::unistd::chown(
        &dir,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(nix::unistd::Gid::from_raw(0)),
    )
    .unwrap();
    failed_rotation_kept_old(&mut sc, &d, &c, &dir, "Permission denied");
    let msg = rotate(&d).1;
    sc.check(
        "hint says what to do",
        msg.contains("writable by rekey's user"),
        || msg.clone(),
    );
    // Back to nobody: the rotation works again.
    env.hand_to_nobody();
    recovers(&mut sc, &d, &c);
    sc.finish();
}

/// A 64 KiB tmpfs at the target directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", self.0.to_str().unwrap()]);
    }
}

fn full_filesystem(swap: &str) {
    let Some(mut sc) = Scenario::new(
        "faults_disk",
        &format!("full filesystem, 64 KiB tmpfs ({swap})"),
    )
    .require_root("needs root to mount a tmpfs") else {
        return;
    };
    let env = Env::new();
    let c = config(&env, swap);
    let dir = env.path("tls/web");
    std::fs::create_dir_all(&dir).unwrap();
    if let Err(e) = run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=64k",
            "tmpfs",
            dir.to_str().unwrap(),
        ],
    ) {
        return unavailable(sc, &format!("cannot mount a tmpfs: {e}"));
    }
    let _mount = Tmpfs(dir.clone());
    let d = started(&env, &c);
    // Fill what is left, byte by byte at the end, so not even a small file fits.
    let filler = dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&[0]).is_ok() {}
        let _ = f.sync_all();
    }
    failed_rotation_kept_old(&mut sc, &d, &c, &dir, "No space left on device");
    let msg = rotate(&d).1;
    sc.check("hint says what to do", msg.contains("free space"), || {
        msg.clone()
    });
    let stray = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .count();
    sc.check("no temp files left behind", stray == 0, || {
        format!("{stray} temp files")
    });
    std::fs::remove_file(&filler).unwrap();
    recovers(&mut sc, &d, &c);
    sc.finish();
}

#[test]
fn full_filesystem_rename() {
    full_filesystem("rename");
}

#[test]
fn full_filesystem_symlink() {
    full_filesystem("symlink");
}

#[test]
fn managed_path_replaced_by_a_directory() {
    let mut sc = Scenario::new("faults_disk", "managed path replaced by a directory");
    let env = Env::new();
    let c = config(&env, "rename");
    let d = started(&env, &c);
    std::fs::remove_file(&c.cert).unwrap();
    std::fs::create_dir(&c.cert).unwrap();
    std::fs::write(c.cert.join("keep-me"), "someone's data").unwrap();
    let key_before = std::fs::read(&c.key).unwrap();
    sc.round();
    let (code, body) = rotate(&d);
    sc.check("rotation reported failed", code == 502, || {
        format!("{code} {body}")
    });
    let p = c.cert.display().to_string();
    sc.check(
        "error names the path",
        body.contains(&p) && body.contains("is a directory"),
        || body.clone(),
    );
    sc.check(
        "the directory is left alone",
        c.cert.join("keep-me").is_file(),
        || "removed".into(),
    );
    sc.check(
        "old key kept",
        std::fs::read(&c.key).unwrap() == key_before,
        || "key changed".into(),
    );
    // File events are folded for a moment before the re-check runs.
    let logged = |what: &str| {
        std::iter::repeat_with(|| {
            std::thread::sleep(Duration::from_millis(50));
            env.log().contains(what)
        })
        .take(100)
        .any(|t| t)
    };
    sc.check("tampering logged", logged("tampered"), || {
        "no tampered event".into()
    });
    sc.check("restore failure logged", logged("cannot restore"), || {
        "no restore error logged".into()
    });
    // Fixed: the directory goes; the file event restores the committed pair.
    std::fs::remove_dir_all(&c.cert).unwrap();
    let restored = wait_for(Duration::from_secs(10), "restore", || {
        inv::pair_matches(&c).ok()
    });
    sc.check("restored once fixed", !restored.is_empty(), || {
        "not restored".into()
    });
    recovers(&mut sc, &d, &c);
    sc.finish();
}

fn foreign_symlink(swap: &str) {
    let mut sc = Scenario::new(
        "faults_disk",
        &format!("managed path turned into a symlink to another file ({swap})"),
    );
    let env = Env::new();
    let c = config(&env, swap);
    let shadow = env.path("etc/shadow");
    std::fs::create_dir_all(shadow.parent().unwrap()).unwrap();
    std::fs::write(&shadow, "root:$6$secret:19000:0:99999:7:::\n").unwrap();
    let shadow_before = std::fs::read(&shadow).unwrap();
    let d = started(&env, &c);
    // Someone points the key file at another file.
    std::fs::remove_file(&c.key).unwrap();
    std::os::unix::fs::symlink(&shadow, &c.key).unwrap();
    let restored = wait_for(Duration::from_secs(10), "restore", || {
        std::fs::symlink_metadata(&c.key)
            .ok()
            .filter(|m| swap == "symlink" || !m.file_type().is_symlink())
            .and_then(|_| inv::pair_matches(&c).ok())
    });
    sc.round();
    sc.check("restored", !restored.is_empty(), || "not restored".into());
    sc.check(
        "symlink target untouched",
        std::fs::read(&shadow).unwrap() == shadow_before,
        || "the file behind the symlink was written".into(),
    );
    if swap == "symlink" {
        sc.check_ok("symlink pair flips together", inv::flip_together(&c));
    }
    // Again, then rotate while the symlink is there.
    std::fs::remove_file(&c.key).unwrap();
    std::os::unix::fs::symlink(&shadow, &c.key).unwrap();
    sc.round();
    let (code, body) = rotate(&d);
    sc.check("rotation succeeds over the symlink", code == 200, || {
        format!("{code} {body}")
    });
    sc.check(
        "symlink target untouched",
        std::fs::read(&shadow).unwrap() == shadow_before,
        || "the file behind the symlink was written".into(),
    );
    sc.check(
        "symlink replaced, not followed",
        std::fs::read_link(&c.key).map_or(true, |t| t != shadow),
        || "still points at the foreign file".into(),
    );
    sc.check_ok("pair matches", inv::pair_matches(&c).map(|_| ()));
    sc.check_ok("published passes validation", inv::published_valid(&c));
    sc.finish();
}

#[test]
fn foreign_symlink_rename() {
    foreign_symlink("rename");
}

#[test]
fn foreign_symlink_symlink() {
    foreign_symlink("symlink");
}

#[test]
fn state_dir_deleted_while_running() {
    let mut sc = Scenario::new("faults_disk", "state dir deleted while running");
    let env = Env::new();
    let c = config(&env, "rename");
    // The admin socket goes with the state dir: this rotation comes over
    // TCP with the admin token.
    std::fs::write(env.path("token"), "tok-state-dir-deleted\n").unwrap();
    let text = std::fs::read_to_string(env.path("rekey.toml"))
        .unwrap()
        .replacen(
            "[daemon]\n",
            &format!(
                "[daemon]\nadmin_token_file = \"{}\"\n",
                env.path("token").display()
            ),
            1,
        );
    std::fs::write(env.path("rekey.toml"), text).unwrap();
    let d = started(&env, &c);
    let before = c.snapshot();
    std::fs::remove_dir_all(env.path("state")).unwrap();
    sc.round();
    // The app's files are not the state dir's: nothing changes for the app.
    std::thread::sleep(Duration::from_millis(300));
    sc.check("old credential kept", c.snapshot() == before, || {
        "published files changed".into()
    });
    let (code, body) = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(d.addr).unwrap();
        s.write_all(b"POST /v1/rotate/web HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-state-dir-deleted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        let code = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0u16);
        (code, buf)
    };
    sc.check("rotation recreates the state dir", code == 200, || {
        format!("{code} {body}")
    });
    sc.check_ok(
        "committed generation on disk again",
        inv::committed_kept(&c, None).map(|_| ()),
    );
    sc.check_ok("published is committed", inv::published_is_committed(&c));
    sc.check_ok("pair matches", inv::pair_matches(&c).map(|_| ()));
    let mode = std::fs::metadata(env.path("state")).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    sc.check(
        "state dir recreated 0700",
        mode.as_ref().ok() == Some(&0o700),
        || format!("{mode:?}"),
    );
    // And a restart converges on what was recreated.
    drop(d);
    let d = env.start();
    sc.check_ok(
        "converges after restart",
        inv::converges(d.addr, &c, &[Handoff::Unverified], Duration::from_secs(15)).map(|_| ()),
    );
    sc.check_ok("published is committed", inv::published_is_committed(&c));
    sc.finish();
}
