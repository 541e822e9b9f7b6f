//! The group state machine: a cursor, a pending-entries list and consumers,
//! changed only by applying [`GroupOp`]s.

use std::collections::BTreeMap;

use busbar_event::{EventId, StreamName};
use serde::{Deserialize, Serialize};

use super::{ConsumerInfo, GroupConfig, GroupInfo, PendingInfo};

/// One pending (delivered, unacknowledged) entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The consumer holding it (empty after its consumer was deleted).
    pub consumer: String,
    /// Deliveries so far.
    pub deliveries: u32,
    /// When it was last delivered (ms).
    pub delivered_ms: u64,
    /// When it may be delivered again (ms).
    pub visible_at_ms: u64,
    /// The last error a nack gave.
    pub last_error: Option<String>,
}

/// A consumer of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    /// Pending entries it holds.
    pub pending: u64,
    /// When it last read, acked or claimed (ms).
    pub seen_ms: u64,
}

/// A group's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// The group's name.
    pub name: String,
    /// Delivery policy.
    pub config: GroupConfig,
    /// The last id delivered as new.
    pub cursor: EventId,
    /// Whether delivery is paused.
    pub paused: bool,
    /// The pending-entries list.
    pub pending: BTreeMap<EventId, Pending>,
    /// Consumers by name.
    pub consumers: BTreeMap<String, Consumer>,
    /// When an event was last acknowledged (ms).
    pub last_ack_ms: Option<u64>,
    /// The newest dead-letter id this group wrote (for crash reconciliation).
    pub dlq_watermark: EventId,
}

/// A change to a stream's groups. Applying the same ops in the same order
/// gives the same state: the embedded engine logs them and replays them on
/// recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOp {
    /// A group is created.
    Create {
        /// The group.
        group: String,
        /// Its starting cursor.
        cursor: EventId,
        /// Its policy.
        config: GroupConfig,
    },
    /// A group is deleted.
    Destroy {
        /// The group.
        group: String,
    },
    /// Events are delivered to a consumer: new ones (advancing the cursor to
    /// `cursor`), redelivered or claimed ones (their count goes up).
    Deliver {
        /// The group.
        group: String,
        /// The consumer.
        consumer: String,
        /// The events.
        ids: Vec<EventId>,
        /// When.
        now_ms: u64,
        /// The new cursor, when new events were delivered.
        cursor: Option<EventId>,
    },
    /// Events are acknowledged.
    Ack {
        /// The group.
        group: String,
        /// The events.
        ids: Vec<EventId>,
        /// When.
        now_ms: u64,
    },
    /// Events are negatively acknowledged: delivered again from `visible_at_ms`.
    Nack {
        /// The group.
        group: String,
        /// The events.
        ids: Vec<EventId>,
        /// When they become deliverable again.
        visible_at_ms: u64,
        /// Why processing failed.
        error: Option<String>,
    },
    /// Pending entries leave the group without an ack: dead-lettered (with
    /// the id they got in the dead-letter stream), dropped, or gone from
    /// the stream.
    Remove {
        /// The group.
        group: String,
        /// The events.
        ids: Vec<EventId>,
        /// The dead-letter id of the last one, when dead-lettered.
        dlq_id: Option<EventId>,
    },
    /// Delivery is paused or resumed.
    Pause {
        /// The group.
        group: String,
        /// Paused or not.
        paused: bool,
    },
    /// A consumer is removed; its pending entries become deliverable to
    /// anyone at once.
    DeleteConsumer {
        /// The group.
        group: String,
        /// The consumer.
        consumer: String,
    },
    /// The cursor moves (a replay into an existing group moves it back).
    SetCursor {
        /// The group.
        group: String,
        /// The new cursor.
        cursor: EventId,
    },
}

impl GroupOp {
    /// The group the op changes.
    pub fn group(&self) -> &str {
        match self {
            GroupOp::Create { group, .. }
            | GroupOp::Destroy { group }
            | GroupOp::Deliver { group, .. }
            | GroupOp::Ack { group, .. }
            | GroupOp::Nack { group, .. }
            | GroupOp::Remove { group, .. }
            | GroupOp::Pause { group, .. }
            | GroupOp::DeleteConsumer { group, .. }
            | GroupOp::SetCursor { group, .. } => group,
        }
    }
}

/// Applies `op` to a stream's groups.
pub fn apply(groups: &mut BTreeMap<String, GroupState>, op: &GroupOp) {
    if let GroupOp::Create {
        group,
        cursor,
        config,
    } = op
    {
        groups.insert(group.clone(), GroupState::new(group, *cursor, *config));
        return;
    }
    if let GroupOp::Destroy { group } = op {
        groups.remove(group);
        return;
    }
    if let Some(g) = groups.get_mut(op.group()) {
        g.apply(op);
    }
}

impl GroupState {
    /// A new group starting after `cursor`.
    pub fn new(name: &str, cursor: EventId, config: GroupConfig) -> Self {
        GroupState {
            name: name.to_owned(),
            config,
            cursor,
            paused: false,
            pending: BTreeMap::new(),
            consumers: BTreeMap::new(),
            last_ack_ms: None,
            dlq_watermark: EventId::ZERO,
        }
    }

    fn release(&mut self, consumer: &str) {
        if let Some(c) = self.consumers.get_mut(consumer) {
            c.pending = c.pending.saturating_sub(1);
        }
    }

    fn apply(&mut self, op: &GroupOp) {
        match op {
            GroupOp::Create { .. } | GroupOp::Destroy { .. } => {}
            GroupOp::Deliver {
                consumer,
                ids,
                now_ms,
                cursor,
                ..
            } => {
                let visible_at_ms = now_ms + self.config.ack_wait.as_millis() as u64;
                for id in ids {
                    let previous = self.pending.get(id).map(|p| p.consumer.clone());
                    if let Some(prev) = previous {
                        self.release(&prev);
                    }
                    let entry = self.pending.entry(*id).or_insert_with(|| Pending {
                        consumer: String::new(),
                        deliveries: 0,
                        delivered_ms: 0,
                        visible_at_ms: 0,
                        last_error: None,
                    });
                    entry.consumer.clone_from(consumer);
                    entry.deliveries += 1;
                    entry.delivered_ms = *now_ms;
                    entry.visible_at_ms = visible_at_ms;
                }
                let c = self.consumers.entry(consumer.clone()).or_default();
                c.pending += ids.len() as u64;
                c.seen_ms = *now_ms;
                if let Some(cursor) = cursor {
                    self.cursor = self.cursor.max(*cursor);
                }
            }
            GroupOp::Ack { ids, now_ms, .. } => {
                for id in ids {
                    if let Some(p) = self.pending.remove(id) {
                        self.release(&p.consumer);
                        if let Some(c) = self.consumers.get_mut(&p.consumer) {
                            c.seen_ms = *now_ms;
                        }
                    }
                }
                self.last_ack_ms = Some(*now_ms);
            }
            GroupOp::Nack {
                ids,
                visible_at_ms,
                error,
                ..
            } => {
                for id in ids {
                    if let Some(p) = self.pending.get_mut(id) {
                        p.visible_at_ms = *visible_at_ms;
                        if error.is_some() {
                            p.last_error.clone_from(error);
                        }
                    }
                }
            }
            GroupOp::Remove { ids, dlq_id, .. } => {
                for id in ids {
                    if let Some(p) = self.pending.remove(id) {
                        self.release(&p.consumer);
                    }
                }
                if let Some(d) = dlq_id {
                    self.dlq_watermark = self.dlq_watermark.max(*d);
                }
            }
            GroupOp::Pause { paused, .. } => self.paused = *paused,
            GroupOp::DeleteConsumer { consumer, .. } => {
                self.consumers.remove(consumer);
                for p in self.pending.values_mut() {
                    if &p.consumer == consumer {
                        p.consumer.clear();
                        p.visible_at_ms = 0;
                    }
                }
            }
            GroupOp::SetCursor { cursor, .. } => self.cursor = *cursor,
        }
    }

    /// Pending entries deliverable again at `now_ms`, oldest first, at most
    /// `count`.
    pub fn due(&self, now_ms: u64, count: usize) -> Vec<(EventId, &Pending)> {
        self.pending
            .iter()
            .filter(|(_, p)| p.visible_at_ms <= now_ms)
            .take(count)
            .map(|(id, p)| (*id, p))
            .collect()
    }

    /// How many more entries `consumer` may hold.
    pub fn room(&self, consumer: &str) -> usize {
        let held = self.consumers.get(consumer).map_or(0, |c| c.pending);
        (self.config.max_pending_per_consumer as u64).saturating_sub(held) as usize
    }

    /// Operator view; `lag` is computed by the caller from the stream.
    pub fn info(&self, stream: &StreamName, lag: u64, now_ms: u64) -> GroupInfo {
        GroupInfo {
            stream: stream.clone(),
            name: self.name.clone(),
            consumers: self
                .consumers
                .iter()
                .map(|(name, c)| ConsumerInfo {
                    name: name.clone(),
                    pending: c.pending,
                    idle_ms: now_ms.saturating_sub(c.seen_ms),
                })
                .collect(),
            pending: self.pending.len() as u64,
            lag,
            last_delivered_id: self.cursor,
            last_ack_ms: self.last_ack_ms,
            paused: self.paused,
            config: self.config,
        }
    }

    /// Pending entries in `[start, end]`, optionally of one consumer.
    pub fn pending_info(
        &self,
        consumer: Option<&str>,
        start: EventId,
        end: EventId,
        count: usize,
        now_ms: u64,
    ) -> Vec<PendingInfo> {
        self.pending
            .range(start..=end.max(start))
            .filter(|(_, p)| consumer.is_none_or(|c| p.consumer == c))
            .take(count)
            .map(|(id, p)| PendingInfo {
                id: *id,
                consumer: p.consumer.clone(),
                delivery_count: p.deliveries,
                idle_ms: now_ms.saturating_sub(p.delivered_ms),
                last_error: p.last_error.clone(),
            })
            .collect()
    }
}
