use bytes::{Bytes, BytesMut};

use crate::parse::ParsedEvent;
use crate::record::*;
use crate::{Event, EventError, EventId};

/// Length of a frame header: `u32 length | u32 crc32c`.
pub const FRAME_HEADER_LEN: usize = 8;

/// Events waiting to be appended, encoded back to back as framed records in
/// one buffer.
///
/// Ids and receive times are filled in by the store at append time with
/// [`EventBatch::assign`]; [`EventBatch::seal`] then computes each frame's
/// checksum. Building a batch allocates only as its buffer grows.
#[derive(Debug, Default, Clone)]
pub struct EventBatch {
    buf: BytesMut,
    count: usize,
    explicit: usize,
    /// Events that name a session.
    sessions: usize,
    /// Events that carry an idempotency key.
    keyed: usize,
}

impl EventBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `bytes` of records.
    pub fn with_capacity(bytes: usize) -> Self {
        EventBatch {
            buf: BytesMut::with_capacity(bytes),
            count: 0,
            explicit: 0,
            sessions: 0,
            keyed: 0,
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of framed records.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Whether any event asks for an explicit id.
    pub fn has_explicit_ids(&self) -> bool {
        self.explicit > 0
    }

    /// Whether any event carries an `idempotency_key`. A store deduplicating
    /// appends looks at no event of a batch without one.
    pub fn has_idempotency_keys(&self) -> bool {
        self.keyed > 0
    }

    /// Appends an event built in code.
    ///
    /// # Errors
    /// [`EventError::InvalidField`] when a field is longer than a record can
    /// hold (64 KiB for text fields, 4 GiB for the payload).
    pub fn push(&mut self, e: &NewEvent<'_>) -> Result<(), EventError> {
        self.encode(
            e.event_type,
            [e.tenant, e.key, e.session, e.idempotency_key],
            e.ts,
            e.id,
            e.meta,
            &[b"", e.payload, b""],
        )
    }

    /// Appends a parsed producer event.
    ///
    /// # Errors
    /// As [`EventBatch::push`].
    pub fn push_parsed(&mut self, e: &ParsedEvent<'_>) -> Result<(), EventError> {
        self.encode(
            &e.event_type,
            [
                e.tenant.as_deref(),
                e.key.as_deref(),
                e.session.as_deref(),
                e.idempotency_key.as_deref(),
            ],
            e.ts,
            e.id,
            None,
            &[b"{", e.payload_members(), b"}"],
        )
    }

    fn encode(
        &mut self,
        event_type: &str,
        optional: [Option<&str>; 4],
        ts: Option<i64>,
        id: Option<EventId>,
        meta: Option<&[u8]>,
        payload: &[&[u8]; 3],
    ) -> Result<(), EventError> {
        let too_long = |field| EventError::InvalidField {
            field,
            reason: "is longer than a record can hold",
        };
        let names = ["tenant", "key", "session", "idempotency_key"];
        if event_type.len() > u16::MAX as usize {
            return Err(too_long("type"));
        }
        for (value, name) in optional.iter().zip(names) {
            if value.is_some_and(|v| v.len() > u16::MAX as usize) {
                return Err(too_long(name));
            }
        }
        let payload_len: usize = payload.iter().map(|p| p.len()).sum();
        let var = event_type.len() + optional.iter().flatten().map(|v| v.len()).sum::<usize>();
        let meta_len = meta.map_or(0, |m| 4 + m.len());
        let body_len = RECORD_HEADER_LEN + var + meta_len + payload_len;
        if payload_len > u32::MAX as usize || body_len > u32::MAX as usize {
            return Err(too_long("payload"));
        }
        let mut flags = 0u8;
        for (value, flag) in
            optional
                .iter()
                .zip([FLAG_TENANT, FLAG_KEY, FLAG_SESSION, FLAG_IDEMPOTENCY])
        {
            if value.is_some() {
                flags |= flag;
            }
        }
        if ts.is_some() {
            flags |= FLAG_TS;
        }
        if meta.is_some() {
            flags |= FLAG_META;
        }
        if id.is_some() {
            flags |= FLAG_EXPLICIT_ID;
            self.explicit += 1;
        }
        if flags & FLAG_SESSION != 0 {
            self.sessions += 1;
        }
        if flags & FLAG_IDEMPOTENCY != 0 {
            self.keyed += 1;
        }
        let id = id.unwrap_or(EventId::ZERO);
        let b = &mut self.buf;
        b.reserve(FRAME_HEADER_LEN + body_len);
        b.extend_from_slice(&(body_len as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&[KIND_EVENT, flags]);
        b.extend_from_slice(&(event_type.len() as u16).to_le_bytes());
        for value in optional {
            b.extend_from_slice(&(value.map_or(0, str::len) as u16).to_le_bytes());
        }
        b.extend_from_slice(&(payload_len as u32).to_le_bytes());
        b.extend_from_slice(&id.ms.to_le_bytes());
        b.extend_from_slice(&id.seq.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&ts.unwrap_or(0).to_le_bytes());
        b.extend_from_slice(event_type.as_bytes());
        for value in optional.into_iter().flatten() {
            b.extend_from_slice(value.as_bytes());
        }
        if let Some(m) = meta {
            b.extend_from_slice(&(m.len() as u32).to_le_bytes());
            b.extend_from_slice(m);
        }
        for part in payload {
            b.extend_from_slice(part);
        }
        self.count += 1;
        Ok(())
    }

    /// The explicit id each event asks for, in order (`None` for events that
    /// take the next id).
    pub fn requested_ids(&self) -> impl Iterator<Item = Option<EventId>> + '_ {
        self.frames().map(|(_, body)| {
            (body[1] & FLAG_EXPLICIT_ID != 0)
                .then(|| EventId::new(u64_at(body, 16), u64_at(body, 24)))
        })
    }

    /// The `session` and `ts` of every event that names a session, in
    /// order (for session statistics, without decoding whole events). A
    /// batch without sessions is not scanned at all.
    pub fn sessions(&self) -> impl Iterator<Item = (&str, Option<i64>)> + '_ {
        let frames = (self.sessions > 0).then(|| self.frames());
        frames.into_iter().flatten().filter_map(|(_, body)| {
            if body[1] & FLAG_SESSION == 0 {
                return None;
            }
            let len = |at: usize| u16::from_le_bytes([body[at], body[at + 1]]) as usize;
            // type, tenant and key come before the session.
            let start = RECORD_HEADER_LEN + len(2) + len(4) + len(6);
            let session = std::str::from_utf8(body.get(start..start + len(8))?).ok()?;
            let ts = (body[1] & FLAG_TS != 0).then(|| u64_at(body, 40) as i64);
            Some((session, ts))
        })
    }

    /// Every event's `idempotency_key` (`None` for an event without one), in
    /// order, without decoding whole events. A batch without keys yields
    /// `None` for each event without looking at them.
    pub fn idempotency_keys(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        let keyed = self.keyed > 0;
        self.frames().map(move |(_, body)| {
            if !keyed || body[1] & FLAG_IDEMPOTENCY == 0 {
                return None;
            }
            let len = |at: usize| u16::from_le_bytes([body[at], body[at + 1]]) as usize;
            // type, tenant, key and session come before the idempotency key.
            let start = RECORD_HEADER_LEN + len(2) + len(4) + len(6) + len(8);
            std::str::from_utf8(body.get(start..start + len(10))?).ok()
        })
    }

    /// Keeps only the events for which `keep(index)` is true, in order
    /// (a store drops the repeats of a deduplicated append). Copies the
    /// kept records into a new buffer; costs nothing when every event is
    /// kept.
    pub fn retain(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let kept: Vec<(usize, usize)> = self
            .frames()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, (start, body))| (start - FRAME_HEADER_LEN, start + body.len()))
            .collect();
        if kept.len() == self.count {
            return;
        }
        let bytes = kept.iter().map(|(from, to)| to - from).sum();
        let mut next = EventBatch::with_capacity(bytes);
        for (from, to) in kept {
            let frame = &self.buf[from..to];
            let flags = frame[FRAME_HEADER_LEN + 1];
            next.buf.extend_from_slice(frame);
            next.count += 1;
            next.explicit += usize::from(flags & FLAG_EXPLICIT_ID != 0);
            next.sessions += usize::from(flags & FLAG_SESSION != 0);
            next.keyed += usize::from(flags & FLAG_IDEMPOTENCY != 0);
        }
        *self = next;
    }

    /// Every event's `type`, in order (for per-type counters, without
    /// decoding whole events).
    pub fn types(&self) -> impl Iterator<Item = &str> + '_ {
        self.frames()
            .filter_map(|(_, body)| std::str::from_utf8(type_bytes(body)?).ok())
    }

    /// Runs of events of one `type`, in order: each type and how many
    /// events in a row have it. Types are compared as bytes, so a batch of
    /// one type costs one comparison per event and one conversion.
    pub fn type_runs(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        let mut frames = self.frames().filter_map(|(_, body)| type_bytes(body));
        let mut current = frames.next();
        std::iter::from_fn(move || {
            let kind = current?;
            let mut n = 1;
            current = None;
            for next in frames.by_ref() {
                if next == kind {
                    n += 1;
                } else {
                    current = Some(next);
                    break;
                }
            }
            // Checked when the event was parsed; a failure here is a bug
            // and the run is left out rather than guessed.
            Some((std::str::from_utf8(kind).unwrap_or(""), n))
        })
    }

    fn frames(&self) -> impl Iterator<Item = (usize, &[u8])> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let header = self.buf.get(at..at + FRAME_HEADER_LEN)?;
            let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
            let start = at + FRAME_HEADER_LEN;
            at = start + len;
            Some((start, &self.buf[start..start + len]))
        })
    }

    /// Writes each event's id (from `next_id`, which receives the explicit
    /// id the event asked for, if any) and the receive time.
    pub fn assign(
        &mut self,
        received_ms: u64,
        mut next_id: impl FnMut(Option<EventId>) -> EventId,
    ) {
        let mut at = 0;
        while at + FRAME_HEADER_LEN <= self.buf.len() {
            let len =
                u32::from_le_bytes(self.buf[at..at + 4].try_into().unwrap_or([0; 4])) as usize;
            let body = at + FRAME_HEADER_LEN;
            let requested = (self.buf[body + 1] & FLAG_EXPLICIT_ID != 0)
                .then(|| EventId::new(u64_at(&self.buf, body + 16), u64_at(&self.buf, body + 24)));
            let id = next_id(requested);
            self.buf[body + 16..body + 24].copy_from_slice(&id.ms.to_le_bytes());
            self.buf[body + 24..body + 32].copy_from_slice(&id.seq.to_le_bytes());
            self.buf[body + 32..body + 40].copy_from_slice(&received_ms.to_le_bytes());
            at = body + len;
        }
    }

    /// Computes every frame's checksum and returns the framed bytes, ready to
    /// be written or split into [`Event`]s with [`BatchIter`].
    pub fn seal(mut self) -> Bytes {
        let mut at = 0;
        while at + FRAME_HEADER_LEN <= self.buf.len() {
            let len =
                u32::from_le_bytes(self.buf[at..at + 4].try_into().unwrap_or([0; 4])) as usize;
            let body = at + FRAME_HEADER_LEN;
            let crc = crc32c::crc32c(&self.buf[body..body + len]);
            self.buf[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
            at = body + len;
        }
        self.buf.freeze()
    }
}

/// The `type` of an event record body.
fn type_bytes(body: &[u8]) -> Option<&[u8]> {
    let len = u16::from_le_bytes([*body.get(2)?, *body.get(3)?]) as usize;
    body.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len)
}

/// Splits sealed framed bytes into [`Event`]s without copying.
#[derive(Debug, Clone)]
pub struct BatchIter {
    framed: Bytes,
    at: usize,
}

impl BatchIter {
    /// Iterates the frames of `framed`.
    pub fn new(framed: Bytes) -> Self {
        BatchIter { framed, at: 0 }
    }
}

impl Iterator for BatchIter {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let header = self.framed.get(self.at..self.at + FRAME_HEADER_LEN)?;
        let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
        let start = self.at + FRAME_HEADER_LEN;
        self.at = start + len;
        Event::from_body(self.framed.slice(start..start + len)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_event, Limits};

    #[test]
    fn round_trips_every_field() {
        let mut batch = EventBatch::new();
        let parsed = parse_event(
            br#"{"type":"t","tenant":"acme","key":"k","ts":-5,"session":"s","idempotency_key":"i","x":[1]}"#,
            &Limits::default(),
        )
        .unwrap();
        batch.push_parsed(&parsed).unwrap();
        batch
            .push(
                &NewEvent::new("u", b"{}")
                    .with_id(EventId::new(9, 9))
                    .with_meta(br#"{"why":"x"}"#),
            )
            .unwrap();
        assert_eq!(
            batch.requested_ids().collect::<Vec<_>>(),
            vec![None, Some(EventId::new(9, 9))]
        );
        assert_eq!(batch.sessions().collect::<Vec<_>>(), vec![("s", Some(-5))]);
        assert_eq!(batch.types().collect::<Vec<_>>(), vec!["t", "u"]);
        assert_eq!(
            batch.type_runs().collect::<Vec<_>>(),
            vec![("t", 1), ("u", 1)]
        );
        let mut runs = EventBatch::new();
        for t in ["a", "a", "b", "a", "a", "a"] {
            runs.push(&NewEvent::new(t, b"{}")).unwrap();
        }
        assert_eq!(
            runs.type_runs().collect::<Vec<_>>(),
            vec![("a", 2), ("b", 1), ("a", 3)]
        );
        assert_eq!(EventBatch::new().type_runs().count(), 0);
        let mut seq = 0;
        batch.assign(77, |req| {
            seq += 1;
            req.unwrap_or(EventId::new(5, seq))
        });
        let events: Vec<Event> = BatchIter::new(batch.seal()).collect();
        assert_eq!(events.len(), 2);
        let e = &events[0];
        assert_eq!(e.id(), EventId::new(5, 1));
        assert_eq!(e.received_ms(), 77);
        assert_eq!(e.event_type(), "t");
        assert_eq!(e.tenant(), Some("acme"));
        assert_eq!(e.key(), Some("k"));
        assert_eq!(e.ts(), Some(-5));
        assert_eq!(e.session(), Some("s"));
        assert_eq!(e.idempotency_key(), Some("i"));
        assert_eq!(e.payload(), br#"{"x":[1]}"#);
        assert!(!e.explicit_id());
        let f = &events[1];
        assert_eq!(f.id(), EventId::new(9, 9));
        assert!(f.explicit_id());
        assert_eq!(f.meta(), Some(&br#"{"why":"x"}"#[..]));
        assert_eq!(f.payload(), b"{}");
        assert_eq!(e.meta(), None);
        assert_eq!((f.tenant(), f.key(), f.ts()), (None, None, None));
    }

    #[test]
    fn idempotency_keys_and_retain() {
        let mut batch = EventBatch::new();
        batch
            .push(&NewEvent {
                idempotency_key: Some("a"),
                session: Some("s"),
                ..NewEvent::new("t", b"{}")
            })
            .unwrap();
        batch.push(&NewEvent::new("u", b"{}")).unwrap();
        batch
            .push(&NewEvent {
                idempotency_key: Some("b"),
                ..NewEvent::new("v", b"{}").with_id(EventId::new(3, 0))
            })
            .unwrap();
        assert!(batch.has_idempotency_keys());
        assert_eq!(
            batch.idempotency_keys().collect::<Vec<_>>(),
            vec![Some("a"), None, Some("b")]
        );
        batch.retain(|i| i != 0);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.types().collect::<Vec<_>>(), vec!["u", "v"]);
        assert_eq!(
            batch.idempotency_keys().collect::<Vec<_>>(),
            vec![None, Some("b")]
        );
        assert!(batch.has_explicit_ids());
        assert_eq!(batch.sessions().count(), 0);
        batch.retain(|i| i == 0);
        assert!(!batch.has_idempotency_keys());
        assert!(!batch.has_explicit_ids());
        assert_eq!(batch.idempotency_keys().collect::<Vec<_>>(), vec![None]);

        let plain = EventBatch::new();
        assert!(!plain.has_idempotency_keys());
    }

    #[test]
    fn rejects_truncated_body() {
        let mut batch = EventBatch::new();
        batch.push(&NewEvent::new("t", b"{}")).unwrap();
        let sealed = batch.seal();
        let body = sealed.slice(FRAME_HEADER_LEN..sealed.len() - 1);
        assert!(Event::from_body(body).is_err());
    }
}
