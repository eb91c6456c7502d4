//! The reliability scorecard: each fault scenario records how many rounds
//! it ran, which invariants it checked and how often, and its outcome, as
//! one JSON line appended to `$REKEY_SCORECARD` (when set). `scripts/reliability`
//! renders RELIABILITY.md from those lines, so no figure is written by hand.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

/// One scenario's tally; call [`Scenario::finish`] at the end. A scenario
/// dropped without `finish` (the test panicked) is recorded as failed.
pub struct Scenario {
    suite: String,
    name: String,
    rounds: u64,
    checks: BTreeMap<String, u64>,
    violations: Vec<String>,
    notes: Vec<String>,
    started: Instant,
    done: bool,
}

impl Scenario {
    /// Start tallying `name` in `suite` (the test file).
    pub fn new(suite: &str, name: &str) -> Scenario {
        Scenario {
            suite: suite.into(),
            name: name.into(),
            rounds: 0,
            checks: BTreeMap::new(),
            violations: Vec::new(),
            notes: Vec::new(),
            started: Instant::now(),
            done: false,
        }
    }

    /// One more round (one fault injected and recovered from).
    pub fn round(&mut self) {
        self.rounds += 1;
    }

    /// Record one check of invariant `what`; a failure is kept with `detail`.
    pub fn check(&mut self, what: &str, ok: bool, detail: impl FnOnce() -> String) -> bool {
        *self.checks.entry(what.to_string()).or_default() += 1;
        if !ok {
            let d = detail();
            eprintln!("VIOLATION [{}] {what}: {d}", self.name);
            self.violations.push(format!("{what}: {d}"));
        }
        ok
    }

    /// Record a `Result` as a check: Err is a violation.
    pub fn check_ok<T>(&mut self, what: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => {
                self.check(what, true, String::new);
                Some(v)
            }
            Err(e) => {
                self.check(what, false, || e);
                None
            }
        }
    }

    /// A fact worth showing in the table (not a check).
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Write the line and fail the test on any violation.
    pub fn finish(mut self) {
        self.done = true;
        let outcome = if self.violations.is_empty() {
            "pass"
        } else {
            "fail"
        };
        self.write(outcome, None);
        assert!(
            self.violations.is_empty(),
            "{}: {} invariant violation(s):\n{}",
            self.name,
            self.violations.len(),
            self.violations.join("\n")
        );
    }

    /// The scenario when the tests run as root; otherwise it is skipped
    /// saying `why` root is needed, or fails under REKEY_REQUIRE_LIVE
    /// (scripts/test runs as root, so a skip there would hide a scenario).
    pub fn require_root(self, why: &str) -> Option<Scenario> {
        if nix::unistd::geteuid().is_root() {
            return Some(self);
        }
        if std::env::var_os("REKEY_REQUIRE_LIVE").is_some() {
            panic!("{}: {why}; scripts/test runs as root", self.name);
        }
        self.skip(why);
        None
    }

    /// Record the scenario as skipped (a prerequisite is missing) and say why.
    pub fn skip(mut self, why: &str) {
        self.done = true;
        eprintln!("SKIPPED {}: {why}", self.name);
        self.write("skipped", Some(why));
    }

    fn write(&self, outcome: &str, why: Option<&str>) {
        let Some(path) = std::env::var_os("REKEY_SCORECARD") else {
            return;
        };
        let line = serde_json::json!({
            "suite": self.suite,
            "scenario": self.name,
            "rounds": self.rounds,
            "checks": self.checks,
            "violations": self.violations.len(),
            "first_violation": self.violations.first(),
            "notes": self.notes,
            "outcome": outcome,
            "reason": why,
            "seconds": (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        });
        // One write of one line with O_APPEND: lines from parallel tests never interleave.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if !self.done {
            let why = if std::thread::panicking() {
                "the test panicked"
            } else {
                "finish() was not called"
            };
            self.violations.push(why.to_string());
            self.write("fail", Some(why));
        }
    }
}
