//! What the auth hook sees (the upgrade request) and what it answers.

use std::fmt;
use std::net::SocketAddr;

use tokio_tungstenite::tungstenite::handshake::server::Request;
use tokio_tungstenite::tungstenite::http::StatusCode;

/// The HTTP upgrade request of a connecting client, as the auth hook sees it.
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
///         .or_else(|| req.query_param("token"));
///     match token {
///         Some("t0ken") => Ok(Admission::user("alice").with_metadata("path", req.path())),
///         Some(_) => Err(Rejection::forbidden()),
///         None => Err(Rejection::unauthorized()),
///     }
/// }
/// # let _ = check;
/// ```
pub struct UpgradeRequest<'a> {
    request: &'a Request,
    peer: SocketAddr,
}

impl<'a> UpgradeRequest<'a> {
    pub(crate) fn new(request: &'a Request, peer: SocketAddr) -> Self {
        Self { request, peer }
    }

    /// The request path, without the query (`/chat`).
    pub fn path(&self) -> &'a str {
        self.request.uri().path()
    }

    /// The raw query string, without the `?`, if any (`token=abc&room=x`).
    pub fn query(&self) -> Option<&'a str> {
        self.request.uri().query()
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
        self.request.headers().get(name)?.to_str().ok()
    }

    /// Every header as `(lower-case name, raw value)`, in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.request
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
    }

    /// The client's address (of the TCP peer: behind a proxy, the proxy's).
    pub fn peer_addr(&self) -> SocketAddr {
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
