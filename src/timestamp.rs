//! [`Timestamp`]: an instant kept as a time, written as RFC 3339 UTC to the
//! second (`2030-01-01T00:00:00Z`), the spelling of every time in `/status`,
//! `rekey status --json` and alerts. Imports nothing of rekey's.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// An instant, written as RFC 3339 UTC. Made from a clock it holds whole
/// seconds, so it is written to the second as before; read from text it
/// keeps a fraction it was given (and writes it back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// `t` without its fraction of a second (rounded down).
    pub fn new(t: SystemTime) -> Timestamp {
        let whole = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
            // Before 1970: keep it (rekey never meets such dates outside tests).
            Err(_) => t,
        };
        Timestamp(whole)
    }

    /// Now, to the second.
    pub fn now() -> Timestamp {
        Timestamp::new(SystemTime::now())
    }

    /// The instant.
    pub fn time(self) -> SystemTime {
        self.0
    }

    /// Seconds since the Unix epoch (negative before it).
    pub fn unix_seconds(self) -> i64 {
        match self.0.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// Parse RFC 3339 (any offset).
    pub fn parse(s: &str) -> Option<Timestamp> {
        OffsetDateTime::parse(s, &Rfc3339)
            .ok()
            .map(|t| Timestamp(SystemTime::from(t)))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        Timestamp::new(t)
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> SystemTime {
        t.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = OffsetDateTime::from(self.0);
        match t.format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            // Only years past 9999 cannot be written.
            Err(_) => write!(f, "{:?}", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Timestamp::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{s:?} is not an RFC 3339 time like 2030-01-01T00:00:00Z"
            ))
        })
    }
}

/// RFC 3339 UTC text of a time, to the second, for messages and JSON (the
/// spelling a [`Timestamp`] is written in).
pub fn rfc3339(t: SystemTime) -> String {
    Timestamp::new(t).to_string()
}

/// Parse RFC 3339 text (`None` when absent or malformed).
pub fn parse(s: Option<&str>) -> Option<SystemTime> {
    Timestamp::parse(s?).map(Timestamp::time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_to_the_second_in_utc_and_read_back() {
        let t = UNIX_EPOCH + Duration::from_millis(1_893_456_000_750);
        let ts = Timestamp::new(t);
        assert_eq!(ts.to_string(), "2030-01-01T00:00:00Z");
        assert_eq!(
            serde_json::to_string(&ts).unwrap(),
            "\"2030-01-01T00:00:00Z\""
        );
        let back: Timestamp = serde_json::from_str("\"2030-01-01T00:00:00Z\"").unwrap();
        assert_eq!(back, ts);
        assert_eq!(ts.unix_seconds(), 1_893_456_000);
        // Other offsets are understood; a fraction read is kept.
        assert_eq!(Timestamp::parse("2030-01-01T01:00:00+01:00"), Some(ts));
        let half = Timestamp::parse("2030-01-01T00:00:00.5Z").unwrap();
        assert_eq!(half.time(), ts.time() + Duration::from_millis(500));
        assert_eq!(half.to_string(), "2030-01-01T00:00:00.5Z");
        let err = serde_json::from_str::<Timestamp>("\"yesterday\"").unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }
}
