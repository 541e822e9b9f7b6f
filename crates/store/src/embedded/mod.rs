//! The embedded engine: a segmented, append-only log per stream on local
//! disk. busbar's default storage.
//!
//! # Constraints
//! - An acknowledged append survives what its [`Durability`] promises:
//!   under `always`, a process crash or power loss loses nothing
//!   acknowledged; under `interval:<d>`, a process crash loses nothing and a
//!   power loss loses at most the last `<d>` of appends; under `never`, a
//!   process crash loses nothing and a power loss loses whatever the kernel
//!   had not written back.
//! - Ids strictly increase within a stream, across restarts and trims.
//! - Damage is never skipped silently: a torn tail is truncated (it holds
//!   only unacknowledged bytes) and logged with file and offset; damage
//!   anywhere else fails the open, or quarantines the segment when
//!   [`CorruptionPolicy::Quarantine`] says so.
//!
//! # Layout
//! ```text
//! <dir>/LOCK                              exclusive lock: one process per directory
//! <dir>/streams/<stream>/<n:020>.seg      segment n of a stream (the last is active)
//! <dir>/streams/<stream>/<n:020>.idx      index of sealed segment n (a cache)
//! <dir>/quarantine/<stream>/              damaged segments set aside on open
//! <dir>/trash/                            streams being deleted
//! ```
//!
//! # Segment format
//! ```text
//! header (64 bytes):
//!   "BUSBSEG1" | u32 version=1 | u32 flags=0
//!   | prev_last_id (u64 ms, u64 seq) | floor (u64 ms, u64 seq)
//!   | zero padding | u32 crc32c(bytes 0..60)
//! then frames, back to back:
//!   u32 body length | u32 crc32c(body) | body
//! body kinds (first byte):
//!   1 event   (busbar_event's record layout: ids, times, fields, payload)
//!   2 trim    u8 kind | 7 pad | floor id        events below the floor are gone
//!   3 delete  u8 kind | 3 pad | u32 n | n ids   these events are gone
//! ```
//! All integers are little-endian. The header carries the stream's last id
//! and trim floor at creation, so both survive when every older segment has
//! been dropped. Trims and deletions are logged in the active segment like
//! events: ordered and committed with them, and dropped only after the
//! segments they refer to (segments are dropped oldest first).
//!
//! # Index
//! Each segment keeps a sparse index in memory: one entry (id, offset,
//! ordinal) every [`EmbeddedConfig::index_interval_bytes`] of events. A range
//! read binary-searches the segments by first/last id, then the index, and
//! scans at most one interval before reaching its first event; reverse reads
//! walk the index backwards a block at a time. When a segment is sealed its
//! index, counts and control records go to an `.idx` file (crc32c-protected,
//! written to a temp file, fsynced, renamed) so reopening does not scan it.
//! An index file that is missing, damaged or records a different segment
//! length is stale: recovery rescans the segment and rewrites it.
//!
//! # Writes and group commit
//! One writer thread owns every file handle that writes ([`writer`]).
//! Appends queue on a bounded channel ([`EmbeddedConfig::queue_depth`];
//! callers wait when it is full); the writer takes everything queued, writes
//! each batch with one `write`, then makes the whole group durable with one
//! `fdatasync` per touched segment before answering any of them. The longer
//! an `fdatasync` takes, the more appends the next one covers.
//! A segment is sealed (fsynced whatever the policy, index written) when the
//! next batch would take it past [`EmbeddedConfig::segment_bytes`], or on
//! [`Store::rotate`]. New files and directories are fsynced in their parent
//! before an append in them is acknowledged under `always`.
//! An I/O error on the write path stops the store taking writes: after a
//! failed `fdatasync` the page cache cannot be trusted to hold what was
//! written, so the writer answers `Closed` rather than guess.
//!
//! # Recovery
//! Opening takes the directory lock, then for each stream reads each
//! segment's header and either its index file (sealed segments) or its
//! frames (the active segment, and sealed segments without a valid index).
//! In the active segment, a frame that runs past the end of the file, or a
//! bad frame followed only by zeros, is a torn tail: the file is truncated
//! there and the event logged with file and offset. Any other bad frame or
//! header is corruption: [`StoreError::Corrupt`] naming file and offset, or,
//! under [`CorruptionPolicy::Quarantine`], the segment is moved to
//! `quarantine/` and the stream opens without it (logged at error level).
//!
//! # Retention
//! [`Store::trim`] takes a count (`MaxLen`), an id (`MinId`), an age
//! (`MaxAge`, by id time) or a size (`MaxBytes`). Exact trims log a trim
//! record and hide the events below the new floor at once; whole sealed
//! segments below the floor are deleted. Approximate trims (and `MaxBytes`)
//! only delete whole sealed segments, never the active one.
//! [`EmbeddedConfig::retention`] applies the same, approximately, whenever a
//! segment is sealed.

mod files;
mod format;
mod groups;
mod recovery;
mod repair;
mod retention;
mod segment;
mod stream;
pub(crate) mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use busbar_event::{Event, EventBatch, EventId, StreamName};
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};

use crate::fs::{Fs, RealFs};
use crate::group::host;
use crate::group::{
    validate_name, AckOutcome, ClaimOutcome, Expired, GroupConfig, GroupInfo, GroupStart,
    NackOptions, NackOutcome, PendingInfo, ReadOutcome,
};
use crate::{
    AppendOptions, Durability, ReadQuery, Result, Rotated, Store, StoreError, StoreObserver,
    StreamInfo, Trim, WriteHealth,
};
use busbar_event::now_ms;
use stream::StreamHandle;
use writer::{Op, Shared, Writer};

/// What to do with a segment damaged in the middle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CorruptionPolicy {
    /// Refuse to open, naming file and offset.
    #[default]
    Fail,
    /// Move the segment to `<dir>/quarantine/<stream>/` and open without it.
    Quarantine,
}

pub use crate::Retention;

/// Configuration of the embedded engine.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The data directory.
    pub dir: PathBuf,
    /// What an acknowledged append survives.
    pub durability: Durability,
    /// Seal a segment when the next batch would take it past this size.
    pub segment_bytes: u64,
    /// Bytes of events between sparse index entries.
    pub index_interval_bytes: u64,
    /// What to do with mid-segment damage on open.
    pub on_corruption: CorruptionPolicy,
    /// Requests the writer queue holds before callers wait.
    pub queue_depth: usize,
    /// Automatic retention.
    pub retention: Retention,
    /// Receives commit timings.
    pub observer: Option<Arc<dyn StoreObserver>>,
    /// The file system every file operation goes through (the `LOCK` file
    /// aside). Tests put a [`crate::fs`] wrapper here to break the disk.
    pub fs: Arc<dyn Fs>,
}

impl EmbeddedConfig {
    /// Defaults for a store in `dir`: `always`, 64 MiB segments, an index
    /// entry every 16 KiB, fail on corruption, a queue of 4096 requests,
    /// the real file system.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            dir: dir.into(),
            durability: Durability::Always,
            segment_bytes: 64 * 1024 * 1024,
            index_interval_bytes: 16 * 1024,
            on_corruption: CorruptionPolicy::Fail,
            queue_depth: 4096,
            retention: Retention::default(),
            observer: None,
            fs: Arc::new(RealFs),
        }
    }
}

/// The embedded store. See the module docs for format and guarantees.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Op>,
    writer: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    _lock: File,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("streams_dir", &self.shared.streams_dir)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `config.dir`, running
    /// recovery. Blocking: call it from a blocking context.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process holds the directory,
    /// [`StoreError::Corrupt`] for damage (see the module docs), I/O errors.
    pub fn open(config: EmbeddedConfig) -> Result<EmbeddedStore> {
        let dir = &config.dir;
        let fs = config.fs.clone();
        let lock = lock_dir(dir)?;
        fs.create_dir_all(dir)
            .map_err(|e| StoreError::io("create data directory", dir, e))?;

        let streams_dir = dir.join("streams");
        let trash_dir = dir.join("trash");
        fs.create_dir_all(&streams_dir)
            .map_err(|e| StoreError::io("create streams directory", &streams_dir, e))?;
        let trash = fs
            .exists(&trash_dir)
            .map_err(|e| StoreError::io("look for trash", &trash_dir, e))?;
        if trash {
            // Streams whose deletion a crash interrupted.
            fs.remove_dir_all(&trash_dir)
                .map_err(|e| StoreError::io("empty trash", &trash_dir, e))?;
        }

        let mut streams = BTreeMap::new();
        let mut handles = BTreeMap::new();
        let mut entries = fs
            .read_dir(&streams_dir)
            .map_err(|e| StoreError::io("list streams", &streams_dir, e))?;
        entries.sort();
        for path in entries {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Ok(name) = StreamName::new(name) else {
                tracing::warn!(dir = %path.display(), "ignoring a directory that is not a stream name");
                continue;
            };
            let ws = recovery::recover_stream(&config, &name, &path)?;
            handles.insert(name.clone(), ws.handle.clone());
            streams.insert(name, ws);
        }

        groups::reconcile_dead_letters(&mut streams)?;

        let shared = Arc::new(Shared {
            streams: RwLock::new(handles),
            streams_dir,
            trash_dir,
            health: parking_lot::Mutex::new(WriteHealth::Ok),
        });
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        if let Durability::Interval(every) = config.durability {
            spawn_ticker(tx.clone(), every);
        }
        let config_dir = config.dir.clone();
        let writer = Writer::new(shared.clone(), config, streams, rx);
        let handle = std::thread::Builder::new()
            .name("busbar-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::io("start writer thread", &config_dir, e))?;
        Ok(EmbeddedStore {
            shared,
            tx,
            writer: parking_lot::Mutex::new(Some(handle)),
            _lock: lock,
        })
    }

    async fn call<T>(&self, op: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(op(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a group operation on the writer thread; answers once its records
    /// are committed.
    async fn group_call<T: Send + 'static>(
        &self,
        stream: &StreamName,
        create: bool,
        f: impl FnOnce(&mut groups::WriterHost<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if !create {
            self.handle(stream)?;
        }
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let run: writer::GroupRun = Box::new(move |h| {
            let result = f(h);
            Box::new(move |committed: Result<()>| {
                let _ = tx.send(committed.and(result));
            })
        });
        self.tx
            .send(Op::Group {
                stream: stream.clone(),
                create,
                run,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn handle(&self, stream: &StreamName) -> Result<Arc<StreamHandle>> {
        self.shared
            .streams
            .read()
            .get(stream)
            .cloned()
            .ok_or_else(|| StoreError::NoSuchStream {
                stream: stream.clone(),
            })
    }
}

/// Takes the directory's exclusive lock. The lock file stays on the real
/// file system whatever [`EmbeddedConfig::fs`] is: `flock` guards against
/// another process, which only the operating system can see.
fn lock_dir(dir: &Path) -> Result<File> {
    use fs2::FileExt;
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create data directory", dir, e))?;
    let lock_path = dir.join("LOCK");
    let lock =
        File::create(&lock_path).map_err(|e| StoreError::io("create lock file", &lock_path, e))?;
    lock.try_lock_exclusive()
        .map_err(|_| StoreError::Locked { path: lock_path })?;
    Ok(lock)
}

/// Wakes the writer so an `interval` fsync happens even when appends stop.
fn spawn_ticker(tx: mpsc::Sender<Op>, every: Duration) {
    let _ = std::thread::Builder::new()
        .name("busbar-store-ticker".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            match tx.try_send(Op::Tick) {
                // A full queue means the writer is busy and will commit anyway.
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        });
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn append(
        &self,
        stream: &StreamName,
        batch: EventBatch,
        opts: AppendOptions,
    ) -> Result<Vec<EventId>> {
        let stream = stream.clone();
        self.call(|reply| Op::Append {
            stream,
            batch,
            trim: opts.trim,
            reply,
        })
        .await
    }

    async fn read(&self, stream: &StreamName, query: &ReadQuery) -> Result<Vec<Event>> {
        if query.start > query.end {
            return Err(StoreError::InvertedRange {
                start: query.start,
                end: query.end,
            });
        }
        let handle = self.handle(stream)?;
        let snapshot = handle.state.read().snapshot(query.start, query.end);
        snapshot.read(query)
    }

    async fn trim(&self, stream: &StreamName, trim: Trim) -> Result<u64> {
        let stream = stream.clone();
        self.call(|reply| Op::Trim {
            stream,
            trim,
            reply,
        })
        .await
    }

    async fn delete(&self, stream: &StreamName, ids: &[EventId]) -> Result<u64> {
        let stream = stream.clone();
        let ids = ids.to_vec();
        self.call(|reply| Op::Delete { stream, ids, reply }).await
    }

    async fn info(&self, stream: &StreamName) -> Result<StreamInfo> {
        let handle = self.handle(stream)?;
        let state = handle.state.read();
        state.info(stream)
    }

    async fn added(&self, stream: &StreamName) -> Result<u64> {
        Ok(self.handle(stream)?.state.read().added)
    }

    async fn streams(&self) -> Result<Vec<StreamName>> {
        if self.tx.is_closed() {
            return Err(StoreError::Closed);
        }
        Ok(self.shared.streams.read().keys().cloned().collect())
    }

    async fn delete_stream(&self, stream: &StreamName) -> Result<bool> {
        let stream = stream.clone();
        self.call(|reply| Op::DeleteStream { stream, reply }).await
    }

    async fn rotate(&self, stream: &StreamName) -> Result<Rotated> {
        let stream = stream.clone();
        self.call(|reply| Op::Rotate { stream, reply }).await
    }

    async fn sync(&self) -> Result<()> {
        self.call(|reply| Op::Sync { reply }).await
    }

    async fn close(&self) -> Result<()> {
        let result = self.call(|reply| Op::Close { reply }).await;
        let handle = self.writer.lock().take();
        if let Some(handle) = handle {
            // The writer has answered Close and is returning.
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        match result {
            Err(StoreError::Closed) => Ok(()),
            other => other,
        }
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn write_health(&self) -> WriteHealth {
        self.shared.health.lock().clone()
    }

    async fn create_group(
        &self,
        stream: &StreamName,
        group: &str,
        start: GroupStart,
        config: GroupConfig,
    ) -> Result<GroupInfo> {
        validate_name("group", group)?;
        let name = group.to_owned();
        self.group_call(stream, true, move |h| {
            let cursor = match start {
                GroupStart::Beginning => EventId::ZERO,
                GroupStart::End => h.last_id()?,
                GroupStart::After(id) => id,
            };
            host::create(h, &name, cursor, config)
        })
        .await?;
        self.group(stream, group).await
    }

    async fn delete_group(&self, stream: &StreamName, group: &str) -> Result<bool> {
        let name = group.to_owned();
        self.group_call(stream, false, move |h| host::destroy(h, &name))
            .await
    }

    async fn groups(&self, stream: &StreamName) -> Result<Vec<GroupInfo>> {
        let handle = self.handle(stream)?;
        let state = handle.state.read();
        let now = now_ms();
        state
            .groups
            .values()
            .map(|g| Ok(g.info(stream, state.count_after(g.cursor)?, now)))
            .collect()
    }

    async fn group(&self, stream: &StreamName, group: &str) -> Result<GroupInfo> {
        let handle = self.handle(stream)?;
        let state = handle.state.read();
        let g = state
            .groups
            .get(group)
            .ok_or_else(|| StoreError::NoSuchGroup {
                stream: stream.clone(),
                group: group.to_owned(),
            })?;
        Ok(g.info(stream, state.count_after(g.cursor)?, now_ms()))
    }

    async fn read_group(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<ReadOutcome> {
        validate_name("consumer", consumer)?;
        let (g, c) = (group.to_owned(), consumer.to_owned());
        self.group_call(stream, false, move |h| {
            host::read(h, &g, &c, count, now_ms())
        })
        .await
    }

    async fn ack(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: Option<&str>,
        ids: &[EventId],
    ) -> Result<AckOutcome> {
        let (g, c, ids) = (group.to_owned(), consumer.map(str::to_owned), ids.to_vec());
        self.group_call(stream, false, move |h| {
            host::ack(h, &g, c.as_deref(), &ids, now_ms())
        })
        .await
    }

    async fn nack(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        ids: &[EventId],
        opts: NackOptions,
    ) -> Result<NackOutcome> {
        let (g, c, ids) = (group.to_owned(), consumer.to_owned(), ids.to_vec());
        self.group_call(stream, false, move |h| {
            host::nack(h, &g, &c, &ids, &opts, now_ms())
        })
        .await
    }

    async fn claim(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: EventId,
        count: usize,
    ) -> Result<ClaimOutcome> {
        validate_name("consumer", consumer)?;
        let (g, c) = (group.to_owned(), consumer.to_owned());
        self.group_call(stream, false, move |h| {
            host::claim(h, &g, &c, min_idle, start, count, now_ms())
        })
        .await
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
        let handle = self.handle(stream)?;
        let state = handle.state.read();
        let g = state
            .groups
            .get(group)
            .ok_or_else(|| StoreError::NoSuchGroup {
                stream: stream.clone(),
                group: group.to_owned(),
            })?;
        Ok(g.pending_info(consumer, start, end, count, now_ms()))
    }

    async fn set_paused(&self, stream: &StreamName, group: &str, paused: bool) -> Result<()> {
        let name = group.to_owned();
        self.group_call(stream, false, move |h| host::pause(h, &name, paused))
            .await
    }

    async fn delete_consumer(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
    ) -> Result<u64> {
        let (g, c) = (group.to_owned(), consumer.to_owned());
        self.group_call(stream, false, move |h| host::delete_consumer(h, &g, &c))
            .await
    }

    async fn set_cursor(&self, stream: &StreamName, group: &str, cursor: EventId) -> Result<()> {
        let name = group.to_owned();
        self.group_call(stream, false, move |h| host::set_cursor(h, &name, cursor))
            .await
    }

    async fn expire(&self, stream: &StreamName) -> Result<Vec<Expired>> {
        self.group_call(stream, false, move |h| {
            crate::group::expire_all(h, now_ms())
        })
        .await
    }
}
