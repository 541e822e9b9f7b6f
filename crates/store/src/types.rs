use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use busbar_event::{Event, EventId, StreamName};
use serde::Serialize;

use crate::partition::PartitionId;

/// What an acknowledged append survives.
///
/// | policy | acknowledged after | a process crash loses | a power loss loses |
/// |---|---|---|---|
/// | `always` | the batch is written and `fdatasync`ed | nothing | nothing |
/// | `interval:<d>` | the batch is written (page cache) | nothing | up to `<d>` of appends |
/// | `never` | the batch is written (page cache) | nothing | whatever the OS had not written back |
///
/// Group commit makes `always` cheap under concurrency: every append that
/// arrives while one `fdatasync` runs is covered by the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fdatasync` before acknowledging (group commit).
    #[default]
    Always,
    /// `fdatasync` at most this long after a write.
    Interval(Duration),
    /// Leave write-back to the operating system.
    Never,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Always => f.write_str("always"),
            Durability::Interval(d) => write!(f, "interval:{}ms", d.as_millis()),
            Durability::Never => f.write_str("never"),
        }
    }
}

/// A durability policy that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid durability `{0}`: expected always, never or interval:<duration> (e.g. interval:100ms)"
)]
pub struct ParseDurabilityError(pub String);

impl FromStr for Durability {
    type Err = ParseDurabilityError;

    /// Parses `always`, `never`, or `interval:<n>ms|s`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDurabilityError(s.to_owned());
        match s.trim() {
            "always" => Ok(Durability::Always),
            "never" => Ok(Durability::Never),
            other => {
                let spec = other.strip_prefix("interval:").ok_or_else(err)?.trim();
                let (num, unit) = spec
                    .find(|c: char| !c.is_ascii_digit())
                    .map(|i| spec.split_at(i))
                    .ok_or_else(err)?;
                let n: u64 = num.parse().map_err(|_| err())?;
                let d = match unit.trim() {
                    "ms" => Duration::from_millis(n),
                    "s" => Duration::from_secs(n),
                    _ => return Err(err()),
                };
                if d.is_zero() {
                    return Err(err());
                }
                Ok(Durability::Interval(d))
            }
        }
    }
}

/// Which events a read returns, XRANGE / XREVRANGE style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadQuery {
    /// Smallest id (inclusive).
    pub start: EventId,
    /// Largest id (inclusive).
    pub end: EventId,
    /// At most this many events.
    pub count: usize,
    /// Newest first when true.
    pub reverse: bool,
    /// Only events whose type matches.
    pub types: Option<TypeFilter>,
    /// One partition only; `None` (the default): every partition of the
    /// stream, merged by id.
    pub partition: Option<PartitionId>,
}

impl ReadQuery {
    /// Every event, oldest first, at most `count`.
    pub fn all(count: usize) -> Self {
        ReadQuery {
            start: EventId::ZERO,
            end: EventId::MAX,
            count,
            reverse: false,
            types: None,
            partition: None,
        }
    }

    /// Events from `start` to `end` inclusive.
    pub fn range(start: EventId, end: EventId, count: usize) -> Self {
        ReadQuery {
            start,
            end,
            ..ReadQuery::all(count)
        }
    }

    /// The same query, newest first.
    pub fn reversed(mut self) -> Self {
        self.reverse = true;
        self
    }

    /// Refuses a query no single-partition backend can answer: an inverted
    /// range, or a partition other than 0.
    ///
    /// # Errors
    /// [`crate::StoreError::InvertedRange`],
    /// [`crate::StoreError::NoSuchPartition`].
    pub(crate) fn check_single_partition(
        &self,
        stream: &busbar_event::StreamName,
    ) -> crate::Result<()> {
        crate::StoreError::check_single_partition(stream, self.partition)?;
        if self.start > self.end {
            return Err(crate::StoreError::InvertedRange {
                start: self.start,
                end: self.end,
            });
        }
        Ok(())
    }

    /// Whether `event` passes the type filter.
    pub fn matches(&self, event: &Event) -> bool {
        self.types
            .as_ref()
            .is_none_or(|t| t.matches(event.event_type()))
    }
}

/// Event types to keep: exact names, or prefixes written `name.*`.
///
/// ```
/// use busbar_store::TypeFilter;
/// let f = TypeFilter::new(["order.*", "user.created"]);
/// assert!(f.matches("order.paid"));
/// assert!(f.matches("user.created"));
/// assert!(!f.matches("user.deleted"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeFilter {
    patterns: Vec<String>,
}

impl TypeFilter {
    /// A filter from patterns.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(patterns: I) -> Self {
        TypeFilter {
            patterns: patterns.into_iter().map(Into::into).collect(),
        }
    }

    /// The patterns, as given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `event_type` matches any pattern.
    pub fn matches(&self, event_type: &str) -> bool {
        self.patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => event_type.starts_with(prefix),
            None => p == event_type,
        })
    }
}

/// How to shrink a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trim {
    /// Keep at most `max` events. `approx` lets the store keep more so it
    /// can drop whole segments (Redis `MAXLEN ~`).
    MaxLen {
        /// Events to keep.
        max: u64,
        /// Whether more may be kept.
        approx: bool,
    },
    /// Remove events with ids below `id`.
    MinId {
        /// The smallest id kept.
        id: EventId,
        /// Whether older events may be kept.
        approx: bool,
    },
    /// Remove events older than `age` (by id time, which is receive time
    /// unless the producer chose explicit ids).
    MaxAge {
        /// The oldest age kept.
        age: Duration,
        /// Whether older events may be kept.
        approx: bool,
    },
    /// Drop whole oldest segments while the stream is larger than `max`
    /// bytes. Always approximate: the active segment is never dropped.
    MaxBytes {
        /// Bytes to keep at most (segment granularity).
        max: u64,
    },
}

/// Options of an append.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendOptions {
    /// A trim applied in the same operation, after the append.
    pub trim: Option<Trim>,
    /// The partition every event of the batch goes to, for a caller that
    /// placed the batch itself (a relay replaying one partition). `None`
    /// (the default): each event goes where its `key` says
    /// ([`crate::partition::partition_for`]).
    pub partition: Option<PartitionId>,
    /// Idempotent publish: an event whose `idempotency_key` the stream
    /// remembers (within the store's [`crate::Dedup`] window) is not stored
    /// again but answered with the original's id, and so is a repeat of a
    /// key earlier in the same batch. Off by default: a producer's publish
    /// turns it on; busbar's own copies (dead letters, reprocessing,
    /// replays) store every event they are given.
    pub dedup: bool,
}

/// What an append did ([`crate::Store::append_detailed`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    /// One id per event of the batch, in order: the id it was stored
    /// under, or for a repeat, the id of the event it repeats.
    pub ids: Vec<EventId>,
    /// Indexes (into the batch, ascending) of the events that were
    /// repeats and were not stored. Empty, and not allocated, for an
    /// append with none.
    pub duplicates: Vec<usize>,
}

impl Appended {
    /// An append that stored every event under `ids`.
    pub fn stored(ids: Vec<EventId>) -> Self {
        Appended {
            ids,
            duplicates: Vec::new(),
        }
    }

    /// Whether event `index` of the batch was a repeat.
    pub fn is_duplicate(&self, index: usize) -> bool {
        !self.duplicates.is_empty() && self.duplicates.binary_search(&index).is_ok()
    }

    /// The ids of the events stored by this append (repeats left out).
    pub fn stored_ids(&self) -> impl Iterator<Item = EventId> + '_ {
        self.ids
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.is_duplicate(*i))
            .map(|(_, id)| *id)
    }
}

/// What a store knows about one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamInfo {
    /// The stream.
    pub name: StreamName,
    /// Number of events.
    pub length: u64,
    /// Oldest event id, if any event remains.
    pub first_id: Option<EventId>,
    /// Newest id ever assigned (kept after trims, so ids never repeat).
    pub last_id: EventId,
    /// Bytes the stream's events occupy (record frames).
    pub bytes: u64,
    /// Segment files (0 for memory).
    pub segments: u64,
    /// Partitions of the stream (1 for an unpartitioned stream).
    pub partitions: u32,
    /// Events ever appended, counting those trimmed or deleted since (from
    /// when the store opened, starting at the events it held then). Only
    /// grows: `added` minus the events a reader has seen since an earlier
    /// `added` is what was removed before that reader got to it.
    pub added: u64,
}

/// A stream's figures for metrics and summaries ([`crate::Store::stats`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamStats {
    /// The stream.
    pub info: StreamInfo,
    /// Its consumer groups, by name.
    pub groups: Vec<GroupStats>,
}

/// A consumer group's figures for metrics and summaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupStats {
    /// The group.
    pub name: String,
    /// Events after its cursor not yet delivered.
    pub lag: u64,
    /// Delivered, unacknowledged events.
    pub pending: u64,
}

/// What `rotate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rotated {
    /// Whether a segment was sealed (false when the active one was empty or
    /// the backend has no segments).
    pub sealed: bool,
    /// Segments after the rotation.
    pub segments: u64,
}

/// Automatic retention. The embedded engine applies it approximately, in
/// whole segments, whenever a segment is sealed; the memory engine applies
/// it exactly on every append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep (at least) this many newest events.
    pub max_len: Option<u64>,
    /// Drop events older than this (the embedded engine: segments whose
    /// events all are).
    pub max_age: Option<Duration>,
    /// Drop the oldest events while a stream is larger than this.
    pub max_bytes: Option<u64>,
}

/// Whether a store can take writes now ([`crate::Store::write_health`]).
///
/// A storage error is a state, not the end: a store that is `Full` or
/// `Failed` tries every write that comes, and the first that succeeds
/// brings it back to `Ok`. Reads are unaffected. Serialized with a `state`
/// tag: `{"state":"full","path":"...","since_ms":...}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WriteHealth {
    /// The last write succeeded (or none failed yet).
    #[default]
    Ok,
    /// The last write failed because the disk or the quota is full.
    Full {
        /// The file or directory that could not grow.
        path: PathBuf,
        /// When the store became full (ms since the Unix epoch).
        since_ms: u64,
    },
    /// The last write, or an `fdatasync`, failed for another reason, or a
    /// stream is waiting to be recovered after one.
    Failed {
        /// What failed (operation, file, operating system error; never an
        /// event payload).
        reason: String,
        /// When the store entered this state (ms since the Unix epoch).
        since_ms: u64,
    },
}

impl WriteHealth {
    /// Whether writes are going through.
    pub fn is_ok(&self) -> bool {
        matches!(self, WriteHealth::Ok)
    }
}
