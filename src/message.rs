//! Messages: shared, immutable `Bytes` payloads that fan out by reference count.

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use std::fmt;
use std::ops::Deref;

use crate::error::StreamError;

/// Largest scratch buffer [`SocketMessage::json`] keeps for its thread between calls.
const JSON_SCRATCH_KEEP: usize = 16 * 1024;

thread_local! {
    /// [`SocketMessage::json`]'s serialization buffer, reused by every call on the thread.
    static JSON_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A UTF-8 string stored in a shared [`Bytes`] buffer.
///
/// Cloning it bumps a reference count; the text itself is never copied. The UTF-8 guarantee
/// is checked once, where the value is made from raw bytes ([`Utf8Bytes::try_from_bytes`]).
///
/// # Examples
///
/// ```
/// use nucleus_stream::Utf8Bytes;
/// let text = Utf8Bytes::from("héllo");
/// assert_eq!(&*text, "héllo");
/// assert_eq!(text.len(), 6); // bytes
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Wraps `bytes` after checking that they are valid UTF-8.
    ///
    /// # Errors
    ///
    /// [`StreamError::InvalidUtf8`] if they are not.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, StreamError> {
        std::str::from_utf8(&bytes).map_err(StreamError::InvalidUtf8)?;
        Ok(Self(bytes))
    }

    /// Wraps bytes the caller knows to be UTF-8 (a transport that validated a message
    /// fragment by fragment, serde_json's output). Checked again in debug builds.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Self(bytes)
    }

    /// A static string, without allocating.
    pub const fn from_static(text: &'static str) -> Self {
        Self(Bytes::from_static(text.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks or guarantees UTF-8, and `Bytes` is immutable.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The shared buffer behind the text (a reference-count bump, no copy).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Unwraps into the shared buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&String> for Utf8Bytes {
    fn from(s: &String) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

/// Borrowing a `Utf8Bytes` shares its buffer: `SocketMessage::text(&text)` copies nothing.
impl From<&Utf8Bytes> for Utf8Bytes {
    fn from(s: &Utf8Bytes) -> Self {
        s.clone()
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A WebSocket data message: text (always valid UTF-8) or binary.
///
/// Payloads are shared [`Bytes`] buffers: cloning a message — which is what a broadcast does
/// once per recipient — bumps a reference count and never copies the payload. Control frames
/// (ping, pong, close) belong to the transport and never appear here.
///
/// # Examples
///
/// ```
/// use nucleus_stream::SocketMessage;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, PartialEq, Debug)]
/// struct MyData { value: i32 }
///
/// let msg = SocketMessage::json(&MyData { value: 42 })?;
/// assert_eq!(msg.as_text(), Some(r#"{"value":42}"#));
/// let back: MyData = msg.as_json()?;
/// assert_eq!(back, MyData { value: 42 });
///
/// let bin = SocketMessage::Binary(vec![0, 1, 2, 3].into());
/// assert_eq!(bin.len(), 4);
/// # Ok::<(), nucleus_stream::StreamError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketMessage {
    /// A text message.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl SocketMessage {
    /// A text message. Accepts `&str`, `String` (no copy), `&String` or `&Utf8Bytes` (no copy).
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::Text(text.into())
    }

    /// A binary message. Accepts `Vec<u8>` (no copy), `Bytes`, `&'static [u8]`, ….
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self::Binary(data.into())
    }

    /// A text message holding `value` serialized as JSON.
    ///
    /// # Errors
    ///
    /// [`StreamError::Json`] if `value` cannot be serialized (for example a map with
    /// non-string keys).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, StreamError> {
        // Serialized into this thread's scratch buffer, then copied out at its exact size:
        // one allocation per message. A `String` grown by the serializer reallocates, and
        // its spare capacity costs `Bytes` another allocation for its shared header.
        JSON_SCRATCH.with(|scratch| {
            // A `Serialize` impl that itself calls `json` finds the buffer taken: it gets
            // a fresh one.
            let mut taken = scratch.try_borrow_mut().ok();
            let mut fresh = Vec::new();
            let buf = taken.as_deref_mut().unwrap_or(&mut fresh);
            buf.clear();
            let written = serde_json::to_writer(&mut *buf, value)
                // serde_json writes UTF-8 only.
                .map(|()| Self::Text(Utf8Bytes::from_validated(Bytes::copy_from_slice(buf))));
            if buf.capacity() > JSON_SCRATCH_KEEP {
                // One large message does not pin its buffer to the thread.
                *buf = Vec::new();
            }
            Ok(written?)
        })
    }

    /// Parses the payload (text or binary) as JSON.
    ///
    /// # Errors
    ///
    /// [`StreamError::Json`] if the payload is not JSON of type `T`.
    pub fn as_json<T: DeserializeOwned>(&self) -> Result<T, StreamError> {
        Ok(serde_json::from_slice(self.payload())?)
    }

    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(t) => Some(t.as_str()),
            Self::Binary(_) => None,
        }
    }

    /// The payload bytes, whichever the kind.
    pub fn payload(&self) -> &[u8] {
        match self {
            Self::Text(t) => t.as_bytes(),
            Self::Binary(b) => b,
        }
    }

    /// Payload length in bytes; this is what outbound queues count against their byte bound.
    pub fn len(&self) -> usize {
        self.payload().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Self::Text(_))
    }
}

impl From<Utf8Bytes> for SocketMessage {
    fn from(t: Utf8Bytes) -> Self {
        Self::Text(t)
    }
}

impl From<String> for SocketMessage {
    fn from(t: String) -> Self {
        Self::text(t)
    }
}

impl From<&str> for SocketMessage {
    fn from(t: &str) -> Self {
        Self::text(t)
    }
}

impl From<Bytes> for SocketMessage {
    fn from(b: Bytes) -> Self {
        Self::Binary(b)
    }
}

impl From<Vec<u8>> for SocketMessage {
    fn from(b: Vec<u8>) -> Self {
        Self::Binary(Bytes::from(b))
    }
}
