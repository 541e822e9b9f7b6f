//! Grouping parsed lines into one batch per stream, remembering the order
//! the answers must go out in.

use std::borrow::Cow;
use std::sync::Arc;

use busbar_engine::{Engine, EngineError, Principal, Transport};
use busbar_event::{
    parse_line_with, EventBatch, EventError, Limits, LineKind, ParsedEvent, StreamName, StreamNames,
};

use crate::answer::ErrorLine;
use crate::ops::{self, Op};

/// Where one line's answer comes from.
#[derive(Debug)]
pub(crate) enum Slot {
    /// The next id of batch `n`.
    Event(u32),
    /// The line was refused before any append.
    Error(ErrorLine),
    /// A group op, run once batches `..before` are published (events sent
    /// before it are appended before it runs).
    Op { op: Box<Op>, before: u32 },
}

/// Events read from a connection and not yet handed to the publisher.
#[derive(Debug)]
pub(crate) struct Chunk {
    /// Who sent them (each event was checked against it already).
    pub(crate) principal: Principal,
    pub(crate) batches: Vec<(StreamName, EventBatch)>,
    /// One per event line, in order; empty when acks are off.
    pub(crate) slots: Vec<Slot>,
    /// Whether the producer asked for acknowledgements.
    pub(crate) acks: bool,
}

/// Builds [`Chunk`]s for one connection.
pub(crate) struct Batcher {
    engine: Arc<Engine>,
    transport: Transport,
    principal: Principal,
    default_stream: StreamName,
    limits: Limits,
    acks: bool,
    /// Whether a live op hands the connection over (a live hub is
    /// installed) rather than being answered as unsupported.
    live: bool,
    /// No line was pushed yet: even a connection without acks can switch
    /// to the live protocol (its output is still open).
    fresh: bool,
    max_batch: usize,
    /// Chunk size, in record bytes, past which reading pauses until the
    /// publisher takes the chunk (bounds a connection's memory).
    max_chunk_bytes: usize,
    batches: Vec<(StreamName, EventBatch)>,
    slots: Vec<Slot>,
    /// Record bytes in `batches`.
    bytes: usize,
    /// For each stream in the chunk, the batch still being filled.
    open: Vec<(StreamName, u32)>,
    /// Names of the streams this connection published to lately, so an
    /// event naming one does not allocate a new name.
    names: StreamNames,
}

/// Stream names a connection remembers.
const HELD_STREAM_NAMES: usize = 8;

impl Batcher {
    pub(crate) fn new(
        engine: Arc<Engine>,
        transport: Transport,
        principal: Principal,
        limits: Limits,
        acks: bool,
    ) -> Self {
        let default_stream = engine.default_stream(&principal);
        let max_batch = engine.config().max_batch_events.max(1);
        Batcher {
            engine,
            transport,
            principal,
            default_stream,
            limits,
            acks,
            live: false,
            fresh: true,
            max_batch,
            max_chunk_bytes: (4 * 1024 * 1024).max(limits.max_event_bytes * 2),
            batches: Vec::new(),
            slots: Vec::new(),
            bytes: 0,
            open: Vec::new(),
            names: StreamNames::new(HELD_STREAM_NAMES),
        }
    }

    /// Whether live ops hand the connection over (see
    /// [`Batcher::push_line`]).
    pub(crate) fn with_live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }

    /// Who sends the connection's lines.
    pub(crate) fn principal(&self) -> &Principal {
        &self.principal
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batches.is_empty() && self.slots.is_empty()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.bytes >= self.max_chunk_bytes
    }

    /// Hands over the chunk built so far.
    pub(crate) fn take(&mut self) -> Chunk {
        self.open.clear();
        self.bytes = 0;
        Chunk {
            principal: self.principal.clone(),
            batches: std::mem::take(&mut self.batches),
            slots: std::mem::take(&mut self.slots),
            acks: self.acks,
        }
    }

    /// Records a refused line.
    pub(crate) fn refuse(&mut self, error: &EngineError) {
        self.engine.count_error(self.transport, error);
        if self.acks {
            self.slots.push(Slot::Error(ErrorLine::from_engine(error)));
        }
    }

    /// Records a line over the length limit.
    pub(crate) fn too_long(&mut self, len: usize) {
        self.refuse(&EngineError::Event(EventError::TooLarge {
            len,
            limit: self.limits.max_event_bytes,
        }));
    }

    /// What `line` is: an event, an op or neither, decided in the one pass
    /// that parses it as an event ([`parse_line_with`]).
    pub(crate) fn classify<'l>(&mut self, line: &'l [u8]) -> LineKind<'l> {
        parse_line_with(line, &self.limits, &mut self.names)
    }

    /// Parses a line and takes it: see [`Batcher::push_classified`].
    #[cfg(test)]
    pub(crate) fn push_line(&mut self, line: &[u8]) -> bool {
        let kind = self.classify(line);
        self.push_classified(line, kind)
    }

    /// Takes a line already classified: a group op joins the answer order
    /// (and closes the open batches, so later events are appended after it
    /// runs); an event joins its stream's batch.
    ///
    /// Returns `false`, taking nothing, for a live op when live ops hand
    /// the connection over ([`Batcher::with_live`]) and the connection
    /// answers or sent nothing else yet: the caller switches protocols
    /// there.
    pub(crate) fn push_classified(&mut self, line: &[u8], kind: LineKind<'_>) -> bool {
        let fresh = std::mem::replace(&mut self.fresh, false);
        let op = match kind {
            LineKind::Event(event) => {
                match self.try_push(event) {
                    Ok(batch) => {
                        if self.acks {
                            self.slots.push(Slot::Event(batch));
                        }
                    }
                    Err(e) => self.refuse(&e),
                }
                return true;
            }
            LineKind::Invalid(e) => {
                self.refuse(&EngineError::Event(e));
                return true;
            }
            LineKind::Op(name) => ops::decode(line, name.as_deref(), &self.default_stream),
        };
        if self.live && (self.acks || fresh) && matches!(op, Ok(Op::Live { .. })) {
            return false;
        }
        self.push_op(op, line.len());
        true
    }

    fn push_op(&mut self, op: Result<Op, ErrorLine>, len: usize) {
        let transport = self.transport.as_str();
        let count = |reason: &'static str| {
            self.engine
                .metrics()
                .ingest_errors
                .get([transport, reason])
                .inc();
        };
        if !self.acks {
            // Nothing can be written back on this connection.
            count("acks_required");
            return;
        }
        match op {
            Ok(op) => {
                self.open.clear();
                self.bytes += len;
                self.slots.push(Slot::Op {
                    op: Box::new(op),
                    before: self.batches.len() as u32,
                });
            }
            Err(e) => {
                count(e.reason);
                self.slots.push(Slot::Error(e));
            }
        }
    }

    fn try_push(&mut self, event: ParsedEvent<'_>) -> Result<u32, EngineError> {
        // A shorter lifetime, so the event may borrow the principal's tenant.
        let mut event: ParsedEvent<'_> = event;
        // Events of a tenant-bound producer carry its tenant.
        if event.tenant.is_none() {
            if let Some(t) = self.principal.tenant() {
                event.tenant = Some(Cow::Borrowed(t));
            }
        }
        let stream = event.stream.as_ref().unwrap_or(&self.default_stream);
        self.engine
            .check_publish(&self.principal, stream, event.tenant.as_deref())?;
        let index = open_batch(&mut self.open, &mut self.batches, self.max_batch, stream);
        let (_, batch) = &mut self.batches[index as usize];
        let before = batch.encoded_len();
        batch.push_parsed(&event)?;
        self.bytes += batch.encoded_len() - before;
        Ok(index)
    }
}

/// The index of the batch that takes the next event of `stream`: the open
/// one, or a new one when there is none or it is full.
fn open_batch(
    open: &mut Vec<(StreamName, u32)>,
    batches: &mut Vec<(StreamName, EventBatch)>,
    max_batch: usize,
    stream: &StreamName,
) -> u32 {
    if let Some(at) = open.iter().position(|(s, _)| s == stream) {
        let index = open[at].1;
        if batches[index as usize].1.len() < max_batch {
            return index;
        }
        open.swap_remove(at);
    }
    let index = batches.len() as u32;
    batches.push((stream.clone(), EventBatch::with_capacity(64 * 1024)));
    open.push((stream.clone(), index));
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use busbar_engine::{Auth, EngineConfig};
    use busbar_store::memory::MemoryStore;

    fn limits() -> Limits {
        Limits {
            max_event_bytes: 1024,
            ..Limits::default()
        }
    }

    fn engine(max_batch_events: usize) -> Arc<Engine> {
        Engine::builder(Arc::new(MemoryStore::new()))
            .auth(Auth::default())
            .config(EngineConfig {
                max_batch_events,
                ..EngineConfig::default()
            })
            .build()
    }

    #[test]
    fn groups_by_stream_in_order_and_splits_at_the_batch_limit() {
        let mut b = Batcher::new(
            engine(2),
            Transport::Unix,
            Principal::Trusted,
            limits(),
            true,
        );
        for line in [
            &br#"{"type":"a"}"#[..],
            br#"{"type":"b","stream":"s2"}"#,
            br#"not json"#,
            br#"{"type":"c"}"#,
            br#"{"type":"d"}"#,
        ] {
            b.push_line(line);
        }
        let chunk = b.take();
        let names: Vec<_> = chunk
            .batches
            .iter()
            .map(|(s, b)| (s.as_str().to_owned(), b.len()))
            .collect();
        assert_eq!(
            names,
            [
                ("events".to_owned(), 2),
                ("s2".to_owned(), 1),
                ("events".to_owned(), 1)
            ]
        );
        let order: Vec<String> = chunk
            .slots
            .iter()
            .map(|s| match s {
                Slot::Event(i) => i.to_string(),
                Slot::Error(e) => e.reason.to_owned(),
                Slot::Op { before, .. } => format!("op<{before}"),
            })
            .collect();
        assert_eq!(order, ["0", "1", "malformed_json", "0", "2"]);
        assert!(b.is_empty());
    }

    #[test]
    fn without_acks_no_slots_are_kept() {
        let mut b = Batcher::new(engine(10), Transport::Tcp, Principal::Open, limits(), false);
        b.push_line(br#"{"type":"a"}"#);
        b.push_line(b"{");
        let chunk = b.take();
        assert!(chunk.slots.is_empty());
        assert_eq!(chunk.batches.len(), 1);
    }
}
