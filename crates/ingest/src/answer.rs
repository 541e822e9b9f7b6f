//! The answer lines of the ingest protocol, each written straight into
//! the connection's output buffer: event ids, errors, and the answers of
//! the consumer-group ops. Numbers and ids go through `busbar-event`'s
//! `itoa` writers, not `fmt` (one id line per event on the hot path).

use busbar_engine::EngineError;
use busbar_event::{render_event, write_id, write_u64, EventId, StreamName};
use busbar_store::group::{ClaimOutcome, Delivery, ReadOutcome};
use serde::Serialize;

/// An error answer.
#[derive(Debug, Clone)]
pub(crate) struct ErrorLine {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    /// When to try again, for refusals that pass (`overloaded`, `paused`).
    pub(crate) retry_after_ms: Option<u64>,
}

impl ErrorLine {
    pub(crate) fn new(reason: &'static str, message: impl Into<String>) -> Self {
        ErrorLine {
            reason,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    pub(crate) fn from_engine(e: &EngineError) -> Self {
        ErrorLine {
            retry_after_ms: e.retry_after().map(|d| d.as_millis() as u64),
            ..ErrorLine::new(e.reason(), e.to_string())
        }
    }
}

/// `{"id":"<ms>-<seq>"}\n`.
pub(crate) fn id_line(out: &mut Vec<u8>, id: EventId) {
    out.extend_from_slice(b"{\"id\":\"");
    write_id(out, id);
    out.extend_from_slice(b"\"}\n");
}

/// `{"id":"<ms>-<seq>","duplicate":true}\n`: an event not stored because
/// it repeats one stored under `id` (idempotent publish).
pub(crate) fn duplicate_line(out: &mut Vec<u8>, id: EventId) {
    out.extend_from_slice(b"{\"id\":\"");
    write_id(out, id);
    out.extend_from_slice(b"\",\"duplicate\":true}\n");
}

/// `{"error":"<reason>","message":".."[,"retry_after_ms":n]}\n`.
pub(crate) fn error_line(out: &mut Vec<u8>, e: &ErrorLine) {
    out.extend_from_slice(b"{\"error\":\"");
    out.extend_from_slice(e.reason.as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    let _ = serde_json::to_writer(&mut *out, &e.message);
    if let Some(ms) = e.retry_after_ms {
        out.extend_from_slice(b",\"retry_after_ms\":");
        write_u64(out, ms);
    }
    out.extend_from_slice(b"}\n");
}

/// The answer of a group `read`.
pub(crate) fn read_answer(out: &mut Vec<u8>, stream: &StreamName, got: &ReadOutcome) {
    out.extend_from_slice(b"{\"deliveries\":");
    deliveries(out, stream, &got.deliveries);
    out.extend_from_slice(b",\"redelivered\":");
    write_u64(out, u64::from(got.redelivered));
    out.extend_from_slice(b",\"dead_lettered\":");
    write_u64(out, u64::from(got.dead_lettered));
    out.extend_from_slice(b"}\n");
}

/// The answer of a `claim` (`XAUTOCLAIM`).
pub(crate) fn claim_answer(out: &mut Vec<u8>, stream: &StreamName, got: &ClaimOutcome) {
    out.extend_from_slice(b"{\"deliveries\":");
    deliveries(out, stream, &got.deliveries);
    match got.next {
        Some(next) => {
            out.extend_from_slice(b",\"next\":\"");
            write_id(out, next);
            out.extend_from_slice(b"\",");
        }
        None => out.extend_from_slice(b",\"next\":null,"),
    }
    ids_member(out, "deleted", &got.deleted);
    out.extend_from_slice(b"}\n");
}

/// `{"group":..}`.
#[derive(Serialize)]
pub(crate) struct Wrap<T: Serialize> {
    pub(crate) group: T,
}

/// `{"pending":[..]}`.
#[derive(Serialize)]
pub(crate) struct PendingAnswer {
    pub(crate) pending: Vec<busbar_store::group::PendingInfo>,
}

/// `value` as one JSON line.
pub(crate) fn json_line<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    // Serializing plain data into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
    out.push(b'\n');
}

/// `[{"id":..,"delivery_count":..,"event":{..}},..]`
fn deliveries(out: &mut Vec<u8>, stream: &StreamName, list: &[Delivery]) {
    out.push(b'[');
    for (n, d) in list.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":\"");
        write_id(out, d.event.id());
        out.extend_from_slice(b"\",\"delivery_count\":");
        write_u64(out, u64::from(d.delivery_count));
        out.extend_from_slice(b",\"event\":");
        render_event(out, stream, &d.event);
        out.push(b'}');
    }
    out.push(b']');
}

/// `"name":["id",..]`
pub(crate) fn ids_member(out: &mut Vec<u8>, name: &str, ids: &[EventId]) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":[");
    for (n, id) in ids.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.push(b'"');
        write_id(out, *id);
        out.push(b'"');
    }
    out.push(b']');
}

/// `"error":..,"message":..,` when some ids were not the caller's to
/// settle; the lists that follow say which.
pub(crate) fn problem(out: &mut Vec<u8>, group: &str, unknown: &[EventId], wrong: &[EventId]) {
    if unknown.is_empty() && wrong.is_empty() {
        return;
    }
    let reason = if wrong.is_empty() {
        "unknown_id"
    } else {
        "wrong_consumer"
    };
    let message = format!(
        "{} id(s) not pending in group `{group}` (never delivered, already acked or \
         dead-lettered) and {} held by another consumer; the others were settled",
        unknown.len(),
        wrong.len()
    );
    out.extend_from_slice(b"\"error\":\"");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    let _ = serde_json::to_writer(&mut *out, &message);
    out.push(b',');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lines_match_the_display_form() {
        for id in [
            EventId::new(0, 0),
            EventId::new(1_700_000_000_000, 42),
            EventId::new(u64::MAX, u64::MAX),
        ] {
            let mut out = Vec::new();
            id_line(&mut out, id);
            assert_eq!(out, format!("{{\"id\":\"{id}\"}}\n").into_bytes());
        }
    }

    #[test]
    fn error_lines_are_json_and_say_when_to_retry() {
        let mut out = Vec::new();
        error_line(
            &mut out,
            &ErrorLine::new("too_large", "a \"quoted\" message"),
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"], "too_large");
        assert_eq!(v["message"], "a \"quoted\" message");
        assert!(v.get("retry_after_ms").is_none());
        let mut out = Vec::new();
        let busy = EngineError::Overloaded {
            reason: "memory is critical".into(),
            retry_after: std::time::Duration::from_millis(2500),
        };
        error_line(&mut out, &ErrorLine::from_engine(&busy));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"], "overloaded");
        assert_eq!(v["retry_after_ms"], 2500);
    }

    #[test]
    fn op_answers_are_json() {
        let mut out = Vec::new();
        out.push(b'{');
        ids_member(&mut out, "acked", &[EventId::new(1, 2), EventId::new(3, 4)]);
        out.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["acked"][1], "3-4");
        let mut out = Vec::new();
        read_answer(
            &mut out,
            &StreamName::new("s").unwrap(),
            &ReadOutcome::default(),
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["deliveries"], serde_json::json!([]));
        assert_eq!(v["redelivered"], 0);
    }
}
