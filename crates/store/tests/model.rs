//! Model-based test: random sequences of append / read / trim / delete /
//! rotate / reopen against the embedded store and the memory engine (the
//! model) must give the same answers. Explicit ids make both stores assign
//! the same ids; tiny segments make every sequence cross segment boundaries.

use std::sync::Arc;

use busbar_event::{EventBatch, EventId, NewEvent, StreamName};
use busbar_store::embedded::{EmbeddedConfig, EmbeddedStore};
use busbar_store::memory::MemoryStore;
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

struct Pair {
    dir: tempfile::TempDir,
    real: Option<Arc<dyn Store>>,
    model: MemoryStore,
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
        let (r, m) = (self.real().read(s, &q).await, self.model.read(s, &q).await);
        match (r, m) {
            (Ok(r), Ok(m)) => {
                let ids = |v: &[busbar_event::Event]| {
                    v.iter()
                        .map(|e| (e.id(), e.payload().to_vec()))
                        .collect::<Vec<_>>()
                };
                assert_eq!(ids(&r), ids(&m), "stream {s} differs");
                let (ri, mi) = (
                    self.real().info(s).await.unwrap(),
                    self.model.info(s).await.unwrap(),
                );
                assert_eq!(
                    (ri.length, ri.first_id, ri.last_id),
                    (mi.length, mi.first_id, mi.last_id),
                    "info of {s}"
                );
            }
            (Err(_), Err(_)) => {}
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
                }
                let opts = AppendOptions {
                    trim: trim_to.map(|max| Trim::MaxLen { max, approx: false }),
                };
                let r = self
                    .real()
                    .append(&names[stream], b1.clone(), opts)
                    .await
                    .expect("real append");
                let m = self
                    .model
                    .append(&names[stream], b1, opts)
                    .await
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
                match (self.real().read(s, &q).await, self.model.read(s, &q).await) {
                    (Ok(r), Ok(m)) => {
                        let ids = |v: &[busbar_event::Event]| {
                            v.iter().map(|e| e.id()).collect::<Vec<_>>()
                        };
                        assert_eq!(ids(&r), ids(&m), "read {q:?}");
                    }
                    (Err(_), Err(_)) => {}
                    (r, m) => panic!(
                        "read {q:?}: real {:?} model {:?}",
                        r.map(|v| v.len()),
                        m.map(|v| v.len())
                    ),
                }
            }
            Op::TrimMaxLen { stream, max } => {
                self.trim(&names[stream], Trim::MaxLen { max, approx: false })
                    .await
            }
            Op::TrimMinId { stream, at } => {
                let id = id_at(at, self.next_ms);
                self.trim(&names[stream], Trim::MinId { id, approx: false })
                    .await
            }
            Op::Delete { stream, at } => {
                let ids: Vec<EventId> = at.iter().map(|f| id_at(*f, self.next_ms)).collect();
                let s = &names[stream];
                let (r, m) = (
                    self.real().delete(s, &ids).await,
                    self.model.delete(s, &ids).await,
                );
                assert_eq!(r.ok(), m.ok(), "delete {ids:?}");
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

    async fn trim(&self, s: &StreamName, trim: Trim) {
        let (r, m) = (
            self.real().trim(s, trim).await,
            self.model.trim(s, trim).await,
        );
        assert_eq!(r.ok(), m.ok(), "{trim:?}");
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
    fn embedded_store_matches_the_memory_model(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let real = open(dir.path());
            let mut pair = Pair { dir, real: Some(real), model: MemoryStore::new(), next_ms: 1 };
            for op in ops {
                pair.run(op).await;
            }
        });
    }
}
