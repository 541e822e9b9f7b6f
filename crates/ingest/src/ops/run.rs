//! Running a decoded [`Op`] through the engine and writing its one answer
//! line.

use std::io::Write as _;

use busbar_engine::{Engine, EngineError, Principal, Transport};
use busbar_event::{render_event, EventId, StreamName};
use busbar_store::group::Delivery;
use serde::Serialize;

use super::Op;
use crate::batcher::ErrorLine;
use crate::connection::error_line;

/// Runs `op` for `principal` and appends exactly one answer line to `out`.
pub(crate) async fn run(
    engine: &Engine,
    transport: Transport,
    principal: &Principal,
    op: Op,
    out: &mut Vec<u8>,
) {
    if let Err(e) = execute(engine, principal, op, out).await {
        engine.count_error(transport, &e);
        error_line(out, &ErrorLine::from_engine(&e));
    }
}

async fn execute(
    engine: &Engine,
    p: &Principal,
    op: Op,
    out: &mut Vec<u8>,
) -> Result<(), EngineError> {
    match op {
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
            out.extend_from_slice(b"{\"deliveries\":");
            deliveries(out, &stream, &got.deliveries);
            let _ = writeln!(
                out,
                ",\"redelivered\":{},\"dead_lettered\":{}}}",
                got.redelivered, got.dead_lettered
            );
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
        let _ = write!(
            out,
            "{{\"id\":\"{}\",\"delivery_count\":{},\"event\":",
            d.event.id(),
            d.delivery_count
        );
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
        let _ = write!(out, "\"{id}\"");
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
