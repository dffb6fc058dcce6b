//! The HTTP/1.1 upgrade of the bundled server, parsed with `httparse`.
//!
//! Parsed here rather than by tungstenite's handshake so that the bytes a client sends right
//! after its request (its first frames, pipelined) stay with the connection: they are
//! returned as `leftover` and become the start of the frame reader's input. The request head
//! is read into a buffer that grows to at most [`MAX_HEAD`] and is freed once the upgrade is
//! answered.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::server::Request;
use tokio_tungstenite::tungstenite::http::{self, HeaderName, HeaderValue, StatusCode};

use crate::server::admission::{self, Admitted, Capacity};
use crate::server::auth::Admission;
use crate::server::config::ServerConfig;

/// Largest accepted request head (request line and headers), in bytes; larger gets 431.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// Most headers in a request; more gets 431.
const MAX_HEADERS: usize = 48;

/// How an upgrade attempt ended.
pub(crate) enum Outcome {
    /// Answered 101: the connection is a WebSocket; `leftover` are bytes already read past
    /// the request head.
    Upgraded {
        admission: Admission,
        leftover: Vec<u8>,
    },
    /// Answered with an error status (logged by the caller).
    Refused(StatusCode),
    /// The client went away or sent something that is not HTTP; nothing useful to answer.
    Failed(&'static str),
}

/// Reads one request head from `stream`.
///
/// `Ok((request, leftover))`, or `Err(Some(status))` for a request that deserves an error
/// answer, `Err(None)` when the stream ended or failed.
async fn read_request<S>(stream: &mut S) -> Result<(Request, Vec<u8>), Option<StatusCode>>
where
    S: AsyncRead + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        if buf.len() >= MAX_HEAD {
            return Err(Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        }
        if buf.capacity() == buf.len() {
            buf.reserve((buf.len()).min(MAX_HEAD - buf.len()));
        }
        let n = stream.read_buf(&mut buf).await.map_err(|_| None)?;
        if n == 0 {
            return Err(None);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(head_len)) => {
                let request = to_request(&parsed)?;
                let leftover = buf[head_len..].to_vec();
                return Ok((request, leftover));
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
            }
            Err(_) => return Err(Some(StatusCode::BAD_REQUEST)),
        }
    }
}

fn to_request(parsed: &httparse::Request<'_, '_>) -> Result<Request, Option<StatusCode>> {
    let bad = Some(StatusCode::BAD_REQUEST);
    if parsed.version != Some(1) {
        return Err(Some(StatusCode::HTTP_VERSION_NOT_SUPPORTED));
    }
    let mut request = http::Request::builder()
        .method(parsed.method.ok_or(bad)?)
        .uri(parsed.path.ok_or(bad)?)
        .version(http::Version::HTTP_11)
        .body(())
        .map_err(|_| bad)?;
    let headers = request.headers_mut();
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad)?;
        headers.append(name, value);
    }
    Ok(request)
}

/// Writes an error response and closes our side.
pub(crate) async fn respond_error<S>(stream: &mut S, status: StatusCode, body: &str)
where
    S: AsyncWrite + Unpin,
{
    let mut response = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if status == StatusCode::UPGRADE_REQUIRED {
        response.push_str("Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n");
    }
    response.push_str("\r\n");
    response.push_str(body);
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads the upgrade request and answers it as [`admission::admit`] decides: 101 when it is
/// a valid WebSocket upgrade whose Origin is allowed and that the auth hook admits; otherwise
/// the refusal's status. `at_limit` answers every well-formed request with 503 instead (past
/// the connection limit).
pub(crate) async fn upgrade<S>(
    stream: &mut S,
    config: &ServerConfig,
    peer: SocketAddr,
    at_limit: bool,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (request, leftover) = match read_request(stream).await {
        Ok(r) => r,
        Err(Some(status)) => {
            respond_error(stream, status, "malformed request").await;
            return Outcome::Refused(status);
        }
        Err(None) => return Outcome::Failed("connection closed during the handshake"),
    };
    let capacity = if at_limit {
        Capacity::Full
    } else {
        Capacity::Available
    };
    let (parts, ()) = request.into_parts();
    let admitted = admission::admit(config, &parts, Some(peer), capacity);
    drop(parts);
    let Admitted {
        admission,
        accept_key: accept,
    } = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => {
            respond_error(stream, refusal.status, &refusal.body).await;
            return Outcome::Refused(refusal.status);
        }
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if stream.write_all(response.as_bytes()).await.is_err() || stream.flush().await.is_err() {
        return Outcome::Failed("connection lost while answering the upgrade");
    }
    Outcome::Upgraded {
        admission,
        leftover,
    }
}
