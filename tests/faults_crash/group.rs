//! Handoff groups under kill -9: three certificates that share one reload
//! command are rotated at once, and the daemon dies at the group's own
//! points (before and after the one reload, for new generations and for a
//! member putting its old one back) and at member points in the middle of
//! a batch (the N-th member to publish, to join, to verify, to commit).
//! Right after the crash and after the restart, every member's files hold
//! one whole generation, old or new, and no committed generation is lost;
//! the restart finishes every member's handoff.

use std::time::Duration;

use super::common::invariants::{self as inv, Cred};
use super::common::scorecard::Scenario;
use super::common::*;
use super::died;
use rekey::status::Handoff;

const MEMBERS: [&str; 3] = ["g0", "g1", "g2"];
/// The member whose app "will not take" its new generation in the rounds
/// that need a rollback.
const BROKEN: &str = "g1";

/// The points of a group handoff, with the hit to crash on (`:N`: the N-th
/// member to get there).
const POINTS: &[&str] = &[
    "group.reload.before",
    "group.reload.after",
    "group.rollback.before",
    "group.rollback.after",
    "publish.after:2",
    "reload.before:3",
    "verify.before:2",
    "verify.after:2",
    "commit.after:2",
    "rollback.before",
    "rollback.after",
];

/// Three certificates with one reload command (so one group) and a probe
/// each that fails while `broken-NAME` exists.
fn config(env: &Env, swap: &str) {
    let mut certs = String::new();
    for n in MEMBERS {
        let d = env.path(&format!("tls/{n}"));
        certs.push_str(&format!(
            "[[certificate]]\nname = \"{n}\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\nswap = \"{swap}\"\nlifetime = \"1h\"\n\
             files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\", fullchain = \"{d}/fullchain.pem\", ca = \"{d}/ca.pem\" }}\n\
             reload = {{ type = \"exec\", command = [\"true\"] }}\n\
             verify = {{ type = \"exec\", command = [\"test\", \"!\", \"-e\", \"{b}\"], timeout = \"1s\", settle = \"10ms\" }}\n",
            d = d.display(),
            b = env.path(&format!("broken-{n}")).display(),
        ));
    }
    env.write_config(&certs);
    env.daemon_line("reload_window = \"100ms\"\nreload_max_wait = \"5s\"");
    // Many rotations of the same certificates on purpose.
    env.dev_issuer("max_issuances = \"unlimited\"");
}

fn creds(env: &Env) -> Vec<Cred> {
    MEMBERS
        .iter()
        .map(|n| Cred::under(env.dir.path(), n))
        .collect()
}

fn committed(c: &Cred) -> Option<u64> {
    c.journal().ok().and_then(|j| j.committed)
}

/// Every member's files hold one whole generation (old or new) and its
/// committed generation is kept.
fn check_members(sc: &mut Scenario, cs: &[Cred], before: &[Option<u64>], swap: &str, when: &str) {
    for (c, b) in cs.iter().zip(before) {
        sc.check_ok(&format!("files whole {when}"), inv::files_whole(c));
        // The kill stops every member at once, so in rename mode one that
        // was between two renames of its own publish (or of putting its
        // old generation back) holds two generations' files, as a lone
        // credential does in its rename window; the restart repairs it
        // (checked after recovery). Its journal says so.
        let mid_swap = swap == "rename"
            && c.journal().ok().and_then(|j| j.pending).is_some_and(|p| {
                matches!(
                    p.step,
                    rekey::engine::journal::Step::Publishing
                        | rekey::engine::journal::Step::RollingBack
                )
            });
        if !mid_swap {
            sc.check_ok(
                &format!("pair matches {when}"),
                inv::pair_matches(c).map(|_| ()),
            );
            sc.check_ok(
                &format!("cert and chain agree {when}"),
                inv::published_valid(c),
            );
        }
        if swap == "symlink" {
            sc.check_ok(
                &format!("symlink pair flips together {when}"),
                inv::flip_together(c),
            );
        }
        sc.check_ok(
            &format!("committed generation kept {when}"),
            inv::committed_kept(c, *b).map(|_| ()),
        );
    }
}

/// Crash at `point` while all members rotate at once, check, restart,
/// check that every member converges. Whether the point was reached.
fn round(env: &Env, cs: &[Cred], swap: &str, point: &str, sc: &mut Scenario) -> bool {
    sc.round();
    let names: Vec<String> = MEMBERS.iter().map(|n| n.to_string()).collect();
    let mut before: Vec<Option<u64>> = cs.iter().map(committed).collect();
    let rollback = point.contains("rollback");
    let broken = env.path(&format!("broken-{BROKEN}"));
    if rollback {
        std::fs::write(&broken, "").unwrap();
    }
    let mut d = env.start_with_env(&[("REKEY_FAILPOINT", point)]);
    let mut sig = None;
    for _ in 0..2 {
        let answers = d.rotate_all(&names);
        let answered = answers.iter().all(|(code, _)| *code != 0);
        let wait = if answered { 100 } else { 5000 };
        sig = died(&mut d, Duration::from_millis(wait));
        if sig.is_some() {
            break;
        }
        before = cs.iter().map(committed).collect();
    }
    let reached = sig == Some(9);
    if !reached {
        let _ = d.terminate();
    }
    check_members(sc, cs, &before, swap, "after crash");
    if rollback {
        std::fs::remove_file(&broken).unwrap();
    }
    let d = env.start();
    for c in cs {
        let s = sc.check_ok(
            "converges after restart",
            inv::converges(d.addr, c, &[Handoff::Verified], Duration::from_secs(30)),
        );
        let fp = sc.check_ok("pair matches after recovery", inv::pair_matches(c));
        sc.check_ok("published is committed", inv::published_is_committed(c));
        if let (Some(s), Some(fp)) = (s, fp) {
            sc.check(
                "status matches files",
                s.fingerprint.as_deref() == Some(fp.as_str()),
                || {
                    format!(
                        "{point}: {}: status {:?} vs files {fp}",
                        c.name, s.fingerprint
                    )
                },
            );
        }
    }
    check_members(sc, cs, &before, swap, "after recovery");
    sc.check("clean shutdown", d.terminate() == Some(0), || {
        format!("{point}: SIGTERM did not exit 0")
    });
    reached
}

fn every_group_point(swap: &str) {
    let env = Env::new();
    config(&env, swap);
    let cs = creds(&env);
    let d = env.start();
    for c in &cs {
        inv::converges(d.addr, c, &[Handoff::Verified], Duration::from_secs(30)).unwrap();
    }
    assert_eq!(d.terminate(), Some(0));
    let mut sc = Scenario::new(
        "faults_crash",
        &format!("kill -9 in a handoff group of 3 ({swap})"),
    );
    let mut missed = Vec::new();
    for p in POINTS {
        if !round(&env, &cs, swap, p, &mut sc) {
            missed.push(*p);
        }
    }
    sc.check("every point reached", missed.is_empty(), || {
        format!("never reached: {missed:?}")
    });
    sc.note(format!("{} points/hits, 3 members each", POINTS.len()));
    sc.finish();
}

#[test]
fn kill9_in_a_handoff_group_rename() {
    every_group_point("rename");
}

#[test]
fn kill9_in_a_handoff_group_symlink() {
    every_group_point("symlink");
}

/// The group suite covers every group point in `rekey::failpoint::POINTS`.
#[test]
fn every_group_failpoint_is_played() {
    for p in rekey::failpoint::POINTS
        .iter()
        .filter(|p| p.starts_with("group."))
    {
        assert!(
            POINTS.contains(p),
            "{p} is not played by the group crash suite"
        );
    }
}
