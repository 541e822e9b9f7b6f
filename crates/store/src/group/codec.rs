//! Binary encoding of [`GroupOp`]s for the embedded engine's log.
//!
//! ```text
//! u8 op | u8 0 | u16 group len | u16 consumer len | u16 0 | u32 text len | u32 id count
//! | u64 a | u64 b | u64 c | group | consumer | text | ids (u64 ms, u64 seq each)
//! ```
//! `a`, `b`, `c` and `text` mean what each op needs (a time, an id, an
//! error, a JSON config).

use busbar_event::EventId;

use super::{GroupConfig, GroupOp};

const CREATE: u8 = 1;
const DESTROY: u8 = 2;
const DELIVER: u8 = 3;
const DELIVER_NEW: u8 = 4;
const ACK: u8 = 5;
const NACK: u8 = 6;
const NACK_WITH_ERROR: u8 = 7;
const REMOVE: u8 = 8;
const REMOVE_TO_DLQ: u8 = 9;
const PAUSE: u8 = 10;
const DELETE_CONSUMER: u8 = 11;
const SET_CURSOR: u8 = 12;

const FIXED: usize = 40;

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Appends the encoding of `op` to `out`.
pub(crate) fn encode_op(op: &GroupOp, out: &mut Vec<u8>) {
    let none = String::new();
    let (code, group, consumer, text, ids, a, b): (
        u8,
        &str,
        &str,
        Vec<u8>,
        &[EventId],
        u64,
        EventId,
    ) = match op {
        GroupOp::Create {
            group,
            cursor,
            config,
        } => (
            CREATE,
            group,
            "",
            serde_json::to_vec(config).unwrap_or_default(),
            &[],
            0,
            *cursor,
        ),
        GroupOp::Destroy { group } => (DESTROY, group, "", Vec::new(), &[], 0, EventId::ZERO),
        GroupOp::Deliver {
            group,
            consumer,
            ids,
            now_ms,
            cursor,
        } => (
            if cursor.is_some() {
                DELIVER_NEW
            } else {
                DELIVER
            },
            group,
            consumer,
            Vec::new(),
            ids,
            *now_ms,
            cursor.unwrap_or_default(),
        ),
        GroupOp::Ack { group, ids, now_ms } => {
            (ACK, group, "", Vec::new(), ids, *now_ms, EventId::ZERO)
        }
        GroupOp::Nack {
            group,
            ids,
            visible_at_ms,
            error,
        } => (
            if error.is_some() {
                NACK_WITH_ERROR
            } else {
                NACK
            },
            group,
            "",
            error.as_ref().unwrap_or(&none).as_bytes().to_vec(),
            ids,
            *visible_at_ms,
            EventId::ZERO,
        ),
        GroupOp::Remove { group, ids, dlq_id } => (
            if dlq_id.is_some() {
                REMOVE_TO_DLQ
            } else {
                REMOVE
            },
            group,
            "",
            Vec::new(),
            ids,
            0,
            dlq_id.unwrap_or_default(),
        ),
        GroupOp::Pause { group, paused } => (
            PAUSE,
            group,
            "",
            Vec::new(),
            &[],
            u64::from(*paused),
            EventId::ZERO,
        ),
        GroupOp::DeleteConsumer { group, consumer } => (
            DELETE_CONSUMER,
            group,
            consumer,
            Vec::new(),
            &[],
            0,
            EventId::ZERO,
        ),
        GroupOp::SetCursor { group, cursor } => {
            (SET_CURSOR, group, "", Vec::new(), &[], 0, *cursor)
        }
    };
    out.reserve(FIXED + group.len() + consumer.len() + text.len() + ids.len() * 16);
    out.extend_from_slice(&[code, 0]);
    out.extend_from_slice(&(group.len() as u16).to_le_bytes());
    out.extend_from_slice(&(consumer.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    out.extend_from_slice(&a.to_le_bytes());
    out.extend_from_slice(&b.ms.to_le_bytes());
    out.extend_from_slice(&b.seq.to_le_bytes());
    out.extend_from_slice(group.as_bytes());
    out.extend_from_slice(consumer.as_bytes());
    out.extend_from_slice(&text);
    for id in ids {
        out.extend_from_slice(&id.ms.to_le_bytes());
        out.extend_from_slice(&id.seq.to_le_bytes());
    }
}

/// Decodes an op encoded by [`encode_op`].
pub(crate) fn decode_op(b: &[u8]) -> Result<GroupOp, &'static str> {
    if b.len() < FIXED {
        return Err("group record shorter than its header");
    }
    let (gl, cl, tl, n) = (u16_at(b, 2), u16_at(b, 4), u32_at(b, 8), u32_at(b, 12));
    let a = u64_at(b, 16);
    let id_b = EventId::new(u64_at(b, 24), u64_at(b, 32));
    let text_at = FIXED + gl + cl;
    let ids_at = text_at + tl;
    if b.len() != ids_at + n * 16 {
        return Err("group record lengths do not add up");
    }
    let text = |r: std::ops::Range<usize>| {
        std::str::from_utf8(&b[r])
            .map(str::to_owned)
            .map_err(|_| "group record text is not UTF-8")
    };
    let group = text(FIXED..FIXED + gl)?;
    let consumer = text(FIXED + gl..text_at)?;
    let ids: Vec<EventId> = (0..n)
        .map(|i| EventId::new(u64_at(b, ids_at + 16 * i), u64_at(b, ids_at + 16 * i + 8)))
        .collect();
    Ok(match b[0] {
        CREATE => GroupOp::Create {
            group,
            cursor: id_b,
            config: serde_json::from_slice::<GroupConfig>(&b[text_at..ids_at])
                .map_err(|_| "group config does not parse")?,
        },
        DESTROY => GroupOp::Destroy { group },
        DELIVER | DELIVER_NEW => GroupOp::Deliver {
            group,
            consumer,
            ids,
            now_ms: a,
            cursor: (b[0] == DELIVER_NEW).then_some(id_b),
        },
        ACK => GroupOp::Ack {
            group,
            ids,
            now_ms: a,
        },
        NACK | NACK_WITH_ERROR => GroupOp::Nack {
            group,
            ids,
            visible_at_ms: a,
            error: if b[0] == NACK_WITH_ERROR {
                Some(text(text_at..ids_at)?)
            } else {
                None
            },
        },
        REMOVE | REMOVE_TO_DLQ => GroupOp::Remove {
            group,
            ids,
            dlq_id: (b[0] == REMOVE_TO_DLQ).then_some(id_b),
        },
        PAUSE => GroupOp::Pause {
            group,
            paused: a != 0,
        },
        DELETE_CONSUMER => GroupOp::DeleteConsumer { group, consumer },
        SET_CURSOR => GroupOp::SetCursor {
            group,
            cursor: id_b,
        },
        _ => return Err("unknown group op"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_round_trips() {
        let ids = vec![EventId::new(1, 2), EventId::new(3, 4)];
        let g = || "orders-svc".to_owned();
        for op in [
            GroupOp::Create {
                group: g(),
                cursor: EventId::new(9, 9),
                config: GroupConfig::default(),
            },
            GroupOp::Destroy { group: g() },
            GroupOp::Deliver {
                group: g(),
                consumer: "c1".into(),
                ids: ids.clone(),
                now_ms: 5,
                cursor: None,
            },
            GroupOp::Deliver {
                group: g(),
                consumer: "c1".into(),
                ids: ids.clone(),
                now_ms: 5,
                cursor: Some(EventId::new(3, 4)),
            },
            GroupOp::Ack {
                group: g(),
                ids: ids.clone(),
                now_ms: 7,
            },
            GroupOp::Nack {
                group: g(),
                ids: ids.clone(),
                visible_at_ms: 8,
                error: None,
            },
            GroupOp::Nack {
                group: g(),
                ids: ids.clone(),
                visible_at_ms: 8,
                error: Some("boom ü".into()),
            },
            GroupOp::Remove {
                group: g(),
                ids: ids.clone(),
                dlq_id: None,
            },
            GroupOp::Remove {
                group: g(),
                ids: ids.clone(),
                dlq_id: Some(EventId::new(11, 0)),
            },
            GroupOp::Pause {
                group: g(),
                paused: true,
            },
            GroupOp::DeleteConsumer {
                group: g(),
                consumer: "c2".into(),
            },
            GroupOp::SetCursor {
                group: g(),
                cursor: EventId::new(1, 0),
            },
        ] {
            let mut buf = Vec::new();
            encode_op(&op, &mut buf);
            assert_eq!(decode_op(&buf), Ok(op));
        }
    }
}
