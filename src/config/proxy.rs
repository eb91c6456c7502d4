//! The `proxy` key of the issuers that talk HTTP (acme, vault, http key
//! services) and of the HTTP alert sinks (webhook, alertmanager).

use super::error::ConfigError;
use super::raw::TableReader;

/// How an issuer or an alert sink reaches its server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProxyConfig {
    /// No `proxy` key: the proxies of rekey's environment (`HTTPS_PROXY`,
    /// `HTTP_PROXY`, `ALL_PROXY`, with `NO_PROXY` exempting hosts).
    #[default]
    Environment,
    /// `proxy = "none"`: always a direct connection, whatever the
    /// environment says.
    Off,
    /// `proxy = "http://host:port"`: always through this proxy (`NO_PROXY`
    /// does not apply to it).
    Url(String),
}

/// Read the table's `proxy` key (absent: the environment's).
pub(super) fn key(t: &mut TableReader<'_, '_>) -> Result<ProxyConfig, ConfigError> {
    match t.string("proxy")? {
        None => Ok(ProxyConfig::Environment),
        Some(s) => parse(s.get_ref()).map_err(|m| t.err("proxy", Some(s.span()), m)),
    }
}

/// `"none"`, or an http(s) proxy URL with a host, no credentials and no path.
pub(super) fn parse(s: &str) -> Result<ProxyConfig, String> {
    const HINT: &str = "write \"none\" for a direct connection, or the proxy like \"http://proxy.internal:3128\"; leave the key out to use HTTPS_PROXY / HTTP_PROXY / NO_PROXY from rekey's environment";
    let s = s.trim();
    if s == "none" {
        return Ok(ProxyConfig::Off);
    }
    if s.is_empty() {
        return Err(format!("must not be empty; {HINT}"));
    }
    let uri: http::Uri = s
        .parse()
        .map_err(|e| format!("invalid proxy URL \"{s}\" ({e}); {HINT}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) if other.starts_with("socks") => {
            return Err(format!(
                "\"{s}\": SOCKS proxies are not supported; use an HTTP proxy (http:// or https://), or \"none\""
            ))
        }
        _ => return Err(format!("\"{s}\" is not an http:// or https:// URL; {HINT}")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("\"{s}\" has no host; {HINT}"));
    };
    if authority.as_str().contains('@') {
        // The config is readable by more than rekey: no secrets in it.
        let host = authority.as_str().rsplit_once('@').map_or("", |(_, h)| h);
        return Err(format!(
            "\"{}://***@{host}\" holds user:password; give a proxy that needs credentials through HTTPS_PROXY in rekey's environment (e.g. a root-only systemd EnvironmentFile), not in the config",
            uri.scheme_str().unwrap_or("http")
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("\"{s}\" has no host; {HINT}"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "\"{s}\": a proxy URL is only scheme, host and port, like \"http://proxy.internal:3128\""
        ));
    }
    Ok(ProxyConfig::Url(s.trim_end_matches('/').to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_urls_and_refusals() {
        assert_eq!(parse("none"), Ok(ProxyConfig::Off));
        assert_eq!(
            parse("http://proxy.internal:3128/"),
            Ok(ProxyConfig::Url("http://proxy.internal:3128".into()))
        );
        assert_eq!(
            parse("https://[::1]:8443"),
            Ok(ProxyConfig::Url("https://[::1]:8443".into()))
        );
        for (bad, says) in [
            ("", "must not be empty"),
            ("socks5://127.0.0.1:1080", "SOCKS proxies are not supported"),
            ("proxy:3128", "is not an http:// or https:// URL"),
            ("ftp://proxy:21", "is not an http:// or https:// URL"),
            ("http://proxy:3128/path", "only scheme, host and port"),
            ("http:// bad", "invalid proxy URL"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = parse("http://ops:s3cret@proxy:3128").unwrap_err();
        assert!(e.contains("user:password") && !e.contains("s3cret"), "{e}");
    }
}
