//! Group operations written once over [`GroupHost`], which each backend
//! implements: where events come from, where dead letters go, and how an op
//! is made to stick (applied in memory; logged and applied on disk).

use std::collections::BTreeMap;
use std::time::Duration;

use busbar_event::{Event, EventBatch, EventId, NewEvent, StreamName};

use super::state::GroupState;
use super::{
    dlq_meta, AckOutcome, ClaimOutcome, Delivery, Exhausted, GroupOp, NackOptions, NackOutcome,
    ReadOutcome,
};
use crate::{Result, StoreError};

/// What a backend gives the group operations.
pub(crate) trait GroupHost {
    /// The stream the groups belong to.
    fn stream(&self) -> &StreamName;
    /// The stream's groups.
    fn groups(&self) -> &BTreeMap<String, GroupState>;
    /// Up to `count` live events with ids greater than `after`.
    fn events_after(&mut self, after: EventId, count: usize) -> Result<Vec<Event>>;
    /// The live event with this id, if any.
    fn event(&mut self, id: EventId) -> Result<Option<Event>>;
    /// Appends to the stream's dead-letter stream; durable (as the policy
    /// says) before the op that removes the entries is recorded.
    fn append_dead_letters(&mut self, batch: EventBatch) -> Result<Vec<EventId>>;
    /// Records and applies an op.
    fn apply(&mut self, op: GroupOp) -> Result<()>;
}

fn group<'a, H: GroupHost + ?Sized>(h: &'a H, name: &str) -> Result<&'a GroupState> {
    h.groups().get(name).ok_or_else(|| StoreError::NoSuchGroup {
        stream: h.stream().clone(),
        group: name.to_owned(),
    })
}

/// Why entries are retired: the reason a dead letter records follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// Due again with no attempt left: the last delivery's `ack_wait`
    /// expired.
    Exhausted,
    /// Nacked terminally, or on its last attempt.
    Nacked,
}

/// Moves exhausted or terminally failed entries out of the group: to the
/// dead-letter stream (with why), or dropped when the group says so.
/// Returns (dead-lettered, dropped).
pub(crate) fn retire<H: GroupHost + ?Sized>(
    h: &mut H,
    name: &str,
    ids: &[EventId],
    why: Why,
    error: Option<&str>,
    now_ms: u64,
) -> Result<(Vec<EventId>, Vec<EventId>)> {
    if ids.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let g = group(h, name)?;
    let drop_them = g.config.on_exhausted == Exhausted::Drop;
    let attempts: Vec<(EventId, u32, Option<String>)> = ids
        .iter()
        .filter_map(|id| {
            g.pending.get(id).map(|p| {
                let d = p.deliveries;
                let err = match (why, error, &p.last_error) {
                    (_, Some(e), _) => e.to_owned(),
                    // Due and out of attempts: its last delivery was never
                    // acknowledged (a nack on the last attempt retires at
                    // once, with `Why::Nacked`).
                    (Why::Exhausted, None, None) => {
                        format!("ack_wait expired after {d} deliveries")
                    }
                    (Why::Exhausted, None, Some(last)) => {
                        format!("ack_wait expired after {d} deliveries; last error: {last}")
                    }
                    (Why::Nacked, None, Some(last)) => last.clone(),
                    (Why::Nacked, None, None) => format!("nacked after {d} deliveries"),
                };
                (*id, d, Some(err))
            })
        })
        .collect();
    if drop_them {
        let dropped: Vec<EventId> = attempts.iter().map(|a| a.0).collect();
        h.apply(GroupOp::Remove {
            group: name.to_owned(),
            ids: dropped.clone(),
            dlq_id: None,
        })?;
        return Ok((Vec::new(), dropped));
    }
    let stream = h.stream().clone();
    let mut batch = EventBatch::new();
    let mut moved = Vec::new();
    let mut gone = Vec::new();
    for (id, deliveries, err) in &attempts {
        match h.event(*id)? {
            Some(event) => {
                let meta = dlq_meta(&stream, name, *id, *deliveries, err.as_deref(), now_ms);
                batch.push(&NewEvent::from_event(&event).with_meta(&meta))?;
                moved.push(*id);
            }
            None => gone.push(*id),
        }
    }
    let dlq_ids = if batch.is_empty() {
        Vec::new()
    } else {
        h.append_dead_letters(batch)?
    };
    if !moved.is_empty() {
        h.apply(GroupOp::Remove {
            group: name.to_owned(),
            ids: moved.clone(),
            dlq_id: dlq_ids.last().copied(),
        })?;
    }
    if !gone.is_empty() {
        h.apply(GroupOp::Remove {
            group: name.to_owned(),
            ids: gone,
            dlq_id: None,
        })?;
    }
    Ok((moved, Vec::new()))
}

/// Delivers to `consumer`: due pending entries first (retiring exhausted
/// ones), then new events after the cursor.
pub(crate) fn read<H: GroupHost + ?Sized>(
    h: &mut H,
    name: &str,
    consumer: &str,
    count: usize,
    now_ms: u64,
) -> Result<ReadOutcome> {
    let mut out = ReadOutcome::default();
    let g = group(h, name)?;
    if g.paused {
        return Ok(out);
    }
    let room = count.min(g.room(consumer));
    let known = g.consumers.contains_key(consumer);
    let max_deliver = g.config.max_deliver;
    let (exhausted, retry): (Vec<_>, Vec<_>) = g
        .due(now_ms, room)
        .into_iter()
        .map(|(id, p)| (id, p.deliveries))
        .partition(|(_, d)| *d >= max_deliver);
    let exhausted: Vec<EventId> = exhausted.into_iter().map(|(id, _)| id).collect();
    let (dead, dropped) = retire(h, name, &exhausted, Why::Exhausted, None, now_ms)?;
    out.dead_lettered = dead.len() as u32;
    out.dropped = dropped.len() as u32;

    let mut redeliver = Vec::new();
    let mut gone = Vec::new();
    for (id, deliveries) in retry {
        match h.event(id)? {
            Some(event) => {
                redeliver.push(id);
                out.deliveries.push(Delivery {
                    event,
                    delivery_count: deliveries + 1,
                });
            }
            None => gone.push(id),
        }
    }
    if !gone.is_empty() {
        h.apply(GroupOp::Remove {
            group: name.to_owned(),
            ids: gone,
            dlq_id: None,
        })?;
    }
    out.redelivered = redeliver.len() as u32;
    if !redeliver.is_empty() {
        h.apply(GroupOp::Deliver {
            group: name.to_owned(),
            consumer: consumer.to_owned(),
            ids: redeliver,
            now_ms,
            cursor: None,
        })?;
    }

    let left = room - out.deliveries.len();
    let cursor = group(h, name)?.cursor;
    let fresh = if left > 0 {
        h.events_after(cursor, left)?
    } else {
        Vec::new()
    };
    if !fresh.is_empty() || (!known && out.deliveries.is_empty()) {
        let ids: Vec<EventId> = fresh.iter().map(Event::id).collect();
        let new_cursor = ids.last().copied();
        out.deliveries
            .extend(fresh.into_iter().map(|event| Delivery {
                event,
                delivery_count: 1,
            }));
        // An empty deliver registers a consumer on its first read.
        h.apply(GroupOp::Deliver {
            group: name.to_owned(),
            consumer: consumer.to_owned(),
            ids,
            now_ms,
            cursor: new_cursor,
        })?;
    }
    Ok(out)
}

/// Sorts `ids` into (held by `consumer` or anyone when `None`, unknown,
/// held by another consumer).
fn sort_ids(
    g: &GroupState,
    consumer: Option<&str>,
    ids: &[EventId],
) -> (Vec<EventId>, Vec<EventId>, Vec<EventId>) {
    let (mut mine, mut unknown, mut other) = (Vec::new(), Vec::new(), Vec::new());
    for id in ids {
        match g.pending.get(id) {
            None => unknown.push(*id),
            Some(p) if consumer.is_some_and(|c| p.consumer != c) => other.push(*id),
            Some(_) => mine.push(*id),
        }
    }
    mine.dedup();
    (mine, unknown, other)
}

/// Acknowledges entries held by `consumer` (any consumer when `None`).
pub(crate) fn ack<H: GroupHost + ?Sized>(
    h: &mut H,
    name: &str,
    consumer: Option<&str>,
    ids: &[EventId],
    now_ms: u64,
) -> Result<AckOutcome> {
    let g = group(h, name)?;
    let (acked, unknown, wrong_consumer) = sort_ids(g, consumer, ids);
    let processing_ms = acked
        .iter()
        .filter_map(|id| g.pending.get(id))
        .map(|p| now_ms.saturating_sub(p.delivered_ms))
        .collect();
    if !acked.is_empty() {
        h.apply(GroupOp::Ack {
            group: name.to_owned(),
            ids: acked.clone(),
            now_ms,
        })?;
    }
    Ok(AckOutcome {
        acked,
        unknown,
        wrong_consumer,
        processing_ms,
    })
}

/// Negatively acknowledges: retry after the delay, or retire when terminal
/// or out of attempts.
pub(crate) fn nack<H: GroupHost + ?Sized>(
    h: &mut H,
    name: &str,
    consumer: &str,
    ids: &[EventId],
    opts: &NackOptions,
    now_ms: u64,
) -> Result<NackOutcome> {
    let g = group(h, name)?;
    let (mine, unknown, wrong_consumer) = sort_ids(g, Some(consumer), ids);
    let max = g.config.max_deliver;
    let (retire_ids, retried): (Vec<EventId>, Vec<EventId>) = mine
        .into_iter()
        .partition(|id| opts.terminal || g.pending.get(id).is_some_and(|p| p.deliveries >= max));
    if !retried.is_empty() {
        let delay = opts.delay.unwrap_or(Duration::ZERO).as_millis() as u64;
        h.apply(GroupOp::Nack {
            group: name.to_owned(),
            ids: retried.clone(),
            visible_at_ms: now_ms + delay,
            error: opts.error.clone(),
        })?;
    }
    let (dead_lettered, dropped) = retire(
        h,
        name,
        &retire_ids,
        Why::Nacked,
        opts.error.as_deref(),
        now_ms,
    )?;
    Ok(NackOutcome {
        retried,
        dead_lettered,
        dropped,
        unknown,
        wrong_consumer,
    })
}

/// XAUTOCLAIM: entries idle at least `min_idle`, from `start`, move to
/// `consumer` (their delivery count goes up).
pub(crate) fn claim<H: GroupHost + ?Sized>(
    h: &mut H,
    name: &str,
    consumer: &str,
    min_idle: Duration,
    start: EventId,
    count: usize,
    now_ms: u64,
) -> Result<ClaimOutcome> {
    let g = group(h, name)?;
    let idle = min_idle.as_millis() as u64;
    let mut candidates = Vec::new();
    let mut next = None;
    for (id, p) in g.pending.range(start..) {
        if candidates.len() == count {
            next = Some(*id);
            break;
        }
        if now_ms.saturating_sub(p.delivered_ms) >= idle {
            candidates.push((*id, p.deliveries));
        }
    }
    let mut out = ClaimOutcome {
        next,
        ..ClaimOutcome::default()
    };
    let mut ids = Vec::new();
    for (id, deliveries) in candidates {
        match h.event(id)? {
            Some(event) => {
                ids.push(id);
                out.deliveries.push(Delivery {
                    event,
                    delivery_count: deliveries + 1,
                });
            }
            None => out.deleted.push(id),
        }
    }
    if !out.deleted.is_empty() {
        h.apply(GroupOp::Remove {
            group: name.to_owned(),
            ids: out.deleted.clone(),
            dlq_id: None,
        })?;
    }
    if !ids.is_empty() {
        h.apply(GroupOp::Deliver {
            group: name.to_owned(),
            consumer: consumer.to_owned(),
            ids,
            now_ms,
            cursor: None,
        })?;
    }
    Ok(out)
}

/// Retires every due entry that is out of attempts (the sweeper: so
/// exhausted events reach the dead-letter stream even when nobody reads).
/// Returns (dead-lettered, dropped).
pub(crate) fn expire<H: GroupHost + ?Sized>(
    h: &mut H,
    name: &str,
    now_ms: u64,
) -> Result<(u32, u32)> {
    let g = group(h, name)?;
    let max = g.config.max_deliver;
    let ids: Vec<EventId> = g
        .pending
        .iter()
        .filter(|(_, p)| p.visible_at_ms <= now_ms && p.deliveries >= max)
        .map(|(id, _)| *id)
        .collect();
    let (dead, dropped) = retire(h, name, &ids, Why::Exhausted, None, now_ms)?;
    Ok((dead.len() as u32, dropped.len() as u32))
}

/// Creates group `name` starting after `cursor`.
pub(crate) fn create<H: GroupHost + ?Sized>(
    h: &mut H,
    name: &str,
    cursor: EventId,
    config: super::GroupConfig,
) -> Result<()> {
    if h.groups().contains_key(name) {
        return Err(StoreError::GroupExists {
            stream: h.stream().clone(),
            group: name.to_owned(),
        });
    }
    h.apply(GroupOp::Create {
        group: name.to_owned(),
        cursor,
        config,
    })
}

/// Deletes group `name`; returns whether it existed.
pub(crate) fn destroy<H: GroupHost + ?Sized>(h: &mut H, name: &str) -> Result<bool> {
    if !h.groups().contains_key(name) {
        return Ok(false);
    }
    h.apply(GroupOp::Destroy {
        group: name.to_owned(),
    })?;
    Ok(true)
}

/// Pauses or resumes group `name`.
pub(crate) fn pause<H: GroupHost + ?Sized>(h: &mut H, name: &str, paused: bool) -> Result<()> {
    group(h, name)?;
    h.apply(GroupOp::Pause {
        group: name.to_owned(),
        paused,
    })
}

/// Moves group `name`'s cursor.
pub(crate) fn set_cursor<H: GroupHost + ?Sized>(
    h: &mut H,
    name: &str,
    cursor: EventId,
) -> Result<()> {
    group(h, name)?;
    h.apply(GroupOp::SetCursor {
        group: name.to_owned(),
        cursor,
    })
}

/// Removes a consumer; returns how many entries it held.
pub(crate) fn delete_consumer<H: GroupHost + ?Sized>(
    h: &mut H,
    name: &str,
    consumer: &str,
) -> Result<u64> {
    let held = group(h, name)?
        .consumers
        .get(consumer)
        .map_or(0, |c| c.pending);
    h.apply(GroupOp::DeleteConsumer {
        group: name.to_owned(),
        consumer: consumer.to_owned(),
    })?;
    Ok(held)
}
