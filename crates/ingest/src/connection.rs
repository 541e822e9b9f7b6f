//! One producer connection: hello, reading and batching on one side,
//! publishing and answering on the other, joined by a bounded queue; and
//! the hand-over to the live hub when the connection sends a live op.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{Engine, Principal, Transport};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, watch};
// Deadlines on the clock of the timers that wait for them: on another
// clock they pass early (or late) whenever the runtime's time is not the
// wall clock's, as in a paused test runtime.
use tokio::time::Instant;

use crate::answer::ErrorLine;
use crate::batcher::{Batcher, Chunk};
use crate::hello::First;
use crate::lines::{is_blank, Line, LineSplitter};
use crate::listener::Unauthenticated;
use crate::live::{LiveConnection, LiveUpgrade};

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 64 * 1024;

/// Chunks waiting for the publisher. One is enough: while the publisher
/// works, the reader keeps growing the next chunk, which is what turns a
/// fast producer's lines into large appends.
const QUEUE_CHUNKS: usize = 1;

/// Consecutive ops handed to the engine at once.
pub(crate) const MAX_OPS_IN_FLIGHT: usize = 64;

/// How long a closing connection keeps reading (and dropping) input so the
/// close does not reset it.
const DISCARD_BEFORE_CLOSE: std::time::Duration = std::time::Duration::from_millis(500);

/// What the reader hands the publisher.
pub(crate) enum Work {
    Chunk(Chunk),
    /// Answer this and close (bad hello, bad token).
    Refuse(ErrorLine),
    /// Everything before was answered: hand the writer back for the live
    /// hub.
    Live,
}

/// What the reader keeps when the connection switches to the live
/// protocol.
struct Switch {
    principal: Principal,
    /// The live op's line (with its `\n`), then the bytes read after it.
    buffered: BytesMut,
}

/// Who is on the other end, for the live hub's socket list.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Peer {
    Tcp(SocketAddr),
    Unix { pid: Option<i32> },
}

impl Peer {
    fn describe(self) -> String {
        match self {
            Peer::Tcp(addr) => addr.to_string(),
            Peer::Unix { pid: Some(pid) } => format!("unix:pid={pid}"),
            Peer::Unix { pid: None } => "unix".to_owned(),
        }
    }
}

/// Per-connection settings.
#[derive(Clone)]
pub(crate) struct ConnectionContext {
    pub(crate) engine: Arc<Engine>,
    pub(crate) transport: Transport,
    /// The line size (`max_event_bytes`) and depth limits of every line.
    pub(crate) limits: busbar_event::Limits,
    /// See [`crate::IngestOptions::first_line_timeout`].
    pub(crate) first_line_timeout: Duration,
    /// See [`crate::IngestOptions::idle_timeout`] (zero: never).
    pub(crate) idle_timeout: Duration,
    /// See [`crate::IngestOptions::unauthenticated_bytes`].
    pub(crate) unauthenticated_bytes: usize,
    /// Where connections that send a live op go; without it such ops are
    /// answered `unsupported`.
    pub(crate) live: Option<Arc<dyn LiveUpgrade>>,
}

impl ConnectionContext {
    /// Serves one connection until the producer closes, the connection
    /// fails, or `shutdown` fires; every event read is published and, with
    /// acks on, answered before this returns. A connection that switches
    /// to the live protocol is served by the live hub until it ends.
    pub(crate) async fn serve<R, W>(
        &self,
        reader: R,
        writer: W,
        peer: Peer,
        shutdown: watch::Receiver<bool>,
        unauthenticated: Option<Unauthenticated>,
    ) where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        let mut reader = reader;
        // Chunks handed to the publisher and not answered yet: a connection
        // waiting for its answers (a blocking group read) is not idle.
        let busy = AtomicUsize::new(0);
        let (switch, writer) = tokio::join!(
            self.read_side(&mut reader, tx, shutdown.clone(), unauthenticated, &busy),
            self.publish_side(writer, rx, &busy)
        );
        if let (Some(switch), Some(writer), Some(live)) = (switch, writer, &self.live) {
            let conn = LiveConnection {
                transport: self.transport,
                principal: switch.principal,
                remote: peer.describe(),
                buffered: switch.buffered,
                reader: Box::new(reader),
                writer: Box::new(writer),
                shutdown,
            };
            live.clone().upgrade(conn).await;
            return;
        }
        // Closing a TCP socket with unread input sends a reset, which can
        // destroy answers still on their way to the producer (a refusal, the
        // last acks of a drain). Read and drop its input briefly first.
        let _ = tokio::time::timeout(DISCARD_BEFORE_CLOSE, discard(&mut reader)).await;
    }

    /// Reads, splits and batches lines until the end of the input, a
    /// refusal, a deadline, or a live op; returns what the live hub needs
    /// in that last case.
    ///
    /// Until its first line is understood a connection has
    /// `first_line_timeout` to send it; an unauthenticated one (TCP with
    /// tokens) may send at most `unauthenticated_bytes` of it, and holds its
    /// place among the unauthenticated until then. After that it may be
    /// silent for `idle_timeout` at most.
    async fn read_side<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        tx: mpsc::Sender<Work>,
        mut shutdown: watch::Receiver<bool>,
        mut unauthenticated: Option<Unauthenticated>,
        busy: &AtomicUsize,
    ) -> Option<Switch> {
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let first_limit = match unauthenticated {
            Some(_) => self.unauthenticated_bytes.min(self.limits.max_event_bytes),
            None => self.limits.max_event_bytes,
        };
        let mut splitter = LineSplitter::new(first_limit);
        let mut batcher: Option<Batcher> = None;
        let mut refused: Option<ErrorLine> = None;
        // The live op's line, once one is read.
        let mut switch: Option<BytesMut> = None;
        let mut eof = false;
        // Whether the first line was understood (a hello, or an event or op).
        let mut started = false;
        let opened = Instant::now();
        let mut last_heard = opened;
        while !eof {
            let has_work = batcher.as_ref().is_some_and(|b| !b.is_empty());
            let full = batcher.as_ref().is_some_and(Batcher::is_full);
            let deadline = if !started {
                Some((opened + self.first_line_timeout, "first_line"))
            } else if !self.idle_timeout.is_zero() {
                Some((last_heard + self.idle_timeout, "idle"))
            } else {
                None
            };
            tokio::select! {
                biased;
                permit = tx.reserve(), if has_work => {
                    let Ok(permit) = permit else { return None };
                    if let Some(b) = batcher.as_mut() {
                        busy.fetch_add(1, Ordering::AcqRel);
                        permit.send(Work::Chunk(b.take()));
                    }
                    continue;
                }
                _ = busbar_listen::stopped(&mut shutdown) => break,
                read = read_more(reader, &mut buf), if !full => match read {
                    Ok(0) => eof = true,
                    Ok(_) => last_heard = Instant::now(),
                    Err(e) => {
                        tracing::debug!(transport = self.transport.as_str(), error = %e, "ingest connection read failed");
                        break;
                    }
                },
                () = sleep_until(deadline), if deadline.is_some() => {
                    let which = deadline.map_or("idle", |(_, which)| which);
                    if which == "idle" && busy.load(Ordering::Acquire) > 0 {
                        // Waiting for its answers, not idle: look again later.
                        last_heard = Instant::now();
                        continue;
                    }
                    self.timed_out(which, batcher.as_mut(), &tx).await;
                    return None;
                }
            }
            // Split what was read; an unauthenticated connection stops at
            // its first line, and the rest is split again with the full
            // line limit once it is known who sent it.
            loop {
                let mut resplit = false;
                splitter.split(&mut buf, eof, |line| {
                    if refused.is_some() {
                        return true;
                    }
                    let mut classified = None;
                    let b = match &mut batcher {
                        Some(b) => b,
                        None => {
                            let first = match line {
                                Line::Text(text) if is_blank(text) => return true,
                                Line::Text(text) => self.first_line(text),
                                // Too long to be a hello: the first event.
                                Line::TooLong { .. } => self.no_hello(None),
                            };
                            started = true;
                            resplit = unauthenticated.is_some();
                            match first {
                                First::Hello { acks, principal } => {
                                    batcher = Some(self.batcher(principal, acks));
                                    return !resplit;
                                }
                                First::Line {
                                    acks,
                                    principal,
                                    kind,
                                } => {
                                    classified = kind;
                                    batcher.insert(self.batcher(principal, acks))
                                }
                                First::Refuse(e) => {
                                    refused = Some(e);
                                    resplit = false;
                                    return true;
                                }
                            }
                        }
                    };
                    match line {
                        Line::Text(text) if is_blank(text) => !resplit,
                        Line::Text(text) => {
                            let kind = classified.take().unwrap_or_else(|| b.classify(text));
                            if b.push_classified(text, kind) {
                                return !resplit;
                            }
                            // A live op: the rest of the input is the live hub's.
                            let mut first = BytesMut::with_capacity(text.len() + 1);
                            first.extend_from_slice(text);
                            first.extend_from_slice(b"\n");
                            switch = Some(first);
                            resplit = false;
                            false
                        }
                        Line::TooLong { len } => {
                            b.too_long(len);
                            !resplit
                        }
                    }
                });
                if !resplit {
                    break;
                }
                // Known now: its place among the unauthenticated goes back.
                unauthenticated = None;
                splitter.set_limit(self.limits.max_event_bytes);
            }
            if let Some(e) = refused.take() {
                let _ = tx.send(Work::Refuse(e)).await;
                return None;
            }
            if let Some(mut buffered) = switch.take() {
                // Only a batcher's `push_line` asks for the switch.
                let mut b = batcher.take()?;
                if !b.is_empty() {
                    tx.send(Work::Chunk(b.take())).await.ok()?;
                }
                tx.send(Work::Live).await.ok()?;
                buffered.extend_from_slice(&buf);
                return Some(Switch {
                    principal: b.principal().clone(),
                    buffered,
                });
            }
        }
        // Whatever was read before the end is published and answered.
        if let Some(mut b) = batcher {
            if !b.is_empty() {
                let _ = tx.send(Work::Chunk(b.take())).await;
            }
        }
        None
    }

    /// Ends a connection past a deadline: what it sent is still published
    /// and answered, then it is told why it is closed.
    async fn timed_out(
        &self,
        which: &'static str,
        batcher: Option<&mut Batcher>,
        tx: &mpsc::Sender<Work>,
    ) {
        self.engine
            .metrics()
            .connection_timeouts
            .get([self.transport.as_str(), which])
            .inc();
        let (reason, message) = match which {
            "first_line" => (
                "first_line_timeout",
                format!(
                    "no complete first line within {} ms; send the hello (or the first event) at once",
                    self.first_line_timeout.as_millis()
                ),
            ),
            _ => (
                "idle_timeout",
                format!(
                    "nothing received for {} ms; the connection is closed",
                    self.idle_timeout.as_millis()
                ),
            ),
        };
        tracing::debug!(
            transport = self.transport.as_str(),
            reason,
            "closing a connection past its deadline"
        );
        if let Some(b) = batcher {
            if !b.is_empty() {
                let _ = tx.send(Work::Chunk(b.take())).await;
            }
        }
        let _ = tx.send(Work::Refuse(ErrorLine::new(reason, message))).await;
    }

    fn batcher(&self, principal: Principal, acks: bool) -> Batcher {
        Batcher::new(
            self.engine.clone(),
            self.transport,
            principal,
            self.limits,
            acks,
        )
        .with_live(self.live.is_some())
    }
}

/// Resolves at `deadline` (never without one).
async fn sleep_until(deadline: Option<(Instant, &'static str)>) {
    match deadline {
        Some((at, _)) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn read_more<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    buf.reserve(READ_SIZE);
    reader.read_buf(buf).await
}

async fn discard<R: AsyncRead + Unpin>(reader: &mut R) {
    let mut sink = [0u8; 8192];
    while let Ok(n) = reader.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}
