//! busbar's storage layer.
//!
//! Every backend implements [`Store`]: append (with an optional trim in the
//! same call), range reads by id forward or backward with a type filter,
//! trim, delete, stream info, listing, stream deletion and segment rotation.
//! Appends can be idempotent: a stream remembers each event's
//! `idempotency_key` for a while and answers a repeat with the original id
//! ([`Dedup`]; the window's semantics, bounds and cost are in its docs).
//! The same conformance suite ([`conformance`], feature `conformance`) runs
//! against each of them.
//!
//! - [`embedded::EmbeddedStore`]: the default, a segmented append-only log
//!   per stream on local disk with group commit. Its module docs describe the
//!   on-disk format, checksums, what each durability policy promises and how
//!   recovery works.
//! - [`memory::MemoryStore`]: RAM only (the runbooks' "amnesia" mode).
//!
//! ```
//! # tokio_test_block_on(async {
//! use busbar_event::{EventBatch, NewEvent, StreamName};
//! use busbar_store::{memory::MemoryStore, ReadQuery, Store};
//!
//! let store = MemoryStore::new();
//! let stream = StreamName::new("orders").unwrap();
//! let mut batch = EventBatch::new();
//! batch.push(&NewEvent::new("order.created", br#"{"n":1}"#)).unwrap();
//! let ids = store.append(&stream, batch, Default::default()).await.unwrap();
//! let events = store.read(&stream, &ReadQuery::all(10)).await.unwrap();
//! assert_eq!(events[0].id(), ids[0]);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

#![warn(missing_docs)]

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod dedup;
pub mod embedded;
mod error;
pub mod fs;
pub mod group;
mod ids;
pub mod memory;
mod metrics;
pub mod partition;
mod trim;
mod types;

use std::time::Duration;

use async_trait::async_trait;
use busbar_event::{Event, EventBatch, EventId, StreamName};
use group::{
    AckOutcome, ClaimOutcome, Expired, GroupConfig, GroupInfo, GroupStart, NackOptions,
    NackOutcome, PendingInfo, ReadOutcome,
};

pub use dedup::Dedup;
pub use error::{Result, StoreError};
pub use metrics::StoreMetrics;
pub use types::{
    AppendOptions, Appended, Durability, GroupStats, ParseDurabilityError, ReadQuery, Retention,
    Rotated, StreamInfo, StreamStats, Trim, TypeFilter, WriteHealth,
};

/// The contract every storage backend implements.
///
/// All methods are safe to call concurrently. Appends to one stream are
/// totally ordered: ids strictly increase in the order appends complete.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends a batch to `stream` (creating it), then applies `opts.trim`.
    /// Returns one id per event, in order, and which events were repeats
    /// (with `opts.dedup`: see [`Dedup`]) answered with the id of the event
    /// they repeat instead of being stored. Resolves once the store's
    /// durability policy holds for the whole batch.
    ///
    /// The batch is all or nothing: if any explicit id is not greater than
    /// the id before it, nothing is appended (and no key is remembered).
    ///
    /// # Errors
    /// [`StoreError::IdNotGreater`] for a bad explicit id; I/O errors.
    async fn append_detailed(
        &self,
        stream: &StreamName,
        batch: EventBatch,
        opts: AppendOptions,
    ) -> Result<Appended>;

    /// [`Store::append_detailed`], answering the ids alone.
    ///
    /// # Errors
    /// As [`Store::append_detailed`].
    async fn append(
        &self,
        stream: &StreamName,
        batch: EventBatch,
        opts: AppendOptions,
    ) -> Result<Vec<EventId>> {
        Ok(self.append_detailed(stream, batch, opts).await?.ids)
    }

    /// Reads events in `[query.start, query.end]`, oldest first (or newest
    /// first when `query.reverse`), at most `query.count` after filtering.
    ///
    /// # Errors
    /// [`StoreError::NoSuchStream`], [`StoreError::InvertedRange`], I/O.
    async fn read(&self, stream: &StreamName, query: &ReadQuery) -> Result<Vec<Event>>;

    /// Trims `stream`; returns how many events were removed.
    ///
    /// # Errors
    /// [`StoreError::NoSuchStream`], I/O.
    async fn trim(&self, stream: &StreamName, trim: Trim) -> Result<u64>;

    /// Deletes the given events; returns how many existed.
    ///
    /// # Errors
    /// [`StoreError::NoSuchStream`], I/O.
    async fn delete(&self, stream: &StreamName, ids: &[EventId]) -> Result<u64>;

    /// Describes `stream`.
    ///
    /// # Errors
    /// [`StoreError::NoSuchStream`].
    async fn info(&self, stream: &StreamName) -> Result<StreamInfo>;

    /// [`StreamInfo::added`] alone: cheaper than [`Store::info`] where a
    /// backend can tell it without looking at its events.
    ///
    /// # Errors
    /// As [`Store::info`].
    async fn added(&self, stream: &StreamName) -> Result<u64> {
        Ok(self.info(stream).await?.added)
    }

    /// Every stream, sorted by name.
    ///
    /// # Errors
    /// I/O.
    async fn streams(&self) -> Result<Vec<StreamName>>;

    /// Every stream's info with its groups' lag and pending, in one call:
    /// what a metrics scrape or a summary shows. Streams deleted while it
    /// runs are left out.
    ///
    /// # Errors
    /// I/O.
    async fn stats(&self) -> Result<Vec<StreamStats>> {
        let mut out = Vec::new();
        for name in self.streams().await? {
            let Ok(info) = self.info(&name).await else {
                continue;
            };
            let groups = self
                .groups(&name)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|g| GroupStats {
                    name: g.name,
                    lag: g.lag,
                    pending: g.pending,
                })
                .collect();
            out.push(StreamStats { info, groups });
        }
        Ok(out)
    }

    /// Removes a stream and all its events; returns whether it existed.
    ///
    /// # Errors
    /// I/O.
    async fn delete_stream(&self, stream: &StreamName) -> Result<bool>;

    /// Seals the active segment of `stream` so the next append starts a new
    /// one.
    ///
    /// # Errors
    /// [`StoreError::NoSuchStream`], I/O.
    async fn rotate(&self, stream: &StreamName) -> Result<Rotated>;

    /// Makes every acknowledged append durable now, whatever the policy.
    ///
    /// # Errors
    /// I/O, including when an acknowledged append can no longer be made
    /// durable (a failed write cost it, as a power loss would).
    async fn sync(&self) -> Result<()>;

    /// Stops accepting work, makes everything durable and releases files.
    /// Later calls fail with [`StoreError::Closed`].
    ///
    /// # Errors
    /// I/O.
    async fn close(&self) -> Result<()>;

    /// A short name of the backend (`embedded`, `memory`, ...).
    fn kind(&self) -> &'static str;

    /// Whether writes are going through: [`WriteHealth::Full`] while the
    /// disk is full, [`WriteHealth::Failed`] after another write error,
    /// until a write succeeds again. Cheap and synchronous (readiness checks
    /// call it). Backends that cannot fail say `Ok`.
    fn write_health(&self) -> WriteHealth {
        WriteHealth::Ok
    }

    /// The metrics the store records as it writes (group commits, fsync
    /// times, failed writes), for the daemon to register; `None` for a
    /// backend that records none.
    fn metrics(&self) -> Option<std::sync::Arc<StoreMetrics>> {
        None
    }

    /// Creates consumer group `group` on `stream` (creating the stream when
    /// it does not exist, like `XGROUP CREATE ... MKSTREAM`).
    ///
    /// # Errors
    /// [`StoreError::GroupExists`], [`StoreError::InvalidName`], I/O.
    async fn create_group(
        &self,
        stream: &StreamName,
        group: &str,
        start: GroupStart,
        config: GroupConfig,
    ) -> Result<GroupInfo>;

    /// Deletes a group and its pending entries; returns whether it existed.
    ///
    /// # Errors
    /// [`StoreError::NoSuchStream`], I/O.
    async fn delete_group(&self, stream: &StreamName, group: &str) -> Result<bool>;

    /// Every group of `stream`, by name.
    ///
    /// # Errors
    /// [`StoreError::NoSuchStream`].
    async fn groups(&self, stream: &StreamName) -> Result<Vec<GroupInfo>>;

    /// One group.
    ///
    /// # Errors
    /// [`StoreError::NoSuchStream`], [`StoreError::NoSuchGroup`].
    async fn group(&self, stream: &StreamName, group: &str) -> Result<GroupInfo>;

    /// Delivers up to `count` events to `consumer` (created on first read):
    /// due pending entries first, then new events. Exhausted entries met on
    /// the way are dead-lettered. Never blocks; callers wait for appends.
    /// Under `always`, the deliveries are durable before this returns.
    ///
    /// # Errors
    /// [`StoreError::NoSuchStream`], [`StoreError::NoSuchGroup`],
    /// [`StoreError::InvalidName`], I/O.
    async fn read_group(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<ReadOutcome>;

    /// Acknowledges events held by `consumer` (by anyone when `None`).
    /// Under `always`, durable before it returns.
    ///
    /// # Errors
    /// As [`Store::read_group`].
    async fn ack(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: Option<&str>,
        ids: &[EventId],
    ) -> Result<AckOutcome>;

    /// Negatively acknowledges events held by `consumer`.
    ///
    /// # Errors
    /// As [`Store::read_group`].
    async fn nack(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        ids: &[EventId],
        opts: NackOptions,
    ) -> Result<NackOutcome>;

    /// Moves entries idle for at least `min_idle` to `consumer`, scanning
    /// the pending list from `start` (`XAUTOCLAIM`).
    ///
    /// # Errors
    /// As [`Store::read_group`].
    async fn claim(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: EventId,
        count: usize,
    ) -> Result<ClaimOutcome>;

    /// Pending entries in `[start, end]`, of one consumer or all.
    ///
    /// # Errors
    /// [`StoreError::NoSuchStream`], [`StoreError::NoSuchGroup`].
    async fn pending(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: Option<&str>,
        start: EventId,
        end: EventId,
        count: usize,
    ) -> Result<Vec<PendingInfo>>;

    /// Pauses or resumes delivery to a group (publishing goes on).
    ///
    /// # Errors
    /// [`StoreError::NoSuchStream`], [`StoreError::NoSuchGroup`], I/O.
    async fn set_paused(&self, stream: &StreamName, group: &str, paused: bool) -> Result<()>;

    /// Removes a consumer; its pending entries become deliverable to others
    /// at once. Returns how many it held.
    ///
    /// # Errors
    /// [`StoreError::NoSuchStream`], [`StoreError::NoSuchGroup`], I/O.
    async fn delete_consumer(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
    ) -> Result<u64>;

    /// Moves a group's cursor (a replay into an existing group moves it
    /// back so events are delivered again).
    ///
    /// # Errors
    /// [`StoreError::NoSuchStream`], [`StoreError::NoSuchGroup`], I/O.
    async fn set_cursor(&self, stream: &StreamName, group: &str, cursor: EventId) -> Result<()>;

    /// Retires due entries that are out of attempts in every group of
    /// `stream`; returns what each group dead-lettered and dropped (groups
    /// with nothing to retire are left out).
    ///
    /// # Errors
    /// [`StoreError::NoSuchStream`], I/O.
    async fn expire(&self, stream: &StreamName) -> Result<Vec<Expired>>;
}
