//! Parsers for single values; each returns a message saying what is allowed.

use std::time::Duration;

use super::{KeyType, LogFormat, Share, SwapMode};

/// A humantime duration such as "90s", "8h" or "30d".
pub(super) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration \"{s}\" ({e}); write it like \"90s\", \"8h\" or \"30d\"")
    })
}

/// A percentage of lifetime ("33%", "12.5%") or a duration ("8h").
pub(super) fn share(s: &str) -> Result<Share, String> {
    let Some(number) = s.trim().strip_suffix('%') else {
        return duration(s)
            .map(Share::Duration)
            .map_err(|_| format!("invalid value \"{s}\"; write a percentage of lifetime like \"33%\" or \"12.5%\", or a duration like \"8h\""));
    };
    match number.trim().parse::<f64>() {
        Ok(p) if p.is_finite() && !number.trim().is_empty() => Ok(Share::Fraction(p / 100.0)),
        _ => Err(format!(
            "invalid percentage \"{s}\"; write it like \"33%\" or \"12.5%\""
        )),
    }
}

/// One of the `KeyType::ALL` spellings.
pub(super) fn key_type(s: &str) -> Result<KeyType, String> {
    KeyType::from_name(s).ok_or_else(|| {
        let allowed: Vec<&str> = KeyType::ALL.iter().map(KeyType::as_str).collect();
        format!("unknown key type \"{s}\"; allowed: {}", allowed.join(", "))
    })
}

/// "text" or "json".
pub(super) fn log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("unknown log format \"{s}\"; allowed: text, json")),
    }
}

/// "rename" or "symlink".
pub(super) fn swap(s: &str) -> Result<SwapMode, String> {
    match s {
        "rename" => Ok(SwapMode::Rename),
        "symlink" => Ok(SwapMode::Symlink),
        _ => Err(format!(
            "unknown swap mode \"{s}\"; allowed: rename, symlink"
        )),
    }
}

/// A file mode: an octal string ("0640") or an integer (0o640), at most 0o777.
pub(super) fn mode(value: &toml::Value) -> Result<u32, String> {
    const HINT: &str =
        "write it as an octal string like \"0640\" or an integer like 0o640, at most 0777";
    let parsed = match value {
        toml::Value::Integer(i) => u32::try_from(*i).ok(),
        toml::Value::String(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            if digits.is_empty()
                || digits.len() > 4
                || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
            {
                None
            } else {
                u32::from_str_radix(digits, 8).ok()
            }
        }
        other => {
            return Err(format!(
                "expected a mode, found {}; {HINT}",
                other.type_str()
            ));
        }
    };
    match parsed {
        Some(m) if m <= 0o777 => Ok(m),
        // Show integers in octal: 0o1777 reads better than 1023.
        _ => match value {
            toml::Value::Integer(i) if *i >= 0 => Err(format!("invalid mode {i:#o}; {HINT}")),
            _ => Err(format!("invalid mode {value}; {HINT}")),
        },
    }
}

/// Hostname syntax: labels of 1-63 letters/digits/hyphens, at most 253 in all, optional leading `*.`.
pub(super) fn dns_name(s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid DNS name \"{s}\": {why}"));
    let host = s.strip_prefix("*.").unwrap_or(s);
    if host.is_empty() {
        return bad("empty");
    }
    if s.len() > 253 {
        return bad("longer than 253 characters");
    }
    for label in host.split('.') {
        if label.is_empty() {
            return bad("empty label (two dots in a row, or a leading or trailing dot)");
        }
        if label.len() > 63 {
            return bad("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("only letters, digits, '-' and '.' are allowed (and a leading \"*.\")");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label may not start or end with '-'");
        }
    }
    Ok(())
}

/// A certificate name: it becomes a directory name in the state dir.
pub(super) fn cert_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_string());
    }
    if s.starts_with('.') {
        return Err(format!(
            "\"{s}\" must not start with '.' (it becomes a directory name)"
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!("\"{s}\" may only contain letters, digits, '.', '_' and '-' (it becomes a directory name)"));
    }
    Ok(())
}

/// A user name or numeric uid.
pub(super) fn uid(name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!(
            "unknown user \"{name}\"; give an existing user name or a numeric uid"
        )),
        Err(e) => Err(format!("cannot look up user \"{name}\": {e}")),
    }
}

/// A group name or numeric gid.
pub(super) fn gid(name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!(
            "unknown group \"{name}\"; give an existing group name or a numeric gid"
        )),
        Err(e) => Err(format!("cannot look up group \"{name}\": {e}")),
    }
}

/// A size in bytes: an integer, or a string like "10MiB", "512KiB", "1G".
pub(super) fn size(v: &toml::Value) -> Result<u64, String> {
    let bad = || {
        format!("invalid size {v}; write bytes as an integer or a string like \"10MiB\", \"512KiB\" (at least 1KiB)")
    };
    let n = match v {
        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| bad())?,
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let num: u64 = num.parse().map_err(|_| bad())?;
            let mult: u64 = match unit.trim() {
                "" | "B" => 1,
                "K" | "KB" | "KiB" => 1 << 10,
                "M" | "MB" | "MiB" => 1 << 20,
                "G" | "GB" | "GiB" => 1 << 30,
                _ => return Err(bad()),
            };
            num.checked_mul(mult).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    // Below one record's size every record would start a new file.
    if n < 1024 {
        return Err(bad());
    }
    Ok(n)
}
