//! The memory engine: streams held in RAM only (the runbooks' "amnesia"
//! mode). Nothing survives a restart; acknowledgement happens as soon as the
//! events are in memory.
//!
//! Events of one batch share one buffer, so a batch costs one allocation
//! whatever its size; a buffer is freed when the last of its events is
//! trimmed or deleted.
//!
//! [`MemoryStore::with_retention`] bounds every stream: the limits are
//! applied exactly, on each append (the embedded engine applies the same
//! limits in whole segments).
//!
//! Each stream's duplicate window ([`crate::Dedup`]) is consulted and
//! updated under the stream's lock, where its ids are assigned; like the
//! events, it does not survive a restart.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use busbar_event::{
    now_ms, BatchIter, Event, EventBatch, EventId, IdClock, StreamName, FRAME_HEADER_LEN,
};
use parking_lot::{Mutex, RwLock};

use crate::dedup::{Deduper, Window};
use crate::group::host::{self, GroupHost};
use crate::group::{
    self as groups, AckOutcome, ClaimOutcome, Expired, GroupConfig, GroupInfo, GroupOp, GroupStart,
    GroupState, NackOptions, NackOutcome, PendingInfo, ReadOutcome,
};
use crate::ids::{assign_ids, check_ids};
use crate::trim::trim_floor;
use crate::{
    AppendOptions, Appended, Dedup, ReadQuery, Result, Retention, Rotated, Store, StoreError,
    StoreMetrics, StreamInfo, Trim,
};

/// Streams in RAM.
#[derive(Debug)]
pub struct MemoryStore {
    streams: RwLock<BTreeMap<StreamName, Arc<Mutex<MemStream>>>>,
    closed: std::sync::atomic::AtomicBool,
    retention: Retention,
    metrics: Arc<StoreMetrics>,
    dedup: Deduper,
}

impl Default for MemoryStore {
    fn default() -> Self {
        let metrics = Arc::new(StoreMetrics::default());
        MemoryStore {
            streams: RwLock::default(),
            closed: Default::default(),
            retention: Retention::default(),
            dedup: Deduper::new(Dedup::default(), metrics.clone()),
            metrics,
        }
    }
}

#[derive(Debug)]
struct MemStream {
    events: VecDeque<Event>,
    clock: IdClock,
    bytes: u64,
    /// Events ever appended.
    added: u64,
    groups: BTreeMap<String, GroupState>,
    /// Idempotency keys remembered.
    window: Window,
}

fn frame_len(e: &Event) -> u64 {
    (e.body().len() + FRAME_HEADER_LEN) as u64
}

impl MemStream {
    fn trim(&mut self, trim: Trim) -> u64 {
        let before = self.events.len();
        let floor = trim_floor(trim);
        while let Some(front) = self.events.front() {
            let remove = match trim {
                Trim::MaxLen { max, .. } => self.events.len() as u64 > max,
                Trim::MaxBytes { max } => self.bytes > max,
                _ => floor.is_some_and(|f| front.id() < f),
            };
            if !remove {
                break;
            }
            self.bytes -= frame_len(front);
            self.events.pop_front();
        }
        (before - self.events.len()) as u64
    }

    /// Applies the store-wide limits after an append.
    fn retain(&mut self, r: Retention) {
        if let Some(max) = r.max_len {
            self.trim(Trim::MaxLen { max, approx: false });
        }
        if let Some(max) = r.max_bytes {
            self.trim(Trim::MaxBytes { max });
        }
        if let Some(age) = r.max_age {
            self.trim(Trim::MaxAge { age, approx: false });
        }
    }

    fn position(&self, id: EventId) -> usize {
        self.events.partition_point(|e| e.id() < id)
    }
}

impl MemoryStore {
    /// An empty store that keeps everything until it is trimmed.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that trims every stream to `retention` as it appends.
    pub fn with_retention(retention: Retention) -> Self {
        MemoryStore {
            retention,
            ..Self::default()
        }
    }

    /// The same store with the duplicate window `dedup` (default:
    /// [`Dedup::default`]).
    pub fn with_dedup(mut self, dedup: Dedup) -> Self {
        self.dedup = Deduper::new(dedup, self.metrics.clone());
        self
    }

    fn stream(&self, name: &StreamName) -> Result<Arc<Mutex<MemStream>>> {
        self.check_open()?;
        self.streams
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NoSuchStream {
                stream: name.clone(),
            })
    }

    fn stream_or_create(&self, stream: &StreamName) -> Arc<Mutex<MemStream>> {
        let existing = self.streams.read().get(stream).cloned();
        match existing {
            Some(h) => h,
            None => self
                .streams
                .write()
                .entry(stream.clone())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(MemStream {
                        events: VecDeque::new(),
                        clock: IdClock::new(EventId::ZERO),
                        bytes: 0,
                        added: 0,
                        groups: BTreeMap::new(),
                        window: Window::default(),
                    }))
                })
                .clone(),
        }
    }

    fn append_sync(
        &self,
        stream: &StreamName,
        mut batch: EventBatch,
        opts: AppendOptions,
    ) -> Result<Appended> {
        self.check_open()?;
        if batch.is_empty() {
            return Ok(Appended::default());
        }
        let handle = self.stream_or_create(stream);
        let mut s = handle.lock();
        let now = now_ms();
        let appended = if self.dedup.applies(&batch) {
            let plan = self.dedup.plan(&mut s.window, &mut batch, opts.dedup, now);
            let ids = self.store_locked(stream, &mut s, batch, opts, now)?;
            self.dedup.finish(stream, &mut s.window, plan, ids, now)
        } else {
            s.window.forget_expired(self.dedup.window_ms(), now);
            Appended::stored(self.store_locked(stream, &mut s, batch, opts, now)?)
        };
        Ok(appended)
    }

    /// Stores a batch in a locked stream.
    fn store_locked(
        &self,
        stream: &StreamName,
        s: &mut MemStream,
        mut batch: EventBatch,
        opts: AppendOptions,
        now: u64,
    ) -> Result<Vec<EventId>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        check_ids(stream, s.clock, &batch, now)?;
        let ids = assign_ids(&mut s.clock, &mut batch, now);
        s.added += ids.len() as u64;
        for event in BatchIter::new(batch.seal()) {
            s.bytes += frame_len(&event);
            s.events.push_back(event);
        }
        if let Some(trim) = opts.trim {
            s.trim(trim);
        }
        s.retain(self.retention);
        Ok(ids)
    }

    /// Runs `f` over a stream's groups with a host for group operations.
    fn with_host<T>(
        &self,
        stream: &StreamName,
        f: impl FnOnce(&mut MemHost<'_>) -> Result<T>,
    ) -> Result<T> {
        let handle = self.stream(stream)?;
        let mut s = handle.lock();
        let mut h = MemHost {
            store: self,
            stream,
            s: &mut s,
        };
        f(&mut h)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn append_detailed(
        &self,
        stream: &StreamName,
        batch: EventBatch,
        opts: AppendOptions,
    ) -> Result<Appended> {
        StoreError::check_single_partition(stream, opts.partition)?;
        self.append_sync(stream, batch, opts)
    }

    async fn read(&self, stream: &StreamName, query: &ReadQuery) -> Result<Vec<Event>> {
        query.check_single_partition(stream)?;
        let handle = self.stream(stream)?;
        let s = handle.lock();
        let from = s.position(query.start);
        let to = s.events.partition_point(|e| e.id() <= query.end);
        let range = s.events.range(from..to.max(from));
        let pick = |e: &&Event| query.matches(e);
        let out = if query.reverse {
            range
                .rev()
                .filter(pick)
                .take(query.count)
                .cloned()
                .collect()
        } else {
            range.filter(pick).take(query.count).cloned().collect()
        };
        Ok(out)
    }

    async fn trim(&self, stream: &StreamName, trim: Trim) -> Result<u64> {
        let handle = self.stream(stream)?;
        let removed = handle.lock().trim(trim);
        Ok(removed)
    }

    async fn delete(&self, stream: &StreamName, ids: &[EventId]) -> Result<u64> {
        let handle = self.stream(stream)?;
        let mut s = handle.lock();
        let mut removed = 0;
        for &id in ids {
            let at = s.position(id);
            if s.events.get(at).is_some_and(|e| e.id() == id) {
                if let Some(e) = s.events.remove(at) {
                    s.bytes -= frame_len(&e);
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    async fn info(&self, stream: &StreamName) -> Result<StreamInfo> {
        let handle = self.stream(stream)?;
        let s = handle.lock();
        Ok(StreamInfo {
            name: stream.clone(),
            length: s.events.len() as u64,
            first_id: s.events.front().map(Event::id),
            last_id: s.clock.last(),
            bytes: s.bytes,
            segments: 0,
            partitions: 1,
            added: s.added,
        })
    }

    async fn added(&self, stream: &StreamName) -> Result<u64> {
        Ok(self.stream(stream)?.lock().added)
    }

    async fn streams(&self) -> Result<Vec<StreamName>> {
        self.check_open()?;
        Ok(self.streams.read().keys().cloned().collect())
    }

    async fn delete_stream(&self, stream: &StreamName) -> Result<bool> {
        self.check_open()?;
        Ok(self.streams.write().remove(stream).is_some())
    }

    async fn rotate(&self, stream: &StreamName) -> Result<Rotated> {
        self.stream(stream)?;
        Ok(Rotated {
            sealed: false,
            segments: 0,
        })
    }

    async fn sync(&self) -> Result<()> {
        self.check_open()
    }

    async fn close(&self) -> Result<()> {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn metrics(&self) -> Option<Arc<StoreMetrics>> {
        Some(self.metrics.clone())
    }

    async fn create_group(
        &self,
        stream: &StreamName,
        group: &str,
        start: GroupStart,
        config: GroupConfig,
    ) -> Result<GroupInfo> {
        self.check_open()?;
        groups::validate_name("group", group)?;
        self.stream_or_create(stream);
        self.with_host(stream, |h| {
            let cursor = match start {
                GroupStart::Beginning => EventId::ZERO,
                GroupStart::End => h.s.clock.last(),
                GroupStart::After(id) => id,
            };
            host::create(h, group, cursor, config)?;
            let lag = h.s.lag(cursor);
            Ok(h.s.groups[group].info(stream, lag, now_ms()))
        })
    }

    async fn delete_group(&self, stream: &StreamName, group: &str) -> Result<bool> {
        self.with_host(stream, |h| host::destroy(h, group))
    }

    async fn groups(&self, stream: &StreamName) -> Result<Vec<GroupInfo>> {
        let handle = self.stream(stream)?;
        let s = handle.lock();
        let now = now_ms();
        Ok(s.groups
            .values()
            .map(|g| g.info(stream, s.lag(g.cursor), now))
            .collect())
    }

    async fn group(&self, stream: &StreamName, group: &str) -> Result<GroupInfo> {
        let handle = self.stream(stream)?;
        let s = handle.lock();
        let g = s.groups.get(group).ok_or_else(|| StoreError::NoSuchGroup {
            stream: stream.clone(),
            group: group.to_owned(),
        })?;
        Ok(g.info(stream, s.lag(g.cursor), now_ms()))
    }

    async fn read_group(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<ReadOutcome> {
        groups::validate_name("consumer", consumer)?;
        self.with_host(stream, |h| host::read(h, group, consumer, count, now_ms()))
    }

    async fn ack(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: Option<&str>,
        ids: &[EventId],
    ) -> Result<AckOutcome> {
        self.with_host(stream, |h| host::ack(h, group, consumer, ids, now_ms()))
    }

    async fn nack(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        ids: &[EventId],
        opts: NackOptions,
    ) -> Result<NackOutcome> {
        self.with_host(stream, |h| {
            host::nack(h, group, consumer, ids, &opts, now_ms())
        })
    }

    async fn claim(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        min_idle: std::time::Duration,
        start: EventId,
        count: usize,
    ) -> Result<ClaimOutcome> {
        groups::validate_name("consumer", consumer)?;
        self.with_host(stream, |h| {
            host::claim(h, group, consumer, min_idle, start, count, now_ms())
        })
    }

    async fn pending(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: Option<&str>,
        start: EventId,
        end: EventId,
        count: usize,
    ) -> Result<Vec<PendingInfo>> {
        self.with_host(stream, |h| {
            let g = h.group_state(group)?;
            Ok(g.pending_info(consumer, start, end, count, now_ms()))
        })
    }

    async fn set_paused(&self, stream: &StreamName, group: &str, paused: bool) -> Result<()> {
        self.with_host(stream, |h| host::pause(h, group, paused))
    }

    async fn delete_consumer(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
    ) -> Result<u64> {
        self.with_host(stream, |h| host::delete_consumer(h, group, consumer))
    }

    async fn set_cursor(&self, stream: &StreamName, group: &str, cursor: EventId) -> Result<()> {
        self.with_host(stream, |h| host::set_cursor(h, group, cursor))
    }

    async fn expire(&self, stream: &StreamName) -> Result<Vec<Expired>> {
        self.with_host(stream, |h| groups::expire_all(h, now_ms()))
    }
}

impl MemStream {
    /// Events with ids greater than `cursor`.
    fn lag(&self, cursor: EventId) -> u64 {
        (self.events.len() - self.events.partition_point(|e| e.id() <= cursor)) as u64
    }
}

/// Group operations over one locked memory stream.
struct MemHost<'a> {
    store: &'a MemoryStore,
    stream: &'a StreamName,
    s: &'a mut MemStream,
}

impl MemHost<'_> {
    fn group_state(&self, group: &str) -> Result<&GroupState> {
        self.s
            .groups
            .get(group)
            .ok_or_else(|| StoreError::NoSuchGroup {
                stream: self.stream.clone(),
                group: group.to_owned(),
            })
    }
}

impl GroupHost for MemHost<'_> {
    fn stream(&self) -> &StreamName {
        self.stream
    }

    fn groups(&self) -> &BTreeMap<String, GroupState> {
        &self.s.groups
    }

    fn events_after(&mut self, after: EventId, count: usize) -> Result<Vec<Event>> {
        let from = self.s.events.partition_point(|e| e.id() <= after);
        Ok(self.s.events.range(from..).take(count).cloned().collect())
    }

    fn event(&mut self, id: EventId) -> Result<Option<Event>> {
        let at = self.s.position(id);
        Ok(self.s.events.get(at).filter(|e| e.id() == id).cloned())
    }

    fn append_dead_letters(&mut self, batch: EventBatch) -> Result<Vec<EventId>> {
        let dlq = groups::dlq_stream(self.stream)?;
        Ok(self
            .store
            .append_sync(&dlq, batch, AppendOptions::default())?
            .ids)
    }

    fn apply(&mut self, op: GroupOp) -> Result<()> {
        groups::state::apply(&mut self.s.groups, &op);
        Ok(())
    }
}
