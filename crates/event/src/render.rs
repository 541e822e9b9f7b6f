use std::io::Write;

use crate::{Event, StreamName};

/// Writes `event` as a JSON object:
/// `{"id","stream","type","received_at",["ts","tenant","key","session","idempotency_key","meta"],"data"}`,
/// where `data` is the payload exactly as stored and `meta` busbar's own
/// annotation (dead-letter details, reprocessing origin), when present.
///
/// ```
/// use busbar_event::{render_event, BatchIter, EventBatch, EventId, NewEvent, StreamName};
/// let mut batch = EventBatch::new();
/// batch.push(&NewEvent::new("t", br#"{"n": 1}"#)).unwrap();
/// batch.assign(1000, |_| EventId::new(1000, 0));
/// let event = BatchIter::new(batch.seal()).next().unwrap();
/// let mut out = Vec::new();
/// render_event(&mut out, &StreamName::new("s").unwrap(), &event);
/// assert_eq!(out, br#"{"id":"1000-0","stream":"s","type":"t","received_at":1000,"data":{"n": 1}}"#);
/// ```
pub fn render_event(out: &mut Vec<u8>, stream: &StreamName, event: &Event) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{{\"id\":\"{}\",\"stream\":", event.id());
    string(out, stream.as_str());
    out.extend_from_slice(b",\"type\":");
    string(out, event.event_type());
    let _ = write!(out, ",\"received_at\":{}", event.received_ms());
    if let Some(ts) = event.ts() {
        let _ = write!(out, ",\"ts\":{ts}");
    }
    for (name, value) in [
        ("tenant", event.tenant()),
        ("key", event.key()),
        ("session", event.session()),
        ("idempotency_key", event.idempotency_key()),
    ] {
        if let Some(value) = value {
            let _ = write!(out, ",\"{name}\":");
            string(out, value);
        }
    }
    if let Some(meta) = event.meta() {
        out.extend_from_slice(b",\"meta\":");
        out.extend_from_slice(meta);
    }
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(event.payload());
    out.push(b'}');
}

fn string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}
