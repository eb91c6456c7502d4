//! Fleet behaviour: 10,000 sidecars started at the same moment with
//! certificates of the same lifetime, replayed through the real scheduling
//! functions (`schedule::renewal_point`, `schedule::retry_delay`,
//! `issuer::pick_in_window`, `schedule::ari_recheck`), no network and no clock. It counts requests
//! per second against the CA and prints markdown tables (scripts/bench puts
//! them in BENCHMARKS.md). Draws come from a seeded generator, so a run is
//! reproducible. `cargo bench --bench fleet`; FLEET_CLIENTS changes the size.

use std::time::{Duration, SystemTime};

use rekey::config::Share;
use rekey::issuer::{pick_in_window, RenewalWindow};
use rekey::schedule::{ari_recheck, renewal_point, retry_delay};

const HOUR: Duration = Duration::from_secs(3600);
const LIFETIME: Duration = Duration::from_secs(24 * 3600);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// Seconds since t0, as a bucket index.
fn sec(t: SystemTime) -> usize {
    t.duration_since(t0()).unwrap_or_default().as_secs() as usize
}

/// Requests per second over the busy span [first, last] (empty seconds count).
struct Rate {
    per_sec: Vec<u32>,
}

impl Rate {
    fn new() -> Rate {
        Rate {
            per_sec: Vec::new(),
        }
    }
    fn add(&mut self, t: SystemTime) {
        let s = sec(t);
        if self.per_sec.len() <= s {
            self.per_sec.resize(s + 1, 0);
        }
        self.per_sec[s] += 1;
    }
    fn span(&self, from: usize, to: usize) -> &[u32] {
        let to = to.min(self.per_sec.len());
        &self.per_sec[from.min(to)..to]
    }
    fn busy(&self) -> (usize, usize) {
        let first = self.per_sec.iter().position(|&c| c > 0).unwrap_or(0);
        let last = self.per_sec.iter().rposition(|&c| c > 0).unwrap_or(0);
        (first, last + 1)
    }
    fn total(&self) -> u64 {
        self.per_sec.iter().map(|&c| c as u64).sum()
    }
}

/// (peak per second, p99 per second, seconds from first to last request).
fn stats(xs: &[u32]) -> (u32, u32, usize) {
    if xs.is_empty() {
        return (0, 0, 0);
    }
    let mut v = xs.to_vec();
    v.sort_unstable();
    let p99 = v[((v.len() - 1) as f64 * 0.99).round() as usize];
    (*v.last().unwrap_or(&0), p99, xs.len())
}

fn human(secs: usize) -> String {
    match secs {
        0..=120 => format!("{secs} s"),
        121..=7200 => format!("{:.0} min", secs as f64 / 60.0),
        _ => format!("{:.1} h", secs as f64 / 3600.0),
    }
}

/// Renewals: every client issued at t0, renewing `cycles` times; each commit
/// draws anew (as the engine does). Returns the rate per cycle.
fn renewals(n: usize, jitter: f64, cycles: usize, rng: &mut fastrand::Rng) -> Vec<Rate> {
    let mut out: Vec<Rate> = (0..cycles).map(|_| Rate::new()).collect();
    for _ in 0..n {
        let mut nb = t0();
        for rate in out.iter_mut() {
            let na = nb + LIFETIME;
            let at = renewal_point(
                nb,
                na,
                Share::Fraction(0.33),
                Share::Fraction(jitter),
                rng.f64(),
            );
            rate.add(at);
            nb = at; // the new certificate starts when it was issued
        }
    }
    out
}

/// ARI: every client gets the same window from the CA and picks inside it
/// with its own draw (`draw_of` returns the draw, fixed for "no jitter").
fn ari(
    n: usize,
    window: (Duration, Duration),
    now: Duration,
    mut draw_of: impl FnMut() -> f64,
) -> Rate {
    let w = RenewalWindow {
        start: t0() + window.0,
        end: t0() + window.1,
        retry_after: None,
    };
    let mut rate = Rate::new();
    for _ in 0..n {
        if let Some(at) = pick_in_window(&w, draw_of(), t0() + now) {
            rate.add(at);
        }
    }
    rate
}

/// A CA outage of `outage` starting at t0, with each client's first attempt
/// at `first(i)`: every attempt before the CA is back fails and is retried
/// after `retry_delay` (no Retry-After); the first attempt after succeeds.
/// Returns the attempts per second and when the last client got through.
fn outage(
    n: usize,
    outage: Duration,
    mut first: impl FnMut() -> Duration,
    mut draw_of: impl FnMut() -> f64,
) -> (Rate, usize) {
    let back = t0() + outage;
    let mut rate = Rate::new();
    let mut last_ok = 0;
    for _ in 0..n {
        let mut at = t0() + first();
        let mut failures = 0u32;
        loop {
            rate.add(at);
            if at >= back {
                last_ok = last_ok.max(sec(at));
                break;
            }
            at += retry_delay(failures, LIFETIME, draw_of(), None);
            failures += 1;
        }
    }
    (rate, last_ok)
}

fn main() {
    let n: usize = std::env::var("FLEET_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut rng = fastrand::Rng::with_seed(8);

    println!("### Renewals: {n} sidecars started together, 24 h certificates, renew_before 33%\n");
    println!("| jitter | renewal | peak /s | p99 /s | spread (first to last) |");
    println!("|---|---|---|---|---|");
    for (label, jitter) in [("none (0%)", 0.0), ("default (5%)", 0.05)] {
        for (i, rate) in renewals(n, jitter, 3, &mut rng).iter().enumerate() {
            let (a, b) = rate.busy();
            let (peak, p99, span) = stats(rate.span(a, b));
            println!(
                "| {label} | {} | {peak} | {p99} | {} |",
                ["1st", "2nd", "3rd"][i],
                human(span)
            );
        }
    }

    println!("\n### ARI: every sidecar gets the same window from the CA\n");
    println!("| window | choice inside it | peak /s | p99 /s | spread |");
    println!("|---|---|---|---|---|");
    let w = (16 * HOUR, 17 * HOUR);
    let rows: Vec<(&str, &str, Rate)> = vec![
        (
            "1 h, ahead",
            "window start (no jitter)",
            ari(n, w, Duration::ZERO, || 0.0),
        ),
        (
            "1 h, ahead",
            "`pick_in_window`, own draw",
            ari(n, w, Duration::ZERO, || rng.f64()),
        ),
        (
            "1 h, half gone when fetched",
            "`pick_in_window`, own draw",
            ari(n, w, 16 * HOUR + HOUR / 2, || rng.f64()),
        ),
    ];
    for (win, how, rate) in rows {
        let (a, b) = rate.busy();
        let (peak, p99, span) = stats(rate.span(a, b));
        println!("| {win} | {how} | {peak} | {p99} | {} |", human(span));
    }

    println!("\n### ARI: the CA moves the window into the past (mass revocation)\n");
    println!("The fleet started together and re-checks ARI 6 h later (the default without Retry-After); at 5 h the CA moves every window into the past, so each client renews as soon as its re-check sees it (RFC 9773: a passed pick means now).\n");
    println!("| re-check interval | renewals | peak /s | p99 /s | spread |");
    println!("|---|---|---|---|---|");
    for (label, spread) in [
        ("6 h for all (before)", false),
        ("`ari_recheck`: 6 h + up to 25% (default)", true),
    ] {
        let mut rate = Rate::new();
        for _ in 0..n {
            let draw = if spread { rng.f64() } else { 0.0 };
            rate.add(t0() + ari_recheck(6 * HOUR, draw));
        }
        let (a, b) = rate.busy();
        let (peak, p99, span) = stats(rate.span(a, b));
        println!(
            "| {label} | {} | {peak} | {p99} | {} |",
            rate.total(),
            human(span)
        );
    }

    println!("\n### CA outage of 1 h, then recovery: attempts per second against the CA\n");
    println!("Every attempt before the CA is back (t = 60 min) fails and is retried after `retry_delay` (no Retry-After; for 24 h certificates the backoff caps at 1 h). The first attempt after recovery succeeds.\n");
    let jitter_window = LIFETIME.mul_f64(0.05);
    let h = HOUR.as_secs() as usize;
    // (label, from, to) in seconds since the outage began.
    let phases: [(&str, usize, usize); 7] = [
        ("0-10 s", 0, 10),
        ("10 s-1 min", 10, 60),
        ("1-5 min", 60, 300),
        ("5-15 min", 300, 900),
        ("15-60 min", 900, h),
        ("60-70 min (CA back)", h, h + 600),
        ("70-120 min", h + 600, 2 * h),
    ];
    let mut summary = Vec::new();
    let mut timeline: Vec<Vec<String>> = phases.iter().map(|p| vec![p.0.to_string()]).collect();
    type Draw<'a> = Box<dyn FnMut() -> f64 + 'a>;
    for (due, spread) in [
        ("all at the same second", false),
        ("spread by the 5% renewal jitter", true),
    ] {
        for (label, equal) in [("no jitter", false), ("equal jitter (default)", true)] {
            let mut r1 = fastrand::Rng::with_seed(81);
            let mut r2 = fastrand::Rng::with_seed(82);
            let first = move || {
                if spread {
                    // The outage begins as the fleet's renewal spread begins.
                    jitter_window.mul_f64(r1.f64())
                } else {
                    Duration::ZERO
                }
            };
            let draw: Draw = if equal {
                Box::new(move || r2.f64())
            } else {
                Box::new(|| 1.0)
            };
            let (rate, last) = outage(n, HOUR, first, draw);
            let (peak, p99, _) = stats(rate.span(10, h));
            let (after, after99, _) = stats(rate.span(h, h + 600));
            summary.push(format!(
                "| {due} | {label} | {} | {peak} | {p99} | {after} | {after99} | {} |",
                rate.total(),
                human(last.saturating_sub(h))
            ));
            if !spread {
                for (row, (_, a, b)) in timeline.iter_mut().zip(phases) {
                    let (peak, p99, _) = stats(rate.span(a, b));
                    row.push(format!("{peak} / {p99}"));
                }
            }
        }
    }
    println!("| clients first due | backoff | attempts | peak /s, 10 s-60 min | p99 /s, 10 s-60 min | peak /s, 10 min after recovery | p99 /s, 10 min after recovery | last client through |");
    println!("|---|---|---|---|---|---|---|---|");
    for row in summary {
        println!("{row}");
    }
    println!(
        "\nOver time, all {n} first due at the same second (peak / p99 per second in each span; the 0-10 s row holds the first attempt of all and, with equal jitter, their first retry 0.5-1 s later, in the same second):\n"
    );
    println!("| since the outage began | no jitter | equal jitter (default) |");
    println!("|---|---|---|");
    for row in timeline {
        println!("| {} |", row.join(" | "));
    }
}
