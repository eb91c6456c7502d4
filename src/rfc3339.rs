//! RFC 3339 timestamps, the one text form of a time in messages, JSON, the
//! status snapshot and the audit log: formatting (UTC, whole seconds) and
//! parsing. Imports nothing of rekey's.

use std::time::SystemTime;

/// RFC 3339 UTC text of a time, for messages and JSON.
pub fn format(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    dt.replace_nanosecond(0)
        .unwrap_or(dt)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}

/// Parse an RFC 3339 timestamp from the snapshot (`None` when absent or malformed).
pub fn parse(s: Option<&str>) -> Option<SystemTime> {
    let t = s?;
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}
