//! One producer connection: hello, reading and batching on one side,
//! publishing and answering on the other, joined by a bounded queue; and
//! the hand-over to the live hub when the connection sends a live op.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use busbar_engine::{Engine, EngineError, Principal, Transport};
use busbar_event::{EventBatch, EventId, LineKind, StreamName, StreamNames};
use busbar_store::AppendOptions;
use bytes::BytesMut;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::answer::{error_line, id_line, ErrorLine};
use crate::batcher::{Batcher, Chunk, Slot};
use crate::lines::{is_blank, Line, LineSplitter};
use crate::live::{LiveConnection, LiveUpgrade};
use crate::ops::{self, Op};

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 64 * 1024;

/// Chunks waiting for the publisher. One is enough: while the publisher
/// works, the reader keeps growing the next chunk, which is what turns a
/// fast producer's lines into large appends.
const QUEUE_CHUNKS: usize = 1;

/// Consecutive ops handed to the engine at once.
const MAX_OPS_IN_FLIGHT: usize = 64;

/// How long a closing connection keeps reading (and dropping) input so the
/// close does not reset it.
const DISCARD_BEFORE_CLOSE: std::time::Duration = std::time::Duration::from_millis(500);

/// What the reader hands the publisher.
enum Work {
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
    /// Where connections that send a live op go; without it such ops are
    /// answered `unsupported`.
    pub(crate) live: Option<Arc<dyn LiveUpgrade>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hello {
    #[serde(default)]
    acks: bool,
    #[serde(default)]
    token: Option<String>,
}

/// The first line: a hello, or the first event or op.
enum First<'a> {
    Hello {
        acks: bool,
        principal: Principal,
    },
    /// Not a hello: answered when it is an op (`kind` says what it is,
    /// so the line is not parsed again).
    Line {
        acks: bool,
        principal: Principal,
        kind: Option<LineKind<'a>>,
    },
    Refuse(ErrorLine),
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
    ) where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        let mut reader = reader;
        let (switch, writer) = tokio::join!(
            self.read_side(&mut reader, tx, shutdown.clone()),
            self.publish_side(writer, rx)
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

    fn first_line<'l>(&self, line: &'l [u8]) -> First<'l> {
        let auth = self.engine.auth();
        let principal_for = |token: Option<&str>| -> Result<Principal, EngineError> {
            match self.transport {
                // The socket's file mode is the access control.
                Transport::Unix => Ok(Principal::Trusted),
                _ => auth.authenticate(token),
            }
        };
        if let Some(hello) = parse_hello(line, self.limits.max_depth) {
            return match hello {
                Ok(h) => match principal_for(h.token.as_deref()) {
                    Ok(principal) => First::Hello {
                        acks: h.acks,
                        principal,
                    },
                    Err(e) => {
                        self.engine.count_error(self.transport, &e);
                        First::Refuse(ErrorLine::from_engine(&e))
                    }
                },
                Err(message) => {
                    self.engine
                        .metrics()
                        .ingest_errors
                        .get([self.transport.as_str(), "bad_hello"])
                        .inc();
                    First::Refuse(ErrorLine::new("bad_hello", message))
                }
            };
        }
        // A connection that opens with a group op wants answers.
        let kind = busbar_event::parse_line_with(line, &self.limits, &mut StreamNames::new(1));
        self.no_hello(Some(kind))
    }

    /// A connection whose first line is not a hello (`kind`: what it is,
    /// when it fit in a line).
    fn no_hello<'l>(&self, kind: Option<LineKind<'l>>) -> First<'l> {
        let principal = match self.transport {
            Transport::Unix => Ok(Principal::Trusted),
            _ => self.engine.auth().authenticate(None),
        };
        let acks = matches!(kind, Some(LineKind::Op(_)));
        match principal {
            Ok(principal) => First::Line {
                acks,
                principal,
                kind,
            },
            Err(e) => {
                self.engine.count_error(self.transport, &e);
                First::Refuse(ErrorLine::new(
                    e.reason(),
                    format!("{e}: send {{\"hello\":{{\"token\":\"<secret>\"}}}} as the first line"),
                ))
            }
        }
    }

    /// Reads, splits and batches lines until the end of the input, a
    /// refusal, or a live op; returns what the live hub needs in that last
    /// case.
    async fn read_side<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        tx: mpsc::Sender<Work>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<Switch> {
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let mut splitter = LineSplitter::new(self.limits.max_event_bytes);
        let mut batcher: Option<Batcher> = None;
        let mut refused: Option<ErrorLine> = None;
        // The live op's line, once one is read.
        let mut switch: Option<BytesMut> = None;
        let mut eof = false;
        while !eof {
            let has_work = batcher.as_ref().is_some_and(|b| !b.is_empty());
            let full = batcher.as_ref().is_some_and(Batcher::is_full);
            tokio::select! {
                biased;
                permit = tx.reserve(), if has_work => {
                    let Ok(permit) = permit else { return None };
                    if let Some(b) = batcher.as_mut() {
                        permit.send(Work::Chunk(b.take()));
                    }
                    continue;
                }
                _ = busbar_listen::stopped(&mut shutdown) => break,
                read = read_more(reader, &mut buf), if !full => match read {
                    Ok(0) => eof = true,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(transport = self.transport.as_str(), error = %e, "ingest connection read failed");
                        break;
                    }
                },
            }
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
                        match first {
                            First::Hello { acks, principal } => {
                                batcher = Some(self.batcher(principal, acks));
                                return true;
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
                                return true;
                            }
                        }
                    }
                };
                match line {
                    Line::Text(text) if is_blank(text) => true,
                    Line::Text(text) => {
                        let kind = classified.take().unwrap_or_else(|| b.classify(text));
                        if b.push_classified(text, kind) {
                            return true;
                        }
                        // A live op: the rest of the input is the live hub's.
                        let mut first = BytesMut::with_capacity(text.len() + 1);
                        first.extend_from_slice(text);
                        first.extend_from_slice(b"\n");
                        switch = Some(first);
                        false
                    }
                    Line::TooLong { len } => {
                        b.too_long(len);
                        true
                    }
                }
            });
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

    /// Publishes and answers what the reader hands over; returns the
    /// writer, flushed, when the connection switches to the live protocol.
    async fn publish_side<W: AsyncWrite + Unpin>(
        &self,
        mut writer: W,
        mut rx: mpsc::Receiver<Work>,
    ) -> Option<W> {
        let mut out = Vec::with_capacity(16 * 1024);
        let mut writable = true;
        while let Some(work) = rx.recv().await {
            out.clear();
            match work {
                Work::Live => {
                    // Only a connection that answers switches, and the
                    // reader sends nothing after this.
                    if writable && writer.flush().await.is_ok() {
                        return Some(writer);
                    }
                    return None;
                }
                Work::Refuse(e) => {
                    error_line(&mut out, &e);
                    if writable {
                        let _ = writer.write_all(&out).await;
                    }
                    break;
                }
                Work::Chunk(chunk) => {
                    if !chunk.acks && writable {
                        // Nothing will ever be written back: say so now, so
                        // a client like `echo .. | nc -U` that waits for the
                        // server's end exits once its input is sent.
                        let _ = writer.shutdown().await;
                        writable = false;
                    }
                    self.answer_chunk(chunk, &mut writer, &mut writable, &mut out)
                        .await;
                }
            }
        }
        if writable {
            let _ = writer.flush().await;
            let _ = writer.shutdown().await;
        }
        None
    }

    /// Publishes a chunk's batches and runs its ops in line order, writing
    /// one answer per line (when acks are on). Events before an op are
    /// appended before it runs; answers due before an op that may block are
    /// written before it waits.
    async fn answer_chunk<W: AsyncWrite + Unpin>(
        &self,
        chunk: Chunk,
        writer: &mut W,
        writable: &mut bool,
        out: &mut Vec<u8>,
    ) {
        let mut publisher = Publisher {
            ctx: self,
            principal: &chunk.principal,
            batches: chunk.batches.into_iter(),
            results: Vec::new(),
            cursors: Vec::new(),
        };
        let mut slots = chunk.slots.into_iter().peekable();
        while let Some(slot) = slots.next() {
            match slot {
                Slot::Error(e) => error_line(out, &e),
                Slot::Event(i) => {
                    let i = i as usize;
                    publisher.publish_through(i + 1).await;
                    match &publisher.results[i] {
                        Ok(batch_ids) => {
                            id_line(out, batch_ids[publisher.cursors[i]]);
                            publisher.cursors[i] += 1;
                        }
                        Err(e) => error_line(out, e),
                    }
                }
                Slot::Op { op, before } => {
                    publisher.publish_through(before as usize).await;
                    // Ops that follow with no event between run with it.
                    let mut run = vec![*op];
                    while run.len() < MAX_OPS_IN_FLIGHT {
                        match slots.next_if(|s| matches!(s, Slot::Op { .. })) {
                            Some(Slot::Op { op, .. }) => run.push(*op),
                            _ => break,
                        }
                    }
                    if !*writable {
                        // Nobody would receive delivered events.
                        run.retain(|op| !op.delivers());
                    }
                    self.run_ops(run, &chunk.principal, writer, writable, out)
                        .await;
                }
            }
        }
        publisher.publish_through(usize::MAX).await;
        if *writable && !out.is_empty() {
            self.write_answers(writer, writable, out).await;
        }
    }

    /// Runs consecutive ops, answering in order. Ops up to the next one
    /// that may block are handed to the engine together, so a store that
    /// group-commits makes them durable with one sync (an ack and the read
    /// pipelined after it). A read that may block is first tried without
    /// waiting; when it finds nothing, the answers before it are written
    /// and it waits.
    async fn run_ops<W: AsyncWrite + Unpin>(
        &self,
        ops: Vec<Op>,
        principal: &Principal,
        writer: &mut W,
        writable: &mut bool,
        out: &mut Vec<u8>,
    ) {
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let mut group = Vec::new();
            for op in ops.by_ref() {
                let blocks = op.may_block();
                group.push(op);
                if blocks {
                    break;
                }
            }
            let tries = group
                .into_iter()
                .map(|op| ops::run_now(&self.engine, self.transport, principal, op));
            for (answer, waiting) in join_in_order(tries.collect()).await {
                out.extend_from_slice(&answer);
                if let Some(op) = waiting {
                    if *writable && !out.is_empty() {
                        self.write_answers(writer, writable, out).await;
                    }
                    ops::run(&self.engine, self.transport, principal, op, out).await;
                }
            }
        }
    }

    async fn write_answers<W: AsyncWrite + Unpin>(
        &self,
        writer: &mut W,
        writable: &mut bool,
        out: &mut Vec<u8>,
    ) {
        if let Err(e) = writer.write_all(out).await {
            // The producer is gone; what it sent is still published, only
            // the answers are dropped.
            tracing::debug!(transport = self.transport.as_str(), error = %e, "cannot write answers");
            *writable = false;
        }
        out.clear();
    }
}

/// Awaits every future, polling them in order (so each reaches the engine
/// in line order), and returns their outputs in order.
async fn join_in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (f, o) in futures.iter_mut().zip(outputs.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => all = false,
                }
            }
        }
        if all {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Publishes a chunk's batches in order, as far as the answers need.
struct Publisher<'a> {
    ctx: &'a ConnectionContext,
    principal: &'a Principal,
    batches: std::vec::IntoIter<(StreamName, EventBatch)>,
    results: Vec<Result<Vec<EventId>, ErrorLine>>,
    /// For each published batch, how many of its ids are answered.
    cursors: Vec<usize>,
}

impl Publisher<'_> {
    /// Publishes batches until `n` of them are (or none are left).
    async fn publish_through(&mut self, n: usize) {
        while self.results.len() < n {
            let Some((stream, batch)) = self.batches.next() else {
                return;
            };
            let result = self
                .ctx
                .engine
                .publish(
                    self.principal,
                    &stream,
                    batch,
                    AppendOptions::default(),
                    self.ctx.transport,
                )
                .await
                .map_err(|e| ErrorLine::from_engine(&e));
            self.results.push(result);
            self.cursors.push(0);
        }
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

/// `Some` when the line is a hello: `Ok` if understood, `Err(message)` if
/// it names `hello` but is not a valid one. A line past the limits
/// (`max_depth`, the number rules) is no hello: it is then refused as the
/// event or op it claims to be, for that reason.
fn parse_hello(line: &[u8], max_depth: usize) -> Option<Result<Hello, String>> {
    // Cheap test first: most first lines are events.
    memchr::memmem::find(line, b"\"hello\"")?;
    busbar_event::check_json(line, max_depth).ok()?;
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let object = value.as_object()?;
    let hello = object.get("hello")?;
    if object.len() != 1 {
        return Some(Err(
            "a hello line holds only {\"hello\":{\"acks\":bool,\"token\":string}}".to_owned(),
        ));
    }
    Some(Hello::deserialize(hello).map_err(|e| {
        format!("invalid hello: {e}; expected {{\"hello\":{{\"acks\":bool,\"token\":string}}}}")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_detection() {
        assert!(parse_hello(br#"{"type":"t"}"#, 64).is_none());
        assert!(parse_hello(br#"{"type":"t","data":"hello"}"#, 64).is_none());
        assert!(parse_hello(br#"{"type":"t","hello":1}"#, 64)
            .unwrap()
            .is_err());
        let h = parse_hello(br#"{"hello":{"acks":true,"token":"x"}}"#, 64)
            .unwrap()
            .unwrap();
        assert!(h.acks);
        assert_eq!(h.token.as_deref(), Some("x"));
        assert!(!parse_hello(br#"{"hello":{}}"#, 64).unwrap().unwrap().acks);
        assert!(parse_hello(br#"{"hello":{"ack":true}}"#, 64)
            .unwrap()
            .is_err());
        // Past the limits a line is not read as a hello at all.
        let deep = format!(
            r#"{{"hello":{{"acks":true}},"x":{}{}}}"#,
            "[".repeat(8),
            "]".repeat(8)
        );
        assert!(parse_hello(deep.as_bytes(), 64).unwrap().is_err());
        assert!(parse_hello(deep.as_bytes(), 4).is_none());
        assert!(parse_hello(br#"{"hello":{"acks":true},"n":1e999}"#, 64).is_none());
    }
}
