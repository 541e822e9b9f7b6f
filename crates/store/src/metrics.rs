//! What a store records as it writes: group commits and the events they
//! covered, `fdatasync` times, failed writes by kind, the bytes its space
//! reserve holds, and what its duplicate window answered and forgot. The
//! store keeps the instruments; the daemon registers them for `/metrics`.

use std::time::Duration;

use busbar_metrics::{names, Collector, Counter, Encoder, Family, Gauge, Histogram, Kind};

/// A store's write-path metrics.
#[derive(Debug)]
pub struct StoreMetrics {
    /// Group commits.
    pub commits: Counter,
    /// Events acknowledged by group commits.
    pub commit_events: Counter,
    /// Time spent in `fdatasync` per group commit.
    pub fsync_seconds: Histogram,
    /// Writes and syncs that failed, by kind (`full`, `io`).
    pub write_errors: Family<Counter, 1>,
    /// Bytes the space reserve holds now (0 while it is given back to a
    /// full disk, or off).
    pub reserve_bytes: Gauge,
    /// Events answered with the id of the event they repeat instead of
    /// being stored, by stream ([`crate::Dedup`]).
    pub dedup_hits: Family<Counter, 1>,
    /// Idempotency keys forgotten before their window ended because a
    /// stream remembered [`crate::Dedup::max_keys`], by stream.
    pub dedup_evicted: Family<Counter, 1>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            commits: Counter::default(),
            commit_events: Counter::default(),
            fsync_seconds: Histogram::default(),
            write_errors: Family::new(["kind"]),
            reserve_bytes: Gauge::default(),
            dedup_hits: Family::new(["stream"]),
            dedup_evicted: Family::new(["stream"]),
        }
    }
}

impl StoreMetrics {
    /// One group commit: `events` appended and made durable as the policy
    /// says; `fsync` is the time spent in `fdatasync` (zero when the policy
    /// did not sync this commit).
    pub fn commit(&self, events: usize, fsync: Duration) {
        self.commits.inc();
        self.commit_events.add(events as u64);
        if !fsync.is_zero() {
            self.fsync_seconds.observe(fsync);
        }
    }
}

impl Collector for StoreMetrics {
    fn collect(&self, out: &mut Encoder<'_>) {
        out.header(
            names::FSYNC_SECONDS,
            Kind::Histogram,
            "Time spent in fdatasync per group commit.",
        );
        out.histogram(names::FSYNC_SECONDS, &[], &self.fsync_seconds);
        out.header(
            names::COMMIT_BATCH,
            Kind::Counter,
            "Events acknowledged by group commits.",
        );
        out.sample(names::COMMIT_BATCH, &[], self.commit_events.get());
        out.header(names::COMMITS, Kind::Counter, "Group commits.");
        out.sample(names::COMMITS, &[], self.commits.get());
        out.counters(
            names::STORAGE_WRITE_ERRORS,
            "Writes and fdatasyncs the disk failed, by kind (full: no space or quota; io: any other error).",
            &self.write_errors,
        );
        out.header(
            names::STORAGE_RESERVE_BYTES,
            Kind::Gauge,
            "Bytes the space reserve holds (0 while it is given back to a full disk, or off).",
        );
        out.sample(names::STORAGE_RESERVE_BYTES, &[], self.reserve_bytes.get());
        out.counters(
            names::DEDUP_HITS,
            "Published events answered with the id of the event they repeat (same idempotency_key within the duplicate window) instead of being stored.",
            &self.dedup_hits,
        );
        out.counters(
            names::DEDUP_EVICTED,
            "Idempotency keys forgotten before their duplicate window ended because the stream remembered storage.dedup_max_keys.",
            &self.dedup_evicted,
        );
    }
}
