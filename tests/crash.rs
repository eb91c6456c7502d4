//! `kill -9` at random moments while the daemon rotates back to back, then a
//! restart: the published pair always parses and matches after recovery
//! (and at every moment with `swap = "symlink"`), and the daemon converges to
//! a committed generation that is what the files hold.

mod common;

use std::time::Duration;

use common::*;

/// renew_before 99% with no jitter makes every certificate due at once, so
/// the daemon rotates continuously and a kill lands inside some step.
fn config(env: &Env, swap: &str, busy: bool) {
    let d = env.path("tls/web");
    let renew = if busy {
        "renew_before = \"99%\"\njitter = \"0%\"\nlifetime = \"20s\""
    } else {
        "lifetime = \"1h\""
    };
    env.write_config(&format!(
        "[[certificate]]\nname = \"web\"\nissuer = \"dev\"\ndns_names = [\"localhost\"]\nswap = \"{swap}\"\n{renew}\n\
         files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\", fullchain = \"{d}/fullchain.pem\" }}\n",
        d = d.display()
    ));
}

fn rounds(swap: &str, n: usize) {
    let env = Env::new();
    let (cert, key) = (env.path("tls/web/cert.pem"), env.path("tls/web/key.pem"));
    let mut torn_before_restart = 0;
    for round in 0..n {
        config(&env, swap, true);
        let d = env.start();
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..120)));
        d.kill9();
        match pair(&cert, &key) {
            Ok((_, true)) => {}
            // Killed before the very first publish: nothing is there yet.
            Err(_) if !cert.exists() && !key.exists() && round == 0 => {}
            Ok((_, false)) | Err(_) if swap == "rename" && cert.exists() => {
                torn_before_restart += 1
            }
            other => panic!("round {round}: {swap}: bad pair right after kill -9: {other:?}"),
        }
        // Restart with a calm schedule: recovery must converge.
        config(&env, swap, false);
        let d = env.start();
        let s = wait_for(Duration::from_secs(10), "convergence", || {
            let s = cred_status(d.addr, "web")?;
            (s["state"] == "valid").then_some(s)
        });
        let (fp, ok) = pair(&cert, &key).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(ok, "round {round}: mismatched pair after restart");
        assert_eq!(
            s["fingerprint"],
            fp.as_str(),
            "round {round}: status and files disagree"
        );
        let full = std::fs::read_to_string(env.path("tls/web/fullchain.pem")).unwrap();
        let leaf = std::fs::read_to_string(&cert).unwrap();
        assert!(
            full.starts_with(&leaf),
            "round {round}: fullchain is from another generation"
        );
        d.kill9();
    }
    eprintln!("{swap}: {n} rounds, {torn_before_restart} kills landed between two renames (repaired on restart)");
}

#[test]
fn kill9_during_symlink_rotations_never_tears_the_pair() {
    rounds("symlink", 100);
}

#[test]
fn kill9_during_rename_rotations_recovers_a_whole_pair() {
    rounds("rename", 60);
}
