//! The binary event record, shared by every store.
//!
//! ```text
//! body (all integers little-endian):
//!   0  u8   kind = 1 (event)
//!   1  u8   flags: 1 ts | 2 tenant | 4 key | 8 session | 16 idempotency_key | 32 explicit id
//!   2  u16  type length        4  u16 tenant length     6  u16 key length
//!   8  u16  session length     10 u16 idempotency length 12 u32 payload length
//!   16 u64  id.ms              24 u64 id.seq
//!   32 u64  received ms        40 i64 ts (0 when absent)
//!   48 type | tenant | key | session | idempotency_key
//!      [u32 meta length | meta (JSON object)]   when flags & 64
//!      payload (JSON object)
//! ```
//!
//! `meta` is busbar's own annotation of an event, never the producer's: a
//! dead-lettered event carries why it failed, a reprocessed one where it
//! came from.
//!
//! Stores frame each body as `u32 length | u32 crc32c(body) | body`; the
//! frame is what an [`EventBatch`](crate::EventBatch) holds and what the
//! embedded store writes to disk unchanged.

use bytes::Bytes;

use crate::{EventError, EventId};

/// Length of the fixed part of a record body.
pub const RECORD_HEADER_LEN: usize = 48;
pub(crate) const KIND_EVENT: u8 = 1;
pub(crate) const FLAG_TS: u8 = 1;
pub(crate) const FLAG_TENANT: u8 = 2;
pub(crate) const FLAG_KEY: u8 = 4;
pub(crate) const FLAG_SESSION: u8 = 8;
pub(crate) const FLAG_IDEMPOTENCY: u8 = 16;
pub(crate) const FLAG_EXPLICIT_ID: u8 = 32;
pub(crate) const FLAG_META: u8 = 64;

/// An event to append, borrowing its fields. For library users who build
/// events in code rather than parsing producer JSON.
///
/// ```
/// use busbar_event::{EventBatch, NewEvent};
/// let mut batch = EventBatch::new();
/// batch.push(&NewEvent::new("user.signed_up", br#"{"plan":"pro"}"#).with_key("u-42")).unwrap();
/// assert_eq!(batch.len(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEvent<'a> {
    /// The event type.
    pub event_type: &'a str,
    /// The payload: a JSON object's text.
    pub payload: &'a [u8],
    /// Tenant, if any.
    pub tenant: Option<&'a str>,
    /// Ordering / partition key, if any.
    pub key: Option<&'a str>,
    /// Producer time in ms, if any.
    pub ts: Option<i64>,
    /// Producer session, if any.
    pub session: Option<&'a str>,
    /// Idempotency key, if any.
    pub idempotency_key: Option<&'a str>,
    /// An explicit id; it must be greater than the stream's last id.
    pub id: Option<EventId>,
    /// busbar's annotation (a JSON object), e.g. dead-letter details.
    pub meta: Option<&'a [u8]>,
}

impl<'a> NewEvent<'a> {
    /// An event of `event_type` with a JSON object `payload`.
    pub fn new(event_type: &'a str, payload: &'a [u8]) -> Self {
        NewEvent {
            event_type,
            payload,
            tenant: None,
            key: None,
            ts: None,
            session: None,
            idempotency_key: None,
            id: None,
            meta: None,
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: &'a str) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets the tenant.
    pub fn with_tenant(mut self, tenant: &'a str) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// Asks for an explicit id.
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = Some(id);
        self
    }

    /// Copies every field of a stored event (id excepted), so it can be
    /// appended again elsewhere (dead-lettering, reprocessing, replay).
    pub fn from_event(event: &'a Event) -> Self {
        NewEvent {
            event_type: event.event_type(),
            payload: event.payload(),
            tenant: event.tenant(),
            key: event.key(),
            ts: event.ts(),
            session: event.session(),
            idempotency_key: event.idempotency_key(),
            id: None,
            meta: event.meta(),
        }
    }

    /// Sets busbar's annotation (a JSON object).
    pub fn with_meta(mut self, meta: &'a [u8]) -> Self {
        self.meta = Some(meta);
        self
    }
}

/// A stored event: a cheap, cloneable view over its record body.
#[derive(Clone, PartialEq, Eq)]
pub struct Event {
    body: Bytes,
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4])) as usize
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

impl Event {
    /// Wraps a record body after checking its lengths add up.
    ///
    /// # Errors
    /// [`EventError::CorruptRecord`] when the body is not a well-formed event.
    pub fn from_body(body: Bytes) -> Result<Event, EventError> {
        Event::check_body(&body)?;
        Ok(Event { body })
    }

    /// Checks that `body` is a whole event record, as [`Event::from_body`]
    /// does, without taking it: what a store scanning its files calls
    /// before it counts a record as an event.
    ///
    /// # Errors
    /// [`EventError::CorruptRecord`] naming what does not fit.
    pub fn check_body(body: &[u8]) -> Result<(), EventError> {
        let corrupt = |reason| EventError::CorruptRecord { reason };
        if body.len() < RECORD_HEADER_LEN {
            return Err(corrupt("shorter than the record header"));
        }
        if body[0] != KIND_EVENT {
            return Err(corrupt("not an event record"));
        }
        let text: usize = [2, 4, 6, 8, 10].iter().map(|&at| u16_at(body, at)).sum();
        let text_end = RECORD_HEADER_LEN + text;
        if text_end > body.len() {
            return Err(corrupt("field lengths run past the record"));
        }
        let mut end = text_end;
        if body[1] & FLAG_META != 0 {
            if body.len() < end + 4 {
                return Err(corrupt("meta length runs past the record"));
            }
            end += 4 + u32_at(body, end);
        }
        if end.checked_add(u32_at(body, 12)) != Some(body.len()) {
            return Err(corrupt("field lengths do not match the record length"));
        }
        if std::str::from_utf8(&body[RECORD_HEADER_LEN..text_end]).is_err() {
            return Err(corrupt("text field is not UTF-8"));
        }
        Ok(())
    }

    /// The record body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The event id.
    pub fn id(&self) -> EventId {
        EventId::new(u64_at(&self.body, 16), u64_at(&self.body, 24))
    }

    /// When busbar received the event, ms since the epoch.
    pub fn received_ms(&self) -> u64 {
        u64_at(&self.body, 32)
    }

    /// Producer time, if the producer sent `ts`.
    pub fn ts(&self) -> Option<i64> {
        (self.body[1] & FLAG_TS != 0).then(|| u64_at(&self.body, 40) as i64)
    }

    fn field(&self, index: usize) -> &str {
        let mut start = RECORD_HEADER_LEN;
        for i in 0..index {
            start += u16_at(&self.body, 2 + 2 * i);
        }
        let len = u16_at(&self.body, 2 + 2 * index);
        // Checked UTF-8 in `from_body`.
        std::str::from_utf8(&self.body[start..start + len]).unwrap_or_default()
    }

    fn optional(&self, flag: u8, index: usize) -> Option<&str> {
        (self.body[1] & flag != 0).then(|| self.field(index))
    }

    /// The event type.
    pub fn event_type(&self) -> &str {
        self.field(0)
    }

    /// The tenant, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.optional(FLAG_TENANT, 1)
    }

    /// The key, if any.
    pub fn key(&self) -> Option<&str> {
        self.optional(FLAG_KEY, 2)
    }

    /// The producer session, if any.
    pub fn session(&self) -> Option<&str> {
        self.optional(FLAG_SESSION, 3)
    }

    /// The idempotency key, if any.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.optional(FLAG_IDEMPOTENCY, 4)
    }

    /// Whether the producer asked for this id explicitly.
    pub fn explicit_id(&self) -> bool {
        self.body[1] & FLAG_EXPLICIT_ID != 0
    }

    /// busbar's annotation (a JSON object), if any.
    pub fn meta(&self) -> Option<&[u8]> {
        if self.body[1] & FLAG_META == 0 {
            return None;
        }
        let at = RECORD_HEADER_LEN
            + [2, 4, 6, 8, 10]
                .iter()
                .map(|&i| u16_at(&self.body, i))
                .sum::<usize>();
        let len = u32_at(&self.body, at);
        Some(&self.body[at + 4..at + 4 + len])
    }

    /// The payload: a JSON object's text, byte-for-byte as the producer sent
    /// its members.
    pub fn payload(&self) -> &[u8] {
        let len = u32_at(&self.body, 12);
        &self.body[self.body.len() - len..]
    }
}

impl std::fmt::Debug for Event {
    // Payloads never reach logs: Debug shows the envelope only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id())
            .field("type", &self.event_type())
            .field("payload_bytes", &self.payload().len())
            .finish()
    }
}
