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
    /// The store has been closed, or its writer stopped after an I/O error.
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
