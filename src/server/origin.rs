//! Which `Origin` may open a WebSocket: the defence against cross-site WebSocket hijacking.
//!
//! A browser attaches the user's cookies to a WebSocket upgrade whatever page opens it, and
//! always says which page that is in the `Origin` header. So by default an upgrade that
//! carries an `Origin` must come from the server's own site — the Origin's `host[:port]`
//! equal to the request's `Host` header, as Phoenix's `check_origin` does — and a request with
//! no `Origin` (a non-browser client) is let through. An allow-list, or "any origin", replace
//! the default. A refused upgrade gets HTTP 403.

use std::sync::Arc;

/// The Origin rule of a [`ServerConfig`](crate::server::ServerConfig)
/// ([`origin_policy`](crate::server::ServerConfig::origin_policy)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginPolicy {
    /// The default: an Origin must name the Host the request was sent to.
    #[default]
    SameOrigin,
    /// Only these Origin values (exact, ASCII case-insensitive).
    AllowList(Arc<[Box<str>]>),
    /// Any Origin.
    Any,
}

impl OriginPolicy {
    /// Whether an upgrade with these `Origin` and `Host` header values may proceed.
    pub(crate) fn allows(&self, origin: Option<&[u8]>, host: Option<&[u8]>) -> bool {
        let Some(origin) = origin else {
            // Not a browser: nothing to hijack. Authenticate such clients with the auth hook.
            return true;
        };
        match self {
            OriginPolicy::Any => true,
            OriginPolicy::AllowList(list) => list
                .iter()
                .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin)),
            OriginPolicy::SameOrigin => host.is_some_and(|host| same_origin(origin, host)),
        }
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the same host and port as the `Host`
/// header. A port left out means the scheme's default on either side; `null` and anything
/// unparsable never match.
pub(crate) fn same_origin(origin: &[u8], host: &[u8]) -> bool {
    let (Ok(origin), Ok(host)) = (std::str::from_utf8(origin), std::str::from_utf8(host)) else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => return false,
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
        return false;
    }
    match (
        host_port(authority, default_port),
        host_port(host.trim(), default_port),
    ) {
        (Some((a, p)), Some((b, q))) => p == q && a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

/// Splits `host[:port]` (IPv6 literals in brackets), filling in the default port.
fn host_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse().ok()?),
        _ => (authority, default_port),
    };
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_matches_host_and_port_with_scheme_defaults() {
        let yes = [
            ("http://example.com", "example.com"),
            ("https://Example.com", "example.com:443"),
            ("http://example.com:80", "example.com"),
            ("http://127.0.0.1:9001", "127.0.0.1:9001"),
            ("http://[::1]:9001", "[::1]:9001"),
            ("https://[::1]", "[::1]:443"),
        ];
        for (origin, host) in yes {
            assert!(
                same_origin(origin.as_bytes(), host.as_bytes()),
                "{origin} vs {host}"
            );
        }
        let no = [
            ("http://evil.example", "example.com"),
            ("http://example.com:8080", "example.com"),
            ("https://example.com", "example.com:80"),
            ("null", "example.com"),
            ("http://example.com.evil.com", "example.com"),
            ("http://user@example.com", "example.com"),
            ("file://example.com", "example.com"),
            ("http://", ""),
            ("http://example.com:99999", "example.com:99999"),
        ];
        for (origin, host) in no {
            assert!(
                !same_origin(origin.as_bytes(), host.as_bytes()),
                "{origin} vs {host}"
            );
        }
    }

    #[test]
    fn no_origin_passes_every_policy_and_any_passes_every_origin() {
        let list = OriginPolicy::AllowList(vec!["https://a.example".into()].into());
        for policy in [OriginPolicy::SameOrigin, OriginPolicy::Any, list.clone()] {
            assert!(policy.allows(None, Some(b"x")));
        }
        assert!(OriginPolicy::Any.allows(Some(b"http://evil"), Some(b"good")));
        assert!(list.allows(Some(b"HTTPS://A.example"), Some(b"other")));
        assert!(!list.allows(Some(b"https://b.example"), Some(b"b.example")));
        assert!(!OriginPolicy::SameOrigin.allows(Some(b"http://a"), None));
    }
}
