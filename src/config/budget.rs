//! The values of the issuance budget keys (`max_issuances`,
//! `max_issuances_total`): [`Budget`], [`Limit`] and their parser. Defined
//! here so config imports nothing of rekey's; `crate::budget` re-exports
//! them next to the ledger arithmetic that uses them.

use std::fmt;
use std::time::Duration;

/// The longest window a configured budget may have.
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 86_400);
/// At most `count` issuances in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Issuances allowed per window (at least 1).
    pub count: u32,
    /// The sliding window, in seconds (1 s to [`MAX_WINDOW`]).
    pub window_s: u32,
}

impl Budget {
    /// The window as a duration.
    pub fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.window_s))
    }
}

impl fmt::Display for Budget {
    /// The config spelling, e.g. `5/7d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, short_duration(self.window()))
    }
}

/// A budget setting: `max_issuances` / `max_issuances_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Limit {
    /// Not set: the default (for `max_issuances`, `crate::budget::default_budget` of the
    /// credential's lifetime; for `max_issuances_total`, the issuer type's).
    #[default]
    Default,
    /// `"unlimited"`: no budget (backoff and the handoff retry still apply).
    Unlimited,
    /// `"COUNT/WINDOW"`.
    Max(Budget),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Default => f.write_str("default"),
            Limit::Unlimited => f.write_str("unlimited"),
            Limit::Max(b) => b.fmt(f),
        }
    }
}

/// Parse `"5/7d"` (at most 5 issuances in any 7 days) or `"unlimited"`; the
/// error says what is allowed. Zero, a window of 0 s or one over a year is
/// refused: such a budget could only block every renewal or nothing.
pub fn parse(s: &str) -> Result<Limit, String> {
    const HINT: &str = "write it as COUNT/WINDOW like \"5/7d\" (at most 5 issuances in any 7 days) or \"300/3h\", or \"unlimited\"";
    let t = s.trim();
    if t == "unlimited" {
        return Ok(Limit::Unlimited);
    }
    let Some((count, window)) = t.split_once('/') else {
        return Err(format!("invalid budget \"{s}\"; {HINT}"));
    };
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("invalid count in budget \"{s}\"; {HINT}"))?;
    if count == 0 {
        return Err(format!(
            "budget \"{s}\" allows no issuance at all, so nothing could ever be renewed; allow at least 1, or write \"unlimited\""
        ));
    }
    let window = humantime::parse_duration(window.trim())
        .map_err(|e| format!("invalid window in budget \"{s}\" ({e}); {HINT}"))?;
    if window < Duration::from_secs(1) || window > MAX_WINDOW {
        return Err(format!(
            "the window of budget \"{s}\" must be between 1s and 366d; {HINT}"
        ));
    }
    Ok(Limit::Max(Budget {
        count,
        // At most MAX_WINDOW, which fits in u32 seconds.
        window_s: u32::try_from(window.as_secs()).unwrap_or(u32::MAX),
    }))
}

/// `7d`, `3h`, `90s`: the shortest exact spelling of `d`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= size && s % size == 0 {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}
