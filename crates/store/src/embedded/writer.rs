//! The writer thread: the only code that writes segment files.
//!
//! Requests arrive on a bounded queue. The thread takes everything queued
//! (up to a cap), writes each append to its stream's active segment, then
//! *commits*: one `fdatasync` per touched file (policy `always`), publishes
//! the new events to readers, and answers every waiting appender. Appends
//! that arrive while a commit's `fdatasync` runs queue up and share the next
//! one — group commit.
//!
//! Trims, deletions, rotations, stream deletion and syncs are barriers:
//! pending appends are committed first, then the operation runs alone and
//! is committed as a group of its own before it is answered.
//!
//! A write that fails fails alone; a sync that fails fails its whole group
//! and the streams it touched are recovered from disk ([`super::repair`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_event::{now_ms, EventBatch, EventId, StreamName, FRAME_HEADER_LEN};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

use super::files::{new_stream, roll, WStream};
use super::repair::health_of;
use super::reserve::Reserve;
use super::stream::StreamHandle;
use super::EmbeddedConfig;
use crate::dedup::Deduper;
use crate::ids::{assign_ids, check_ids};
use crate::trim::is_approx;
use crate::{Appended, Durability, Result, Rotated, StoreError, Trim, WriteHealth};

/// Most requests taken into one commit.
const MAX_OPS_PER_COMMIT: usize = 4096;

pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// Answers a group operation once its records are committed (or failed).
pub(crate) type Finish = Box<dyn FnOnce(Result<()>) + Send>;

/// A group operation run on the writer thread.
pub(crate) type GroupRun = Box<dyn FnOnce(&mut super::groups::WriterHost<'_>) -> Finish + Send>;

/// A request to the writer.
pub(crate) enum Op {
    Append {
        stream: StreamName,
        batch: EventBatch,
        trim: Option<Trim>,
        /// [`crate::AppendOptions::dedup`].
        dedup: bool,
        reply: Reply<Appended>,
    },
    Trim {
        stream: StreamName,
        trim: Trim,
        reply: Reply<u64>,
    },
    Delete {
        stream: StreamName,
        ids: Vec<EventId>,
        reply: Reply<u64>,
    },
    Rotate {
        stream: StreamName,
        reply: Reply<Rotated>,
    },
    DeleteStream {
        stream: StreamName,
        reply: Reply<bool>,
    },
    Sync {
        reply: Reply<()>,
    },
    /// A consumer-group operation (creating the stream first if `create`).
    Group {
        stream: StreamName,
        create: bool,
        run: GroupRun,
    },
    /// Time passed: an `interval` fsync may be due.
    Tick,
    Close {
        reply: Reply<()>,
    },
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Op::Append { .. } => "Append",
            Op::Trim { .. } => "Trim",
            Op::Delete { .. } => "Delete",
            Op::Rotate { .. } => "Rotate",
            Op::DeleteStream { .. } => "DeleteStream",
            Op::Sync { .. } => "Sync",
            Op::Group { .. } => "Group",
            Op::Tick => "Tick",
            Op::Close { .. } => "Close",
        };
        f.write_str(name)
    }
}

/// State shared between the writer and readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub streams: RwLock<BTreeMap<StreamName, Arc<StreamHandle>>>,
    pub streams_dir: PathBuf,
    pub trash_dir: PathBuf,
    /// What [`crate::Store::write_health`] answers.
    pub health: Mutex<WriteHealth>,
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub config: EmbeddedConfig,
    pub streams: BTreeMap<StreamName, WStream>,
    pub rx: mpsc::Receiver<Op>,
    /// Appends written and waiting for the commit, by stream.
    pub(crate) waiting: Vec<(StreamName, Reply<Appended>, Appended)>,
    /// Group operations waiting for the commit, by stream.
    pub(crate) finishers: Vec<(StreamName, Finish)>,
    /// Reused buffer for encoding group records.
    pub(crate) scratch: Vec<u8>,
    pub(crate) pending_events: usize,
    pub(crate) dirs_to_sync: Vec<PathBuf>,
    /// Streams that sealed a segment since retention last ran.
    pub(crate) rolled: Vec<StreamName>,
    /// Approximate trims requested with appends, run after the commit.
    pub(crate) approx_trims: Vec<(StreamName, Trim)>,
    pub(crate) last_sync: Instant,
    /// What the last write of this group made of the store's health.
    pub(crate) last_write: Option<WriteHealth>,
    /// Streams broken during this group: none of their writes in it is
    /// acknowledged, and they are recovered at its commit.
    pub(crate) broken_in_group: Vec<StreamName>,
    /// Acknowledged events a recovery cut off since the last
    /// [`Writer::sync_all`]: the next one reports them.
    pub(crate) lost_since_sync: Option<StoreError>,
    pub(crate) closed: bool,
    pub(crate) reserve: Reserve,
    /// The duplicate window's settings and secret; each stream's window is
    /// in its [`WStream`].
    pub(crate) dedup: Arc<Deduper>,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        config: EmbeddedConfig,
        streams: BTreeMap<StreamName, WStream>,
        rx: mpsc::Receiver<Op>,
        reserve: Reserve,
    ) -> Self {
        let dedup = Arc::new(Deduper::new(config.dedup, config.metrics.clone()));
        Writer {
            dedup,
            shared,
            config,
            streams,
            rx,
            waiting: Vec::new(),
            finishers: Vec::new(),
            scratch: Vec::new(),
            pending_events: 0,
            dirs_to_sync: Vec::new(),
            rolled: Vec::new(),
            approx_trims: Vec::new(),
            last_sync: Instant::now(),
            last_write: None,
            broken_in_group: Vec::new(),
            lost_since_sync: None,
            closed: false,
            reserve,
        }
    }

    pub(crate) fn run(mut self) {
        let mut ops = Vec::with_capacity(64);
        while let Some(op) = self.rx.blocking_recv() {
            ops.push(op);
            while ops.len() < MAX_OPS_PER_COMMIT {
                match self.rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            self.watch_space();
            for op in ops.drain(..) {
                if let Some(reply) = self.handle(op) {
                    let result = self.close();
                    let _ = reply.send(result);
                    return;
                }
            }
            self.commit();
            self.apply_retention();
        }
        let _ = self.close();
    }

    /// Handles one request; returns the reply of a `Close`.
    fn handle(&mut self, op: Op) -> Option<Reply<()>> {
        if self.closed {
            if let Op::Group { stream, run, .. } = op {
                let finish = self.run_group(stream, run);
                finish(Err(StoreError::Closed));
            } else {
                fail_op(op);
            }
            return None;
        }
        let op = self.refuse_when_full(op)?;
        match op {
            Op::Group {
                stream,
                create,
                run,
            } => {
                if create {
                    if let Err(e) = self.stream_for_append(&stream) {
                        tracing::error!(stream = %stream, error = %e, "cannot create stream");
                    }
                }
                let finish = self.run_group(stream.clone(), run);
                self.finishers.push((stream, finish));
            }
            Op::Append {
                stream,
                batch,
                trim: None,
                dedup,
                reply,
            } => match self.append(&stream, batch, dedup) {
                Ok(ids) => self.waiting.push((stream, reply, ids)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Op::Append {
                stream,
                batch,
                trim: Some(trim),
                dedup,
                reply,
            } if is_approx(trim) => match self.append(&stream, batch, dedup) {
                // Approximate trims only drop whole sealed segments: they run
                // after the commit and do not break up the group.
                Ok(ids) => {
                    self.waiting.push((stream.clone(), reply, ids));
                    self.approx_trims.push((stream, trim));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Op::Append {
                stream,
                batch,
                trim: Some(trim),
                dedup,
                reply,
            } => {
                let result = self.append(&stream, batch, dedup).and_then(|ids| {
                    // The append is in this group: it is answered with the
                    // group, and the trim runs after the group committed.
                    self.commit_checked()?;
                    self.trim(&stream, trim)?;
                    Ok(ids)
                });
                let result = self.commit_alone(result);
                let _ = reply.send(result);
            }
            Op::Trim {
                stream,
                trim,
                reply,
            } => {
                let result = self
                    .commit_checked()
                    .and_then(|()| self.trim(&stream, trim));
                let result = self.commit_alone(result);
                let _ = reply.send(result);
            }
            Op::Delete { stream, ids, reply } => {
                let result = self
                    .commit_checked()
                    .and_then(|()| self.delete(&stream, ids));
                let result = self.commit_alone(result);
                let _ = reply.send(result);
            }
            Op::Rotate { stream, reply } => {
                let result = self.commit_checked().and_then(|()| self.rotate(&stream));
                let result = self.commit_alone(result);
                let _ = reply.send(result);
            }
            Op::DeleteStream { stream, reply } => {
                let result = self
                    .commit_checked()
                    .and_then(|()| self.delete_stream(&stream));
                let result = self.commit_alone(result);
                let _ = reply.send(result);
            }
            Op::Sync { reply } => {
                let result = self.commit_checked().and_then(|()| self.sync_all());
                let result = self.commit_alone(result);
                let _ = reply.send(result);
            }
            Op::Tick => self.commit(),
            Op::Close { reply } => return Some(reply),
        }
        None
    }

    /// Commits a barrier operation as a group of its own before its caller
    /// is answered, so the answer comes after the store's write health says
    /// what the operation did (a control record that went through after a
    /// failed one brings it back to `Ok`). A commit that fails undoes what
    /// the operation wrote, so it fails the operation too.
    fn commit_alone<T>(&mut self, result: Result<T>) -> Result<T> {
        let committed = self.commit_checked();
        let value = result?;
        committed.map(|()| value)
    }

    fn close(&mut self) -> Result<()> {
        let result = self.commit_checked().and_then(|()| self.sync_all());
        self.closed = true;
        self.rx.close();
        result
    }

    /// The stream to append to, created when it does not exist; a stream
    /// broken by an earlier failure is recovered first.
    pub(crate) fn stream_for_append(&mut self, name: &StreamName) -> Result<&mut WStream> {
        if !self.streams.contains_key(name) {
            let ws = new_stream(
                &*self.config.fs,
                &self.shared.streams_dir,
                name,
                self.config.index_interval_bytes,
            );
            let ws = self.note(ws)?;
            self.dirs_to_sync.push(ws.dir.clone());
            self.dirs_to_sync.push(self.shared.streams_dir.clone());
            self.streams.insert(name.clone(), ws);
        }
        self.existing(name)
    }

    /// An existing stream, recovered first if an earlier failure broke it.
    pub(crate) fn existing(&mut self, name: &StreamName) -> Result<&mut WStream> {
        let broken = self
            .streams
            .get(name)
            .ok_or_else(|| StoreError::NoSuchStream {
                stream: name.clone(),
            })?
            .active
            .broken;
        if broken {
            self.repair(name)?;
        }
        self.streams
            .get_mut(name)
            .ok_or_else(|| StoreError::NoSuchStream {
                stream: name.clone(),
            })
    }

    /// Appends a batch: through the stream's duplicate window when it
    /// carries keys ([`Writer::append_keyed`]), straight to the log when it
    /// carries none.
    pub(crate) fn append(
        &mut self,
        name: &StreamName,
        batch: EventBatch,
        dedup: bool,
    ) -> Result<Appended> {
        if self.dedup.applies(&batch) {
            return self.append_keyed(name, batch, dedup);
        }
        self.append_events(name, batch, now_ms())
            .map(Appended::stored)
    }

    /// Writes a batch to the stream's active segment (rolling it first when
    /// the batch would take it past its size), assigning ids at `now`.
    pub(crate) fn append_events(
        &mut self,
        name: &StreamName,
        mut batch: EventBatch,
        now: u64,
    ) -> Result<Vec<EventId>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let segment_bytes = self.config.segment_bytes;
        let fs = self.config.fs.clone();
        let window_ms = self.dedup.window_ms();
        let ws = self.stream_for_append(name)?;
        ws.window.forget_expired(window_ms, now);
        check_ids(name, ws.clock, &batch, now)?;
        if ws.active.builder.count > 0 && ws.active.len + batch.encoded_len() as u64 > segment_bytes
        {
            let rolled = roll(&*fs, ws);
            let broken = ws.active.broken;
            if broken {
                self.broken_in_group.push(name.clone());
            }
            let dir = self.note(rolled)?;
            self.dirs_to_sync.push(dir);
            self.rolled.push(name.clone());
        }
        let ws = self.existing(name)?;
        let ids = assign_ids(&mut ws.clock, &mut batch, now);
        let framed = batch.seal();
        let base = ws.active.len;
        let written = ws.active.write(&framed);
        if ws.active.broken {
            self.broken_in_group.push(name.clone());
        }
        self.note(written)?;
        let ws = self.existing(name)?;
        ws.added += ids.len() as u64;
        let mut at = 0usize;
        for id in &ids {
            let len =
                u32::from_le_bytes([framed[at], framed[at + 1], framed[at + 2], framed[at + 3]])
                    as usize
                    + FRAME_HEADER_LEN;
            ws.active.builder.event(*id, base + at as u64, len as u64);
            at += len;
        }
        ws.dirty = true;
        ws.unsynced = true;
        self.pending_events += ids.len();
        Ok(ids)
    }

    pub(crate) fn rotate(&mut self, name: &StreamName) -> Result<Rotated> {
        let fs = self.config.fs.clone();
        let ws = self.existing(name)?;
        let empty = ws.active.builder.count == 0 && ws.active.builder.controls.is_empty();
        if !empty {
            let rolled = roll(&*fs, ws);
            if ws.active.broken {
                self.broken_in_group.push(name.clone());
            }
            let dir = self.note(rolled)?;
            self.dirs_to_sync.push(dir);
            self.commit_checked()?;
        }
        let segments = self.existing(name)?.handle.state.read().segments.len() as u64;
        Ok(Rotated {
            sealed: !empty,
            segments,
        })
    }

    /// Makes written data durable as the policy says, publishes it to
    /// readers and answers waiting appenders.
    pub(crate) fn commit(&mut self) {
        if let Err(e) = self.commit_checked() {
            tracing::error!(error = %e, "commit failed");
        }
    }

    /// As [`Writer::commit`]. A failed sync fails every append and group
    /// operation of the group, and the streams whose sync failed are
    /// recovered from disk: see "What an I/O error does" in the module docs.
    pub(crate) fn commit_checked(&mut self) -> Result<()> {
        if self.closed {
            return Err(StoreError::Closed);
        }
        let sync_now = match self.config.durability {
            Durability::Always => true,
            Durability::Interval(d) => self.last_sync.elapsed() >= d,
            Durability::Never => false,
        };
        let mut fsync_time = Duration::ZERO;
        if sync_now {
            let started = Instant::now();
            if let Err(e) = self.sync_unsynced() {
                tracing::error!(error = %e, "sync failed; nothing of this commit is acknowledged");
                self.pending_events = 0;
                self.last_write = Some(health_of(&e).unwrap_or_default());
                self.publish();
                // Recovered before anyone is answered, so a caller that sees
                // the error sees the stream as it is on disk.
                self.finish_group();
                for (_, reply, _) in self.waiting.drain(..) {
                    let _ = reply.send(Err(e.duplicate()));
                }
                for (_, finish) in self.finishers.drain(..) {
                    finish(Err(e.duplicate()));
                }
                return Err(e);
            }
            fsync_time = started.elapsed();
        }
        self.publish();
        let events = std::mem::take(&mut self.pending_events);
        let answers: Vec<Result<()>> = self
            .waiting
            .iter()
            .map(|(stream, ..)| self.unless_broken(stream))
            .collect();
        let finished: Vec<Result<()>> = self
            .finishers
            .iter()
            .map(|(stream, _)| self.unless_broken(stream))
            .collect();
        self.finish_group();
        for ((_, reply, ids), answer) in self.waiting.drain(..).zip(answers) {
            let _ = reply.send(answer.map(|()| ids));
        }
        for ((_, finish), answer) in self.finishers.drain(..).zip(finished) {
            finish(answer);
        }
        if events > 0 {
            self.config.metrics.commit(events, fsync_time);
        }
        Ok(())
    }

    /// `Ok` unless `stream` broke in this group, whose writes are then
    /// undone by its recovery.
    fn unless_broken(&self, stream: &StreamName) -> Result<()> {
        if !self.broken_in_group.contains(stream) {
            return Ok(());
        }
        let path = self.streams.get(stream).map(|ws| ws.active.path.clone());
        Err(StoreError::io(
            "write segment",
            path.unwrap_or_default(),
            std::io::Error::other("a write of this commit could not be undone"),
        ))
    }

    /// Syncs every stream written since its last sync, then the directories
    /// whose entries changed. Every sync is tried; the first error is
    /// returned and every stream it concerns is marked broken.
    fn sync_unsynced(&mut self) -> Result<()> {
        let mut first = None;
        for (name, ws) in self.streams.iter_mut() {
            if !ws.unsynced || ws.active.broken {
                continue;
            }
            match ws.active.sync() {
                Ok(()) => ws.unsynced = false,
                Err(e) => {
                    self.broken_in_group.push(name.clone());
                    first.get_or_insert(e);
                }
            }
        }
        if let Err(e) = self.sync_dirs() {
            first.get_or_insert(e);
        }
        match first {
            Some(e) => Err(e),
            None => {
                self.last_sync = Instant::now();
                Ok(())
            }
        }
    }

    /// Syncs every stream, whatever the policy ([`crate::Store::sync`],
    /// closing). It fails unless every acknowledged append is durable: a
    /// stream broken by an earlier failure cannot be synced (its descriptor
    /// is never synced again) and is recovered now instead, which cuts off
    /// what followed its last successful sync; and acknowledged events that
    /// a recovery since the last call cut off are reported here, once.
    fn sync_all(&mut self) -> Result<()> {
        let broken: Vec<StreamName> = self
            .streams
            .iter()
            .filter(|(_, ws)| ws.active.broken)
            .map(|(name, _)| name.clone())
            .collect();
        let mut first = None;
        for name in broken {
            if let Err(e) = self.repair(&name) {
                first.get_or_insert(e);
            }
        }
        for ws in self.streams.values_mut() {
            ws.unsynced = true;
        }
        if let Err(e) = self.sync_unsynced() {
            first.get_or_insert(e);
        }
        if let Some(lost) = self.lost_since_sync.take() {
            first.get_or_insert(lost);
        }
        first.map_or(Ok(()), Err)
    }

    pub(crate) fn publish(&mut self) {
        for ws in self
            .streams
            .values_mut()
            .filter(|ws| ws.dirty && !ws.active.broken)
        {
            let mut st = ws.handle.state.write();
            for sealed in ws.sealed.drain(..) {
                match st.segments.last_mut() {
                    Some(last) if last.no == sealed.no => *last = sealed,
                    _ => st.segments.push(sealed),
                }
            }
            let active = &mut ws.active;
            match st.segments.last_mut() {
                Some(last) if last.no == active.no => {
                    last.len = active.len;
                    last.count = active.builder.count;
                    last.first_id = active.builder.first_id;
                    last.last_id = active.builder.last_id;
                    last.event_bytes = active.builder.event_bytes;
                    last.index
                        .extend_from_slice(&active.builder.entries[active.published_entries..]);
                }
                _ => st.segments.push(active.shared_segment()),
            }
            active.published_entries = active.builder.entries.len();
            st.last_id = ws.clock.last();
            st.added = ws.added;
            drop(st);
            ws.dirty = false;
            if ws.new {
                self.shared
                    .streams
                    .write()
                    .insert(ws.handle.name.clone(), ws.handle.clone());
                ws.new = false;
            }
        }
    }
}

fn fail_op(op: Op) {
    match op {
        Op::Append { reply, .. } => drop(reply.send(Err(StoreError::Closed))),
        Op::Trim { reply, .. } | Op::Delete { reply, .. } => {
            drop(reply.send(Err(StoreError::Closed)))
        }
        Op::Rotate { reply, .. } => drop(reply.send(Err(StoreError::Closed))),
        Op::DeleteStream { reply, .. } => drop(reply.send(Err(StoreError::Closed))),
        Op::Sync { reply } | Op::Close { reply } => drop(reply.send(Err(StoreError::Closed))),
        Op::Tick | Op::Group { .. } => {}
    }
}
