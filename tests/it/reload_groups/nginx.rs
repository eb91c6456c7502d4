//! One real nginx (Debian nginx-light) serving 50 names by SNI on one port,
//! each name its own `[[certificate]]` reloaded with SIGHUP through the pid
//! file and verified over TLS with its own SNI. All 50 rotated at once cost
//! nginx at most 3 reloads (its `reconfiguring` notices), every handoff is
//! verified, and one member whose new certificate nginx does not take is
//! rolled back alone. What nginx serves is read independently of rekey's
//! probes (Python's ssl module).

use std::path::PathBuf;
use std::time::Duration;

use super::common::*;
use rekey::status::{CredentialStatus, Handoff, RotateResult};

const SITES: usize = 50;
/// The member nginx will not take a new certificate for: its server block
/// reads a copy of the files that the test made and does not update.
const WITHHELD: &str = "s17";

fn site(i: usize) -> String {
    format!("s{i:02}")
}

fn server_name(name: &str) -> String {
    format!("{name}.example.test")
}

#[test]
fn fifty_names_on_one_nginx_rotated_at_once_cost_at_most_three_reloads() {
    let Some(nginx) = live_binary("nginx", "Debian package nginx-light") else {
        return;
    };
    let env = Env::new();
    let prefix = env.path("nginx");
    let names: Vec<String> = (0..SITES).map(site).collect();
    let dir = |n: &str| env.path("tls").join(n);
    let held = |n: &str| env.path("held").join(n);
    let sites: Vec<(String, PathBuf, PathBuf)> = names
        .iter()
        .map(|n| {
            let d = if n == WITHHELD { held(n) } else { dir(n) };
            (server_name(n), d.join("fullchain.pem"), d.join("key.pem"))
        })
        .collect();
    let (conf, addr) = Nginx::configure_sites(&prefix, &sites);
    let pid_file = prefix.join("nginx.pid");
    let mut certs = String::new();
    for n in &names {
        let d = dir(n);
        let timeout = if n == WITHHELD { "3s" } else { "20s" };
        certs.push_str(&format!(
            "[[certificate]]\nname = \"{n}\"\nissuer = \"dev\"\ndns_names = [\"{sn}\"]\n\
             files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\", fullchain = \"{d}/fullchain.pem\" }}\n\
             reload = {{ type = \"signal\", signal = \"HUP\", pid_file = \"{pid}\" }}\n\
             verify = {{ type = \"tls\", connect = \"{addr}\", server_name = \"{sn}\", timeout = \"{timeout}\" }}\n",
            sn = server_name(n),
            d = d.display(),
            pid = pid_file.display(),
        ));
    }
    env.write_config(&certs);
    // The default window (200 ms after the last member joined), and a max
    // wait with room for a shared, loaded machine: the batch fires the
    // moment all 50 have joined anyway.
    env.daemon_line("reload_max_wait = \"20s\"");

    // rekey first (a native sidecar): 50 certificates issued and published,
    // handoffs pending until nginx runs.
    let d = env.start();
    for n in &names {
        wait_valid(env.addr, n, Duration::from_secs(60));
    }
    // The withheld site's server block reads a copy taken now.
    std::fs::create_dir_all(held(WITHHELD)).unwrap();
    for f in ["fullchain.pem", "key.pem"] {
        std::fs::copy(dir(WITHHELD).join(f), held(WITHHELD).join(f)).unwrap();
    }
    let _n = Nginx::start(&nginx, &prefix, &conf, addr);
    let first: Vec<CredentialStatus> = names
        .iter()
        .map(|n| {
            wait_for(Duration::from_secs(60), &format!("{n} verified"), || {
                let s = cred(env.addr, n)?;
                (s.handoff == Handoff::Verified).then_some(s)
            })
        })
        .collect();

    // All 50 at once (as after a CA change, or when renewals line up).
    let before = Nginx::reloads(&prefix);
    let answers = d.rotate_all(&names);
    let reloads = Nginx::reloads(&prefix) - before;
    // What rekey logged up to here: the withheld certificate stays staged
    // and its handoff is retried from about half a second on.
    let log = env.log();
    assert!(
        reloads <= 3,
        "{reloads} nginx reloads for {SITES} rotations; rekey log:\n{}",
        env.log()
    );
    for ((n, (code, body)), old) in names.iter().zip(&answers).zip(&first) {
        let s = cred(env.addr, n).unwrap();
        let served = served_fingerprint(addr, &server_name(n));
        if n == WITHHELD {
            // Rolled back alone: its previous certificate is committed,
            // published and served again.
            let result = body.as_ref().map(|o| o.result);
            assert_eq!(
                result,
                Some(RotateResult::RolledBack),
                "{n}: {code} {body:?}"
            );
            assert_eq!(s.handoff, Handoff::Failed, "{s:?}");
            assert_eq!(s.fingerprint, old.fingerprint, "{s:?}");
            assert_eq!(s.served_fingerprint, old.fingerprint, "{s:?}");
            assert_eq!(served.as_deref(), old.fingerprint.as_deref());
            // (Its files are not checked here: the new certificate stays
            // staged and its handoff is retried within about a second.)
        } else {
            let result = body.as_ref().map(|o| o.result);
            assert_eq!(result, Some(RotateResult::Success), "{n}: {code} {body:?}");
            assert_eq!(s.handoff, Handoff::Verified, "{n:?}: {s:?}");
            assert_ne!(s.fingerprint, old.fingerprint, "{n} did not rotate");
            assert_eq!(
                served.as_deref(),
                s.fingerprint.as_deref(),
                "nginx does not serve {n}'s new certificate"
            );
        }
    }
    // rekey's own account: one reload to put the withheld one's previous
    // generation back, for it alone.
    let batches: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event=\"group_reload\""))
        .collect();
    let restoring: Vec<&&str> = batches
        .iter()
        .filter(|l| l.contains("restoring=true"))
        .collect();
    assert_eq!(restoring.len(), 1, "{batches:#?}");
    assert!(restoring[0].contains("credentials=1"), "{restoring:?}");
    let restored: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event=\"restored\""))
        .collect();
    assert!(
        restored.len() == 1 && restored[0].contains(&format!("credential={WITHHELD}")),
        "{restored:#?}"
    );
}
