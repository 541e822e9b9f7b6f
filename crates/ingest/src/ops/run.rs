//! Running a decoded [`Op`] through the engine and writing its one answer
//! line.

use std::time::Duration;

use busbar_engine::{Engine, EngineError, Principal, Transport};

use super::Op;
use crate::answer::{
    claim_answer, error_line, ids_member, json_line, problem, read_answer, ErrorLine,
    PendingAnswer, Wrap,
};

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
            claim_answer(out, &stream, &got);
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
