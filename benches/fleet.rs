//! Fleet behaviour: 10,000 sidecars started at the same moment with
//! certificates of the same lifetime, replayed through the real scheduling
//! functions (`schedule::renewal_point`, `schedule::retry_delay`,
//! `schedule::handoff_backoff`, `schedule::retry_staged`,
//! `issuer::pick_in_window`, `schedule::ari_recheck`, and the issuance
//! budget's `budget::default_budget`, `budget::frees_at` and `budget::gate`),
//! no network and no clock. It counts requests per second against the CA
//! and prints markdown tables (scripts/bench puts them in BENCHMARKS.md).
//! Draws come from a seeded generator, so a run is reproducible.
//! `cargo bench --bench fleet`; FLEET_CLIENTS changes the size.
//!
//! The broken-reload and CA-outage scenarios also replay the behaviour
//! before the handoff retry and the budget (every retry re-issued, backoff
//! of 1 s doublings capped at 1 h), with that formula kept here
//! ([`backoff_before`]) since the library no longer has it.

use std::time::{Duration, SystemTime};

use rekey::budget::{self, Gate};
use rekey::config::Share;
use rekey::issuer::{pick_in_window, RenewalWindow};
use rekey::schedule::{ari_recheck, handoff_backoff, renewal_point, retry_delay, retry_staged};

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

/// Let's Encrypt's lifetime, for the broken-reload and outage scenarios.
const LE_LIFETIME: Duration = Duration::from_secs(90 * 86_400);
const DAY: u64 = 86_400;

/// The retry delay before the handoff retry and the issuance budget: 1 s
/// doubling, capped at a tenth of the lifetime within 5 s..1 h, equal
/// jitter; every retry (also of a failed handoff) asked the CA again.
fn backoff_before(attempt: u32, lifetime: Duration, draw: f64) -> Duration {
    let cap = (lifetime / 10).clamp(Duration::from_secs(5), HOUR);
    let full = Duration::from_secs(1)
        .saturating_mul(1u32 << attempt.min(20))
        .min(cap);
    full / 2 + (full / 2).mul_f64(draw)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn at_unix(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(s)
}

/// Issuances per day over `days` since t0, and the peak per second.
struct Issued {
    rate: Rate,
}

impl Issued {
    fn per_day(&self, days: usize) -> Vec<u64> {
        (0..days)
            .map(|d| {
                self.rate
                    .span(d * DAY as usize, (d + 1) * DAY as usize)
                    .iter()
                    .map(|&c| c as u64)
                    .sum()
            })
            .collect()
    }
}

/// `n` sidecars with 90-day certificates issued at t0 (renew_before 33%,
/// jitter 5%) whose app never reloads. `before`: every retry issues anew,
/// paced by [`backoff_before`]. Otherwise as the engine does it: the
/// issued certificate is staged and only its handoff is retried
/// (`handoff_backoff`, no CA request) while `retry_staged` says so; a new
/// issuance goes through the default budget's `gate`; when the old
/// certificate has expired, the new one is kept (nothing to roll back to)
/// and its reload retried. Returns the CA's issuances over `days`.
fn broken_reload(n: usize, before: bool, days: u64, rng: &mut fastrand::Rng) -> Issued {
    let (rb, jitter) = (Share::Fraction(0.33), Share::Fraction(0.05));
    let end = t0() + Duration::from_secs(days * DAY);
    let mut rate = Rate::new();
    let budget = budget::default_budget(LE_LIFETIME, rb, jitter);
    for _ in 0..n {
        let draw = rng.f64();
        // The committed certificate, the staged one (validity, when issued,
        // failed handoffs) and the budget's ledger.
        let mut committed = (t0(), t0() + LE_LIFETIME);
        let mut staged: Option<((SystemTime, SystemTime), SystemTime, u32)> = None;
        let mut ledger: Vec<u64> = vec![unix(t0())];
        let mut t = renewal_point(committed.0, committed.1, rb, jitter, draw);
        let mut attempt = 0u32;
        while t < end {
            if before {
                rate.add(t);
                t += backoff_before(attempt, LE_LIFETIME, rng.f64());
                attempt += 1;
                continue;
            }
            let is_committed = staged.is_some_and(|s| s.0 == committed);
            let other = (!is_committed).then_some(committed);
            if let Some((dates, issued, attempts)) = staged {
                if retry_staged(dates, issued, other, rb, jitter, draw, t) {
                    // A handoff retry: the CA is not asked. Once the steps
                    // are capped (2.5-5 min), skip to the first step after
                    // the staged certificate stops being the one to retry.
                    let step = handoff_backoff(attempts, LE_LIFETIME, rng.f64());
                    let still = |x| retry_staged(dates, issued, other, rb, jitter, draw, x);
                    let mut next = t + step;
                    if attempts > 12 && still(next) {
                        let (mut lo, mut hi) = (next, end);
                        if still(hi) {
                            next = end;
                        } else {
                            while hi.duration_since(lo).unwrap_or_default() > Duration::from_secs(1)
                            {
                                let mid = lo + hi.duration_since(lo).unwrap_or_default() / 2;
                                if still(mid) {
                                    lo = mid;
                                } else {
                                    hi = mid;
                                }
                            }
                            next = hi + step.mul_f64(rng.f64());
                        }
                    }
                    staged = Some((dates, issued, attempts + 1));
                    t = next;
                    continue;
                }
            }
            let current = (t < committed.1).then(|| (unix(committed.0), unix(committed.1)));
            let now = unix(t);
            match budget::gate(budget::frees_at(&ledger, budget, now), current, now) {
                Gate::Closed { until, .. } => {
                    t = at_unix(until);
                    continue;
                }
                Gate::Open | Gate::Override => {}
            }
            budget::record(&mut ledger, now, budget.window());
            rate.add(t);
            let new = (t, t + LE_LIFETIME);
            if t >= committed.1 {
                // Nothing valid to roll back to: the new one stays, and its
                // reload is what is retried.
                committed = new;
            }
            staged = Some((new, t, 1));
            t += handoff_backoff(0, LE_LIFETIME, rng.f64());
        }
    }
    Issued { rate }
}

/// `n` sidecars with 90-day certificates, all due when their CA goes down
/// for `outage` (from t0; `spread`: due times spread over the first hour
/// instead). Attempts before it is back fail (and issue nothing); the first
/// attempt after succeeds. `before`: [`backoff_before`]; otherwise the
/// issuer backoff (`retry_delay`). Returns requests to the CA, issuances, and
/// the second the last one got through.
fn ca_down(
    n: usize,
    outage: Duration,
    before: bool,
    spread: bool,
    rng: &mut fastrand::Rng,
) -> (Rate, Rate, usize) {
    let back = t0() + outage;
    let (mut requests, mut issued) = (Rate::new(), Rate::new());
    let mut last = 0;
    for _ in 0..n {
        let mut t = t0()
            + if spread {
                HOUR.mul_f64(rng.f64())
            } else {
                Duration::ZERO
            };
        let mut attempt = 0u32;
        loop {
            requests.add(t);
            if t >= back {
                issued.add(t);
                last = last.max(sec(t));
                break;
            }
            t += if before {
                backoff_before(attempt, LE_LIFETIME, rng.f64())
            } else {
                retry_delay(attempt, LE_LIFETIME, rng.f64(), None)
            };
            attempt += 1;
        }
    }
    (requests, issued, last)
}

fn thousands(x: u64) -> String {
    let s = x.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The two failure scenarios of the issuance budget, before and now.
fn budget_scenarios(n: usize) {
    let days = 120u64;
    println!("\n### A broken reload: {n} sidecars whose app never reloads, 90-day certificates\n");
    println!("Every sidecar got its certificate at day 0 (renew_before 33%, jitter 5%: renewals from day 55.8 to day 60.3) and its app never takes a new one. Issuances at the CA over the first {days} days. Before: every retry of the failed handoff issued anew (backoff of 1 s doublings, capped at 1 h). Now: the issued certificate stays staged and only its reload and verify are retried (no CA request); a new one is issued once when the old one enters its last tenth (between day 76.5 and day 81, jittered like renewals) and when the staged one is itself due, within the default budget (5 in any 7 days).\n");
    println!("| behaviour | issuances in {days} days | per sidecar | peak per day | peak per second | busiest day |");
    println!("|---|---|---|---|---|---|");
    for (label, before) in [
        ("before: every retry issues anew", true),
        ("now: the handoff is retried, not the issuance", false),
    ] {
        let mut rng = fastrand::Rng::with_seed(91);
        let issued = broken_reload(n, before, days, &mut rng);
        let per_day = issued.per_day(days as usize);
        let (busiest, peak_day) = per_day
            .iter()
            .enumerate()
            .max_by_key(|(_, c)| **c)
            .map_or((0, 0), |(d, c)| (d, *c));
        let (a, b) = issued.rate.busy();
        let (peak, _, _) = stats(issued.rate.span(a, b));
        let total = issued.rate.total();
        println!(
            "| {label} | {} | {:.1} | {} | {peak} | day {busiest} |",
            thousands(total),
            total as f64 / n as f64,
            thousands(peak_day),
        );
    }
    println!("\nLet's Encrypt would have refused most of the \"before\" issuances (5 per exact set of names per 7 days), locking each name out for a week; \"now\" stays within that limit by itself.\n");

    println!("### The CA down for 6 hours, then back: {n} sidecars with 90-day certificates\n");
    println!("Every sidecar is due when the CA goes down (or within its first hour). Attempts while it is down fail and issue nothing (they are not counted against the budget); the first attempt after it is back succeeds. Before: 1 s doublings capped at 1 h. Now: the issuer backoff for a 90-day lifetime, 1 min doublings capped at a day.\n");
    println!("| due | behaviour | requests to the dead CA | issuances | peak issuances per second after recovery | issuances on the day of recovery | last sidecar through |");
    println!("|---|---|---|---|---|---|---|");
    let outage = 6 * HOUR;
    let o = outage.as_secs() as usize;
    for (due, spread) in [("all at once", false), ("over the first hour", true)] {
        for (label, before) in [("before", true), ("now", false)] {
            let mut rng = fastrand::Rng::with_seed(92);
            let (requests, issued, last) = ca_down(n, outage, before, spread, &mut rng);
            let dead: u64 = requests.span(0, o).iter().map(|&c| c as u64).sum();
            let (peak, _, _) = stats(issued.span(o, issued.per_sec.len()));
            let day: u64 = issued.span(0, DAY as usize).iter().map(|&c| c as u64).sum();
            println!(
                "| {due} | {label} | {} | {} | {peak} | {} | {} after recovery |",
                thousands(dead),
                thousands(issued.total()),
                thousands(day),
                human(last.saturating_sub(o)),
            );
        }
    }
    println!("\nBoth issue once per sidecar. \"Now\" sends half the requests to the dead CA and spreads the return over hours instead of one hour (a lower peak), which a 90-day certificate due 30 days before it expires can afford; a CA that sends `Retry-After` is waited for as it asks.");
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
    println!("Every attempt before the CA is back (t = 60 min) fails and is retried after `retry_delay` (no Retry-After; for 24 h certificates the backoff starts at 43 s and caps at 2.4 h). The first attempt after recovery succeeds.\n");
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
        "\nOver time, all {n} first due at the same second (peak / p99 per second in each span; the 0-10 s row holds the first attempt of all; with equal jitter their first retry comes 22-43 s later):\n"
    );
    println!("| since the outage began | no jitter | equal jitter (default) |");
    println!("|---|---|---|");
    for row in timeline {
        println!("| {} |", row.join(" | "));
    }

    budget_scenarios(n);
}
