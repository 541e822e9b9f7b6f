use crate::{Event, EventId, StreamName};

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
    out.extend_from_slice(b"{\"id\":\"");
    write_id(out, event.id());
    out.extend_from_slice(b"\",\"stream\":");
    json_string(out, stream.as_str());
    out.extend_from_slice(b",\"type\":");
    json_string(out, event.event_type());
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
            json_string(out, value);
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

/// Writes `id` as `<ms>-<seq>` (its display form), without `fmt`.
///
/// ```
/// use busbar_event::{write_id, EventId};
/// let mut out = Vec::new();
/// write_id(&mut out, EventId::new(1700000000000, 7));
/// assert_eq!(out, b"1700000000000-7");
/// ```
pub fn write_id(out: &mut Vec<u8>, id: EventId) {
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(num.format(id.ms).as_bytes());
    out.push(b'-');
    out.extend_from_slice(num.format(id.seq).as_bytes());
}

/// Writes `n` in decimal, without `fmt`.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The exact number of bytes [`render_event`] writes for `event`, so a
/// caller can allocate its buffer once and to size.
pub fn rendered_len(stream: &StreamName, event: &Event) -> usize {
    let id = event.id();
    let mut n = b"{\"id\":\"".len() + digits(id.ms) + 1 + digits(id.seq);
    n += b"\",\"stream\":".len() + json_string_len(stream.as_str());
    n += b",\"type\":".len() + json_string_len(event.event_type());
    n += b",\"received_at\":".len() + digits(event.received_ms());
    if let Some(ts) = event.ts() {
        n += b",\"ts\":".len() + usize::from(ts < 0) + digits(ts.unsigned_abs());
    }
    for (name, value) in [
        ("tenant", event.tenant()),
        ("key", event.key()),
        ("session", event.session()),
        ("idempotency_key", event.idempotency_key()),
    ] {
        if let Some(value) = value {
            // `,"<name>":`
            n += name.len() + 4 + json_string_len(value);
        }
    }
    if let Some(meta) = event.meta() {
        n += b",\"meta\":".len() + meta.len();
    }
    n + b",\"data\":".len() + event.payload().len() + 1
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Bytes [`json_string`] writes for `s` (the escapes serde_json uses).
pub fn json_string_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Writes `s` as a JSON string; text that needs no escaping (the common
/// case: ids, names, types) is copied as it is.
pub fn json_string(out: &mut Vec<u8>, s: &str) {
    if json_string_len(s) == s.len() + 2 {
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
        let stream = StreamName::new("s:1").unwrap();
        render_event(&mut out, &stream, &event);
        assert_eq!(rendered_len(&stream, &event), out.len());
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

    /// `rendered_len` is exact for every optional field, escape and number
    /// width.
    #[test]
    fn rendered_len_is_exact() {
        let texts = [
            "",
            "t",
            "a\"b",
            "\\",
            "line\nnext",
            "tab\t\u{8}\u{c}\r",
            "\u{1}\u{1f}",
            "é ü",
        ];
        let mut batch = EventBatch::new();
        for (i, text) in texts.iter().enumerate() {
            let mut e = NewEvent::new(if text.is_empty() { "x" } else { text }, br#"{"k":[1,2]}"#);
            e.tenant = (i % 2 == 0).then_some(*text);
            e.key = (i % 3 == 0).then_some(*text);
            e.session = Some(text);
            e.idempotency_key = (i % 2 == 1).then_some(*text);
            e.ts = [
                None,
                Some(0),
                Some(-1),
                Some(i64::MIN),
                Some(i64::MAX),
                Some(9),
                Some(10),
                Some(-10),
            ][i];
            e.meta = (i % 4 == 0).then_some(&br#"{"m":1}"#[..]);
            batch.push(&e).unwrap();
        }
        let mut n = 0u64;
        batch.assign(0, |_| {
            n = n * 10 + 9;
            EventId::new(n, n / 3)
        });
        let stream = StreamName::new("a.b:c-d_e").unwrap();
        for event in BatchIter::new(batch.seal()) {
            let mut out = Vec::new();
            render_event(&mut out, &stream, &event);
            assert_eq!(
                rendered_len(&stream, &event),
                out.len(),
                "{}",
                String::from_utf8_lossy(&out)
            );
            serde_json::from_slice::<serde_json::Value>(&out).unwrap();
        }
    }
}
