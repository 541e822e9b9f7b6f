use std::path::PathBuf;

use busbar_event::{EventError, EventId, StreamName};
use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream does not exist.
    #[error("stream `{stream}` does not exist")]
    NoSuchStream {
        /// The stream asked for.
        stream: StreamName,
    },
    /// An explicit id is not greater than the stream's last id.
    #[error("id {requested} is not greater than the last id {last} of stream `{stream}`")]
    IdNotGreater {
        /// The stream.
        stream: StreamName,
        /// The id that was asked for.
        requested: EventId,
        /// The stream's last id.
        last: EventId,
    },
    /// A range whose start is after its end.
    #[error("range start {start} is after its end {end}")]
    InvertedRange {
        /// Start of the range.
        start: EventId,
        /// End of the range.
        end: EventId,
    },
    /// An event or record is invalid.
    #[error(transparent)]
    Event(#[from] EventError),
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The disk (or the quota) is full: `ENOSPC` or `EDQUOT`. Nothing of
    /// the failed operation took effect; the same operation can be tried
    /// again once space is freed.
    #[error("no space left to {op} {}", path.display())]
    Full {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
    },
    /// Data on disk is damaged in a way recovery must not paper over.
    #[error("corrupt data in {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the data directory.
    #[error("data directory {} is locked by another process", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The consumer group does not exist.
    #[error("group `{group}` does not exist on stream `{stream}`")]
    NoSuchGroup {
        /// The stream.
        stream: StreamName,
        /// The group asked for.
        group: String,
    },
    /// A group of that name already exists.
    #[error("group `{group}` already exists on stream `{stream}`")]
    GroupExists {
        /// The stream.
        stream: StreamName,
        /// The group.
        group: String,
    },
    /// A group or consumer name breaks the naming rules.
    #[error("invalid {kind} name: {reason}")]
    InvalidName {
        /// `group` or `consumer`.
        kind: &'static str,
        /// The rule.
        reason: &'static str,
    },
    /// A partition the stream does not have.
    #[error("stream `{stream}` has no partition {partition} (it has {partitions})")]
    NoSuchPartition {
        /// The stream.
        stream: StreamName,
        /// The partition asked for.
        partition: crate::partition::PartitionId,
        /// How many it has.
        partitions: u32,
    },
    /// The store has been closed ([`crate::Store::close`]).
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// Refuses `partition` on a backend whose streams have one partition.
    pub(crate) fn check_single_partition(
        stream: &StreamName,
        partition: Option<crate::partition::PartitionId>,
    ) -> Result<()> {
        match partition {
            Some(p) if p.0 != 0 => Err(StoreError::NoSuchPartition {
                stream: stream.clone(),
                partition: p,
                partitions: 1,
            }),
            _ => Ok(()),
        }
    }

    /// An I/O error, or [`StoreError::Full`] when it says the disk or the
    /// quota is full.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let full = matches!(
            source.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        );
        if full {
            StoreError::Full {
                op,
                path: path.into(),
            }
        } else {
            StoreError::Io {
                op,
                path: path.into(),
                source,
            }
        }
    }

    /// The same error again, for answering every caller a failure touched
    /// (I/O errors are not `Clone`).
    pub(crate) fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Full { op, path } => StoreError::Full {
                op,
                path: path.clone(),
            },
            StoreError::Io { op, path, source } => StoreError::Io {
                op,
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            StoreError::Corrupt {
                path,
                offset,
                reason,
            } => StoreError::Corrupt {
                path: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            StoreError::Locked { path } => StoreError::Locked { path: path.clone() },
            other => StoreError::Io {
                op: "commit",
                path: PathBuf::new(),
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
