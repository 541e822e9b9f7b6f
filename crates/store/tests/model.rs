//! Model-based test: random sequences of append / read / trim / delete /
//! rotate / reopen against the embedded store and a model must give the same
//! answers. The model is a few lines of plain collections written here, so it
//! shares no code with the engine under test (not even id assignment).
//! Explicit ids make the ids predictable; tiny segments make every sequence
//! cross segment boundaries.

use std::collections::BTreeMap;
use std::sync::Arc;

use busbar_event::{EventBatch, EventId, NewEvent, StreamName};
use busbar_store::embedded::{EmbeddedConfig, EmbeddedStore};
use busbar_store::{AppendOptions, ReadQuery, Store, Trim, TypeFilter};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: usize,
        n: usize,
        trim_to: Option<u64>,
    },
    Read {
        stream: usize,
        from: u8,
        to: u8,
        count: usize,
        reverse: bool,
        typed: bool,
    },
    TrimMaxLen {
        stream: usize,
        max: u64,
    },
    TrimMinId {
        stream: usize,
        at: u8,
    },
    Delete {
        stream: usize,
        at: Vec<u8>,
    },
    Rotate {
        stream: usize,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, 1..8usize, prop::option::weighted(0.15, 0..20u64))
            .prop_map(|(stream, n, trim_to)| Op::Append { stream, n, trim_to }),
        3 => (0..2usize, any::<u8>(), any::<u8>(), 0..30usize, any::<bool>(), any::<bool>())
            .prop_map(|(stream, from, to, count, reverse, typed)| Op::Read { stream, from, to, count, reverse, typed }),
        1 => (0..2usize, 0..30u64).prop_map(|(stream, max)| Op::TrimMaxLen { stream, max }),
        1 => (0..2usize, any::<u8>()).prop_map(|(stream, at)| Op::TrimMinId { stream, at }),
        1 => (0..2usize, prop::collection::vec(any::<u8>(), 1..4)).prop_map(|(stream, at)| Op::Delete { stream, at }),
        1 => (0..2usize).prop_map(|stream| Op::Rotate { stream }),
        1 => Just(Op::Reopen),
    ]
}

/// One stream of the model: events by id (type, payload) and the last id
/// ever assigned.
#[derive(Debug, Default)]
struct ModelStream {
    events: BTreeMap<EventId, (String, Vec<u8>)>,
    last_id: EventId,
}

/// The oracle: what a store holds, as plain maps.
#[derive(Debug, Default)]
struct Model {
    streams: BTreeMap<StreamName, ModelStream>,
}

/// What the model needs to know of an event it is given.
struct Given {
    id: EventId,
    event_type: &'static str,
    payload: Vec<u8>,
}

impl Model {
    /// Appends events with explicit ids; `None` (and nothing appended)
    /// when an id is not above the last one.
    fn append(
        &mut self,
        s: &StreamName,
        events: &[Given],
        trim_to: Option<u64>,
    ) -> Option<Vec<EventId>> {
        let stream = self.streams.entry(s.clone()).or_default();
        let mut last = stream.last_id;
        for e in events {
            if e.id <= last {
                return None;
            }
            last = e.id;
        }
        for e in events {
            stream
                .events
                .insert(e.id, (e.event_type.to_owned(), e.payload.clone()));
        }
        stream.last_id = last;
        if let Some(max) = trim_to {
            self.trim_max_len(s, max);
        }
        Some(events.iter().map(|e| e.id).collect())
    }

    fn read(&self, s: &StreamName, q: &ReadQuery) -> Option<Vec<EventId>> {
        let stream = self.streams.get(s)?;
        let keep = |(id, (t, _)): (&EventId, &(String, Vec<u8>))| {
            let typed = q.types.as_ref().is_none_or(|f| f.matches(t));
            typed.then_some(*id)
        };
        let range = stream.events.range(q.start..=q.end);
        Some(if q.reverse {
            range.rev().filter_map(keep).take(q.count).collect()
        } else {
            range.filter_map(keep).take(q.count).collect()
        })
    }

    fn payloads(&self, s: &StreamName) -> Option<Vec<(EventId, Vec<u8>)>> {
        let stream = self.streams.get(s)?;
        Some(
            stream
                .events
                .iter()
                .map(|(id, (_, p))| (*id, p.clone()))
                .collect(),
        )
    }

    /// (length, first id, last id).
    fn info(&self, s: &StreamName) -> Option<(u64, Option<EventId>, EventId)> {
        let stream = self.streams.get(s)?;
        let first = stream.events.keys().next().copied();
        Some((stream.events.len() as u64, first, stream.last_id))
    }

    fn trim_max_len(&mut self, s: &StreamName, max: u64) -> Option<u64> {
        let stream = self.streams.get_mut(s)?;
        let mut removed = 0;
        while stream.events.len() as u64 > max {
            stream.events.pop_first();
            removed += 1;
        }
        Some(removed)
    }

    fn trim_min_id(&mut self, s: &StreamName, id: EventId) -> Option<u64> {
        let stream = self.streams.get_mut(s)?;
        let kept = stream.events.split_off(&id);
        let removed = stream.events.len() as u64;
        stream.events = kept;
        Some(removed)
    }

    fn delete(&mut self, s: &StreamName, ids: &[EventId]) -> Option<u64> {
        let stream = self.streams.get_mut(s)?;
        let mut removed = 0;
        for id in ids {
            if stream.events.remove(id).is_some() {
                removed += 1;
            }
        }
        Some(removed)
    }
}

struct Pair {
    dir: tempfile::TempDir,
    real: Option<Arc<dyn Store>>,
    model: Model,
    next_ms: u64,
}

fn open(dir: &std::path::Path) -> Arc<dyn Store> {
    let mut config = EmbeddedConfig::new(dir);
    config.segment_bytes = 600;
    config.index_interval_bytes = 150;
    Arc::new(EmbeddedStore::open(config).expect("open"))
}

fn streams() -> [StreamName; 2] {
    [
        StreamName::new("a").unwrap(),
        StreamName::new("b:dlq").unwrap(),
    ]
}

/// An id `frac`/255 of the way through the ids handed out so far.
fn id_at(frac: u8, next_ms: u64) -> EventId {
    EventId::new(1 + (next_ms * frac as u64) / 255, 0)
}

impl Pair {
    fn real(&self) -> &dyn Store {
        self.real.as_deref().expect("open store")
    }

    async fn check_same(&self, s: &StreamName) {
        let q = ReadQuery::all(usize::MAX);
        let (r, m) = (self.real().read(s, &q).await, self.model.payloads(s));
        match (r, m) {
            (Ok(r), Some(m)) => {
                let r: Vec<(EventId, Vec<u8>)> =
                    r.iter().map(|e| (e.id(), e.payload().to_vec())).collect();
                assert_eq!(r, m, "stream {s} differs");
                let ri = self.real().info(s).await.unwrap();
                assert_eq!(
                    Some((ri.length, ri.first_id, ri.last_id)),
                    self.model.info(s),
                    "info of {s}"
                );
            }
            (Err(_), None) => {}
            (r, m) => panic!(
                "stream {s}: real {:?} model {:?}",
                r.map(|v| v.len()),
                m.map(|v| v.len())
            ),
        }
    }

    async fn run(&mut self, op: Op) {
        let names = streams();
        match op {
            Op::Append { stream, n, trim_to } => {
                let mut b1 = EventBatch::new();
                let mut given = Vec::new();
                for i in 0..n {
                    let ms = self.next_ms;
                    self.next_ms += 1;
                    let payload = format!(r#"{{"n":{ms},"pad":"{}"}}"#, "x".repeat(i * 7));
                    let t = if ms.is_multiple_of(3) {
                        "odd.type"
                    } else {
                        "even.type"
                    };
                    b1.push(&NewEvent::new(t, payload.as_bytes()).with_id(EventId::new(ms, 0)))
                        .unwrap();
                    given.push(Given {
                        id: EventId::new(ms, 0),
                        event_type: t,
                        payload: payload.into_bytes(),
                    });
                }
                let opts = AppendOptions {
                    trim: trim_to.map(|max| Trim::MaxLen { max, approx: false }),
                    ..AppendOptions::default()
                };
                let r = self
                    .real()
                    .append(&names[stream], b1.clone(), opts)
                    .await
                    .expect("real append");
                let m = self
                    .model
                    .append(&names[stream], &given, trim_to)
                    .expect("model append");
                assert_eq!(r, m);
            }
            Op::Read {
                stream,
                from,
                to,
                count,
                reverse,
                typed,
            } => {
                let mut q = ReadQuery::range(
                    id_at(from.min(to), self.next_ms),
                    id_at(from.max(to), self.next_ms),
                    count,
                );
                q.reverse = reverse;
                if typed {
                    q.types = Some(TypeFilter::new(["odd.*"]));
                }
                let s = &names[stream];
                match (self.real().read(s, &q).await, self.model.read(s, &q)) {
                    (Ok(r), Some(m)) => {
                        let r: Vec<EventId> = r.iter().map(|e| e.id()).collect();
                        assert_eq!(r, m, "read {q:?}");
                    }
                    (Err(_), None) => {}
                    (r, m) => panic!(
                        "read {q:?}: real {:?} model {:?}",
                        r.map(|v| v.len()),
                        m.map(|v| v.len())
                    ),
                }
            }
            Op::TrimMaxLen { stream, max } => {
                let s = &names[stream];
                let r = self
                    .real()
                    .trim(s, Trim::MaxLen { max, approx: false })
                    .await;
                assert_eq!(r.ok(), self.model.trim_max_len(s, max), "MaxLen {max}");
            }
            Op::TrimMinId { stream, at } => {
                let id = id_at(at, self.next_ms);
                let s = &names[stream];
                let r = self.real().trim(s, Trim::MinId { id, approx: false }).await;
                assert_eq!(r.ok(), self.model.trim_min_id(s, id), "MinId {id}");
            }
            Op::Delete { stream, at } => {
                let ids: Vec<EventId> = at.iter().map(|f| id_at(*f, self.next_ms)).collect();
                let s = &names[stream];
                let r = self.real().delete(s, &ids).await;
                assert_eq!(r.ok(), self.model.delete(s, &ids), "delete {ids:?}");
            }
            Op::Rotate { stream } => {
                let _ = self.real().rotate(&names[stream]).await;
            }
            Op::Reopen => {
                let real = self.real.take().expect("open store");
                real.close().await.expect("close");
                drop(real);
                self.real = Some(open(self.dir.path()));
            }
        }
        for s in &names {
            self.check_same(s).await;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/model.txt"),
        )),
        ..ProptestConfig::default()
    })]
    #[test]
    fn embedded_store_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let real = open(dir.path());
            let mut pair = Pair { dir, real: Some(real), model: Model::default(), next_ms: 1 };
            for op in ops {
                pair.run(op).await;
            }
        });
    }
}
