//! The ingest transports' listeners: the events Unix socket and TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use busbar_engine::{Engine, Transport};
use busbar_listen::{Accept, Limits, PeerSlot, PerPeer, Rejected, UnixSocket};
use busbar_metrics::Gauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

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
    /// Open TCP connections per peer address (0: no limit); past it,
    /// `too_many_from_peer`.
    pub max_connections_per_peer: usize,
    /// How long a new connection has to send its first complete line (the
    /// hello, or its first event or op); then it gets
    /// `first_line_timeout` and is closed.
    pub first_line_timeout: Duration,
    /// How long a connection may send nothing once it is past its first
    /// line, while no answer of its is pending; then it gets
    /// `idle_timeout` and is closed. Zero: never.
    /// Connections that switched to the live protocol are the live hub's.
    pub idle_timeout: Duration,
    /// TCP connections that have not authenticated yet, when tokens are
    /// configured; past it a new connection gets
    /// `too_many_unauthenticated` and is closed, so unauthenticated peers
    /// can never take the slots of authenticated ones.
    pub max_unauthenticated: usize,
    /// Of those, how many one peer address may hold, so one client cannot
    /// take the others' places (0: no limit of its own).
    pub max_unauthenticated_per_peer: usize,
    /// Bytes an unauthenticated TCP connection may send before its hello
    /// line ends; a longer first line gets `too_large` and the
    /// connection is closed.
    pub unauthenticated_bytes: usize,
    /// How long shutdown waits for open connections to publish and answer
    /// what they have read.
    pub drain_timeout: Duration,
    /// The TCP listener's share of the process's connection budget
    /// (`None`: none).
    pub budget: Option<busbar_listen::Budget>,
    /// The Unix socket's share.
    pub unix_budget: Option<busbar_listen::Budget>,
    /// Deepest nesting of an event line or op line (the line's object is
    /// depth 1); a deeper line is answered `too_deep`.
    pub max_depth: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_line_bytes: 1024 * 1024,
            max_connections: 1024,
            max_connections_per_peer: 256,
            first_line_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_unauthenticated: 64,
            max_unauthenticated_per_peer: 16,
            unauthenticated_bytes: 64 * 1024,
            drain_timeout: Duration::from_secs(10),
            budget: None,
            unix_budget: None,
            max_depth: busbar_event::Limits::DEFAULT_MAX_DEPTH,
        }
    }
}

/// The per-connection values a config reload may change
/// ([`Ingest::set_deadlines`]); each new connection reads them once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// [`IngestOptions::first_line_timeout`].
    pub first_line_timeout: Duration,
    /// [`IngestOptions::idle_timeout`].
    pub idle_timeout: Duration,
    /// [`IngestOptions::unauthenticated_bytes`].
    pub unauthenticated_bytes: usize,
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
    /// Slots of TCP connections not authenticated yet.
    unauthenticated: Arc<Semaphore>,
    /// The same, per peer address.
    unauthenticated_per_peer: Option<Arc<PerPeer>>,
    /// What overrides `options` once a reload changed it; shared by
    /// clones, read once per connection.
    deadlines: Arc<ArcSwap<Deadlines>>,
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
        let unauthenticated = Arc::new(Semaphore::new(
            options.max_unauthenticated.clamp(1, Semaphore::MAX_PERMITS),
        ));
        let unauthenticated_per_peer = (options.max_unauthenticated_per_peer > 0)
            .then(|| PerPeer::new(options.max_unauthenticated_per_peer));
        let deadlines = Arc::new(ArcSwap::from_pointee(Deadlines {
            first_line_timeout: options.first_line_timeout,
            idle_timeout: options.idle_timeout,
            unauthenticated_bytes: options.unauthenticated_bytes,
        }));
        Ingest {
            engine,
            deadlines,
            options,
            shutdown,
            live: None,
            unauthenticated,
            unauthenticated_per_peer,
        }
    }

    /// Hands connections that send a live op (`subscribe`, `join`...) to
    /// `live`. Without it, such ops are answered with `unsupported`.
    pub fn with_live(mut self, live: Arc<dyn LiveUpgrade>) -> Self {
        self.live = Some(live);
        self
    }

    fn accept(&self, transport: Transport) -> Accept {
        let limits = Limits {
            max_connections: self.options.max_connections,
            max_per_peer: self.options.max_connections_per_peer,
        };
        Accept::new(
            &self.engine,
            transport,
            limits,
            self.options.drain_timeout,
            self.shutdown.clone(),
        )
        .with_budget(match transport {
            Transport::Unix => self.options.unix_budget.clone(),
            _ => self.options.budget.clone(),
        })
    }

    /// Changes the deadlines of connections opened from now on (a config
    /// reload); open connections keep theirs.
    pub fn set_deadlines(&self, deadlines: Deadlines) {
        self.deadlines.store(Arc::new(deadlines));
    }

    fn context(&self, transport: Transport) -> ConnectionContext {
        let deadlines = **self.deadlines.load();
        ConnectionContext {
            engine: self.engine.clone(),
            transport,
            limits: busbar_event::Limits {
                max_event_bytes: self.options.max_line_bytes,
                max_depth: self.options.max_depth,
            },
            first_line_timeout: deadlines.first_line_timeout,
            idle_timeout: deadlines.idle_timeout,
            unauthenticated_bytes: deadlines.unauthenticated_bytes,
            live: self.live.clone(),
        }
    }

    /// A slot among the unauthenticated, for a TCP connection when tokens
    /// are configured (`Ok(None)`: nothing to authenticate).
    fn unauthenticated_slot(
        &self,
        ip: std::net::IpAddr,
    ) -> Result<Option<Unauthenticated>, Rejected> {
        if !self.engine.auth().enabled() {
            return Ok(None);
        }
        let peer = match &self.unauthenticated_per_peer {
            Some(peers) => Some(peers.take(ip).ok_or(Rejected::TooManyUnauthenticated {
                limit: peers.limit(),
            })?),
            None => None,
        };
        let permit = self
            .unauthenticated
            .clone()
            .try_acquire_owned()
            .map_err(|_| Rejected::TooManyUnauthenticated {
                limit: self.options.max_unauthenticated,
            })?;
        let gauge = self
            .engine
            .metrics()
            .unauthenticated
            .get([Transport::Tcp.as_str()]);
        gauge.add(1);
        Ok(Some(Unauthenticated {
            _permit: permit,
            _peer: peer,
            gauge,
        }))
    }

    /// Serves one connection over any byte stream as an accepted one is
    /// served: `peer: None` as a caller on the events Unix socket (trusted),
    /// `Some(addr)` as a TCP caller from `addr` (authenticating in its hello
    /// when tokens are configured). The listener's own work (connection
    /// limits, admission, keepalive, draining) is not done. For exercising
    /// the line protocol without a socket.
    #[doc(hidden)]
    pub async fn serve_stream<R, W>(&self, reader: R, mut writer: W, peer: Option<SocketAddr>)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        match peer {
            None => {
                let ctx = self.context(Transport::Unix);
                ctx.serve(reader, writer, Peer::Unix { pid: None }, shutdown, None)
                    .await;
            }
            Some(addr) => {
                let unauthenticated = match self.unauthenticated_slot(addr.ip()) {
                    Ok(slot) => slot,
                    Err(why) => {
                        let _ = writer.write_all(why.json_line().as_bytes()).await;
                        let _ = writer.shutdown().await;
                        return;
                    }
                };
                let ctx = self.context(Transport::Tcp);
                ctx.serve(reader, writer, Peer::Tcp(addr), shutdown, unauthenticated)
                    .await;
            }
        }
    }

    /// Serves the events Unix socket (callers are trusted).
    pub async fn serve_unix(&self, socket: UnixSocket) {
        let ingest = self.clone();
        let shutdown = self.shutdown.clone();
        let accept = self.accept(Transport::Unix);
        accept
            .run(
                || socket.listener().accept(),
                move |stream: UnixStream, _| {
                    let ctx = ingest.context(Transport::Unix);
                    let shutdown = shutdown.clone();
                    let pid = stream.peer_cred().ok().and_then(|c| c.pid());
                    async move {
                        let (r, w) = stream.into_split();
                        ctx.serve(r, w, Peer::Unix { pid }, shutdown, None).await;
                    }
                },
                reject_unix,
            )
            .await;
    }

    /// Serves TCP ingest (callers authenticate in their hello when tokens
    /// are configured).
    pub async fn serve_tcp(&self, listener: TcpListener) {
        let shutdown = self.shutdown.clone();
        let accept = self.accept(Transport::Tcp);
        let ingest = self.clone();
        accept
            .run(
                || listener.accept(),
                move |stream: TcpStream, addr| {
                    let ctx = ingest.context(Transport::Tcp);
                    let shutdown = shutdown.clone();
                    let unauthenticated = ingest.unauthenticated_slot(addr.ip());
                    let engine = ingest.engine.clone();
                    async move {
                        let unauthenticated = match unauthenticated {
                            Ok(slot) => slot,
                            Err(why) => {
                                engine
                                    .metrics()
                                    .connections_rejected
                                    .get([Transport::Tcp.as_str(), why.reason()])
                                    .inc();
                                let _ = tokio::time::timeout(
                                    Duration::from_secs(1),
                                    reject_tcp(stream, why),
                                )
                                .await;
                                return;
                            }
                        };
                        // Acks are small and latency-bound.
                        let _ = stream.set_nodelay(true);
                        let keepalive = socket2::TcpKeepalive::new()
                            .with_time(KEEPALIVE_IDLE)
                            .with_interval(KEEPALIVE_INTERVAL)
                            .with_retries(KEEPALIVE_PROBES);
                        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
                        let (r, w) = stream.into_split();
                        ctx.serve(r, w, Peer::Tcp(addr), shutdown, unauthenticated)
                            .await;
                    }
                },
                reject_tcp,
            )
            .await;
    }
}

/// A TCP connection's place among the unauthenticated, given back once it
/// authenticates (or ends), counted in
/// `busbar_unauthenticated_connections{transport}` meanwhile.
pub(crate) struct Unauthenticated {
    _permit: OwnedSemaphorePermit,
    _peer: Option<PeerSlot>,
    gauge: Arc<Gauge>,
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.gauge.add(-1);
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
