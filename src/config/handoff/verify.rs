//! `verify = { type = ... }` (or a list of such tables): the probes that
//! prove the application serves the new generation.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::{
    duration_key, headers, url_key, ProbeConfig, VerifyConfig, DEFAULT_SETTLE,
    DEFAULT_VERIFY_TIMEOUT,
};
use crate::config::convert::{resolve, value};
use crate::config::error::{ConfigError, Src};
use crate::config::raw::{RawTagged, RawVerify, TableReader};
use crate::config::values;

/// `verify = { type = ... }` or a list of such tables; all must pass.
pub(in crate::config) fn verify(
    src: &Src<'_>,
    base: &std::path::Path,
    path: String,
    raw: Spanned<RawVerify>,
    default_server_name: &str,
) -> Result<VerifyConfig, ConfigError> {
    let outer = raw.span();
    let tables: Vec<(String, Spanned<RawTagged>)> = match raw.into_inner() {
        // The whole `{ ... }` locates errors about missing keys.
        RawVerify::One(t) => vec![(path, Spanned::new(outer, t.into_inner()))],
        RawVerify::Many(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("{path}[{i}]"), t))
            .collect(),
    };
    let mut out = VerifyConfig {
        probes: Vec::new(),
        timeout: DEFAULT_VERIFY_TIMEOUT,
        settle: DEFAULT_SETTLE,
    };
    let (mut timeout, mut settle) = (None::<Duration>, None::<Duration>);
    let n = tables.len();
    for (p, table) in tables {
        let mut t = TableReader::new(src, p, table);
        let span = t.span.clone();
        let tag = t.tag(&["none", "tls", "http", "exec"])?;
        let probe = match tag.get_ref().as_str() {
            "tls" => Some(tls_probe(&mut t, src, base, &span, default_server_name)?),
            "http" => Some(http_probe(&mut t, &span)?),
            "exec" => Some(exec_probe(&mut t, &span)?),
            _ => None,
        };
        if probe.is_none() && n > 1 {
            return Err(t.err(
                "type",
                Some(tag.span()),
                "\"none\" cannot be combined with other probes",
            ));
        }
        if probe.is_some() {
            let to = duration_key(&mut t, src, "timeout", DEFAULT_VERIFY_TIMEOUT)?;
            let st = match t.string("settle")? {
                Some(s) => value(src, &t.key_path("settle"), &s, values::duration)?,
                None => DEFAULT_SETTLE,
            };
            timeout = Some(timeout.map_or(to, |x| x.max(to)));
            settle = Some(settle.map_or(st, |x| x.max(st)));
        }
        t.finish()?;
        out.probes.extend(probe);
    }
    out.timeout = timeout.unwrap_or(DEFAULT_VERIFY_TIMEOUT);
    out.settle = settle.unwrap_or(DEFAULT_SETTLE);
    Ok(out)
}

/// `type = "tls"`: where to connect, the name to send (the credential's
/// own name when absent), STARTTLS, and an optional client certificate.
fn tls_probe(
    t: &mut TableReader<'_, '_>,
    src: &Src<'_>,
    base: &std::path::Path,
    span: &Range<usize>,
    default_server_name: &str,
) -> Result<ProbeConfig, ConfigError> {
    let connect = t.string("connect")?.ok_or_else(|| {
        t.err(
            "connect",
            Some(span.clone()),
            "required key is missing; write it like \"127.0.0.1:8443\"",
        )
    })?;
    if connect
        .get_ref()
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .is_none()
    {
        return Err(t.err(
            "connect",
            Some(connect.span()),
            format!("\"{}\" is not host:port", connect.get_ref()),
        ));
    }
    let server_name = t
        .string("server_name")?
        .map(Spanned::into_inner)
        .unwrap_or_else(|| default_server_name.to_string());
    let starttls = match t.string("starttls")? {
        Some(s) => Some(value(
            src,
            &t.key_path("starttls"),
            &s,
            crate::config::starttls::parse,
        )?),
        None => None,
    };
    let client_cert = t.string("client_cert")?.map(|s| resolve(base, s.get_ref()));
    let client_key = t.string("client_key")?.map(|s| resolve(base, s.get_ref()));
    if client_cert.is_some() != client_key.is_some() {
        return Err(t.err(
            "client_key",
            Some(span.clone()),
            "client_cert and client_key go together",
        ));
    }
    Ok(ProbeConfig::Tls {
        connect: connect.into_inner(),
        server_name,
        starttls,
        client_cert,
        client_key,
    })
}

/// `type = "http"`: the URL, the status and body expected, headers.
fn http_probe(
    t: &mut TableReader<'_, '_>,
    span: &Range<usize>,
) -> Result<ProbeConfig, ConfigError> {
    let url = url_key(t, span)?;
    let expect_status = match t.take("expect_status") {
        Some(v) => {
            let s = v.span();
            v.into_inner()
                .as_integer()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| (100..600).contains(n))
                .ok_or_else(|| {
                    t.err(
                        "expect_status",
                        Some(s),
                        "must be an HTTP status code like 200",
                    )
                })?
        }
        None => 200,
    };
    let expect_body = match t.string("expect_body")? {
        Some(b) => {
            placeholders(b.get_ref()).map_err(|m| t.err("expect_body", Some(b.span()), m))?;
            Some(b.into_inner())
        }
        None => None,
    };
    let headers = headers(t)?;
    Ok(ProbeConfig::Http {
        url,
        expect_status,
        expect_body,
        headers,
    })
}

/// `type = "exec"`: a command that exits 0 when the application serves the new credential.
fn exec_probe(
    t: &mut TableReader<'_, '_>,
    span: &Range<usize>,
) -> Result<ProbeConfig, ConfigError> {
    let command = t
        .argv("command")?
        .ok_or_else(|| t.err("command", Some(span.clone()), "required key is missing"))?;
    let env = t.env("env")?;
    Ok(ProbeConfig::Exec { command, env })
}

/// Only `{fingerprint}`, `{serial}` and `{key_id}` may appear in braces.
fn placeholders(s: &str) -> Result<(), String> {
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else { break };
        let name = &rest[i + 1..i + j];
        if !["fingerprint", "serial", "key_id"].contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}}; allowed: {{fingerprint}}, {{serial}}, {{key_id}}"
            ));
        }
        rest = &rest[i + j + 1..];
    }
    Ok(())
}
