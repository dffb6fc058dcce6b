//! The bundled server's own readiness source for its sockets (Linux): one epoll instance per
//! server, driven by one task, with a 32-byte [`Readiness`] cell per socket.
//!
//! **Why.** A socket registered with tokio's reactor costs a `ScheduledIo`: 256 bytes,
//! aligned to 128 (massif, 2,000 idle connections: tokio's I/O registration was 256 of the
//! 1,488 bytes an idle connection cost, the largest part after the task itself). The server
//! registers its sockets here instead: each takes a cell of a page of cells (no allocation of
//! its own), and the epoll instance itself is the one descriptor registered with tokio. When
//! tokio reports it readable, the driver task drains its events, sets each socket's cell and
//! wakes the socket's task; what follows is the protocol of `src/readiness.rs`. tokio's public
//! alternative, an `AsyncFd` per socket, is the same 256-byte registration. Measured (chat
//! example, 10,000 idle joined connections, 3 interleaved pairs): 1,490 → 1,232 B of RSS per
//! connection; CPU per delivery unchanged within noise (`BENCHMARKS.md`, run 13).
//!
//! **Cost.** One more `epoll_wait` and one more task poll per turn of tokio's reactor in
//! which any socket had an edge, shared by all the edges of that turn. Reads and writes are
//! the same system calls tokio makes (`read`, `writev`), and a short read or write clears the
//! readiness as tokio does, so no extra `EAGAIN` round is paid. A closed socket leaves the
//! epoll set by `close` itself (no `EPOLL_CTL_DEL`).
//!
//! **Cells outlive their sockets.** An event fetched just before its socket closed can still
//! be dispatched; its cell then belongs to no one, or to the next socket, which sees a
//! spurious readiness (one `EAGAIN`). Pages are freed only with the reactor, which every
//! socket and the driver keep alive, so a cell pointer in an event is always valid memory.
//!
//! Other systems keep tokio's own `TcpStream` (`cfg(not(target_os = "linux"))` in `mod.rs`).

use std::io::{self, IoSlice, Write};
use std::mem::ManuallyDrop;
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::task::AbortHandle;
use tracing::warn;

use crate::readiness::{BOTH, READABLE, Readiness, Ready, WRITABLE};
use crate::sync::{Arc, Mutex, lock};

/// Cells per page.
const PAGE: usize = 1024;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// A server's epoll instance and its driver task; the driver stops when this is dropped (the
/// accept loop drops it once every connection has ended; a socket still open then, a 503
/// refusal still being written, gets no more edges and ends at its handshake timeout).
pub(crate) struct Reactor {
    shared: Arc<Shared>,
    driver: AbortHandle,
}

struct Shared {
    epoll: OwnedFd,
    cells: Mutex<Cells>,
}

/// The cells, in pages that never move or shrink while the reactor lives.
struct Cells {
    pages: Vec<Box<[Readiness]>>,
    /// Indexes of cells no socket holds.
    free: Vec<u32>,
}

impl Reactor {
    /// A new epoll instance, and its driver task spawned on the current runtime.
    ///
    /// # Errors
    ///
    /// If the epoll instance cannot be created or registered with tokio.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: a plain system call; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let shared = Arc::new(Shared {
            epoll,
            cells: Mutex::new(Cells {
                pages: Vec::new(),
                free: Vec::new(),
            }),
        });
        // SAFETY: the descriptor is valid for as long as the `AsyncFd` lives: `EpollFd` keeps
        // the reactor that owns it, and nothing closes or replaces it before then.
        let events = unsafe {
            AsyncFd::register_with_interest(EpollFd(Arc::clone(&shared)), Interest::READABLE)
        }?;
        let driver = tokio::spawn(drive(events)).abort_handle();
        Ok(Self { shared, driver })
    }

    /// Registers a listening socket (made non-blocking).
    ///
    /// # Errors
    ///
    /// If the socket cannot be made non-blocking or added to the epoll instance.
    pub(crate) fn listener(&self, io: StdListener) -> io::Result<ReactorListener> {
        io.set_nonblocking(true)?;
        Registered::register(&self.shared, io)
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The epoll descriptor as tokio registers it (keeps the reactor alive while registered).
struct EpollFd(Arc<Shared>);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.epoll.as_raw_fd()
    }
}

/// The driver: whenever tokio reports the epoll instance readable, drains its events into
/// the cells, then waits again.
async fn drive(epoll: AsyncFd<EpollFd>) {
    let fd = epoll.get_ref().as_raw_fd();
    let mut events: Vec<libc::epoll_event> = Vec::with_capacity(EVENTS);
    loop {
        let mut guard = match epoll.readable().await {
            Ok(guard) => guard,
            Err(e) => {
                warn!(error = %e, "the server's epoll instance failed: its sockets stall");
                return;
            }
        };
        loop {
            // SAFETY: `events` has room for `EVENTS` entries; the kernel writes at most that
            // many and returns how many.
            let n = unsafe { libc::epoll_wait(fd, events.as_mut_ptr(), EVENTS as i32, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                warn!(error = %e, "epoll_wait failed");
                break;
            }
            let n = n as usize;
            // SAFETY: the kernel initialized the first `n` entries.
            unsafe { events.set_len(n) };
            for event in &events {
                // Copies out of the packed struct.
                let (flags, data) = (event.events, event.u64);
                let mut bits = 0;
                if flags & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 != 0 {
                    bits |= READABLE;
                }
                if flags & libc::EPOLLOUT as u32 != 0 {
                    bits |= WRITABLE;
                }
                if flags & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                    bits |= BOTH;
                }
                // SAFETY: `data` is the address of a cell of a page of this reactor (set by
                // `Registered::register`); pages live as long as the reactor, which this task
                // keeps alive through `epoll`. The cell may have changed owners since (see
                // the module docs): a spurious readiness, which its protocol tolerates.
                let cell = unsafe { &*(data as usize as *const Readiness) };
                cell.set(bits);
            }
            events.clear();
            if n < EVENTS {
                break;
            }
        }
        guard.clear_ready();
    }
}

/// A socket with its cell: 24 bytes for a TCP stream (tokio's `TcpStream` is 32, plus its
/// 256-byte registration).
pub(crate) struct Registered<T: AsRawFd> {
    /// Closed first on drop (by hand), so that no new edge can name the cell once it is
    /// free.
    io: ManuallyDrop<T>,
    index: u32,
    shared: Arc<Shared>,
    cell: NonNull<Readiness>,
}

/// A listening socket on a [`Reactor`].
pub(crate) type ReactorListener = Registered<StdListener>;
/// A TCP connection on a [`Reactor`].
pub(crate) type ReactorStream = Registered<StdStream>;

// SAFETY: `cell` points into a page owned by `shared` (kept alive here); `Readiness` is
// `Sync`, and the pointer is only ever dereferenced as a shared reference.
unsafe impl<T: AsRawFd + Send> Send for Registered<T> {}
// SAFETY: as above.
unsafe impl<T: AsRawFd + Sync> Sync for Registered<T> {}

impl<T: AsRawFd> Registered<T> {
    /// Takes a free cell (ready both ways) and adds `io` to the epoll instance with it.
    fn register(shared: &Arc<Shared>, io: T) -> io::Result<Self> {
        let (index, cell) = {
            let mut cells = lock(&shared.cells);
            let index = match cells.free.pop() {
                Some(index) => index,
                None => {
                    let index = u32::try_from(cells.pages.len() * PAGE)
                        .map_err(|_| io::Error::other("too many sockets for one reactor"))?;
                    cells
                        .pages
                        .push((0..PAGE).map(|_| Readiness::new(BOTH)).collect());
                    cells.free.extend((index + 1..index + PAGE as u32).rev());
                    index
                }
            };
            let cell = NonNull::from(&cells.pages[index as usize / PAGE][index as usize % PAGE]);
            (index, cell)
        };
        let this = Self {
            io: ManuallyDrop::new(io),
            index,
            shared: Arc::clone(shared),
            cell,
        };
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: cell.as_ptr() as usize as u64,
        };
        // SAFETY: both descriptors are open; `event` is a valid epoll_event.
        let r = unsafe {
            libc::epoll_ctl(
                shared.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                this.io.as_raw_fd(),
                &mut event,
            )
        };
        if r < 0 {
            // `this` drops: the socket closes and the cell goes back to the free list.
            return Err(io::Error::last_os_error());
        }
        Ok(this)
    }

    fn cell(&self) -> &Readiness {
        // SAFETY: the page outlives `self` (it is freed only with `shared`).
        unsafe { self.cell.as_ref() }
    }

    /// [`Readiness::poll_io`] on this socket.
    fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        bits: Ready,
        mut io: impl FnMut(&T) -> io::Result<R>,
        short: impl Fn(&R) -> bool,
    ) -> Poll<io::Result<R>> {
        self.cell().poll_io(cx, bits, || io(&self.io), short)
    }
}

impl<T: AsRawFd> Drop for Registered<T> {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, and not used after.
        unsafe { ManuallyDrop::drop(&mut self.io) };
        // The socket is closed: no new edge can name this cell, only one already fetched
        // (see the module docs).
        self.cell().reset(BOTH);
        lock(&self.shared.cells).free.push(self.index);
    }
}

impl ReactorListener {
    /// Accepts the next connection, registered on the same reactor.
    ///
    /// # Errors
    ///
    /// What `accept` fails with (`EMFILE` when out of descriptors, …), or the registration's
    /// error.
    pub(crate) async fn accept(&self) -> io::Result<(ReactorStream, SocketAddr)> {
        // One `accept4` that makes the socket non-blocking (as mio's accept does), not
        // `accept` and then a `set_nonblocking` system call.
        let accept = |io: &StdListener| {
            socket2::SockRef::from(io).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
        };
        let (io, peer) =
            std::future::poll_fn(|cx| self.poll_io(cx, READABLE, accept, |_| false)).await?;
        let peer = peer
            .as_socket()
            .ok_or_else(|| io::Error::other("accepted a connection that is not TCP/IP"))?;
        Ok((
            Registered::register(&self.shared, StdStream::from(io))?,
            peer,
        ))
    }

    /// The address it listens on.
    #[cfg(test)]
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }
}

impl AsFd for ReactorStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

impl AsyncRead for ReactorStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let fd = self.io.as_raw_fd();
        // SAFETY: the bytes are only written (by `read`), never read, before `assume_init`.
        let unfilled = unsafe { buf.unfilled_mut() };
        let (ptr, len) = (unfilled.as_mut_ptr(), unfilled.len());
        let n = ready!(self.poll_io(
            cx,
            READABLE,
            |_| {
                // SAFETY: `ptr` is valid for `len` bytes of writes (the unfilled part of
                // `buf`, borrowed for this call).
                let r = unsafe { libc::read(fd, ptr.cast(), len) };
                usize::try_from(r).map_err(|_| io::Error::last_os_error())
            },
            |&n| n > 0 && n < len,
        ))?;
        // SAFETY: `read` initialized the first `n` unfilled bytes.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ReactorStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.into_ref().get_ref();
        this.poll_io(
            cx,
            WRITABLE,
            |mut io| io.write(buf),
            |&n| n > 0 && n < buf.len(),
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.into_ref().get_ref();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        this.poll_io(
            cx,
            WRITABLE,
            |mut io| io.write_vectored(bufs),
            |&n| n > 0 && n < len,
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A reactor with a listener on a free loopback port.
    fn listening() -> (Reactor, ReactorListener, SocketAddr) {
        let reactor = Reactor::new().unwrap();
        let listener = reactor
            .listener(StdListener::bind("127.0.0.1:0").unwrap())
            .unwrap();
        let addr = listener.local_addr().unwrap();
        (reactor, listener, addr)
    }

    #[test]
    fn a_stream_is_24_bytes() {
        assert_eq!(std::mem::size_of::<ReactorStream>(), 24);
    }

    /// A socket whose send buffer is full waits for the peer to read (an edge), then
    /// finishes; every byte arrives in order; the cells of closed sockets are reused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocked_write_resumes_on_the_edge_and_cells_are_reused() {
        let (reactor, listener, addr) = listening();
        let client = tokio::spawn(async move {
            let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
            // Let the server's send buffer fill before reading.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(4096);
        let sent: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        stream.write_all(&sent).await.unwrap();
        stream.shutdown().await.unwrap();
        drop(stream);
        let got = client.await.unwrap();
        assert!(
            got == sent,
            "{} of {} bytes, in order",
            got.len(),
            sent.len()
        );
        let free = lock(&reactor.shared.cells).free.len();
        // The next connection takes the freed cell: no new page.
        let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        assert_eq!(lock(&reactor.shared.cells).pages.len(), 1);
        assert_eq!(lock(&reactor.shared.cells).free.len(), free - 1);
        drop(stream);
        assert_eq!(lock(&reactor.shared.cells).free.len(), free);
    }

    /// A read waits for data (pending, not spinning) and is woken by its arrival; EOF reads 0.
    #[tokio::test]
    async fn a_read_waits_for_the_edge() {
        let (_reactor, listener, addr) = listening();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 16];
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(50), stream.read(&mut buf)).await;
        assert!(pending.is_err(), "nothing was sent yet");
        client.write_all(b"hello").await.unwrap();
        let n = stream.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        drop(client);
        assert_eq!(stream.read(&mut buf).await.unwrap(), 0);
    }
}
