//! Model-based test of consumer groups: random sequences of append / read
//! (deliver) / ack / nack / claim / time passing / sweep / reopen against
//! the embedded store (tiny segments, so group snapshots at segment starts
//! are exercised) and a small model written here: a cursor, a map of
//! pending entries (consumer, delivery count, last error, when it becomes
//! deliverable again) and the dead-letter list. After every step the
//! outcome, the pending list, the delivery counts, the consumers, the
//! cursor and the dead-letter stream must match.
//!
//! The store reads the wall clock, so the model keeps, for each entry, the
//! window of wall-clock times in which it becomes deliverable again, and
//! waits before a read until no entry is in doubt. A step slow enough to
//! leave one in doubt anyway is rejected, not failed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use busbar_event::{now_ms, EventBatch, EventId, NewEvent, StreamName};
use busbar_store::embedded::{EmbeddedConfig, EmbeddedStore};
use busbar_store::group::{dlq_stream, DlqOrigin, GroupConfig, GroupStart, NackOptions};
use busbar_store::{Durability, ReadQuery, Store};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const ACK_WAIT_MS: u64 = 200;
const MAX_DELIVER: u32 = 3;
const MAX_PENDING: u32 = 5;
/// Entries becoming due this close to a call are waited for first.
const GUARD_MS: u64 = 100;
/// A delay that never ends within a test case.
const FOREVER_MS: u64 = 3_600_000;
const CONSUMERS: [&str; 3] = ["c0", "c1", "c2"];

#[derive(Debug, Clone)]
enum Step {
    Append(usize),
    Read {
        consumer: usize,
        count: usize,
    },
    Ack {
        consumer: Option<usize>,
        picks: Vec<u8>,
        unknown: bool,
    },
    Nack {
        consumer: usize,
        picks: Vec<u8>,
        terminal: bool,
        delayed: bool,
        error: Option<u8>,
    },
    Claim {
        consumer: usize,
        idle: bool,
        count: usize,
    },
    /// Time passes: every delivery's `ack_wait` runs out.
    Wait,
    Sweep,
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    let picks = prop::collection::vec(any::<u8>(), 1..4);
    prop_oneof![
        3 => (1..6usize).prop_map(Step::Append),
        6 => (0..3usize, 1..8usize).prop_map(|(consumer, count)| Step::Read { consumer, count }),
        4 => (prop::option::weighted(0.8, 0..3usize), picks.clone(), prop::bool::weighted(0.2))
            .prop_map(|(consumer, picks, unknown)| Step::Ack { consumer, picks, unknown }),
        4 => (0..3usize, picks, prop::bool::weighted(0.2), prop::bool::weighted(0.2),
              prop::option::of(0..3u8))
            .prop_map(|(consumer, picks, terminal, delayed, error)| Step::Nack {
                consumer, picks, terminal, delayed, error,
            }),
        1 => (0..3usize, any::<bool>(), 1..5usize)
            .prop_map(|(consumer, idle, count)| Step::Claim { consumer, idle, count }),
        1 => Just(Step::Wait),
        1 => Just(Step::Sweep),
        1 => Just(Step::Reopen),
    ]
}

/// A pending entry as the model sees it.
#[derive(Debug, Clone)]
struct Entry {
    consumer: String,
    deliveries: u32,
    last_error: Option<String>,
    /// Earliest and latest wall-clock ms at which it becomes deliverable.
    due_from: u64,
    due_by: u64,
}

#[derive(Default)]
struct Model {
    events: Vec<EventId>,
    cursor: EventId,
    pending: BTreeMap<EventId, Entry>,
    consumers: BTreeSet<String>,
    /// (original id, attempts, last error), in dead-letter order.
    dlq: Vec<(EventId, u32, Option<String>)>,
}

impl Model {
    fn held(&self, consumer: &str) -> usize {
        self.pending
            .values()
            .filter(|e| e.consumer == consumer)
            .count()
    }

    /// Delivers `id` to `consumer` in a call made within `[t0, t1]`.
    fn deliver(&mut self, id: EventId, consumer: &str, t0: u64, t1: u64) {
        let e = self.pending.entry(id).or_insert(Entry {
            consumer: String::new(),
            deliveries: 0,
            last_error: None,
            due_from: 0,
            due_by: 0,
        });
        e.consumer = consumer.to_owned();
        e.deliveries += 1;
        e.due_from = t0 + ACK_WAIT_MS;
        e.due_by = t1 + ACK_WAIT_MS;
        self.consumers.insert(consumer.to_owned());
    }

    /// Retires `ids`: exhausted ones (due with no attempt left: their
    /// `ack_wait` expired) or nacked ones, recording why as the store does.
    fn retire(&mut self, ids: &[EventId], exhausted: bool, error: Option<&str>) {
        for id in ids {
            let e = self
                .pending
                .remove(id)
                .expect("retired entries are pending");
            let d = e.deliveries;
            let err = match (exhausted, error, e.last_error) {
                (_, Some(err), _) => err.to_owned(),
                (true, None, None) => format!("ack_wait expired after {d} deliveries"),
                (true, None, Some(last)) => {
                    format!("ack_wait expired after {d} deliveries; last error: {last}")
                }
                (false, None, Some(last)) => last,
                (false, None, None) => format!("nacked after {d} deliveries"),
            };
            self.dlq.push((*id, d, Some(err)));
        }
    }

    /// Entries due for a call starting at `t`; `None` when one is in doubt.
    fn due(&self, t: u64) -> Option<Vec<EventId>> {
        let mut out = Vec::new();
        for (id, e) in &self.pending {
            if e.due_by <= t {
                out.push(*id);
            } else if e.due_from <= t + GUARD_MS {
                return None;
            }
        }
        Some(out)
    }

    /// Waits until no entry becomes due within the guard of a call.
    async fn settle(&self) -> u64 {
        loop {
            let t = now_ms();
            let doubtful = self
                .pending
                .values()
                .filter(|e| e.due_by > t && e.due_from <= t + GUARD_MS)
                .map(|e| e.due_by)
                .max();
            match doubtful {
                None => return t,
                Some(by) => tokio::time::sleep(Duration::from_millis(by - t + 1)).await,
            }
        }
    }

    /// Fails the case as "in doubt" when an entry not expected due could
    /// have become due before the call ended at `t1`.
    fn check_timely(&self, expected_due: &[EventId], t1: u64) -> Result<(), TestCaseError> {
        let late = self
            .pending
            .iter()
            .any(|(id, e)| !expected_due.contains(id) && e.due_from <= t1);
        if late {
            return Err(TestCaseError::reject("a call ran past an entry's ack_wait"));
        }
        Ok(())
    }
}

fn open(dir: &std::path::Path) -> Arc<dyn Store> {
    let mut config = EmbeddedConfig::new(dir);
    config.segment_bytes = 2048;
    config.index_interval_bytes = 256;
    config.durability = Durability::Never;
    Arc::new(EmbeddedStore::open(config).expect("open"))
}

struct Case {
    dir: tempfile::TempDir,
    store: Option<Arc<dyn Store>>,
    model: Model,
    stream: StreamName,
    appended: u64,
}

fn resolve(model: &Model, picks: &[u8], unknown: bool) -> Vec<EventId> {
    let pool: Vec<EventId> = if model.pending.is_empty() {
        model.events.clone()
    } else {
        model.pending.keys().copied().collect()
    };
    let mut ids = Vec::new();
    for p in picks {
        if let Some(id) = pool.get(*p as usize % pool.len().max(1)) {
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
    }
    if unknown || ids.is_empty() {
        ids.push(EventId::new(1, 0));
    }
    ids
}

impl Case {
    fn store(&self) -> &dyn Store {
        self.store.as_deref().expect("open store")
    }

    async fn run(&mut self, step: Step) -> Result<(), TestCaseError> {
        let s = self.stream.clone();
        match step {
            Step::Append(n) => {
                let mut batch = EventBatch::new();
                for _ in 0..n {
                    self.appended += 1;
                    let payload = format!("{{\"n\":{}}}", self.appended);
                    batch.push(&NewEvent::new("t", payload.as_bytes())).unwrap();
                }
                let ids = self
                    .store()
                    .append(&s, batch, Default::default())
                    .await
                    .unwrap();
                self.model.events.extend(ids);
            }
            Step::Read { consumer, count } => {
                let c = CONSUMERS[consumer];
                let t0 = self.model.settle().await;
                let all_due = self.model.due(t0).expect("settled");
                let room = count.min((MAX_PENDING as usize).saturating_sub(self.model.held(c)));
                let due: Vec<EventId> = all_due.iter().copied().take(room).collect();
                let got = self.store().read_group(&s, "g", c, count).await.unwrap();
                let t1 = now_ms();
                self.model.check_timely(&all_due, t1)?;
                let (exhausted, retry): (Vec<EventId>, Vec<EventId>) = due
                    .iter()
                    .partition(|id| self.model.pending[id].deliveries >= MAX_DELIVER);
                self.model.retire(&exhausted, true, None);
                let mut expected: Vec<(EventId, u32)> = Vec::new();
                for id in &retry {
                    self.model.deliver(*id, c, t0, t1);
                    expected.push((*id, self.model.pending[id].deliveries));
                }
                let left = room - retry.len();
                let fresh: Vec<EventId> = self
                    .model
                    .events
                    .iter()
                    .copied()
                    .filter(|id| *id > self.model.cursor)
                    .take(left)
                    .collect();
                for id in &fresh {
                    self.model.deliver(*id, c, t0, t1);
                    expected.push((*id, 1));
                    self.model.cursor = *id;
                }
                self.model.consumers.insert(c.to_owned());
                let actual: Vec<(EventId, u32)> = got
                    .deliveries
                    .iter()
                    .map(|d| (d.event.id(), d.delivery_count))
                    .collect();
                prop_assert_eq!(actual, expected, "read by {}", c);
                prop_assert_eq!(got.dead_lettered as usize, exhausted.len());
                prop_assert_eq!(got.redelivered as usize, retry.len());
            }
            Step::Ack {
                consumer,
                picks,
                unknown,
            } => {
                let ids = resolve(&self.model, &picks, unknown);
                let c = consumer.map(|i| CONSUMERS[i]);
                let got = self.store().ack(&s, "g", c, &ids).await.unwrap();
                let (mut acked, mut unknown, mut wrong) = (Vec::new(), Vec::new(), Vec::new());
                for id in &ids {
                    match self.model.pending.get(id) {
                        None => unknown.push(*id),
                        Some(e) if c.is_some_and(|c| e.consumer != c) => wrong.push(*id),
                        Some(_) => acked.push(*id),
                    }
                }
                for id in &acked {
                    self.model.pending.remove(id);
                }
                prop_assert_eq!(got.acked, acked);
                prop_assert_eq!(got.unknown, unknown);
                prop_assert_eq!(got.wrong_consumer, wrong);
            }
            Step::Nack {
                consumer,
                picks,
                terminal,
                delayed,
                error,
            } => {
                let ids = resolve(&self.model, &picks, false);
                let c = CONSUMERS[consumer];
                let error = error.map(|n| format!("e{n}"));
                let delay = if delayed { FOREVER_MS } else { 0 };
                let opts = NackOptions {
                    delay: Some(Duration::from_millis(delay)),
                    terminal,
                    error: error.clone(),
                };
                let t0 = now_ms();
                let got = self.store().nack(&s, "g", c, &ids, opts).await.unwrap();
                let t1 = now_ms();
                let (mut retried, mut dead, mut unknown, mut wrong) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for id in &ids {
                    match self.model.pending.get(id) {
                        None => unknown.push(*id),
                        Some(e) if e.consumer != c => wrong.push(*id),
                        Some(e) if terminal || e.deliveries >= MAX_DELIVER => dead.push(*id),
                        Some(_) => retried.push(*id),
                    }
                }
                for id in &retried {
                    let e = self.model.pending.get_mut(id).expect("pending");
                    e.due_from = t0 + delay;
                    e.due_by = t1 + delay;
                    if error.is_some() {
                        e.last_error.clone_from(&error);
                    }
                }
                self.model.retire(&dead, false, error.as_deref());
                prop_assert_eq!(got.retried, retried);
                prop_assert_eq!(got.dead_lettered, dead);
                prop_assert!(got.dropped.is_empty());
                prop_assert_eq!(got.unknown, unknown);
                prop_assert_eq!(got.wrong_consumer, wrong);
            }
            Step::Claim {
                consumer,
                idle,
                count,
            } => {
                let c = CONSUMERS[consumer];
                // Idle for at least nothing (everything), or for an hour
                // (nothing).
                let min_idle = if idle { FOREVER_MS } else { 0 };
                let t0 = now_ms();
                let got = self
                    .store()
                    .claim(
                        &s,
                        "g",
                        c,
                        Duration::from_millis(min_idle),
                        EventId::ZERO,
                        count,
                    )
                    .await
                    .unwrap();
                let t1 = now_ms();
                let (claimed, next): (Vec<EventId>, Option<EventId>) = if idle {
                    (Vec::new(), None)
                } else {
                    let all: Vec<EventId> = self.model.pending.keys().copied().collect();
                    (
                        all.iter().copied().take(count).collect(),
                        all.get(count).copied(),
                    )
                };
                let mut expected = Vec::new();
                for id in &claimed {
                    self.model.deliver(*id, c, t0, t1);
                    expected.push((*id, self.model.pending[id].deliveries));
                }
                let actual: Vec<(EventId, u32)> = got
                    .deliveries
                    .iter()
                    .map(|d| (d.event.id(), d.delivery_count))
                    .collect();
                prop_assert_eq!(actual, expected, "claim by {}", c);
                prop_assert_eq!(got.next, next);
                prop_assert!(got.deleted.is_empty());
            }
            Step::Wait => {
                let until = self
                    .model
                    .pending
                    .values()
                    .map(|e| e.due_by)
                    // Not the entries nacked with a delay that never ends.
                    .filter(|by| *by < now_ms() + FOREVER_MS / 2)
                    .max();
                if let Some(by) = until {
                    let t = now_ms();
                    if by >= t {
                        tokio::time::sleep(Duration::from_millis(by - t + 1)).await;
                    }
                }
            }
            Step::Sweep => {
                let t0 = self.model.settle().await;
                let due = self.model.due(t0).expect("settled");
                let got = self.store().expire(&s).await.unwrap();
                self.model.check_timely(&due, now_ms())?;
                let exhausted: Vec<EventId> = due
                    .into_iter()
                    .filter(|id| self.model.pending[id].deliveries >= MAX_DELIVER)
                    .collect();
                self.model.retire(&exhausted, true, None);
                let retired: u32 = got.iter().map(|e| e.dead_lettered).sum();
                prop_assert_eq!(retired as usize, exhausted.len());
            }
            Step::Reopen => {
                let store = self.store.take().expect("open store");
                store.close().await.expect("close");
                drop(store);
                self.store = Some(open(self.dir.path()));
            }
        }
        self.check_state().await
    }

    /// Pending list, counts, consumers, cursor and dead letters match.
    async fn check_state(&self) -> Result<(), TestCaseError> {
        let s = &self.stream;
        let pending = self
            .store()
            .pending(s, "g", None, EventId::ZERO, EventId::MAX, 10_000)
            .await
            .unwrap();
        let actual: Vec<(EventId, String, u32, Option<String>)> = pending
            .into_iter()
            .map(|p| (p.id, p.consumer, p.delivery_count, p.last_error))
            .collect();
        let expected: Vec<(EventId, String, u32, Option<String>)> = self
            .model
            .pending
            .iter()
            .map(|(id, e)| (*id, e.consumer.clone(), e.deliveries, e.last_error.clone()))
            .collect();
        prop_assert_eq!(actual, expected, "pending list");

        let info = self.store().group(s, "g").await.unwrap();
        prop_assert_eq!(info.last_delivered_id, self.model.cursor, "cursor");
        prop_assert_eq!(info.pending as usize, self.model.pending.len());
        let lag = self
            .model
            .events
            .iter()
            .filter(|id| **id > self.model.cursor)
            .count();
        prop_assert_eq!(info.lag as usize, lag, "lag");
        let consumers: Vec<(String, u64)> = info
            .consumers
            .iter()
            .map(|c| (c.name.clone(), c.pending))
            .collect();
        let expected: Vec<(String, u64)> = self
            .model
            .consumers
            .iter()
            .map(|c| (c.clone(), self.model.held(c) as u64))
            .collect();
        prop_assert_eq!(consumers, expected, "consumers");

        let dlq = self
            .store()
            .read(&dlq_stream(s).unwrap(), &ReadQuery::all(10_000))
            .await
            .unwrap_or_default();
        let actual: Vec<(EventId, u32, Option<String>)> = dlq
            .iter()
            .map(|e| {
                let o = DlqOrigin::of(e).expect("dead letters carry their origin");
                (o.original_id, o.attempts, o.last_error)
            })
            .collect();
        prop_assert_eq!(&actual, &self.model.dlq, "dead letters");
        for e in &dlq {
            // The dead letter keeps the event: same type, same payload.
            let n = self
                .model
                .events
                .iter()
                .position(|id| Some(*id) == DlqOrigin::of(e).map(|o| o.original_id));
            prop_assert!(n.is_some());
            let expected = format!("{{\"n\":{}}}", n.unwrap_or(0) + 1);
            prop_assert_eq!(e.event_type(), "t");
            prop_assert_eq!(e.payload(), expected.as_bytes());
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/group_model.txt"),
        )),
        ..ProptestConfig::default()
    })]
    #[test]
    fn embedded_groups_match_the_model(steps in prop::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path());
            let stream = StreamName::new("s").unwrap();
            let config = GroupConfig {
                max_deliver: MAX_DELIVER,
                ack_wait: Duration::from_millis(ACK_WAIT_MS),
                max_pending_per_consumer: MAX_PENDING,
                ..GroupConfig::default()
            };
            store.create_group(&stream, "g", GroupStart::Beginning, config).await.unwrap();
            let mut case = Case { dir, store: Some(store), model: Model::default(), stream, appended: 0 };
            for step in steps {
                case.run(step).await?;
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}
