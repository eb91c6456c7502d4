//! Readers of the keys `mint = { ... }` and `revoke = { ... }` share:
//! `method`, `path`-like required strings, `body`, `command` and `headers`.

use serde_json::Value;

use crate::config::error::ConfigError;
use crate::config::raw::TableReader;

/// A `{ ... }` value as JSON (the request body).
pub(super) fn body(t: &mut TableReader<'_, '_>) -> Result<Option<Value>, ConfigError> {
    let Some(v) = t.take("body") else {
        return Ok(None);
    };
    let span = v.span();
    if !v.get_ref().is_table() {
        return Err(t.err("body", Some(span), "must be a table, sent as a JSON object"));
    }
    serde_json::to_value(v.into_inner())
        .map(Some)
        .map_err(|e| t.err("body", Some(span), format!("cannot be sent as JSON: {e}")))
}

/// Take `key` as a non-empty string, naming an example when it is missing.
pub(super) fn required(
    t: &mut TableReader<'_, '_>,
    key: &'static str,
    example: &str,
) -> Result<String, ConfigError> {
    let span = t.span.clone();
    match t.string(key)? {
        Some(s) if !s.get_ref().is_empty() => Ok(s.into_inner()),
        Some(s) => Err(t.err(key, Some(s.span()), "must not be empty")),
        None => Err(t.err(
            key,
            Some(span),
            format!("required key is missing; write it like {example}"),
        )),
    }
}

/// `method`, upper-cased; POST when absent.
pub(super) fn method(t: &mut TableReader<'_, '_>) -> Result<String, ConfigError> {
    match t.string("method")? {
        Some(m) => {
            let up = m.get_ref().to_ascii_uppercase();
            if ["GET", "POST", "PUT", "DELETE"].contains(&up.as_str()) {
                Ok(up)
            } else {
                Err(t.err(
                    "method",
                    Some(m.span()),
                    format!(
                        "unknown method \"{}\"; allowed: GET, POST, PUT, DELETE",
                        m.get_ref()
                    ),
                ))
            }
        }
        None => Ok("POST".into()),
    }
}

/// Take `key` as a non-empty argv array.
pub(super) fn argv(
    t: &mut TableReader<'_, '_>,
    key: &'static str,
) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(v) = t.take(key) else {
        return Ok(None);
    };
    let span = v.span();
    let items: Option<Vec<String>> = v
        .into_inner()
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
        })
        .unwrap_or(None);
    match items {
        Some(a) if !a.is_empty() && !a[0].is_empty() => Ok(Some(a)),
        _ => Err(t.err(
            key,
            Some(span),
            "must be a non-empty array of strings (argv, run without a shell)",
        )),
    }
}

/// Take `key` as a table of strings (request headers).
pub(super) fn string_table(
    t: &mut TableReader<'_, '_>,
    key: &'static str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(v) = t.take(key) else {
        return Ok(Vec::new());
    };
    let span = v.span();
    let toml::Value::Table(map) = v.into_inner() else {
        return Err(t.err(key, Some(span), "must be a table like { X-Team = \"ops\" }"));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            toml::Value::String(s) => Ok((k, s)),
            _ => Err(t.err(
                key,
                Some(span.clone()),
                format!("header {k} must be a string"),
            )),
        })
        .collect()
}
