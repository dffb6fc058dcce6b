//! The hub's WebSocket connections behind an axum 0.8 router (feature `axum`).
//!
//! [`StreamRoute`] is a tower `Service` for [`Router::route_service`](::axum::Router::route_service):
//! it checks the upgrade request exactly as the bundled [`Server`](crate::server::Server)
//! does — the connection limit (503), that it is a WebSocket upgrade (405 / 426 / 400), the
//! Origin rule (403) and the [auth hook](ServerConfig::auth) (its status), one function for
//! both transports — answers 101, and runs the crate's own connection loop
//! ([`StreamService::serve_upgraded`]) on hyper's upgraded connection, under the same
//! [`ServerConfig`] and with the same [`StreamHandler`]. The auth hook sees the request's
//! parts, including the extensions the application's middleware set (a session, a verified
//! token): see [`UpgradeRequest::extensions`](crate::server::UpgradeRequest::extensions).
//!
//! The upgrade goes through hyper, so axum's own `ws` feature (and its tungstenite) is not
//! needed: with it off, one WebSocket stack is compiled.
//!
//! # Shutdown
//!
//! hyper's graceful shutdown does not track upgraded connections: once a request is upgraded
//! the connection is no longer axum's. The route tracks its own. Pass
//! [`shutdown_on(signal)`](StreamRoute::shutdown_on) to `with_graceful_shutdown`: when the
//! signal fires every open WebSocket gets what is queued for it, then close 1001, and new
//! upgrades get 503; after `axum::serve` returns, [`stopped`](StreamRoute::stopped) resolves
//! when every connection has ended (each unregistered and its `on_disconnect` run), by
//! [`shutdown_timeout`](ServerConfig::shutdown_timeout).
//!
//! # Examples
//!
//! ```
//! use axum::{Router, routing::get};
//! use nucleus_stream::axum::StreamRoute;
//! use nucleus_stream::server::ServerConfig;
//! use nucleus_stream::{async_trait, SocketMessage, StreamHandler, StreamHub, WebSocket};
//!
//! struct Echo;
//!
//! #[async_trait]
//! impl StreamHandler for Echo {
//!     async fn on_message(&self, hub: &StreamHub, socket: &WebSocket, msg: SocketMessage) {
//!         hub.send_to(&socket.id, msg).await.ok();
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let ws = StreamRoute::new(StreamHub::new(), Echo, ServerConfig::default());
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .route_service("/ws", ws.clone());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
//! # let signal = async { stop_rx.await.ok(); };
//! # stop.send(()).unwrap();
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(ws.shutdown_on(signal)) // e.g. tokio::signal::ctrl_c()
//!     .await?;
//! ws.stopped().await; // every WebSocket closed 1001 and its on_disconnect run
//! # Ok::<(), std::io::Error>(())
//! # }).unwrap();
//! ```

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::axum::body::Body;
use ::axum::extract::ConnectInfo;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request, Response, StatusCode, header};
use tracing::{debug, warn};

use crate::handler::StreamHandler;
use crate::hub::StreamHub;
use crate::server::admission::{self, Admitted, Capacity, Refusal};
use crate::server::{ServerConfig, StreamService};

/// The hub's WebSocket endpoint as a tower `Service` for an axum router.
///
/// Cheap to clone (one `Arc`); every clone is the same endpoint: one connection count, one
/// shutdown. Mount it with [`Router::route_service`](::axum::Router::route_service) (or
/// `fallback_service`, or call [`upgrade`](Self::upgrade) from a handler of your own). See
/// the [module documentation](self) for a whole app.
#[derive(Clone, Debug)]
pub struct StreamRoute {
    service: StreamService,
}

impl StreamRoute {
    /// An endpoint for `hub` whose connections call `handler`, under `config`.
    pub fn new<H: StreamHandler>(hub: StreamHub, handler: H, config: ServerConfig) -> Self {
        Self::from_service(StreamService::new(hub, handler, config))
    }

    /// Like [`new`](Self::new), with a handler you keep a reference to.
    pub fn with_shared_handler(
        hub: StreamHub,
        handler: Arc<dyn StreamHandler>,
        config: ServerConfig,
    ) -> Self {
        Self::from_service(StreamService::with_shared_handler(hub, handler, config))
    }

    /// An endpoint serving its connections through `service` (for instance a bundled
    /// server's [`service`](crate::server::ServerHandle::service)): they share its
    /// configuration, its connection count and its shutdown.
    pub fn from_service(service: StreamService) -> Self {
        Self { service }
    }

    /// The service that runs the connections.
    pub fn service(&self) -> &StreamService {
        &self.service
    }

    /// The hub the connections are registered in.
    pub fn hub(&self) -> &StreamHub {
        self.service.hub()
    }

    /// WebSocket connections open now (including upgrades answered and not yet running).
    pub fn connections(&self) -> usize {
        self.service.connections()
    }

    /// Answers one request: `101 Switching Protocols` if it is an admitted WebSocket upgrade
    /// (the connection then runs on its own task, spawned on the current tokio runtime),
    /// otherwise the refusal's status with a short plain-text body: 503 past
    /// [`max_connections`](ServerConfig::max_connections) or during shutdown, 405 for a
    /// method other than GET, 426 for a request that is not a version-13 WebSocket upgrade
    /// (or whose connection hyper cannot upgrade, such as HTTP/2), 400 for a bad
    /// `Sec-WebSocket-Key`, 403 for a disallowed Origin, and the auth hook's own status.
    ///
    /// The auth hook sees the request's parts. The client address is known when the app is
    /// served with `into_make_service_with_connect_info::<SocketAddr>()`.
    ///
    /// # Panics
    ///
    /// If an admitted upgrade is answered outside a tokio runtime (the connection's task is
    /// spawned on it).
    pub fn upgrade<B>(&self, request: Request<B>) -> Response<Body> {
        let (mut parts, body) = request.into_parts();
        // An upgrade request has no body; dropping it does not affect the upgrade.
        drop(body);
        let config = self.service.config();
        let reservation = if self.service.is_shutting_down() {
            None
        } else {
            self.service.reserve(config.max_connections)
        };
        let capacity = match &reservation {
            Some(_) => Capacity::Available,
            None if self.service.is_shutting_down() => Capacity::ShuttingDown,
            None => Capacity::Full,
        };
        let on_upgrade = parts.extensions.remove::<OnUpgrade>();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        let Admitted {
            admission,
            accept_key,
        } = match admission::admit(config, &parts, peer, capacity) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal_response(refusal),
        };
        // `admit` refuses whenever there is no reservation; this is only the type's way out.
        let Some(reservation) = reservation else {
            return refusal_response(Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: "too many connections".into(),
            });
        };
        let Some(on_upgrade) = on_upgrade else {
            return refusal_response(Refusal {
                status: StatusCode::UPGRADE_REQUIRED,
                body: "this connection cannot be upgraded".into(),
            });
        };
        drop(parts);
        let service = self.service.clone();
        let handshake_timeout = config.handshake_timeout;
        tokio::spawn(async move {
            let upgraded = match tokio::time::timeout(handshake_timeout, on_upgrade).await {
                Ok(Ok(upgraded)) => upgraded,
                Ok(Err(e)) => {
                    warn!(?peer, error = %e, "upgrade failed");
                    return;
                }
                Err(_) => {
                    warn!(?peer, "upgrade timed out");
                    return;
                }
            };
            let connection = service.serve_upgraded(TokioIo::new(upgraded), admission, peer);
            // The connection counts itself from here on.
            drop(reservation);
            connection.await;
        });
        debug!(?peer, "upgraded");
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept_key) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }

    /// A future for `axum::serve(..).with_graceful_shutdown(..)`: waits for `signal`, then
    /// begins the graceful [`shutdown`](Self::shutdown) of every WebSocket, and resolves so
    /// that axum stops accepting too. Await [`stopped`](Self::stopped) after `axum::serve`
    /// returns: hyper does not wait for upgraded connections.
    pub fn shutdown_on<F>(&self, signal: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future + Send + 'static,
    {
        let service = self.service.clone();
        async move {
            signal.await;
            service.shutdown();
        }
    }

    /// Begins a graceful shutdown (later calls do nothing): every open WebSocket gets what is
    /// already queued for it, then close 1001; new upgrades get 503. Each connection ends
    /// when its client completes the close or at the deadline
    /// ([`shutdown_timeout`](ServerConfig::shutdown_timeout)).
    pub fn shutdown(&self) {
        self.service.shutdown();
    }

    /// Resolves once [`shutdown`](Self::shutdown) has begun and every connection has ended:
    /// each unregistered and its `on_disconnect` run exactly once (or, for a handler still
    /// running half a second past the deadline, dropped and unregistered).
    pub async fn stopped(&self) {
        self.service.stopped().await;
    }
}

fn refusal_response(refusal: Refusal) -> Response<Body> {
    let upgrade_required = refusal.is_upgrade_required();
    let mut response = Response::new(Body::from(refusal.body.into_owned()));
    *response.status_mut() = refusal.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // As the bundled server does: a refused client does not keep the connection.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if upgrade_required {
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    response
}

impl<B> tower_service::Service<Request<B>> for StreamRoute {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(self.upgrade(request)))
    }
}
