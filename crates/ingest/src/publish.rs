//! The publishing side of an ingest connection: it takes what the reader
//! batched, appends the batches and runs the ops in line order, and writes
//! exactly one answer per line (when the producer asked for answers).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use busbar_engine::Principal;
use busbar_event::{EventBatch, StreamName};
use busbar_store::{AppendOptions, Appended};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::answer::{duplicate_line, error_line, id_line, ErrorLine};
use crate::batcher::{Chunk, Slot};
use crate::connection::{ConnectionContext, Work, MAX_OPS_IN_FLIGHT};
use crate::ops::{self, Op};

impl ConnectionContext {
    /// Publishes and answers what the reader hands over; returns the
    /// writer, flushed, when the connection switches to the live protocol.
    pub(crate) async fn publish_side<W: AsyncWrite + Unpin>(
        &self,
        mut writer: W,
        mut rx: mpsc::Receiver<Work>,
        busy: &AtomicUsize,
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
                    busy.fetch_sub(1, Ordering::AcqRel);
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
                        Ok(appended) => {
                            let at = publisher.cursors[i];
                            if appended.is_duplicate(at) {
                                duplicate_line(out, appended.ids[at]);
                            } else {
                                id_line(out, appended.ids[at]);
                            }
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
    results: Vec<Result<Appended, ErrorLine>>,
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
                .publish_detailed(
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
