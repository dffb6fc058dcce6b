//! The binary envelope every message between nodes travels in.
//!
//! ```text
//! offset size  field
//!  0     2     magic "NS"
//!  2     1     version (1)
//!  3     1     kind: 1 room, 2 direct, 3 user, 4 all, 5 presence, 6 probe,
//!              7 member query (on a room's channel), 8 its reply (on the asker's channel),
//!              9 multi-room broadcast (on each listed room's channel; see below)
//!  4     1     flags: bit0 binary payload, bit1 excluded socket is local to the origin,
//!              bit2 epoch/offset valid (history, issue 13)
//!  5     8     seq: per (origin node, channel), from 1, big-endian
//! 13     8     epoch (0 unless bit2)
//! 21     8     offset (0 unless bit2)
//! 29     1+n   origin node id (u8 length, UTF-8)
//!  .     2+n   target: room, socket id or user id (u16 length, UTF-8; empty for all)
//!  .     2+n   excluded socket id (u16 length, UTF-8; empty for none)
//!  .     rest  payload (the message bytes; for presence, see `presence.rs`)
//! ```
//!
//! A multi-room broadcast (`StreamHub::broadcast_to_rooms`) goes out as one kind-9 envelope
//! per listed room, on that room's channel (so it reaches exactly the nodes with members in
//! one of the rooms), all with the same payload:
//!
//! ```text
//! 8     broadcast id: unique per origin node (a node starts counting at its start time in
//!       nanoseconds, so a restarted node with the same id does not repeat ids)
//! 2     n rooms, then n × (u16 length, room)
//! rest  the message bytes
//! ```
//!
//! A receiving node delivers the first copy it gets to the union of its members of all the
//! listed rooms, each member once, and drops the other copies by their id.
//!
//! The epoch and offset sit at fixed positions so that a Redis script that assigns a room's
//! history offset and publishes in one step (issue 13) can write them into an envelope the
//! node built, without re-encoding it. Anything that is not a version-1 envelope — another
//! version's data, garbage, a truncated message — decodes to an error that the receiver
//! counts and drops; decoding never panics.

use bytes::{BufMut, Bytes, BytesMut};

use crate::message::{SocketMessage, Utf8Bytes};

pub(crate) const MAGIC: [u8; 2] = *b"NS";
pub(crate) const VERSION: u8 = 1;
const FIXED: usize = 29;

pub(crate) const FLAG_BINARY: u8 = 1;
pub(crate) const FLAG_EXCEPT_LOCAL: u8 = 2;
pub(crate) const FLAG_POSITION: u8 = 4;

/// What an envelope is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Room = 1,
    Direct = 2,
    User = 3,
    All = 4,
    Presence = 5,
    Probe = 6,
    Query = 7,
    Reply = 8,
    Rooms = 9,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Room,
            2 => Self::Direct,
            3 => Self::User,
            4 => Self::All,
            5 => Self::Presence,
            6 => Self::Probe,
            7 => Self::Query,
            8 => Self::Reply,
            9 => Self::Rooms,
            _ => return None,
        })
    }
}

/// Why a message on a channel was not a valid envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Not ours (no magic) or another version.
    Foreign,
    /// Ours but malformed: truncated, unknown kind, bad UTF-8.
    Malformed,
}

/// A decoded envelope; strings and payload borrow from the received bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    pub(crate) kind: Kind,
    pub(crate) flags: u8,
    pub(crate) seq: u64,
    pub(crate) position: Option<(u64, u64)>,
    pub(crate) origin: &'a str,
    pub(crate) target: &'a str,
    pub(crate) except: Option<&'a str>,
    pub(crate) payload: &'a [u8],
}

/// What to encode (everything but the position, which history fills in).
pub(crate) struct Outgoing<'a> {
    pub(crate) kind: Kind,
    pub(crate) flags: u8,
    pub(crate) seq: u64,
    pub(crate) origin: &'a str,
    pub(crate) target: &'a str,
    pub(crate) except: Option<&'a str>,
    pub(crate) payload: &'a [u8],
}

impl Outgoing<'_> {
    /// The envelope's bytes. Strings longer than their length field are cut at a character
    /// boundary (node ids are at most 255 bytes, targets 65535 — far beyond hub limits).
    pub(crate) fn encode(&self) -> Bytes {
        let origin = clip(self.origin, u8::MAX as usize);
        let target = clip(self.target, u16::MAX as usize);
        let except = clip(self.except.unwrap_or(""), u16::MAX as usize);
        let mut b = BytesMut::with_capacity(
            FIXED + 5 + origin.len() + target.len() + except.len() + self.payload.len(),
        );
        b.put_slice(&MAGIC);
        b.put_u8(VERSION);
        b.put_u8(self.kind as u8);
        b.put_u8(self.flags & !FLAG_POSITION);
        b.put_u64(self.seq);
        b.put_u64(0);
        b.put_u64(0);
        b.put_u8(origin.len() as u8);
        b.put_slice(origin.as_bytes());
        b.put_u16(target.len() as u16);
        b.put_slice(target.as_bytes());
        b.put_u16(except.len() as u16);
        b.put_slice(except.as_bytes());
        b.put_slice(self.payload);
        b.freeze()
    }
}

fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads big-endian fields off a byte slice; every read checks its bounds.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Malformed);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub(crate) fn str(&mut self, len: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::Malformed)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Decodes an envelope.
pub(crate) fn decode(buf: &[u8]) -> Result<Envelope<'_>, DecodeError> {
    if buf.len() < 3 || buf[..2] != MAGIC || buf[2] != VERSION {
        return Err(DecodeError::Foreign);
    }
    let mut r = Reader::new(&buf[3..]);
    let kind = Kind::from_u8(r.u8()?).ok_or(DecodeError::Malformed)?;
    let flags = r.u8()?;
    let seq = r.u64()?;
    let epoch = r.u64()?;
    let offset = r.u64()?;
    let n = r.u8()? as usize;
    let origin = r.str(n)?;
    let n = r.u16()? as usize;
    let target = r.str(n)?;
    let n = r.u16()? as usize;
    let except = r.str(n)?;
    let payload = r.rest();
    if origin.is_empty() {
        return Err(DecodeError::Malformed);
    }
    Ok(Envelope {
        kind,
        flags,
        seq,
        position: (flags & FLAG_POSITION != 0).then_some((epoch, offset)),
        origin,
        target,
        except: (!except.is_empty()).then_some(except),
        payload,
    })
}

/// The envelope's payload as the message it carried.
///
/// # Errors
///
/// [`DecodeError::Malformed`] for a text payload that is not UTF-8.
pub(crate) fn message(env: &Envelope<'_>) -> Result<SocketMessage, DecodeError> {
    message_of(env.flags, env.payload)
}

/// `payload` as the message it carries, text or binary by `flags`.
fn message_of(flags: u8, payload: &[u8]) -> Result<SocketMessage, DecodeError> {
    let bytes = Bytes::copy_from_slice(payload);
    if flags & FLAG_BINARY != 0 {
        Ok(SocketMessage::Binary(bytes))
    } else {
        Utf8Bytes::try_from_bytes(bytes)
            .map(SocketMessage::Text)
            .map_err(|_| DecodeError::Malformed)
    }
}

/// The payload of a multi-room broadcast (kind 9): its id, the rooms, the message bytes.
/// Rooms whose names do not fit a u16 length are left out (far beyond hub limits).
pub(crate) fn rooms_payload(id: u64, rooms: &[&str], message: &[u8]) -> Bytes {
    let rooms: Vec<&str> = rooms
        .iter()
        .copied()
        .filter(|r| r.len() <= u16::MAX as usize)
        .take(u16::MAX as usize)
        .collect();
    let mut b = BytesMut::with_capacity(
        10 + rooms.iter().map(|r| r.len() + 2).sum::<usize>() + message.len(),
    );
    b.put_u64(id);
    b.put_u16(rooms.len() as u16);
    for room in &rooms {
        b.put_u16(room.len() as u16);
        b.put_slice(room.as_bytes());
    }
    b.put_slice(message);
    b.freeze()
}

/// A decoded multi-room broadcast: its id, its rooms and the message.
pub(crate) struct RoomsBroadcast<'a> {
    pub(crate) id: u64,
    pub(crate) rooms: Vec<&'a str>,
    pub(crate) msg: SocketMessage,
}

/// Decodes a kind-9 envelope's payload.
///
/// # Errors
///
/// [`DecodeError::Malformed`] if it is truncated, a room is not UTF-8, or the message is
/// text that is not UTF-8.
pub(crate) fn rooms_broadcast<'a>(env: &Envelope<'a>) -> Result<RoomsBroadcast<'a>, DecodeError> {
    let mut r = Reader::new(env.payload);
    let id = r.u64()?;
    let n = r.u16()? as usize;
    let mut rooms = Vec::with_capacity(n.min(env.payload.len() / 2));
    for _ in 0..n {
        let len = r.u16()? as usize;
        rooms.push(r.str(len)?);
    }
    let msg = message_of(env.flags, r.rest())?;
    Ok(RoomsBroadcast { id, rooms, msg })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rooms_payload_round_trips_and_every_truncation_is_an_error() {
        let payload = rooms_payload(7, &["x", "yy"], b"hello");
        let bytes = Outgoing {
            kind: Kind::Rooms,
            flags: 0,
            seq: 1,
            origin: "a",
            target: "x",
            except: None,
            payload: &payload,
        }
        .encode();
        let env = decode(&bytes).expect("decodes");
        let b = rooms_broadcast(&env).expect("a rooms broadcast");
        assert_eq!((b.id, b.rooms.as_slice()), (7, ["x", "yy"].as_slice()));
        assert_eq!(b.msg, SocketMessage::text("hello"));
        for cut in 0..12 {
            let env = Envelope {
                payload: &payload[..cut],
                ..decode(&bytes).unwrap()
            };
            assert!(rooms_broadcast(&env).is_err(), "cut at {cut}");
        }
    }

    fn sample() -> Bytes {
        Outgoing {
            kind: Kind::Room,
            flags: FLAG_EXCEPT_LOCAL,
            seq: 7,
            origin: "node-a",
            target: "general",
            except: Some("node-a.1"),
            payload: b"hello",
        }
        .encode()
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let env = decode(&bytes).expect("decodes");
        assert_eq!(env.kind, Kind::Room);
        assert_eq!(env.seq, 7);
        assert_eq!(env.origin, "node-a");
        assert_eq!(env.target, "general");
        assert_eq!(env.except, Some("node-a.1"));
        assert_eq!(env.flags & FLAG_EXCEPT_LOCAL, FLAG_EXCEPT_LOCAL);
        assert_eq!(env.position, None);
        assert_eq!(message(&env), Ok(SocketMessage::text("hello")));
    }

    #[test]
    fn position_fields_are_at_fixed_offsets() {
        let mut bytes = sample().to_vec();
        bytes[4] |= FLAG_POSITION;
        bytes[13..21].copy_from_slice(&3u64.to_be_bytes());
        bytes[21..29].copy_from_slice(&42u64.to_be_bytes());
        assert_eq!(decode(&bytes).expect("decodes").position, Some((3, 42)));
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_not_a_panic() {
        let bytes = sample();
        // Cutting inside the header or the strings is malformed; cutting into the payload
        // is still a (shorter) valid envelope.
        let header_end = bytes.len() - 5;
        for cut in 0..header_end {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode(b"hello world"), Err(DecodeError::Foreign));
        let mut other_version = bytes.to_vec();
        other_version[2] = 2;
        assert_eq!(decode(&other_version), Err(DecodeError::Foreign));
        let mut bad_kind = bytes.to_vec();
        bad_kind[3] = 99;
        assert_eq!(decode(&bad_kind), Err(DecodeError::Malformed));
        // A pseudo-random spray of bytes behind a valid magic never panics.
        let mut x: u32 = 0x1234_5678;
        for len in 0..200 {
            let mut v = b"NS\x01".to_vec();
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                v.push(x as u8);
            }
            let _ = decode(&v).map(|e| message(&e));
        }
    }

    #[test]
    fn invalid_utf8_text_payload_is_malformed() {
        let bytes = Outgoing {
            kind: Kind::Room,
            flags: 0,
            seq: 1,
            origin: "n",
            target: "r",
            except: None,
            payload: &[0xff, 0xfe],
        }
        .encode();
        let env = decode(&bytes).expect("envelope");
        assert_eq!(message(&env), Err(DecodeError::Malformed));
    }
}
