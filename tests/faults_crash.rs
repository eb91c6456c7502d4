//! Crash at every named failpoint of a rotation (src/failpoint.rs), in both
//! swap modes, then restart: the invariants of `support::invariants` hold
//! right after the crash and after recovery. Plus randomized rounds: a
//! random point on a random hit, over many rounds on the same state.
//! API keys at their own points: `faults_crash/apikey.rs`.
//! Needs `--features failpoints` (see Cargo.toml and scripts/test).

#[path = "faults_crash/apikey.rs"]
mod apikey;
#[path = "faults_crash/group.rs"]
mod group;
// The integration tests' support module (tests/it/support/), of which this
// suite uses a part: the rest is dead code in this binary only.
#[allow(dead_code)]
#[path = "it/support/mod.rs"]
mod support;

use support as common;
use support::bao_keys;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::invariants::{self as inv, Cred};
use common::scorecard::Scenario;
use common::*;
use rekey::status::Handoff;

/// Rotations are triggered by hand; the exec probe passes unless the
/// `broken` flag file exists (then the handoff fails and rolls back).
fn config(env: &Env, swap: &str) {
    let d = env.path("tls/web");
    env.write_config(&format!(
        "[[certificate]]\nname = \"web\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\nswap = \"{swap}\"\nlifetime = \"1h\"\n\
         files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\", fullchain = \"{d}/fullchain.pem\", ca = \"{d}/ca.pem\" }}\n\
         verify = {{ type = \"exec\", command = [\"test\", \"!\", \"-e\", \"{b}\"], timeout = \"1s\", settle = \"10ms\" }}\n",
        d = d.display(),
        b = env.path("broken").display(),
    ));
    // Hundreds of rotations of one certificate on purpose: the issuance
    // budget is not under test here (tests/it/budget.rs).
    env.dev_issuer("max_issuances = \"unlimited\"");
}

/// The points a certificate rotation can reach (API keys and handoff
/// groups have their own).
fn cert_points() -> Vec<&'static str> {
    let all = rekey::failpoint::POINTS.iter().copied();
    all.filter(|p| !p.starts_with("apikey.") && !p.starts_with("group."))
        .collect()
}

/// Points and hits that a rotation in `swap` mode reaches. `:N` picks the
/// N-th hit: the 4 files are renamed in the order ca, cert, fullchain, key.
fn reachable(swap: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in &cert_points() {
        match *p {
            "publish.file" | "publish.rename" | "publish.fsync" if swap == "symlink" => {}
            "publish.gen_dir" | "publish.swap.before" | "publish.swap.after" | "publish.link"
                if swap == "rename" => {}
            "publish.file" | "publish.rename" => {
                out.extend((1..=4).map(|n| format!("{p}:{n}")));
            }
            "stage.file" => out.extend((1..=4).map(|n| format!("{p}:{n}"))),
            // Journal saves: Issuing, Staging, Publishing, Handoff, commit.
            "replace.rename" => out.extend((1..=5).map(|n| format!("{p}:{n}"))),
            _ => out.push(p.to_string()),
        }
    }
    out
}

/// Wait for the daemon to die; Some(signal) when it did. Its own loop,
/// polling every 5 ms rather than `wait_until`'s 100 ms: every one of the
/// hundreds of rounds waits here.
fn died(d: &mut Daemon, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = d.child.try_wait() {
            return Some(st.signal().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Whether a crash at `point` may leave cert and key from two generations
/// in rename mode: between two renames (documented in docs/rotation.md, repaired at
/// restart). Renames go ca, cert, fullchain, key.
fn rename_window(point: &str) -> bool {
    matches!(point, "publish.rename:3" | "publish.rename:4")
}

/// One fault round: crash at `point`, check, restart, check convergence.
/// Returns whether the point was reached.
fn round(env: &Env, c: &Cred, swap: &str, point: &str, sc: &mut Scenario) -> bool {
    sc.round();
    let mut before = c.journal().ok().and_then(|j| j.committed);
    let rollback = point.starts_with("rollback");
    if rollback {
        std::fs::write(env.path("broken"), "").unwrap();
    }
    let mut d = env.start_with_env(&[("REKEY_FAILPOINT", point)]);
    // Up to 3 rotations, so the N-th hit of a point is reached. A rotation's
    // answer comes when it ends, or the connection drops when the daemon
    // dies (then it is reaped within moments).
    let mut sig = None;
    for _ in 0..3 {
        let answered = matches!(d.post("/v1/rotate/web"), Ok((200 | 502, _)));
        let wait = if answered { 100 } else { 5000 };
        sig = died(&mut d, Duration::from_millis(wait));
        if sig.is_some() {
            break;
        }
        // That rotation finished: the fault hits a later one.
        before = c.journal().ok().and_then(|j| j.committed);
    }
    let reached = sig == Some(9);
    if !reached {
        // Not every point is on every path (e.g. a later hit); the round
        // still checks that nothing broke.
        let _ = d.terminate();
    }
    // Right after the crash, before any recovery.
    sc.check_ok("files whole after crash", inv::files_whole(c));
    if swap == "symlink" {
        sc.check_ok("symlink pair flips together", inv::flip_together(c));
        sc.check_ok("pair matches after crash", inv::pair_matches(c).map(|_| ()));
    } else if !rename_window(point) {
        sc.check_ok("pair matches after crash", inv::pair_matches(c).map(|_| ()));
    }
    sc.check_ok(
        "committed generation kept",
        inv::committed_kept(c, before).map(|_| ()),
    );
    if rollback {
        std::fs::remove_file(env.path("broken")).unwrap();
    }
    // Restart without the failpoint: it must converge.
    let d = env.start();
    let s = sc.check_ok(
        "converges after restart",
        inv::converges(d.addr, c, &[Handoff::Verified], Duration::from_secs(20)),
    );
    let fp = sc.check_ok("pair matches after recovery", inv::pair_matches(c));
    sc.check_ok("published is committed", inv::published_is_committed(c));
    sc.check_ok("published passes validation", inv::published_valid(c));
    sc.check_ok(
        "committed generation kept",
        inv::committed_kept(c, before).map(|_| ()),
    );
    if let (Some(s), Some(fp)) = (s, fp) {
        sc.check(
            "status matches files",
            s.fingerprint.as_deref() == Some(fp.as_str()),
            || format!("{point}: status {:?} vs files {fp}", s.fingerprint),
        );
    }
    if swap == "symlink" {
        sc.check_ok("symlink pair flips together", inv::flip_together(c));
    }
    sc.check("clean shutdown", d.terminate() == Some(0), || {
        format!("{point}: SIGTERM did not exit 0")
    });
    reached
}

/// A fresh env with generation 1 committed and verified.
fn setup(swap: &str) -> (Env, Cred) {
    let env = Env::new();
    config(&env, swap);
    let c = Cred::under(env.dir.path(), "web");
    let d = env.start();
    inv::converges(d.addr, &c, &[Handoff::Verified], Duration::from_secs(20)).unwrap();
    assert_eq!(d.terminate(), Some(0));
    (env, c)
}

fn every_point(swap: &str) {
    let (env, c) = setup(swap);
    let mut sc = Scenario::new(
        "faults_crash",
        &format!("kill -9 at every failpoint ({swap})"),
    );
    let points = reachable(swap);
    let mut missed = Vec::new();
    for p in &points {
        if !round(&env, &c, swap, p, &mut sc) {
            missed.push(p.clone());
        }
    }
    // Every listed point must really be reached, or the suite proves nothing.
    sc.check("every point reached", missed.is_empty(), || {
        format!("never reached: {missed:?}")
    });
    sc.note(format!("{} points/hits", points.len()));
    sc.finish();
}

#[test]
fn kill9_at_every_failpoint_rename() {
    every_point("rename");
}

#[test]
fn kill9_at_every_failpoint_symlink() {
    every_point("symlink");
}

/// Random points on random hits, many rounds on the same state dir.
#[test]
fn kill9_at_random_failpoints() {
    let rounds: usize = std::env::var("REKEY_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    // REKEY_FAULT_SEED replays a run (the seed is in the scorecard notes).
    let seed = std::env::var("REKEY_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut sc = Scenario::new("faults_crash", "kill -9 at random failpoints and hits");
    let mut crashed = 0;
    let points = cert_points();
    for swap in ["rename", "symlink"] {
        let (env, c) = setup(swap);
        for _ in 0..rounds / 2 {
            let p = points[rng.usize(..points.len())];
            let point = format!("{p}:{}", rng.u32(1..=3));
            if round(&env, &c, swap, &point, &mut sc) {
                crashed += 1;
            }
        }
    }
    sc.note(format!(
        "{crashed} rounds crashed (others: the hit was not reached), seed {seed}"
    ));
    sc.finish();
}
