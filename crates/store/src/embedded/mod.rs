//! The embedded engine: a segmented, append-only log per stream on local
//! disk. busbar's default storage.
//!
//! # Constraints
//! - An acknowledged append survives what its [`Durability`] promises:
//!   under `always`, a process crash or power loss loses nothing
//!   acknowledged; under `interval:<d>`, a process crash loses nothing and a
//!   power loss loses at most the last `<d>` of appends; under `never`, a
//!   process crash loses nothing and a power loss loses whatever the kernel
//!   had not written back. A failed `fdatasync` counts as a power loss of
//!   the file it concerns (see [What an I/O error does](#what-an-io-error-does)).
//! - Ids strictly increase within a stream, across restarts and trims.
//! - Damage is never skipped silently: a torn tail is truncated (it holds
//!   only unacknowledged bytes) and logged with file and offset; damage
//!   anywhere else fails the open, or quarantines the segment when
//!   [`CorruptionPolicy::Quarantine`] says so.
//! - A full or failing disk fails the writes it touches, never the store:
//!   reads go on, and writing resumes by itself once the disk takes writes
//!   again. With a space reserve, consumers and trims go on too while the
//!   disk is full (see [A full disk](#a-full-disk)).
//!
//! # Layout
//! ```text
//! <dir>/LOCK                              exclusive lock: one process per directory
//! <dir>/RESERVE                           space reserve (EmbeddedConfig::reserve_bytes)
//! <dir>/streams/<stream>/<n:020>.seg      segment n of a stream (the last is active)
//! <dir>/streams/<stream>/<n:020>.idx      index of sealed segment n (a cache)
//! <dir>/quarantine/<stream>/              damaged segments set aside on open
//! <dir>/trash/                            streams being deleted
//! ```
//! Every file operation goes through [`EmbeddedConfig::fs`] (a
//! [`crate::fs::Fs`]; the real file system unless a test injects faults),
//! except the `LOCK` file, which stays on the operating system's file
//! system: `flock` guards against another process, which only the
//! operating system can see.
//!
//! # Segment format
//! ```text
//! header (64 bytes):
//!   "BUSBSEG1" | u32 version=1 | u32 flags
//!   | prev_last_id (u64 ms, u64 seq) | floor (u64 ms, u64 seq)
//!   | zero padding | u32 crc32c(bytes 0..60)
//! flags:
//!   bit 0 FLAG_GROUP_SNAPSHOT   the first record is a group snapshot (kind 5)
//! then frames, back to back:
//!   u32 body length | u32 crc32c(body) | body
//! body kinds (first byte):
//!   1 event           busbar_event's record layout: ids, times, fields, payload
//!   2 trim            u8 kind | 7 pad | floor id         events below the floor are gone
//!   3 delete          u8 kind | 3 pad | u32 n | n ids    these events are gone
//!   4 group op        u8 kind | op                       one consumer-group change
//!   5 group snapshot  u8 kind | JSON                     every group of the stream
//! group op (crate::group::codec):
//!   u8 op | u8 0 | u16 group len | u16 consumer len | u16 0 | u32 text len
//!   | u32 id count | u64 a | u64 b | u64 c | group | consumer | text
//!   | ids (u64 ms, u64 seq each)
//!   op: 1 create, 2 destroy, 3 deliver, 4 deliver new (moves the cursor),
//!   5 ack, 6 nack, 7 nack with error, 8 remove, 9 remove to the DLQ,
//!   10 pause, 11 delete consumer, 12 set cursor; a, b, c and text carry
//!   what the op needs (a time, an id, a JSON config, an error).
//! group snapshot:
//!   a JSON object: group name -> group state (cursor, config, consumers,
//!   pending entries with delivery counts and times, DLQ watermark)
//! ```
//! All integers are little-endian. The header carries the stream's last id
//! and trim floor at creation, so both survive when every older segment has
//! been dropped. Trims, deletions and group ops are logged in the active
//! segment like events: ordered and committed with them. Trims and
//! deletions are dropped only after the segments they refer to (segments
//! are dropped oldest first). Every segment a roll creates for a stream
//! with groups starts with a snapshot of them (and sets
//! `FLAG_GROUP_SNAPSHOT`), so the active segment alone holds the groups.
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
//! Trims, deletions, rotations, stream deletions and
//! [`Store::sync`](crate::Store::sync) are barriers: the group before them
//! is committed first, then each runs alone and is committed as a group of
//! its own before it is answered.
//! A segment is sealed (fsynced whatever the policy, index written) when the
//! next batch would take it past [`EmbeddedConfig::segment_bytes`], or on
//! [`Store::rotate`](crate::Store::rotate). New files and directories are
//! fsynced in their parent before an append in them is acknowledged under
//! `always` (`streams/` itself when the store first opens), and never
//! before the segment they name: a name that survived a power cut without
//! its header would read as damage. Dead letters are fsynced before the
//! removal from the pending list is logged (under `always`); a crash
//! between the two is completed on open.
//!
//! # What an I/O error does
//! A storage error is a state, not the end. [`Store::write_health`](crate::Store::write_health) says
//! `Full` (`ENOSPC`, `EDQUOT`: [`StoreError::Full`]) or `Failed` (any other
//! I/O error: [`StoreError::Io`]) from the first failure until a write
//! succeeds again (with a space reserve, `Full` lasts until the reserve is
//! back: see [A full disk](#a-full-disk)); [`StoreError::Closed`] only ever
//! follows `close()`.
//!
//! - **A write fails** (an append, a control record, a group op, a dead
//!   letter, creating the next segment on a roll, an index file): that
//!   operation alone fails. Part of it may have reached the file, so the
//!   segment is cut back (`set_len`) to its length before the write: no
//!   partial frame stays in front of the next one. Appends written earlier
//!   in the same group are unaffected. A roll whose new segment cannot be
//!   created leaves the old one active. Every later write is simply tried
//!   again; the first that succeeds brings the health back to `Ok`.
//! - **An `fdatasync` fails.** After a failed fsync the kernel may have
//!   dropped the dirty pages and marked them clean, so a retried fsync on the
//!   same file can report success for data that is not on disk (PostgreSQL
//!   learned this as "fsyncgate"). So no write of that commit group is
//!   acknowledged: every waiting append and group op gets the error. The
//!   writer never syncs that descriptor again; it treats the stream as
//!   crashed instead: its active segment is cut back, through a fresh
//!   descriptor, to the length the last successful `fdatasync` covered
//!   (sealed segments are synced whole when they are sealed), the cut is
//!   fsynced, and the stream is read back from disk as on open (group ops
//!   of the failed group included, so a read whose commit failed is not
//!   pending afterwards). The result replaces the stream's state under the
//!   handle readers hold; the id clock keeps the highest id ever assigned,
//!   so ids never repeat. A failed directory fsync treats every stream in
//!   that directory the same way. Under `interval` and `never` the events
//!   acknowledged since the last successful sync are lost by this cut
//!   (logged with a count), which is exactly what those policies allow on a
//!   power loss. Streams of the same group whose own sync succeeded keep
//!   their events, although their callers got the error: as with a lost
//!   acknowledgement, a retry may store an event twice.
//!   [`Store::sync`](crate::Store::sync) (and `close`) never calls such a
//!   loss durable: it recovers a broken stream first and fails when that
//!   fails, and it fails once after a recovery that cut off acknowledged
//!   events.
//! - **The recovery fails too**: the stream stays broken, the health stays
//!   `Failed`, and the recovery is tried again on the next write to that
//!   stream (at every commit that wrote something, and on `sync`). Reads
//!   keep working throughout, from the state published before the failure.
//! - **A read fails** (`EIO`): that read returns [`StoreError::Io`], never
//!   fewer events; nothing else changes.
//!
//! # A full disk
//! Group operations (deliveries, acks, nacks, dead-letter moves), trims and
//! deletions are records in the segments like events, so a disk with no
//! room left would stop consumers from acking and operators from trimming.
//! The store therefore holds [`EmbeddedConfig::reserve_bytes`] of disk in
//! `<dir>/RESERVE`, written whole (not zeros, so a compressing file system
//! cannot shrink it) and synced when the store opens (module `reserve`).
//!
//! - **A write finds the disk full** (`ENOSPC`, `EDQUOT`, from a write, a
//!   file creation or an `fdatasync`): it fails and is cut back as above;
//!   the writer deletes the reserve and the health turns `Full`. From then
//!   on appends are refused before anything is written
//!   ([`StoreError::Full`]). Everything else is still written, into the
//!   space the reserve freed: group operations and dead-letter moves, trims,
//!   deletions, rotations, stream deletions, syncs. Reads never depend on
//!   the reserve. Should that space run out too, those writes fail one by
//!   one as without a reserve.
//! - **Space returns.** While the reserve is released the writer reads the
//!   free space of `<dir>` (`statvfs`) at most every
//!   [`EmbeddedConfig::space_check_interval`], between commit groups; a
//!   watcher thread wakes it when no request does. Once at least twice the
//!   reserve is free (the reserve, and as much again so the store does not
//!   flap between full and not), it writes the reserve again and the health
//!   returns to `Ok`: no producer has to try first. A failed rewrite is
//!   removed again and tried at the next check.
//! - **A store opened on a full disk** that cannot write its reserve opens
//!   anyway, `Full`, with the reserve released.
//! - **No reserve** (`reserve_bytes` 0): a full disk fails each write as it
//!   comes, and the first write that succeeds brings the health back.
//!
//! # Recovery
//! Opening takes the directory lock, then for each stream reads each
//! segment's header and either its index file (sealed segments) or its
//! frames (the active segment, and sealed segments without a valid index).
//! In the active segment, a frame that runs past the end of the file, or a
//! bad frame followed only by zeros, is a torn tail: the file is truncated
//! there and the event logged with file and offset. Any other bad frame or
//! header is corruption (a frame whose checksum holds is bad all the same
//! when its event record's lengths do not add up or its id is not above
//! the one before it): [`StoreError::Corrupt`] naming file and offset, or,
//! under [`CorruptionPolicy::Quarantine`], the segment is moved to
//! `quarantine/` and the stream opens without it (logged at error level).
//! A last segment whose header is incomplete, or whose header promises a
//! group snapshot that is not there whole, was torn while being created
//! (nothing in it was acknowledged): it is removed and the segment before it
//! is active again. The active segment is fsynced once, so what it holds is
//! what a later failed sync cuts back to.
//!
//! Consumer groups come from the active segment alone: its snapshot (kind
//! 5, the first record when `FLAG_GROUP_SNAPSHOT` is set), then every group
//! op (kind 4) after it, applied in order. Then dead letters are reconciled:
//! an entry in `<stream>:dlq` after a group's last recorded move whose
//! original is still pending in that group was moved by a dead-lettering
//! that a crash interrupted before its removal was logged; the removal is
//! logged and applied now.
//!
//! # Duplicate window
//! Idempotency keys are not written anywhere of their own: each stream's
//! window ([`crate::Dedup`]) lives on the writer thread, beside the id
//! clock, and is rebuilt from the log itself, the newest events received
//! within the window (read back newest first, at most
//! [`Dedup::max_keys`](crate::Dedup::max_keys) keys), before the stream's
//! first keyed append after an open or a recovery from a failed write. So
//! the window holds exactly the keys of events the log holds: a group whose
//! `fdatasync` failed leaves none of its keys behind, and a repeat sent
//! after a restart is answered with the original id. The keys of an append
//! are remembered once its write succeeded; one that fails remembers none.
//! (`window.rs`)
//!
//! # How this is tested
//! `tests/corruption.rs` damages files of a closed store in named ways;
//! `tests/crash.rs` kills a writing process with SIGKILL; `tests/io_errors.rs`
//! runs the engine on `fs::FaultFs` (full disk, failed reads,
//! failed `fdatasync`); `tests/space_reserve.rs` fills a `fs::SimFs` disk
//! of limited capacity and checks consumers, trims and recovery;
//! `tests/power_cut.rs` runs the engine on `fs::SimFs` and cuts the power
//! at random moments, dropping, tearing or zeroing whatever was not synced
//! (50 cuts of each durability in CI; `BUSBAR_POWER_CUTS=1000` for a long
//! run, `BUSBAR_POWER_CUT_SEED` to replay one). A release run of 1,000 cuts
//! under `always` verifies about 85,000 acknowledged events in 17 s, and
//! under `interval` about 10,000 synced ones in 7 s, none lost:
//! `BUSBAR_POWER_CUTS=1000 cargo test --release -p busbar-store --test
//! power_cut -- --nocapture --test-threads 1`.
//!
//! # Retention
//! [`Store::trim`](crate::Store::trim) takes a count (`MaxLen`), an id (`MinId`), an age
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
mod reserve;
mod retention;
mod segment;
mod store;
mod stream;
mod window;
pub(crate) mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use busbar_event::StreamName;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};

use crate::fs::{Fs, RealFs};
use crate::{Durability, Result, StoreError, StoreMetrics};
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
    /// Where commit timings and failed writes are recorded (default: new
    /// ones; [`Store::metrics`](crate::Store::metrics) hands them out).
    pub metrics: Arc<StoreMetrics>,
    /// The file system every file operation goes through (the `LOCK` file
    /// aside). Tests put a [`crate::fs`] wrapper here to break the disk.
    pub fs: Arc<dyn Fs>,
    /// Bytes of disk held in `<dir>/RESERVE` and given back when the disk
    /// fills up, so consumers and trims keep working while appends are
    /// refused (see [A full disk](#a-full-disk)). 0: no reserve.
    pub reserve_bytes: u64,
    /// How often free space is looked at while the reserve is given back.
    pub space_check_interval: Duration,
    /// The duplicate window of idempotent appends ([`crate::Dedup`]).
    pub dedup: crate::Dedup,
}

impl EmbeddedConfig {
    /// Defaults for a store in `dir`: `always`, 64 MiB segments, an index
    /// entry every 16 KiB, fail on corruption, a queue of 4096 requests,
    /// the real file system, no space reserve (the daemon's
    /// `[storage] reserve` sets one), free space looked at every second
    /// while the reserve is given back, a duplicate window of two minutes
    /// and 100,000 keys per stream.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            dir: dir.into(),
            durability: Durability::Always,
            segment_bytes: 64 * 1024 * 1024,
            index_interval_bytes: 16 * 1024,
            on_corruption: CorruptionPolicy::Fail,
            queue_depth: 4096,
            retention: Retention::default(),
            metrics: Arc::default(),
            fs: Arc::new(RealFs),
            reserve_bytes: 0,
            space_check_interval: Duration::from_secs(1),
            dedup: crate::Dedup::default(),
        }
    }
}

/// The embedded store. See the module docs for format and guarantees.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    metrics: Arc<StoreMetrics>,
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
        // The entry of `streams` must be durable before any stream in it is.
        fs.sync_dir(dir)
            .map_err(|e| StoreError::io("sync data directory", dir, e))?;
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
        let reserve = reserve::Reserve::open(&config)?;

        let shared = Arc::new(Shared {
            streams: RwLock::new(handles),
            streams_dir,
            trash_dir,
            health: parking_lot::Mutex::new(reserve.initial_health()),
        });
        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        if let Durability::Interval(every) = config.durability {
            spawn_ticker(tx.downgrade(), every);
        }
        reserve.spawn_watcher(tx.downgrade());
        let config_dir = config.dir.clone();
        let metrics = config.metrics.clone();
        let writer = Writer::new(shared.clone(), config, streams, rx, reserve);
        let handle = std::thread::Builder::new()
            .name("busbar-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::io("start writer thread", &config_dir, e))?;
        Ok(EmbeddedStore {
            shared,
            metrics,
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
fn spawn_ticker(tx: mpsc::WeakSender<Op>, every: Duration) {
    let _ = std::thread::Builder::new()
        .name("busbar-store-ticker".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            // Weak, so a store dropped without `close` still lets its writer
            // see the queue close and stop.
            let Some(tx) = tx.upgrade() else { return };
            match tx.try_send(Op::Tick) {
                // A full queue means the writer is busy and will commit anyway.
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        });
}
