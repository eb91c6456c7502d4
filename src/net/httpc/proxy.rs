//! Which proxy a request goes through: the environment's (`HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, as reqwest reads them), a fixed
//! one from the config, or none. reqwest does the routing; this module
//! answers "through which proxy?" for error messages, from the same rules.

use hyper_util::client::proxy::matcher::Matcher;

use super::SetupError;
use crate::config::ProxyConfig;

/// How one client routes its requests.
pub(super) enum Route {
    /// The environment's proxies (what reqwest does by default).
    Environment(Box<Matcher>),
    /// Always this proxy (the URL, and the same without credentials).
    Fixed(String, String),
    /// Never a proxy.
    Direct,
}

impl Route {
    /// The route for a `proxy` setting.
    pub(super) fn new(cfg: &ProxyConfig) -> Route {
        match cfg {
            // Read once, like reqwest reads them when the client is built.
            ProxyConfig::Environment => Route::Environment(Box::new(Matcher::from_env())),
            ProxyConfig::Off => Route::Direct,
            ProxyConfig::Url(u) => Route::Fixed(u.clone(), redact(u)),
        }
    }

    /// Apply the route to a client under construction.
    pub(super) fn apply(
        &self,
        b: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, SetupError> {
        Ok(match self {
            // reqwest reads the same variables itself when it builds the
            // client (no `system-proxy` feature: on Linux that is only them).
            Route::Environment(_) => b,
            Route::Direct => b.no_proxy(),
            Route::Fixed(url, shown) => {
                let proxy =
                    reqwest::Proxy::all(url.as_str()).map_err(|source| SetupError::Proxy {
                        proxy: shown.clone(),
                        source,
                    })?;
                // `proxy()` also turns the environment's proxies off.
                b.proxy(proxy)
            }
        })
    }

    /// The proxy a request to `url` goes through, without credentials,
    /// and where that setting came from.
    pub(super) fn proxy_for(&self, url: &reqwest::Url) -> Option<(String, &'static str)> {
        match self {
            Route::Direct => None,
            Route::Fixed(_, shown) => Some((shown.clone(), "the proxy key")),
            Route::Environment(m) => {
                let uri: http::Uri = url.as_str().parse().ok()?;
                let i = m.intercept(&uri)?;
                Some((
                    redact(&i.uri().to_string()),
                    "HTTPS_PROXY/HTTP_PROXY/ALL_PROXY, minus NO_PROXY",
                ))
            }
        }
    }
}

/// `url` without `user:password@`, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let tail = if tail == "/" { "" } else { tail };
    format!("{scheme}://{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show() {
        assert_eq!(
            redact("http://user:s3cret@proxy.internal:3128"),
            "http://proxy.internal:3128"
        );
        assert_eq!(redact("http://user:p@ss@proxy:3128/"), "http://proxy:3128");
        assert_eq!(redact("http://127.0.0.1:3128"), "http://127.0.0.1:3128");
    }
}
