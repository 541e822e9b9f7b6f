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
    let mut num = itoa::Buffer::new();
    let id = event.id();
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(num.format(id.ms).as_bytes());
    out.push(b'-');
    out.extend_from_slice(num.format(id.seq).as_bytes());
    out.extend_from_slice(b"\",\"stream\":");
    string(out, stream.as_str());
    out.extend_from_slice(b",\"type\":");
    string(out, event.event_type());
    out.extend_from_slice(b",\"received_at\":");
    out.extend_from_slice(num.format(event.received_ms()).as_bytes());
    if let Some(ts) = event.ts() {
        out.extend_from_slice(b",\"ts\":");
        out.extend_from_slice(num.format(ts).as_bytes());
    }
    for (name, value) in [
        (&b",\"tenant\":"[..], event.tenant()),
        (b",\"key\":", event.key()),
        (b",\"session\":", event.session()),
        (b",\"idempotency_key\":", event.idempotency_key()),
    ] {
        if let Some(value) = value {
            out.extend_from_slice(name);
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

/// A JSON string; text that needs no escaping (the common case: ids,
/// names, types) is copied as it is.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchIter, EventBatch, EventId, NewEvent};

    #[test]
    fn text_that_needs_escaping_is_escaped_and_numbers_are_exact() {
        let mut batch = EventBatch::new();
        let mut e = NewEvent::new("say \"hi\"\n\\", br#"{"n":1}"#);
        e.key = Some("k\u{1}");
        e.session = Some("plain");
        e.ts = Some(-5);
        batch.push(&e).unwrap();
        batch.assign(u64::MAX, |_| EventId::new(u64::MAX, u64::MAX));
        let event = BatchIter::new(batch.seal()).next().unwrap();
        let mut out = Vec::new();
        render_event(&mut out, &StreamName::new("s:1").unwrap(), &event);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "say \"hi\"\n\\");
        assert_eq!(v["key"], "k\u{1}");
        assert_eq!(v["session"], "plain");
        assert_eq!(v["ts"], -5);
        assert_eq!(v["received_at"], u64::MAX);
        assert_eq!(v["id"], format!("{0}-{0}", u64::MAX));
        assert_eq!(v["stream"], "s:1");
        assert_eq!(v["data"]["n"], 1);
    }
}
