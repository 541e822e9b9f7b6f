//! The ingest transports' listeners: the events Unix socket and TCP.

use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{Engine, Transport};
use busbar_listen::{Accept, Rejected, UnixSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;

use crate::connection::{ConnectionContext, Peer};
use crate::live::LiveUpgrade;

/// TCP keepalive on ingest connections: a peer whose host vanished (no
/// FIN, no reset) is found after about a minute of silence instead of
/// never. It matters for connections that mostly wait: a blocking group
/// `read`, a live subscription on a quiet stream.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

/// Limits of the ingest transports.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Longest accepted line, in bytes.
    pub max_line_bytes: usize,
    /// Open connections per transport; past it a connection gets one
    /// `too_many_connections` error line and is closed.
    pub max_connections: usize,
    /// How long shutdown waits for open connections to publish and answer
    /// what they have read.
    pub drain_timeout: Duration,
    /// Deepest nesting of an event line or op line (the line's object is
    /// depth 1); a deeper line is answered `too_deep`.
    pub max_depth: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_line_bytes: 1024 * 1024,
            max_connections: 1024,
            drain_timeout: Duration::from_secs(10),
            max_depth: busbar_event::Limits::DEFAULT_MAX_DEPTH,
        }
    }
}

/// The NDJSON ingest transports of one engine.
///
/// Each `serve_*` call runs until `shutdown` turns true: it then stops
/// accepting, lets every open connection publish and acknowledge what it has
/// already read (up to [`IngestOptions::drain_timeout`]) and returns.
#[derive(Clone)]
pub struct Ingest {
    engine: Arc<Engine>,
    options: IngestOptions,
    shutdown: watch::Receiver<bool>,
    live: Option<Arc<dyn LiveUpgrade>>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("options", &self.options)
            .field("live", &self.live.is_some())
            .finish_non_exhaustive()
    }
}

impl Ingest {
    /// Ingest into `engine`, stopping when `shutdown` becomes true.
    pub fn new(
        engine: Arc<Engine>,
        options: IngestOptions,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Ingest {
            engine,
            options,
            shutdown,
            live: None,
        }
    }

    /// Hands connections that send a live op (`subscribe`, `join`...) to
    /// `live`. Without it, such ops are answered with `unsupported`.
    pub fn with_live(mut self, live: Arc<dyn LiveUpgrade>) -> Self {
        self.live = Some(live);
        self
    }

    fn accept(&self, transport: Transport) -> Accept {
        Accept::new(
            &self.engine,
            transport,
            self.options.max_connections,
            self.options.drain_timeout,
            self.shutdown.clone(),
        )
    }

    fn context(&self, transport: Transport) -> ConnectionContext {
        ConnectionContext {
            engine: self.engine.clone(),
            transport,
            limits: busbar_event::Limits {
                max_event_bytes: self.options.max_line_bytes,
                max_depth: self.options.max_depth,
            },
            live: self.live.clone(),
        }
    }

    /// Serves the events Unix socket (callers are trusted).
    pub async fn serve_unix(&self, socket: UnixSocket) {
        let ctx = self.context(Transport::Unix);
        let shutdown = self.shutdown.clone();
        let accept = self.accept(Transport::Unix);
        accept
            .run(
                || socket.listener().accept(),
                move |stream: UnixStream, _| {
                    let ctx = ctx.clone();
                    let shutdown = shutdown.clone();
                    let pid = stream.peer_cred().ok().and_then(|c| c.pid());
                    async move {
                        let (r, w) = stream.into_split();
                        ctx.serve(r, w, Peer::Unix { pid }, shutdown).await;
                    }
                },
                reject_unix,
            )
            .await;
    }

    /// Serves TCP ingest (callers authenticate in their hello when tokens
    /// are configured).
    pub async fn serve_tcp(&self, listener: TcpListener) {
        let ctx = self.context(Transport::Tcp);
        let shutdown = self.shutdown.clone();
        let accept = self.accept(Transport::Tcp);
        accept
            .run(
                || listener.accept(),
                move |stream: TcpStream, addr| {
                    let ctx = ctx.clone();
                    let shutdown = shutdown.clone();
                    async move {
                        // Acks are small and latency-bound.
                        let _ = stream.set_nodelay(true);
                        let keepalive = socket2::TcpKeepalive::new()
                            .with_time(KEEPALIVE_IDLE)
                            .with_interval(KEEPALIVE_INTERVAL)
                            .with_retries(KEEPALIVE_PROBES);
                        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
                        let (r, w) = stream.into_split();
                        ctx.serve(r, w, Peer::Tcp(addr), shutdown).await;
                    }
                },
                reject_tcp,
            )
            .await;
    }
}

async fn reject_unix(mut s: UnixStream, why: Rejected) {
    let _ = s.write_all(why.json_line().as_bytes()).await;
    let _ = s.shutdown().await;
}

async fn reject_tcp(mut s: TcpStream, why: Rejected) {
    let _ = s.write_all(why.json_line().as_bytes()).await;
    let _ = s.shutdown().await;
    // Unread input would turn the close into a reset that can destroy the
    // error line; the caller bounds this wait.
    let mut sink = [0u8; 4096];
    while let Ok(n) = s.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}
