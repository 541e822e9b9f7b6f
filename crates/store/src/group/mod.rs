//! Consumer groups: shared types and the group state machine every backend
//! uses.
//!
//! A group reads a stream from its cursor. Each delivery enters the group's
//! pending-entries list (PEL) with the consumer, the delivery count and when
//! it may be delivered again (`visible_at`: delivery time + `ack_wait`, or
//! the end of a nack's delay). Reading first redelivers due pending entries
//! (oldest first), then delivers new events after the cursor. An entry that
//! is due but has been delivered `max_deliver` times is dead-lettered:
//! appended to `<stream>:dlq` with why it failed, and removed from the PEL,
//! exactly once (or dropped, when the group says so).
//!
//! Every change is a [`GroupOp`]: backends apply ops to [`GroupState`], and
//! the embedded engine also logs them so recovery replays the same ops.

mod codec;
pub(crate) mod state;

use std::time::Duration;

use busbar_event::{Event, EventId, StreamName};
use serde::{Deserialize, Serialize};

pub(crate) use codec::{decode_op, encode_op};
pub use state::{Consumer, GroupOp, GroupState, Pending};

use crate::{Result, StoreError};

/// The suffix of a stream's dead-letter stream.
pub const DLQ_SUFFIX: &str = ":dlq";

/// The dead-letter stream of `stream`.
///
/// # Errors
/// [`StoreError::Event`] when the name would be too long.
pub fn dlq_stream(stream: &StreamName) -> Result<StreamName> {
    Ok(StreamName::new(&format!("{stream}{DLQ_SUFFIX}"))?)
}

/// Validates a group or consumer name: 1 to 200 bytes of ASCII letters,
/// digits and `_ - . :`.
///
/// # Errors
/// [`StoreError::InvalidName`].
pub fn validate_name(kind: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            kind,
            reason: "1 to 200 bytes of ASCII letters, digits and _ - . :",
        })
    }
}

/// What happens to an event delivered `max_deliver` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exhausted {
    /// Move it to `<stream>:dlq` (the default: nothing is lost).
    #[default]
    DeadLetter,
    /// Drop it.
    Drop,
}

/// A group's delivery policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupConfig {
    /// Deliveries before an event is exhausted (default 3).
    pub max_deliver: u32,
    /// How long a delivery may stay unacknowledged before it is delivered
    /// again (default 30 s).
    #[serde(with = "millis")]
    pub ack_wait: Duration,
    /// Most pending events one consumer may hold (default 1000); a consumer
    /// at its cap gets nothing new until it acks.
    pub max_pending_per_consumer: u32,
    /// What happens to exhausted events.
    pub on_exhausted: Exhausted,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            max_deliver: 3,
            ack_wait: Duration::from_secs(30),
            max_pending_per_consumer: 1000,
            on_exhausted: Exhausted::DeadLetter,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Where a new group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStart {
    /// From the first event (`0`).
    Beginning,
    /// After the last event (`$`): only events appended from now on.
    End,
    /// After this id (events with greater ids are delivered).
    After(EventId),
}

/// A delivered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The event.
    pub event: Event,
    /// How many times it has been delivered, this delivery included.
    pub delivery_count: u32,
}

/// What a read did besides delivering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Events delivered, redeliveries first.
    pub deliveries: Vec<Delivery>,
    /// How many of them were redeliveries.
    pub redelivered: u32,
    /// Events moved to the dead-letter stream by this read.
    pub dead_lettered: u32,
    /// Exhausted events dropped by this read (`on_exhausted = drop`).
    pub dropped: u32,
}

/// A pending entry as reported to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingInfo {
    /// The event id.
    pub id: EventId,
    /// The consumer holding it.
    pub consumer: String,
    /// Deliveries so far.
    pub delivery_count: u32,
    /// Milliseconds since the last delivery.
    pub idle_ms: u64,
    /// The last error a nack gave, if any.
    pub last_error: Option<String>,
}

/// A consumer as reported to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerInfo {
    /// Its name.
    pub name: String,
    /// Pending events it holds.
    pub pending: u64,
    /// Milliseconds since it last read, acked or claimed.
    pub idle_ms: u64,
}

/// A group as reported to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    /// The stream.
    pub stream: StreamName,
    /// The group.
    pub name: String,
    /// Its consumers.
    pub consumers: Vec<ConsumerInfo>,
    /// Pending (delivered, unacknowledged) events.
    pub pending: u64,
    /// Events after the cursor not yet delivered.
    pub lag: u64,
    /// The last id delivered.
    pub last_delivered_id: EventId,
    /// When an event was last acknowledged (ms since the epoch).
    pub last_ack_ms: Option<u64>,
    /// Whether delivery is paused.
    pub paused: bool,
    /// Delivery policy.
    pub config: GroupConfig,
}

/// The result of an ack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AckOutcome {
    /// Ids acknowledged.
    pub acked: Vec<EventId>,
    /// Ids the group has no pending entry for.
    pub unknown: Vec<EventId>,
    /// Ids pending for another consumer (not acknowledged).
    pub wrong_consumer: Vec<EventId>,
    /// For each acked id, milliseconds from its last delivery to the ack.
    pub processing_ms: Vec<u64>,
}

/// How to nack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NackOptions {
    /// Wait this long before delivering again.
    pub delay: Option<Duration>,
    /// Dead-letter now instead of retrying.
    pub terminal: bool,
    /// Why processing failed (kept with the entry and in the DLQ).
    pub error: Option<String>,
}

/// The result of a nack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NackOutcome {
    /// Ids that will be delivered again.
    pub retried: Vec<EventId>,
    /// Ids moved to the dead-letter stream (terminal, or out of attempts).
    pub dead_lettered: Vec<EventId>,
    /// Ids dropped (out of attempts, group drops exhausted events).
    pub dropped: Vec<EventId>,
    /// Ids the group has no pending entry for.
    pub unknown: Vec<EventId>,
    /// Ids pending for another consumer.
    pub wrong_consumer: Vec<EventId>,
}

/// What the sweeper retired in one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expired {
    /// The group.
    pub group: String,
    /// Events moved to the dead-letter stream.
    pub dead_lettered: u32,
    /// Events dropped (`on_exhausted = drop`).
    pub dropped: u32,
}

/// The result of a claim (XAUTOCLAIM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimOutcome {
    /// Entries now held by the claiming consumer.
    pub deliveries: Vec<Delivery>,
    /// Where to continue scanning (`None`: the scan reached the end).
    pub next: Option<EventId>,
    /// Pending entries whose event no longer exists (trimmed), removed.
    pub deleted: Vec<EventId>,
}

/// Runs the sweeper over every group of a host's stream.
pub(crate) fn expire_all<H: host::GroupHost + ?Sized>(
    h: &mut H,
    now_ms: u64,
) -> Result<Vec<Expired>> {
    let names: Vec<String> = h.groups().keys().cloned().collect();
    let mut out = Vec::new();
    for name in names {
        let (dead_lettered, dropped) = host::expire(h, &name, now_ms)?;
        if dead_lettered + dropped > 0 {
            out.push(Expired {
                group: name,
                dead_lettered,
                dropped,
            });
        }
    }
    Ok(out)
}

/// Builds the meta annotation of a dead-lettered event.
pub(crate) fn dlq_meta(
    stream: &StreamName,
    group: &str,
    id: EventId,
    attempts: u32,
    error: Option<&str>,
    now_ms: u64,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "original_id": id.to_string(),
        "stream": stream.as_str(),
        "group": group,
        "attempts": attempts,
        "last_error": error,
        "dead_lettered_at": now_ms,
    }))
    .unwrap_or_default()
}

/// What a dead-letter entry's meta says about where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DlqOrigin {
    /// The id in the original stream.
    pub original_id: EventId,
    /// The original stream.
    pub stream: String,
    /// The group that gave up on it.
    pub group: String,
    /// Deliveries made.
    pub attempts: u32,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When it was dead-lettered (ms).
    pub dead_lettered_at: u64,
}

impl DlqOrigin {
    /// Reads the origin from a dead-letter event's meta.
    pub fn of(event: &Event) -> Option<DlqOrigin> {
        serde_json::from_slice(event.meta()?).ok()
    }
}

pub(crate) mod host;
