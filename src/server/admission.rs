//! The admission of a WebSocket upgrade request, one function for every transport: the
//! bundled server calls it on the request it parsed, the axum route on the request hyper
//! parsed. Checks, in order: the connection limit (503), that the request is a WebSocket
//! upgrade (RFC 6455 §4.2.1), the Origin rule (403), then the auth hook (its status).

use std::borrow::Cow;
use std::net::SocketAddr;

use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::{self, HeaderName, StatusCode, header, request::Parts};

use crate::server::auth::{Admission, UpgradeRequest};
use crate::server::config::ServerConfig;

/// An upgrade that may go ahead.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// Who connects (from the auth hook, anonymous without one).
    pub(crate) admission: Admission,
    /// The `Sec-WebSocket-Accept` value of the 101 answer.
    pub(crate) accept_key: String,
}

/// An upgrade answered with an error status instead.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) body: Cow<'static, str>,
}

impl Refusal {
    fn new(status: StatusCode, body: &'static str) -> Self {
        Self {
            status,
            body: Cow::Borrowed(body),
        }
    }

    /// Whether the answer should advertise the supported version (426).
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn is_upgrade_required(&self) -> bool {
        self.status == StatusCode::UPGRADE_REQUIRED
    }
}

/// Why a transport refuses before looking at the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Capacity {
    /// Room for the connection.
    Available,
    /// At [`max_connections`](ServerConfig::max_connections): 503.
    Full,
    /// Shutting down: 503 (the bundled server stops accepting instead).
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    ShuttingDown,
}

/// Decides an upgrade request: see the module docs for the order of the checks.
pub(crate) fn admit(
    config: &ServerConfig,
    parts: &Parts,
    peer: Option<SocketAddr>,
    capacity: Capacity,
) -> Result<Admitted, Refusal> {
    match capacity {
        Capacity::Available => {}
        Capacity::Full => {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections",
            ));
        }
        Capacity::ShuttingDown => {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting down",
            ));
        }
    }
    let accept_key = check_upgrade(parts)?;
    let origin = parts.headers.get(header::ORIGIN).map(|v| v.as_bytes());
    let host = parts.headers.get(header::HOST).map(|v| v.as_bytes());
    if !config.origin_allowed(origin, host) {
        return Err(Refusal::new(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    let admission = match &config.auth {
        None => Admission::anonymous(),
        Some(hook) => hook(&UpgradeRequest::new(parts, peer)).map_err(|rejection| Refusal {
            status: rejection.status_code(),
            body: Cow::Owned(rejection.into_body().unwrap_or_default()),
        })?,
    };
    Ok(Admitted {
        admission,
        accept_key,
    })
}

/// Whether a comma-separated header (any of its values) contains `token`, ASCII
/// case-insensitively.
fn has_token(parts: &Parts, name: HeaderName, token: &str) -> bool {
    parts.headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Checks that the request is a WebSocket upgrade; returns the `Sec-WebSocket-Accept` value.
fn check_upgrade(parts: &Parts) -> Result<String, Refusal> {
    if parts.method != http::Method::GET {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade is a GET",
        ));
    }
    if !has_token(parts, header::CONNECTION, "upgrade")
        || !has_token(parts, header::UPGRADE, "websocket")
    {
        return Err(Refusal::new(
            StatusCode::UPGRADE_REQUIRED,
            "expected a WebSocket upgrade",
        ));
    }
    if parts
        .headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(Refusal::new(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version",
        ));
    }
    match parts.headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if key.len() == 24 => Ok(derive_accept_key(key.as_bytes())),
        _ => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "missing or malformed Sec-WebSocket-Key",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(build: http::request::Builder) -> Parts {
        build.body(()).unwrap().into_parts().0
    }

    fn upgrade() -> http::request::Builder {
        http::Request::get("/ws")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    }

    #[test]
    fn a_valid_upgrade_is_admitted_with_the_rfc_accept_key() {
        let ok = admit(
            &ServerConfig::default(),
            &parts(upgrade()),
            None,
            Capacity::Available,
        )
        .unwrap();
        // RFC 6455 §1.3's example.
        assert_eq!(ok.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(ok.admission, Admission::anonymous());
    }

    #[test]
    fn each_check_refuses_with_its_status() {
        let config = ServerConfig::default().allowed_origins(["https://a.example"]);
        let status = |b: http::request::Builder, c: Capacity| {
            admit(&config, &parts(b), None, c).unwrap_err().status
        };
        assert_eq!(status(upgrade(), Capacity::Full), 503);
        assert_eq!(status(upgrade(), Capacity::ShuttingDown), 503);
        assert_eq!(status(upgrade().method("POST"), Capacity::Available), 405);
        let plain = http::Request::get("/ws").header("sec-websocket-version", "13");
        assert_eq!(status(plain, Capacity::Available), 426);
        let v8 = upgrade().header("sec-websocket-version", "8");
        // A second version header: `get` sees the first ("13"); replace instead.
        let mut p = parts(v8);
        p.headers
            .insert("sec-websocket-version", "8".parse().unwrap());
        assert_eq!(
            admit(&config, &p, None, Capacity::Available)
                .unwrap_err()
                .status,
            426
        );
        let mut p = parts(upgrade());
        p.headers
            .insert("sec-websocket-key", "short".parse().unwrap());
        assert_eq!(
            admit(&config, &p, None, Capacity::Available)
                .unwrap_err()
                .status,
            400
        );
        let evil = upgrade().header("origin", "https://evil.example");
        assert_eq!(status(evil, Capacity::Available), 403);
        let good = upgrade().header("origin", "https://a.example");
        assert!(admit(&config, &parts(good), None, Capacity::Available).is_ok());
    }
}
