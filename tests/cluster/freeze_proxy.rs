//! A loopback TCP proxy in front of a real redis-server that can silently stop forwarding
//! what the server sends to its pub/sub clients — the connection stays open, nothing errors,
//! no message arrives: the stall Redis pub/sub shows behind some failovers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Registry = Arc<std::sync::Mutex<Vec<(Arc<AtomicBool>, Arc<AtomicBool>)>>>;

pub struct FreezeProxy {
    pub port: u16,
    /// Raised to freeze every pub/sub connection open now (new ones are not frozen).
    /// Per connection: frozen, and whether the freeze applies even if it is not pub/sub.
    freeze: Registry,
    task: tokio::task::JoinHandle<()>,
}

impl FreezeProxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let freeze: Registry = Arc::default();
        let registry = Arc::clone(&freeze);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let frozen = Arc::new(AtomicBool::new(false));
                let any_kind = Arc::new(AtomicBool::new(false));
                let is_pubsub = Arc::new(AtomicBool::new(false));
                registry
                    .lock()
                    .unwrap()
                    .push((Arc::clone(&frozen), Arc::clone(&any_kind)));
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let pubsub = Arc::clone(&is_pubsub);
                let (frozen_up, any_up) = (Arc::clone(&frozen), Arc::clone(&any_kind));
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if buf[..n]
                            .windows(9)
                            .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
                        {
                            pubsub.store(true, Ordering::SeqCst);
                        }
                        if frozen_up.load(Ordering::SeqCst) && any_up.load(Ordering::SeqCst) {
                            continue; // a frozen server hears nothing either
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if frozen.load(Ordering::SeqCst)
                            && (is_pubsub.load(Ordering::SeqCst) || any_kind.load(Ordering::SeqCst))
                        {
                            continue; // swallowed: the client hears nothing
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { port, freeze, task }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Freezes every connection open now (publisher and subscriber alike).
    pub fn freeze_all(&self) {
        for (f, all) in self.freeze.lock().unwrap().iter() {
            f.store(true, Ordering::SeqCst);
            all.store(true, Ordering::SeqCst);
        }
    }

    /// Freezes the pub/sub connections open now.
    pub fn freeze_subscribers(&self) {
        for (f, _) in self.freeze.lock().unwrap().iter() {
            f.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for FreezeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
