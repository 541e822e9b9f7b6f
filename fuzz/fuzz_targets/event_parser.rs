//! The event parser, the socket line classifier and `check_json`, on any
//! bytes.
//!
//! Invariants: whatever the parser accepts, serde_json (strict) reads as
//! an object whose reserved members are the parsed fields and whose other
//! members are the payload; an accepted event survives encoding into a
//! batch, sealing, splitting and rendering unchanged; the line classifier
//! agrees with the parser; `check_json` accepts only what serde_json reads,
//! and a larger depth limit accepts whatever a smaller one does.

#![no_main]

use busbar_event::{
    check_json, parse_event, parse_line_with, render_event, rendered_len, BatchIter, EventBatch,
    EventError, EventId, Limits, LineKind, StreamName, StreamNames, DEFAULT_STREAM,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const RESERVED: [&str; 7] = [
    "type",
    "stream",
    "tenant",
    "key",
    "ts",
    "session",
    "idempotency_key",
];

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_event_bytes: 64 * 1024,
        max_depth: 16,
    };
    check_json_rules(data);

    let parsed = parse_event(data, &limits);
    let mut names = StreamNames::new(4);
    let line = parse_line_with(data, &limits, &mut names);
    match (&parsed, &line) {
        (Ok(a), LineKind::Event(b)) => assert_eq!(a, b, "the line classifier parsed differently"),
        (Ok(_), _) => panic!("an event the line classifier did not take for one"),
        (Err(_), LineKind::Event(_)) => panic!("the line classifier took a refused line"),
        (Err(e), LineKind::Invalid(f)) => assert_eq!(e, f),
        (Err(_), LineKind::Op(op)) => {
            let value: Value = serde_json::from_slice(data).expect("an op line is JSON");
            let object = value.as_object().expect("an op line is an object");
            assert!(object.contains_key("op") && !object.contains_key("type"));
            if let Some(op) = op {
                assert_eq!(object["op"].as_str(), Some(op.as_ref()));
            }
        }
    }

    let Ok(event) = parsed else { return };
    assert!(
        check_json(data, limits.max_depth).is_ok(),
        "check_json refused an accepted event"
    );
    let value: Value = serde_json::from_slice(data).expect("an accepted event is strict JSON");
    let object = value.as_object().expect("an accepted event is an object");
    assert_eq!(object["type"].as_str(), Some(event.event_type.as_ref()));
    assert!(!event.event_type.is_empty());
    let text = |name: &str| object.get(name).and_then(Value::as_str);
    assert_eq!(
        event.stream.as_ref().map(StreamName::as_str),
        text("stream")
    );
    assert_eq!(event.tenant.as_deref(), text("tenant"));
    assert_eq!(event.key.as_deref(), text("key"));
    assert_eq!(event.session.as_deref(), text("session"));
    assert_eq!(event.idempotency_key.as_deref(), text("idempotency_key"));
    // serde_json reads `-0` as a float; it is the integer 0 all the same.
    let ts = object
        .get("ts")
        .and_then(|ts| ts.as_i64().or((ts.as_f64() == Some(0.0)).then_some(0)));
    assert_eq!(event.ts, ts);

    let payload: Value = serde_json::from_slice(&event.payload_json())
        .expect("the payload of an accepted event is strict JSON");
    let expected: Map<String, Value> = object
        .iter()
        .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(payload, Value::Object(expected.clone()), "payload members");

    // Encoded, sealed, split and rendered, it reads back the same.
    let mut batch = EventBatch::new();
    batch
        .push_parsed(&event)
        .expect("an accepted event encodes");
    let id = EventId::new(1_700_000_000_000, 7);
    batch.assign(1_700_000_000_123, |asked| {
        assert_eq!(asked, None);
        id
    });
    let mut events = BatchIter::new(batch.seal());
    let stored = events.next().expect("one event");
    assert!(events.next().is_none());
    assert_eq!(stored.id(), id);
    assert_eq!(stored.event_type(), event.event_type);
    assert_eq!(stored.tenant(), event.tenant.as_deref());
    assert_eq!(stored.key(), event.key.as_deref());
    assert_eq!(stored.session(), event.session.as_deref());
    assert_eq!(stored.idempotency_key(), event.idempotency_key.as_deref());
    assert_eq!(stored.ts(), event.ts);
    assert_eq!(stored.payload(), event.payload_json());

    let stream = event
        .stream
        .clone()
        .unwrap_or_else(|| StreamName::new(DEFAULT_STREAM).unwrap());
    let mut out = Vec::new();
    render_event(&mut out, &stream, &stored);
    assert_eq!(out.len(), rendered_len(&stream, &stored));
    let rendered: Value = serde_json::from_slice(&out).expect("a rendered event is strict JSON");
    assert_eq!(rendered["id"].as_str(), Some(id.to_string().as_str()));
    assert_eq!(rendered["stream"].as_str(), Some(stream.as_str()));
    assert_eq!(rendered["type"].as_str(), Some(event.event_type.as_ref()));
    assert_eq!(rendered["data"], Value::Object(expected));
});

/// `check_json` accepts only what serde_json reads, calls malformed only
/// what serde_json refuses, and a deeper limit accepts whatever a
/// shallower one does.
fn check_json_rules(data: &[u8]) {
    let shallow = check_json(data, 3);
    let deep = check_json(data, 127);
    if shallow.is_ok() {
        assert!(deep.is_ok(), "a deeper limit refused: {deep:?}");
    }
    match deep {
        Ok(()) => {
            serde_json::from_slice::<Value>(data)
                .expect("check_json accepted what serde_json refuses");
        }
        Err(EventError::MalformedJson { .. }) => {
            assert!(
                serde_json::from_slice::<Value>(data).is_err(),
                "check_json refused JSON that serde_json reads"
            );
        }
        Err(EventError::TooDeep { .. } | EventError::InvalidNumber { .. }) => {}
        Err(other) => panic!("check_json refused with {other:?}"),
    }
}
