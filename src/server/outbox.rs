//! The writer's side of a connection: frames waiting to be written, as shared `Bytes`
//! chunks, written with vectored writes straight to the socket.
//!
//! A batch taken from the outbound queue becomes a short list of chunks: the 2–10 byte
//! headers and the payloads of small messages are copied into one staging buffer (at most
//! [`STAGING_MAX`] bytes per chunk, sized to what is queued), while every payload of at least
//! `coalesce_below` bytes goes out as its own chunk — the very `Bytes` the broadcast shared
//! between its recipients, never copied. One `writev` writes the whole list, or one `write`
//! (`send` on a `TcpStream`, which skips `writev`'s VFS layers) when the list is one chunk; a
//! partial write resumes at the byte where it stopped. When everything is written the chunk
//! list and the staging buffer are gone: an idle connection holds no write buffer at all.
//!
//! The staging space and the chunk list come from the worker thread, not the connection
//! ([`Scratch`]): a batch carves its staging chunks out of the thread's staging block and
//! gives the block back when it is sealed, and an outbox that has written everything gives
//! its empty chunk list back for the next batch on that thread. In steady state a batch then
//! allocates nothing (measured in 200 rooms x 11: 3 allocations per batch before, from the
//! staging buffer, its shared header and the list); a chunk still waiting in a stalled
//! connection's outbox keeps its block alive, and the thread starts a new one.
//!
//! Starting the thread's staging block over at its front once its chunks are all written
//! (`BytesMut::try_reclaim` at each batch, so that every batch copies into the same cached
//! bytes) was measured in round 2 session 11 and not kept: CPU per delivery 1.01× in one room
//! of 1,000 and 1.03× in 200 rooms × 11 (8 interleaved pairs each).
//!
//! Control frames (pong, ping, close) are inserted at the first frame boundary after the
//! bytes being written, so they wait behind at most one staging chunk or one payload, never
//! behind a backlog (which stays in the hub's queue until the outbox is empty).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;

use crate::message::SocketMessage;
use crate::server::frame::{MAX_HEADER, OP_BINARY, OP_TEXT, encode_header};

/// Most bytes copied into one staging chunk.
pub(crate) const STAGING_MAX: usize = 16 * 1024;

/// Most bytes a batch takes from the queue before it is written (a single larger message
/// still goes whole).
pub(crate) const BATCH_BYTES: usize = 64 * 1024;

/// Most slices per `writev` (Linux accepts 1024; more than this is never needed for a batch
/// of `BATCH_BYTES`).
const MAX_IOV: usize = 64;

/// Capacity of a thread's staging block: one allocation serves many batches.
const SCRATCH_BLOCK: usize = STAGING_MAX;

/// Largest chunk list a thread keeps for reuse.
const SPARE_CHUNKS_MAX: usize = MAX_IOV;

/// A worker thread's reusable writer memory (see the module docs).
#[derive(Default)]
struct Scratch {
    /// What is left of the thread's staging block (its written part is carved off as
    /// chunks).
    staging: BytesMut,
    /// An empty chunk list with capacity, from an outbox that finished writing.
    spare: VecDeque<Chunk>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` on this thread's scratch; `None` if it is in use (a re-entrant call) or the
/// thread is being torn down, in which case the caller does without.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> Option<R> {
    SCRATCH
        .try_with(|s| s.try_borrow_mut().ok().map(|mut s| f(&mut s)))
        .ok()
        .flatten()
}

/// The thread's staging block (empty if another batch on this thread holds it).
fn take_staging() -> BytesMut {
    with_scratch(|s| std::mem::take(&mut s.staging)).unwrap_or_default()
}

/// Gives `staging` (empty, with whatever capacity is left) back to the thread.
fn return_staging(staging: BytesMut) {
    with_scratch(|s| {
        if staging.capacity() >= s.staging.capacity() {
            s.staging = staging;
        }
    });
}

/// The thread's spare chunk list, if it has one.
fn take_spare() -> VecDeque<Chunk> {
    with_scratch(|s| std::mem::take(&mut s.spare)).unwrap_or_default()
}

/// Gives an empty chunk list back to the thread (dropped if the thread has one).
fn return_spare(list: VecDeque<Chunk>) {
    debug_assert!(list.is_empty());
    if list.capacity() == 0 || list.capacity() > SPARE_CHUNKS_MAX {
        return;
    }
    with_scratch(|s| {
        if s.spare.capacity() == 0 {
            s.spare = list;
        }
    });
}

/// Longest chunk: a longer payload is queued as several chunks (shares of it), so that the
/// offset into the first chunk fits the outbox's `u32`.
#[cfg(not(test))]
const CHUNK_MAX: usize = u32::MAX as usize;
/// Small in the unit tests, so that their payloads are split (the 3,000-byte frame of
/// `partial_writes_resume_and_control_frames_wait_for_one_frame_only` is three chunks).
#[cfg(test)]
const CHUNK_MAX: usize = 1024;

struct Chunk {
    data: Bytes,
    /// Whether a frame ends where this chunk ends (a control frame may follow it).
    frame_end: bool,
}

/// Frames not yet written to the socket.
#[derive(Default)]
pub(crate) struct Outbox {
    chunks: VecDeque<Chunk>,
    /// Bytes of `chunks[0]` already written (`u32`: no chunk is longer, see [`CHUNK_MAX`]; the
    /// outbox is in every connection's future).
    written: u32,
    /// The stream's flush has not completed since the last write.
    unflushed: bool,
}

/// Builds one batch of frames into an [`Outbox`].
pub(crate) struct Batch<'a> {
    outbox: &'a mut Outbox,
    staging: BytesMut,
    coalesce_below: usize,
    /// Bytes of frames added so far.
    pub(crate) bytes: usize,
}

impl Outbox {
    /// Whether every frame has been written (and flushed).
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty() && !self.unflushed
    }

    /// Starts a batch; payloads of `coalesce_below` bytes or more are not copied.
    pub(crate) fn batch(&mut self, coalesce_below: usize) -> Batch<'_> {
        if self.chunks.capacity() == 0 {
            self.chunks = take_spare();
        }
        Batch {
            outbox: self,
            staging: take_staging(),
            coalesce_below,
            bytes: 0,
        }
    }

    /// Queues a control frame at the first frame boundary.
    pub(crate) fn push_control(&mut self, frame: Bytes) {
        let chunk = Chunk {
            data: frame,
            frame_end: true,
        };
        if self.written == 0 {
            self.chunks.push_front(chunk);
            return;
        }
        match self.chunks.iter().position(|c| c.frame_end) {
            Some(i) => self.chunks.insert(i + 1, chunk),
            None => self.chunks.push_back(chunk),
        }
    }

    /// Queues a frame after everything else.
    pub(crate) fn push_back(&mut self, frame: Bytes) {
        self.chunks.push_back(Chunk {
            data: frame,
            frame_end: true,
        });
    }

    /// Drops every frame not yet started (the frame partly written must be finished for the
    /// stream to stay valid).
    pub(crate) fn discard_unstarted(&mut self) {
        if self.written == 0 {
            self.chunks.clear();
            return;
        }
        if let Some(i) = self.chunks.iter().position(|c| c.frame_end) {
            self.chunks.truncate(i + 1);
        }
    }

    /// Writes until everything is written and flushed.
    pub(crate) fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut S,
    ) -> Poll<io::Result<()>> {
        let vectored = stream.is_write_vectored();
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let limit = if vectored { MAX_IOV } else { 1 };
            let mut n = 0;
            for chunk in self.chunks.iter().take(limit) {
                let data = if n == 0 {
                    &chunk.data[self.written as usize..]
                } else {
                    &chunk.data[..]
                };
                slices[n] = IoSlice::new(data);
                n += 1;
            }
            // One slice (the usual batch of small frames, all in one staging chunk) goes out
            // with a plain write: on a `TcpStream` that is `send`, which skips the VFS layer
            // `writev` goes through.
            let wrote = if n == 1 {
                ready!(Pin::new(&mut *stream).poll_write(cx, &slices[0]))?
            } else {
                ready!(Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..n]))?
            };
            if wrote == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unflushed = true;
            self.advance(wrote);
        }
        // Give the chunk list's memory back: an idle connection holds nothing.
        if self.chunks.capacity() > 0 {
            return_spare(std::mem::take(&mut self.chunks));
        }
        if self.unflushed {
            ready!(Pin::new(&mut *stream).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(first) = self.chunks.front() else {
                return;
            };
            let left = first.data.len() - self.written as usize;
            if n < left {
                // `n < left <= CHUNK_MAX`: it fits.
                self.written += n as u32;
                return;
            }
            n -= left;
            self.written = 0;
            self.chunks.pop_front();
        }
    }
}

impl Batch<'_> {
    /// Adds a data frame for `msg`.
    pub(crate) fn push(&mut self, msg: &SocketMessage) {
        let (opcode, payload) = match msg {
            SocketMessage::Text(t) => (OP_TEXT, t.as_bytes()),
            SocketMessage::Binary(b) => (OP_BINARY, b),
        };
        let mut header = [0u8; MAX_HEADER];
        let header_len = encode_header(opcode, payload.len(), &mut header);
        self.bytes += header_len + payload.len();
        if payload.len() < self.coalesce_below {
            let need = header_len + payload.len();
            if !self.staging.is_empty() && self.staging.len() + need > STAGING_MAX {
                self.seal(true);
            }
            if self.staging.capacity() - self.staging.len() < need {
                self.staging.reserve(need.max(SCRATCH_BLOCK));
            }
            self.staging.extend_from_slice(&header[..header_len]);
            self.staging.extend_from_slice(payload);
        } else {
            if self.staging.capacity() - self.staging.len() < header_len {
                self.staging.reserve(MAX_HEADER.max(SCRATCH_BLOCK));
            }
            self.staging.extend_from_slice(&header[..header_len]);
            self.seal(false);
            let mut payload = payload.clone();
            while payload.len() > CHUNK_MAX {
                self.outbox.chunks.push_back(Chunk {
                    data: payload.split_to(CHUNK_MAX),
                    frame_end: false,
                });
            }
            self.outbox.chunks.push_back(Chunk {
                data: payload,
                frame_end: true,
            });
        }
    }

    fn seal(&mut self, frame_end: bool) {
        if !self.staging.is_empty() {
            let data = self.staging.split().freeze();
            self.outbox.chunks.push_back(Chunk { data, frame_end });
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.seal(true);
        return_staging(std::mem::take(&mut self.staging));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that accepts at most `step` bytes per write (a tiny socket send buffer).
    struct Trickle {
        out: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut left = self.step;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.out.extend_from_slice(&b[..take]);
                left -= take;
                n += take;
            }
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn partial_writes_resume_and_control_frames_wait_for_one_frame_only() {
        let big = SocketMessage::binary(vec![0xAB; 3000]);
        let small = SocketMessage::text("hi");
        let mut outbox = Outbox::default();
        {
            let mut batch = outbox.batch(1024);
            batch.push(&small);
            batch.push(&big);
            batch.push(&small);
        }
        let mut sink = Trickle {
            out: Vec::new(),
            step: 7,
        };
        // The big payload is queued in shares of at most `CHUNK_MAX`, only the last one ending
        // the frame.
        let ends: Vec<_> = outbox
            .chunks
            .iter()
            .map(|c| (c.data.len(), c.frame_end))
            .collect();
        assert_eq!(
            ends,
            [
                (8, false),
                (1024, false),
                (1024, false),
                (952, true),
                (4, true)
            ]
        );
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // One 7-byte write: inside the big frame's header chunk.
        outbox.written = 0;
        let mut slices = [IoSlice::new(&[])];
        slices[0] = IoSlice::new(&outbox.chunks[0].data);
        let wrote = match Pin::new(&mut sink).poll_write_vectored(&mut cx, &slices) {
            Poll::Ready(Ok(n)) => n,
            _ => unreachable!(),
        };
        outbox.advance(wrote);
        outbox.push_control(Bytes::from_static(&[0x8A, 0]));
        assert!(outbox.poll_write(&mut cx, &mut sink).is_ready());
        assert!(outbox.is_empty());
        assert_eq!(outbox.chunks.capacity(), 0);
        let mut expected = vec![0x81, 2, b'h', b'i', 0x82, 126, 0x0B, 0xB8];
        expected.extend(std::iter::repeat_n(0xAB, 3000));
        // The pong goes right after the big frame, before the last small one.
        expected.extend([0x8A, 0, 0x81, 2, b'h', b'i']);
        assert_eq!(sink.out, expected);
    }

    #[test]
    fn discarding_keeps_only_the_frame_being_written() {
        let mut outbox = Outbox::default();
        {
            let mut batch = outbox.batch(16);
            batch.push(&SocketMessage::binary(vec![1; 100]));
            batch.push(&SocketMessage::binary(vec![2; 100]));
        }
        outbox.advance(5);
        outbox.discard_unstarted();
        let mut sink = Trickle {
            out: Vec::new(),
            step: 1000,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(outbox.poll_write(&mut cx, &mut sink).is_ready());
        // The rest of the first frame: 2 header bytes + 100 payload bytes, minus 5 written.
        assert_eq!(sink.out.len(), 102 - 5);
    }
}
