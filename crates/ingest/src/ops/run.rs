//! Running a decoded [`Op`] through the engine and writing its one answer
//! line.

use std::io::Write as _;
use std::time::Duration;

use busbar_engine::{Engine, EngineError, Principal, Transport};
use busbar_event::{render_event, EventId, StreamName};
use busbar_store::group::{Delivery, ReadOutcome};
use serde::Serialize;

use super::Op;
use crate::batcher::ErrorLine;
use crate::connection::{error_line, push_decimal, push_id};

/// Runs `op` for `principal` and appends exactly one answer line to `out`.
pub(crate) async fn run(
    engine: &Engine,
    transport: Transport,
    principal: &Principal,
    op: Op,
    out: &mut Vec<u8>,
) {
    if let Op::Live { name } = op {
        // Only reached when no live hub is installed (with one, the
        // connection is handed over before the op would run).
        engine
            .metrics()
            .ingest_errors
            .get([transport.as_str(), "unsupported"])
            .inc();
        let message = format!(
            "`{name}` is an op of the live protocol, which this listener does not serve; \
             use the WebSocket endpoint /ws"
        );
        error_line(out, &ErrorLine::new("unsupported", message));
        return;
    }
    if let Err(e) = execute(engine, principal, op, out).await {
        engine.count_error(transport, &e);
        error_line(out, &ErrorLine::from_engine(&e));
    }
}

/// Runs `op` without waiting: returns its answer line, or, for a read
/// that may block and found nothing yet, no answer and the op to run
/// again with its wait.
pub(crate) async fn run_now(
    engine: &Engine,
    transport: Transport,
    principal: &Principal,
    op: Op,
) -> (Vec<u8>, Option<Op>) {
    // A delivery is a few hundred bytes: growing the answer one doubling
    // at a time would copy it again and again. `count` is the client's,
    // not yet capped at `max_read_count`: saturate.
    let mut out = Vec::with_capacity(match &op {
        Op::Read { count, .. } | Op::Claim { count, .. } => count.saturating_mul(384).min(4 << 20),
        _ => 512,
    });
    if let Op::Read {
        stream,
        group,
        consumer,
        count,
        block,
    } = &op
    {
        if !block.is_zero() {
            let got = engine
                .read_group(principal, stream, group, consumer, *count, Duration::ZERO)
                .await;
            match got {
                Ok(got) if got.deliveries.is_empty() => return (out, Some(op)),
                Ok(got) => read_answer(&mut out, stream, &got),
                Err(e) => {
                    engine.count_error(transport, &e);
                    error_line(&mut out, &ErrorLine::from_engine(&e));
                }
            }
            return (out, None);
        }
    }
    run(engine, transport, principal, op, &mut out).await;
    (out, None)
}

fn read_answer(out: &mut Vec<u8>, stream: &StreamName, got: &ReadOutcome) {
    out.extend_from_slice(b"{\"deliveries\":");
    deliveries(out, stream, &got.deliveries);
    let _ = writeln!(
        out,
        ",\"redelivered\":{},\"dead_lettered\":{}}}",
        got.redelivered, got.dead_lettered
    );
}

async fn execute(
    engine: &Engine,
    p: &Principal,
    op: Op,
    out: &mut Vec<u8>,
) -> Result<(), EngineError> {
    match op {
        // Answered by `run`.
        Op::Live { .. } => {}
        Op::CreateGroup {
            stream,
            group,
            start,
            config,
        } => {
            let info = engine
                .create_group(p, &stream, &group, start, config)
                .await?;
            json_line(out, &Wrap { group: info });
        }
        Op::Group { stream, group } => {
            let info = engine.group(p, &stream, &group).await?;
            json_line(out, &Wrap { group: info });
        }
        Op::Read {
            stream,
            group,
            consumer,
            count,
            block,
        } => {
            let got = engine
                .read_group(p, &stream, &group, &consumer, count, block)
                .await?;
            read_answer(out, &stream, &got);
        }
        Op::Ack {
            stream,
            group,
            consumer,
            ids,
        } => {
            let got = engine
                .ack(p, &stream, &group, consumer.as_deref(), &ids)
                .await?;
            out.push(b'{');
            problem(out, &group, &got.unknown, &got.wrong_consumer);
            ids_member(out, "acked", &got.acked);
            out.push(b',');
            ids_member(out, "unknown", &got.unknown);
            out.push(b',');
            ids_member(out, "wrong_consumer", &got.wrong_consumer);
            out.extend_from_slice(b"}\n");
        }
        Op::Nack {
            stream,
            group,
            consumer,
            ids,
            opts,
        } => {
            let got = engine
                .nack(p, &stream, &group, &consumer, &ids, opts)
                .await?;
            out.push(b'{');
            problem(out, &group, &got.unknown, &got.wrong_consumer);
            for (name, list) in [
                ("retried", &got.retried),
                ("dead_lettered", &got.dead_lettered),
                ("dropped", &got.dropped),
                ("unknown", &got.unknown),
            ] {
                ids_member(out, name, list);
                out.push(b',');
            }
            ids_member(out, "wrong_consumer", &got.wrong_consumer);
            out.extend_from_slice(b"}\n");
        }
        Op::Claim {
            stream,
            group,
            consumer,
            min_idle,
            start,
            count,
        } => {
            let got = engine
                .claim(p, &stream, &group, &consumer, min_idle, start, count)
                .await?;
            out.extend_from_slice(b"{\"deliveries\":");
            deliveries(out, &stream, &got.deliveries);
            match got.next {
                Some(next) => {
                    let _ = write!(out, ",\"next\":\"{next}\",");
                }
                None => out.extend_from_slice(b",\"next\":null,"),
            }
            ids_member(out, "deleted", &got.deleted);
            out.extend_from_slice(b"}\n");
        }
        Op::Pending {
            stream,
            group,
            consumer,
            start,
            end,
            count,
        } => {
            let pending = engine
                .pending(p, &stream, &group, consumer.as_deref(), start, end, count)
                .await?;
            json_line(out, &PendingAnswer { pending });
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct Wrap<T: Serialize> {
    group: T,
}

#[derive(Serialize)]
struct PendingAnswer {
    pending: Vec<busbar_store::group::PendingInfo>,
}

fn json_line<T: Serialize>(out: &mut Vec<u8>, value: &T) {
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
        push_id(out, d.event.id());
        out.extend_from_slice(b"\",\"delivery_count\":");
        push_decimal(out, u64::from(d.delivery_count));
        out.extend_from_slice(b",\"event\":");
        render_event(out, stream, &d.event);
        out.push(b'}');
    }
    out.push(b']');
}

/// `"name":["id",..]`
fn ids_member(out: &mut Vec<u8>, name: &str, ids: &[EventId]) {
    let _ = write!(out, "\"{name}\":[");
    for (n, id) in ids.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.push(b'"');
        push_id(out, *id);
        out.push(b'"');
    }
    out.push(b']');
}

/// `"error":..,"message":..,` when some ids were not the caller's to
/// settle; the lists that follow say which.
fn problem(out: &mut Vec<u8>, group: &str, unknown: &[EventId], wrong: &[EventId]) {
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
