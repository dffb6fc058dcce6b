//! WebSocket framing (RFC 6455 §5) for the server side: server frame headers, and the reader
//! of client frames.
//!
//! # Why our own codec
//!
//! Decided by measurement (`BENCHMARKS.md`, "Wire path"; `docs/design.md`, "Bytes on the
//! wire"). With tokio-tungstenite each connection kept a `WebSocketContext` (776 B in massif),
//! a read buffer for its whole life, and a write buffer into which every recipient's task
//! re-framed the same broadcast (~15% of the server's samples in `perf`, 200 rooms × 11), at
//! its high-water mark afterwards; an idle joined connection cost 6.90–7.88 KiB of server RSS.
//! tungstenite is kept only for the HTTP types and `derive_accept_key`: the upgrade is parsed
//! with `httparse` (`upgrade.rs`) so that frames pipelined after the request are not lost.
//! This reader:
//!
//! - holds no buffer while the connection is idle: bytes are read into a buffer on the stack
//!   and moved into a heap buffer sized to what arrived, which is released as soon as every
//!   complete frame has been parsed out of it (the payloads handed out keep their part of
//!   it alive as `Bytes`, without a copy);
//! - reads the rest of a large frame straight into a buffer reserved for exactly that frame;
//! - unmasks in place, eight bytes at a time;
//! - copies only fragments of fragmented messages (into the message being assembled);
//! - checks UTF-8 fragment by fragment (an invalid sequence fails at the fragment that holds
//!   it, not at the end of the message), and answers control frames that arrive between
//!   fragments.
//!
//! With it (and the writer in `outbox.rs`) an idle joined connection costs 5.3–5.5 KiB of
//! server RSS, measured in the same run as the old figure's harness; Autobahn's fuzzing client
//! passes all 517 cases (`scripts/autobahn.sh`).
//!
//! Faults map to close codes: a frame or message over its limit 1009, text that is not UTF-8
//! 1007, every protocol violation (unmasked frame, reserved bits or opcode, fragmented or
//! oversized control frame, continuation without a message, bad close code) 1002.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

use crate::message::{SocketMessage, Utf8Bytes};

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Largest server frame header: 2 bytes plus a 64-bit length (no mask).
pub(crate) const MAX_HEADER: usize = 10;

/// Bytes read at a time into the stack buffer when no frame is partly received.
const STACK_READ: usize = 4096;

/// The header of an unmasked, final server frame carrying `len` payload bytes.
pub(crate) fn encode_header(opcode: u8, len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    out[0] = 0x80 | opcode;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// A whole control frame (payload at most 125 bytes).
pub(crate) fn control_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let len = payload.len().min(125);
    let mut out = BytesMut::with_capacity(2 + len);
    out.extend_from_slice(&[0x80 | opcode, len as u8]);
    out.extend_from_slice(&payload[..len]);
    out.freeze()
}

/// A close frame with `code` and a short `reason` (`None`: no payload).
pub(crate) fn close_frame(code: Option<u16>, reason: &str) -> Bytes {
    match code {
        None => control_frame(OP_CLOSE, &[]),
        Some(code) => {
            let mut payload = Vec::with_capacity(2 + reason.len());
            payload.extend_from_slice(&code.to_be_bytes());
            payload.extend_from_slice(reason.as_bytes());
            control_frame(OP_CLOSE, &payload)
        }
    }
}

/// What the client sent.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A complete text or binary message.
    Message(SocketMessage),
    /// A ping; answer with a pong carrying this payload.
    Ping(Bytes),
    /// A pong (activity only).
    Pong,
    /// A close frame with its code, if it had one.
    Close(Option<u16>),
}

/// Why reading stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client broke the protocol or a limit: close with this code.
    Fault(u16, &'static str),
    /// The stream ended (EOF) without a close frame.
    Eof,
    /// The stream failed.
    Io(io::Error),
}

/// A text or binary message whose fragments are still arriving.
struct Assembly {
    text: bool,
    data: BytesMut,
    /// For text: bytes of `data` known to be valid UTF-8 (what follows is an incomplete
    /// sequence, at most 3 bytes).
    utf8_valid: usize,
}

/// A reader's limits: made once per service from its configuration
/// (`ServiceShared::read_limits`) and passed to every call rather than kept in every
/// connection's reader (24 bytes of each open connection's future).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadLimits {
    max_frame: usize,
    max_message: usize,
    /// Bytes read at a time onto the stack (at most [`STACK_READ`]).
    read_chunk: usize,
}

impl ReadLimits {
    /// Frames of at most `max_frame` bytes, messages of at most `max_message`.
    pub(crate) fn new(max_frame: usize, max_message: usize) -> Self {
        Self {
            max_frame,
            max_message,
            read_chunk: STACK_READ,
        }
    }

    /// Reads at most `bytes` at a time onto the stack.
    pub(crate) fn read_chunk(mut self, bytes: usize) -> Self {
        self.read_chunk = bytes.clamp(64, STACK_READ);
        self
    }
}

/// Reads client frames from a byte stream.
pub(crate) struct FrameReader {
    /// Received bytes not yet parsed. Empty with no allocation whenever no frame is partly
    /// received.
    buf: BytesMut,
    /// What a reader rarely holds, boxed so that it costs an idle reader one pointer.
    rare: Option<Box<Rare>>,
}

/// A reader's rare state: a fragmented message in progress, and an event that was read
/// ahead and given back ([`FrameReader::give_back`]). The box goes once both are empty.
#[derive(Default)]
struct Rare {
    assembly: Option<Assembly>,
    held: Option<Result<Incoming, ReadError>>,
}

impl FrameReader {
    /// A reader whose input starts with `leftover` (bytes read past the upgrade request).
    pub(crate) fn new(leftover: Vec<u8>) -> Self {
        Self {
            buf: BytesMut::from(&leftover[..]),
            rare: None,
        }
    }

    /// Bytes held (read buffer and any message being assembled).
    #[cfg(test)]
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.buf.capacity() + self.assembly().map_or(0, |a| a.data.capacity())
    }

    /// The next thing the client sent, reading from `stream` as needed.
    pub(crate) fn poll_next<S: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut S,
        limits: &ReadLimits,
    ) -> Poll<Result<Incoming, ReadError>> {
        loop {
            let needed = match self.next_parsed(limits)? {
                Ok(event) => return Poll::Ready(Ok(event)),
                Err(needed) => needed,
            };
            match self.poll_fill(cx, stream, needed, limits) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(ReadError::Eof)),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ReadError::Io(e))),
                Poll::Pending => {
                    self.release_if_empty();
                    return Poll::Pending;
                }
            }
        }
    }

    /// The next thing the client sent if it is already buffered, without reading: `None`
    /// when the buffer holds no complete frame.
    pub(crate) fn next_buffered(
        &mut self,
        limits: &ReadLimits,
    ) -> Option<Result<Incoming, ReadError>> {
        match self.next_parsed(limits) {
            Ok(Ok(event)) => Some(Ok(event)),
            Ok(Err(_needed)) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Gives back what [`next_buffered`](Self::next_buffered) returned: the next call (of
    /// either method) returns it again. For a caller that reads ahead and meets what it
    /// cannot take yet (the connection collecting a burst of messages meets a control frame
    /// or a fault). At most one event is held.
    pub(crate) fn give_back(&mut self, event: Result<Incoming, ReadError>) {
        let rare = self.rare.get_or_insert_with(Box::default);
        debug_assert!(rare.held.is_none(), "one event is held at a time");
        rare.held = Some(event);
    }

    /// The fragmented message in progress, if any.
    fn assembly(&self) -> Option<&Assembly> {
        self.rare.as_ref().and_then(|r| r.assembly.as_ref())
    }

    /// Drops the rare state's box once it holds nothing.
    fn release_rare_if_empty(&mut self) {
        if self
            .rare
            .as_ref()
            .is_some_and(|r| r.assembly.is_none() && r.held.is_none())
        {
            self.rare = None;
        }
    }

    /// Parses the buffer up to the next event: `Ok(event)`, or `Err(n)` when the frame being
    /// parsed needs `n` more bytes. An event given back comes first.
    fn next_parsed(&mut self, limits: &ReadLimits) -> Result<Result<Incoming, usize>, ReadError> {
        if let Some(held) = self.rare.as_mut().and_then(|r| r.held.take()) {
            self.release_rare_if_empty();
            return held.map(Ok);
        }
        loop {
            match self.parse(limits)? {
                Parsed::Event(event) => {
                    self.release_if_empty();
                    return Ok(Ok(event));
                }
                Parsed::Continue => continue,
                Parsed::Need(n) => return Ok(Err(n)),
            }
        }
    }

    /// Drops the buffer once everything in it was parsed (or a read reserved it and found
    /// nothing). The last frame of a buffer takes the buffer itself (`parse`), so no empty
    /// remainder keeps a share of a frame's memory: one did, with `split_to` for every
    /// frame, and kept every idle connection's last frame alive (massif, 2,000 idle joined
    /// connections: 80 B per connection).
    fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// Reads more input: `needed` more bytes complete the frame being parsed (at least 1).
    fn poll_fill<S: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut S,
        needed: usize,
        limits: &ReadLimits,
    ) -> Poll<io::Result<usize>> {
        if needed > STACK_READ || !self.buf.is_empty() {
            // A partly received frame: read straight into a buffer reserved for the rest of
            // it (plus a stack read's worth, so that small frames behind it come along).
            self.buf.reserve(needed.max(STACK_READ.min(needed + 512)));
            let spare = self.buf.spare_capacity_mut();
            let mut read = ReadBuf::uninit(spare);
            match Pin::new(stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    // SAFETY: `poll_read` initialized the first `n` bytes of the spare
                    // capacity (`ReadBuf` tracks exactly that).
                    unsafe { self.buf.set_len(self.buf.len() + n) };
                    Poll::Ready(Ok(n))
                }
                other => other.map_ok(|()| 0),
            }
        } else {
            // Nothing partly received: read onto the stack, keep only what arrived.
            let mut stack = [MaybeUninit::<u8>::uninit(); STACK_READ];
            let mut read = ReadBuf::uninit(&mut stack[..limits.read_chunk]);
            match Pin::new(stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let filled = read.filled();
                    self.buf.extend_from_slice(filled);
                    Poll::Ready(Ok(filled.len()))
                }
                other => other.map_ok(|()| 0),
            }
        }
    }

    /// Parses one frame from the buffer, if it is all there.
    fn parse(&mut self, limits: &ReadLimits) -> Result<Parsed, ReadError> {
        let buf = &self.buf[..];
        if buf.len() < 2 {
            return Ok(Parsed::Need(2 - buf.len()));
        }
        let (b0, b1) = (buf[0], buf[1]);
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        if b0 & 0x70 != 0 {
            return Err(fault(1002, "reserved bits set"));
        }
        let control = opcode & 0x08 != 0;
        match opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
            _ => return Err(fault(1002, "reserved opcode")),
        }
        if b1 & 0x80 == 0 {
            return Err(fault(1002, "unmasked client frame"));
        }
        let len7 = usize::from(b1 & 0x7F);
        if control && (!fin || len7 > 125) {
            return Err(fault(1002, "fragmented or oversized control frame"));
        }
        let (len, header) = match len7 {
            126 => {
                if buf.len() < 4 {
                    return Ok(Parsed::Need(4 - buf.len()));
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 8)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(Parsed::Need(10 - buf.len()));
                }
                let mut n = [0u8; 8];
                n.copy_from_slice(&buf[2..10]);
                let n = u64::from_be_bytes(n);
                if n >> 63 != 0 {
                    return Err(fault(1002, "frame length with the top bit set"));
                }
                (n, 14)
            }
            n => (n as u64, 6),
        };
        // Limits are checked on the header, before any payload is buffered.
        if len > limits.max_frame as u64 {
            return Err(fault(1009, "frame too big"));
        }
        let len = len as usize;
        if !control {
            let so_far = self.assembly().map_or(0, |a| a.data.len());
            match (opcode, self.assembly()) {
                (OP_CONTINUATION, None) => {
                    return Err(fault(1002, "continuation without a message"));
                }
                (OP_TEXT | OP_BINARY, Some(_)) => {
                    return Err(fault(1002, "new message inside a fragmented one"));
                }
                _ => {}
            }
            if so_far + len > limits.max_message {
                return Err(fault(1009, "message too big"));
            }
        }
        let total = header + len;
        if buf.len() < total {
            return Ok(Parsed::Need(total - buf.len()));
        }
        let mask = [
            buf[header - 4],
            buf[header - 3],
            buf[header - 2],
            buf[header - 1],
        ];
        // A frame that is the whole buffer takes it: `split_to` would turn the buffer into a
        // shared one (a 40-byte allocation and reference counts) and leave an empty
        // remainder holding a share of the frame's memory.
        let mut frame = if total == self.buf.len() {
            std::mem::take(&mut self.buf)
        } else {
            self.buf.split_to(total)
        };
        frame.advance(header);
        unmask(&mut frame, mask);
        let payload = frame;

        if control {
            return match opcode {
                OP_PING => Ok(Parsed::Event(Incoming::Ping(payload.freeze()))),
                OP_PONG => Ok(Parsed::Event(Incoming::Pong)),
                _ => close_payload(&payload).map(|code| Parsed::Event(Incoming::Close(code))),
            };
        }

        if fin && opcode != OP_CONTINUATION {
            // A whole message in one frame: handed out without a copy.
            let payload = payload.freeze();
            let msg = if opcode == OP_TEXT {
                SocketMessage::Text(
                    Utf8Bytes::try_from_bytes(payload).map_err(|_| fault(1007, "invalid utf-8"))?,
                )
            } else {
                SocketMessage::Binary(payload)
            };
            return Ok(Parsed::Event(Incoming::Message(msg)));
        }

        let rare = self.rare.get_or_insert_with(Box::default);
        let assembly = rare.assembly.get_or_insert_with(|| Assembly {
            text: opcode == OP_TEXT,
            data: BytesMut::new(),
            utf8_valid: 0,
        });
        assembly.data.extend_from_slice(&payload);
        drop(payload);
        if assembly.text {
            check_utf8_prefix(assembly, fin)?;
        }
        if !fin {
            return Ok(Parsed::Continue);
        }
        let Some(assembly) = self.rare.as_mut().and_then(|r| r.assembly.take()) else {
            return Ok(Parsed::Continue);
        };
        self.release_rare_if_empty();
        let Assembly { text, data, .. } = assembly;
        let data = data.freeze();
        let msg = if text {
            // Checked fragment by fragment above, completely at the final one.
            SocketMessage::Text(Utf8Bytes::from_validated(data))
        } else {
            SocketMessage::Binary(data)
        };
        Ok(Parsed::Event(Incoming::Message(msg)))
    }
}

enum Parsed {
    Event(Incoming),
    /// A frame was consumed without producing an event (a non-final fragment).
    Continue,
    /// This many more bytes are needed.
    Need(usize),
}

fn fault(code: u16, why: &'static str) -> ReadError {
    ReadError::Fault(code, why)
}

/// Checks the text assembled so far: everything but a trailing incomplete sequence must be
/// valid, and at the final fragment nothing may be incomplete.
fn check_utf8_prefix(a: &mut Assembly, fin: bool) -> Result<(), ReadError> {
    match std::str::from_utf8(&a.data[a.utf8_valid..]) {
        Ok(_) => {
            a.utf8_valid = a.data.len();
            Ok(())
        }
        Err(e) if e.error_len().is_none() && !fin => {
            a.utf8_valid += e.valid_up_to();
            Ok(())
        }
        Err(_) => Err(fault(1007, "invalid utf-8")),
    }
}

/// The code of a close frame's payload, checked (RFC 6455 §5.5.1, §7.4).
fn close_payload(payload: &[u8]) -> Result<Option<u16>, ReadError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(fault(1002, "one-byte close payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(fault(1002, "invalid close code"));
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err(fault(1007, "close reason not utf-8"));
            }
            Ok(Some(code))
        }
    }
}

/// XORs `data` with the 4-byte `mask`, eight bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let m32 = u32::from_ne_bytes(mask);
    let m64 = u64::from(m32) | (u64::from(m32) << 32);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ m64).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the mask index restarts at 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        let mut header = [0u8; MAX_HEADER];
        let n = encode_header(0, payload.len(), &mut header);
        out.push(0x80 | header[1]);
        out.extend_from_slice(&header[2..n]);
        let mask = [1, 2, 3, 4];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn read_all(input: Vec<u8>) -> Vec<Result<Incoming, ReadError>> {
        let mut reader = FrameReader::new(input);
        let limits = ReadLimits::new(1 << 20, 1 << 20);
        let mut stream: &[u8] = &[];
        let mut out = Vec::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            match reader.poll_next(&mut cx, &mut stream, &limits) {
                Poll::Ready(Err(ReadError::Eof)) => return out,
                Poll::Ready(r) => {
                    let stop = r.is_err();
                    out.push(r);
                    if stop {
                        return out;
                    }
                }
                Poll::Pending => return out,
            }
        }
    }

    #[test]
    fn unmask_matches_the_bytewise_definition() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut fast = data.clone();
            unmask(&mut fast, [9, 8, 7, 6]);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ [9, 8, 7, 6][i % 4])
                .collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }

    #[test]
    fn headers_use_the_shortest_length_form() {
        let mut h = [0u8; MAX_HEADER];
        assert_eq!(encode_header(OP_TEXT, 125, &mut h), 2);
        assert_eq!(encode_header(OP_TEXT, 126, &mut h), 4);
        assert_eq!(&h[..4], &[0x81, 126, 0, 126]);
        assert_eq!(encode_header(OP_BINARY, 70_000, &mut h), 10);
        assert_eq!(h[1], 127);
    }

    #[test]
    fn fragments_with_a_ping_between_them_and_utf8_split_across_them() {
        let text = "héllo wörld €";
        let bytes = text.as_bytes();
        // Split inside the two-byte 'é' and inside the three-byte '€'.
        let (a, rest) = bytes.split_at(2);
        let (b, c) = rest.split_at(rest.len() - 2);
        let mut input = masked(false, OP_TEXT, a);
        input.extend(masked(true, OP_PING, b"p"));
        input.extend(masked(false, OP_CONTINUATION, b));
        input.extend(masked(true, OP_CONTINUATION, c));
        let events = read_all(input);
        assert!(matches!(&events[0], Ok(Incoming::Ping(p)) if &p[..] == b"p"));
        match &events[1] {
            Ok(Incoming::Message(SocketMessage::Text(t))) => assert_eq!(t.as_str(), text),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn faults_carry_their_close_codes() {
        let code = |input: Vec<u8>| match read_all(input).pop() {
            Some(Err(ReadError::Fault(code, _))) => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(code(masked(true, OP_TEXT, &[0xff, 0xfe])), 1007);
        assert_eq!(code(masked(true, 0x3, b"")), 1002);
        assert_eq!(code(masked(true, OP_CONTINUATION, b"x")), 1002);
        assert_eq!(code(masked(false, OP_PING, b"")), 1002);
        assert_eq!(code(masked(true, OP_CLOSE, &[0x03, 0xe8 + 4])), 1002); // 1004
        let mut unmasked = masked(true, OP_TEXT, b"x");
        unmasked[1] &= 0x7f;
        assert_eq!(code(unmasked), 1002);
        // Invalid UTF-8 fails at the fragment holding it, before the message ends.
        let mut input = masked(false, OP_TEXT, b"ok");
        input.extend(masked(false, OP_CONTINUATION, &[0xc0, 0x80]));
        assert_eq!(code(input), 1007);
        let mut reader = FrameReader::new(masked(true, OP_BINARY, &[0; 100]));
        let limits = ReadLimits::new(64, 1 << 20);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut stream: &[u8] = &[];
        assert!(matches!(
            reader.poll_next(&mut cx, &mut stream, &limits),
            Poll::Ready(Err(ReadError::Fault(1009, _)))
        ));
    }

    #[test]
    fn a_parsed_buffer_is_released() {
        let mut reader = FrameReader::new(masked(true, OP_BINARY, &[7; 300]));
        let limits = ReadLimits::new(1 << 20, 1 << 20);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut stream: &[u8] = &[];
        let Poll::Ready(Ok(Incoming::Message(msg))) =
            reader.poll_next(&mut cx, &mut stream, &limits)
        else {
            panic!("a message");
        };
        assert_eq!(msg.len(), 300);
        assert_eq!(reader.buffered_capacity(), 0);
        // The reader keeps no share of the allocation the message came from.
        let SocketMessage::Binary(payload) = msg else {
            panic!("a binary message");
        };
        assert!(
            payload.is_unique(),
            "the reader still holds the frame's buffer"
        );
    }

    #[test]
    fn an_event_given_back_comes_first_and_leaves_no_box() {
        let mut input = masked(true, OP_TEXT, b"a");
        input.extend(masked(true, OP_PING, b"p"));
        input.extend(masked(false, OP_TEXT, b"b"));
        let mut reader = FrameReader::new(input);
        let limits = ReadLimits::new(1 << 20, 1 << 20);
        let first = reader.next_buffered(&limits);
        assert!(matches!(first, Some(Ok(Incoming::Message(_)))), "{first:?}");
        let ping = reader.next_buffered(&limits).expect("the ping");
        assert!(matches!(ping, Ok(Incoming::Ping(_))), "{ping:?}");
        reader.give_back(ping);
        assert!(reader.rare.is_some(), "held");
        let again = reader.next_buffered(&limits);
        assert!(
            matches!(&again, Some(Ok(Incoming::Ping(p))) if &p[..] == b"p"),
            "{again:?}"
        );
        assert!(reader.rare.is_none(), "nothing held, nothing assembled");
        // A fragment in progress keeps the box, for the assembly; a fault given back meanwhile
        // comes out first, the assembly stays.
        assert!(
            reader.next_buffered(&limits).is_none(),
            "a first fragment only"
        );
        assert!(reader.assembly().is_some());
        reader.give_back(Err(fault(1007, "invalid utf-8")));
        let fault = reader.next_buffered(&limits);
        assert!(
            matches!(fault, Some(Err(ReadError::Fault(1007, _)))),
            "{fault:?}"
        );
        assert!(reader.assembly().is_some(), "the assembly is kept");
    }
}
