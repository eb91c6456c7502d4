//! Load: 1,000 credentials all due at once on the local CA. All rotate;
//! at most `max_concurrent_rotations` are ever `renewing` together; the
//! daemon's RSS stays under a generous bound; and `/healthz` keeps
//! answering while the rotations run: every probe answered, 95% within
//! 100 ms (the p95, not the max, is asserted: the probe runs beside the
//! rotations on the same 2 cores, which may be shared; the max is reported).

use crate::support as common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::scorecard::Scenario;
use common::*;

const N: usize = 1000;
const MAX_CONCURRENT: usize = 4;
const RSS_BOUND_MB: u64 = 512;
const HEALTHZ_BOUND: Duration = Duration::from_millis(100);
/// Fewer probes than this and a p95 says nothing.
const MIN_PROBES: usize = 20;
/// How long the rotations may take, and so the probing.
const ROTATIONS_WITHIN: Duration = Duration::from_secs(240);

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn a_thousand_credentials_due_at_once() {
    let mut sc = Scenario::new("load", "1,000 credentials due at once (local CA)");
    let env = Env::new();
    let mut certs = String::new();
    for i in 0..N {
        let d = env.path(&format!("tls/c{i}"));
        certs.push_str(&format!(
            "[[certificate]]\nname = \"c{i}\"\nissuer = \"dev\"\ndns_names = [\"c{i}.localhost\"]\nlifetime = \"1h\"\n\
             files = {{ cert = \"{d}/cert.pem\", key = \"{d}/key.pem\" }}\n",
            d = d.display()
        ));
    }
    env.write_config(&certs);
    let text = std::fs::read_to_string(env.path("rekey.toml"))
        .unwrap()
        .replace(
            "[daemon]\n",
            &format!("[daemon]\nmax_concurrent_rotations = {MAX_CONCURRENT}\n"),
        );
    std::fs::write(env.path("rekey.toml"), text).unwrap();
    let started = Instant::now();
    // Info level: 1,000 rotations at debug would mostly measure log writes.
    let d = env.start_with_env(&[("REKEY_LOG", "info")]);
    let pid = d.child.id();
    let addr = d.addr;

    // /healthz every 10 ms, timed, until the rotations are done (or the
    // deadline passes: the probe never outlives the test).
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + ROTATIONS_WITHIN;
    let probe = {
        let stop = stop.clone();
        let t0 = started;
        std::thread::spawn(move || {
            let mut times = Vec::new();
            let mut failures = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let t = Instant::now();
                match http(addr, "GET", "/healthz") {
                    Ok((200, _)) => {
                        if t.elapsed() > HEALTHZ_BOUND {
                            eprintln!(
                                "slow /healthz: {:?}, {:?} after start",
                                t.elapsed(),
                                t.duration_since(t0)
                            );
                        }
                        times.push(t.elapsed())
                    }
                    _ => failures += 1,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (times, failures)
        })
    };

    let (mut max_renewing, mut max_rss, mut done) = (0usize, 0u64, 0usize);
    while Instant::now() < deadline {
        if let Some(kb) = rss_kb(pid) {
            max_rss = max_rss.max(kb);
        }
        // Counted in the raw JSON: parsing 1,000 entries in a debug build
        // would compete for the same 2 cores as the daemon.
        if let Ok((200, body)) = http(addr, "GET", "/status") {
            let renewing = body.matches("\"state\":\"renewing\"").count();
            max_renewing = max_renewing.max(renewing);
            done = body.matches("\"state\":\"valid\"").count();
            if done == N {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut times, failures) = probe.join().unwrap();
    times.sort();
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let max = times.last().copied().unwrap_or_default();
    sc.round();
    sc.check("all rotate", done == N, || {
        format!("{done} of {N} valid after {took:?}")
    });
    sc.check(
        "concurrency bounded",
        max_renewing <= MAX_CONCURRENT,
        || format!("{max_renewing} renewing at once (max_concurrent_rotations = {MAX_CONCURRENT})"),
    );
    sc.check("memory bounded", max_rss < RSS_BOUND_MB * 1024, || {
        format!("RSS {} MB", max_rss / 1024)
    });
    sc.check("/healthz always answers", failures == 0, || {
        format!("{failures} failed of {}", times.len() + failures)
    });
    sc.check(
        "/healthz probed throughout",
        times.len() >= MIN_PROBES,
        || format!("{} probes in {took:?}", times.len()),
    );
    // The cores are shared (CI, or other builds on a developer's machine),
    // so a few probes can wait on the OS scheduler: 95% must answer within
    // 100 ms; the max is only reported (one descheduled probe must not fail
    // the run). Before the endpoint got its own runtime and the store's I/O
    // stopped blocking the engine's workers, the median alone was 364 ms.
    sc.check(
        "/healthz p95 within 100 ms",
        pct(0.95) < HEALTHZ_BOUND,
        || format!("p95 {:?}, p99 {:?}, max {max:?}", pct(0.95), pct(0.99)),
    );
    // A sample of the files: each pair parses and matches.
    for i in (0..N).step_by(97) {
        let r = pair(
            &env.path(&format!("tls/c{i}/cert.pem")),
            &env.path(&format!("tls/c{i}/key.pem")),
        );
        sc.check("pairs match (sample)", matches!(r, Ok((_, true))), || {
            format!("c{i}: {r:?}")
        });
    }
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let slow = times.iter().filter(|t| **t >= HEALTHZ_BOUND).count();
    let measured = format!(
        "/healthz while the rotations ran: {} probes, p50 {}, p95 {}, p99 {}, max {}, {slow} at or over 100 ms",
        times.len(),
        ms(pct(0.5)),
        ms(pct(0.95)),
        ms(pct(0.99)),
        ms(max),
    );
    eprintln!("{measured}");
    sc.note(format!(
        "{N} issued in {:.1} s; at most {max_renewing} renewing at once; peak RSS {} MB; {measured}",
        took.as_secs_f64(),
        max_rss / 1024,
    ));
    sc.finish();
}
