//! What the auth hook sees (the upgrade request) and what it answers.

use std::fmt;
use std::net::SocketAddr;

use tokio_tungstenite::tungstenite::http::{self, StatusCode, request::Parts};

/// The HTTP upgrade request of a connecting client, as the auth hook sees it: the request's
/// [`Parts`] (method, URI, headers, extensions) and the peer address.
///
/// One hook serves every transport. The bundled server builds it from the request it parsed
/// (its [`extensions`](Self::extensions) are empty); the axum route (feature `axum`) passes
/// the request's own parts, so the hook also sees what the application's middleware put in
/// the extensions (a session, a verified token).
///
/// # Examples
///
/// ```
/// use nucleus_stream::server::{Admission, Rejection, UpgradeRequest};
///
/// fn check(req: &UpgradeRequest<'_>) -> Result<Admission, Rejection> {
///     let token = req
///         .header("authorization")
///         .and_then(|v| v.strip_prefix("Bearer "))
///         .or_else(|| req.query_param("token"))
///         .or_else(|| req.cookie("session"));
///     match token {
///         Some("t0ken") => Ok(Admission::user("alice").with_metadata("path", req.path())),
///         Some(_) => Err(Rejection::forbidden()),
///         None => Err(Rejection::unauthorized()),
///     }
/// }
///
/// let (parts, ()) = http::Request::get("/ws?room=a")
///     .header("cookie", "theme=dark; session=t0ken")
///     .body(())
///     .unwrap()
///     .into_parts();
/// let admission = check(&UpgradeRequest::new(&parts, None)).unwrap();
/// assert_eq!(admission, Admission::user("alice").with_metadata("path", "/ws"));
/// # use tokio_tungstenite::tungstenite::http;
/// ```
pub struct UpgradeRequest<'a> {
    parts: &'a Parts,
    peer: Option<SocketAddr>,
}

impl<'a> UpgradeRequest<'a> {
    /// The hook's view of a request: its `parts` and, if known, the client's address. Any
    /// transport builds one this way (the `http` types are those of the `http` 1 crate).
    pub fn new(parts: &'a Parts, peer: Option<SocketAddr>) -> Self {
        Self { parts, peer }
    }

    /// The request's parts, whole.
    pub fn parts(&self) -> &'a Parts {
        self.parts
    }

    /// The request method (an upgrade is a `GET`).
    pub fn method(&self) -> &'a http::Method {
        &self.parts.method
    }

    /// The request URI (for HTTP/1.1 usually just path and query).
    pub fn uri(&self) -> &'a http::Uri {
        &self.parts.uri
    }

    /// The request path, without the query (`/chat`).
    pub fn path(&self) -> &'a str {
        self.parts.uri.path()
    }

    /// The raw query string, without the `?`, if any (`token=abc&room=x`).
    pub fn query(&self) -> Option<&'a str> {
        self.parts.uri.query()
    }

    /// The first value of a query parameter, as written (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }

    /// A header's first value, if present and visible ASCII (header names are
    /// case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.parts.headers.get(name)?.to_str().ok()
    }

    /// Every header as `(lower-case name, raw value)`, in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
    }

    /// The header map itself.
    pub fn header_map(&self) -> &'a http::HeaderMap {
        &self.parts.headers
    }

    /// A cookie's value from the `Cookie` header(s), as sent (not percent-decoded).
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                (key.trim() == name).then_some(value.trim())
            })
    }

    /// The request's extensions: what the application's middleware attached (behind axum),
    /// empty on the bundled server.
    pub fn extensions(&self) -> &'a http::Extensions {
        &self.parts.extensions
    }

    /// The client's address (of the TCP peer: behind a proxy, the proxy's), if the
    /// transport knows it. Behind axum it is known when the app is served with
    /// `into_make_service_with_connect_info::<SocketAddr>()`.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }
}

impl fmt::Debug for UpgradeRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradeRequest")
            .field("path", &self.path())
            .field("query", &self.query())
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// The auth hook's "yes": the connection opens, optionally as a user, with metadata.
///
/// # Examples
///
/// ```
/// use nucleus_stream::server::Admission;
/// let anonymous = Admission::anonymous();
/// let alice = Admission::user("alice").with_metadata("role", "admin");
/// # drop((anonymous, alice));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admission {
    pub(crate) user_id: Option<String>,
    pub(crate) metadata: Vec<(String, String)>,
}

impl Admission {
    /// Opens the connection without a user.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Opens the connection as `user_id`: the socket is
    /// [`authenticated`](crate::WebSocket::authenticated) and counts for the user's presence.
    pub fn user(user_id: impl Into<String>) -> Self {
        Self {
            user_id: Some(user_id.into()),
            metadata: Vec::new(),
        }
    }

    /// Adds a metadata entry to the socket (see [`WebSocket::metadata`](crate::WebSocket::metadata)).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }
}

/// The auth hook's "no": the HTTP status (and a short body) sent instead of the upgrade.
///
/// # Examples
///
/// ```
/// use nucleus_stream::server::Rejection;
/// let r = Rejection::new(429).with_body("slow down");
/// assert_eq!(r.status(), 429);
/// assert_eq!(Rejection::unauthorized().status(), 401);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    body: Option<String>,
}

impl Rejection {
    /// Rejects with this HTTP status. A code that is not a client or server error (outside
    /// 400..=599) becomes 403.
    pub fn new(status: u16) -> Self {
        let status = match StatusCode::from_u16(status) {
            Ok(s) if s.is_client_error() || s.is_server_error() => s,
            _ => StatusCode::FORBIDDEN,
        };
        Self { status, body: None }
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401)
    }

    /// 403 Forbidden.
    pub fn forbidden() -> Self {
        Self::new(403)
    }

    /// Sends `body` (plain text) with the status.
    pub fn with_body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    pub(crate) fn status_code(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn into_body(self) -> Option<String> {
        self.body
    }
}
