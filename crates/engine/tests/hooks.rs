//! Engine hooks: registration order, admission of publishes, reads and
//! connections, and the observers of published batches.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{Admit, Engine, EngineError, Hook, Principal, ReadOp, Refusal, Transport};
use busbar_event::{EventBatch, EventId, NewEvent, StreamName};
use busbar_store::memory::MemoryStore;
use busbar_store::ReadQuery;
use parking_lot::Mutex;

fn engine() -> Arc<Engine> {
    Engine::builder(Arc::new(MemoryStore::new())).build()
}

fn batch(n: usize) -> EventBatch {
    let mut b = EventBatch::new();
    for _ in 0..n {
        b.push(&NewEvent::new("t", b"{}")).unwrap();
    }
    b
}

fn stream() -> StreamName {
    StreamName::new("orders").unwrap()
}

async fn publish(engine: &Engine, n: usize) -> Result<Vec<EventId>, EngineError> {
    engine
        .publish(
            &Principal::Trusted,
            &stream(),
            batch(n),
            Default::default(),
            Transport::Tcp,
        )
        .await
}

/// Records what it sees, in a log shared by every recorder.
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    refuse: Option<Refusal>,
}

impl Hook for Recorder {
    fn name(&self) -> &'static str {
        self.name
    }

    fn admit(&self, request: &Admit<'_>) -> Result<(), Refusal> {
        self.log
            .lock()
            .push(format!("{} admit {}", self.name, request.kind()));
        match &self.refuse {
            Some(r) => Err(r.clone()),
            None => Ok(()),
        }
    }

    fn publishing(&self, principal: &Principal, stream: &StreamName, batch: &EventBatch) {
        let tenant = principal.tenant().unwrap_or("-");
        self.log.lock().push(format!(
            "{} publishing {stream} {} {tenant}",
            self.name,
            batch.len()
        ));
    }

    fn published(&self, stream: &StreamName, ids: &[EventId], transport: Transport) {
        self.log.lock().push(format!(
            "{} published {stream} {} {}",
            self.name,
            ids.len(),
            transport.as_str()
        ));
    }
}

#[tokio::test]
async fn hooks_run_in_registration_order_and_all_see_each_batch() {
    let engine = engine();
    let log = Arc::new(Mutex::new(Vec::new()));
    for name in ["first", "second"] {
        engine.add_hook(Arc::new(Recorder {
            name,
            log: log.clone(),
            refuse: None,
        }));
    }
    let ids = publish(&engine, 3).await.unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(
        *log.lock(),
        [
            "first admit publish",
            "second admit publish",
            "first publishing orders 3 -",
            "second publishing orders 3 -",
            "first published orders 3 tcp",
            "second published orders 3 tcp",
        ]
    );
}

#[tokio::test]
async fn the_first_refusal_wins_nothing_is_appended_and_it_is_counted() {
    let engine = engine();
    let log = Arc::new(Mutex::new(Vec::new()));
    engine.add_hook(Arc::new(Recorder {
        name: "governor",
        log: log.clone(),
        refuse: Some(Refusal::Overloaded {
            reason: "memory is critical".into(),
            retry_after: Duration::from_secs(2),
        }),
    }));
    engine.add_hook(Arc::new(Recorder {
        name: "later",
        log: log.clone(),
        refuse: None,
    }));
    let e = publish(&engine, 2).await.unwrap_err();
    assert!(
        matches!(&e, EngineError::Overloaded { reason, retry_after }
            if reason == "memory is critical" && *retry_after == Duration::from_secs(2)),
        "{e:?}"
    );
    assert_eq!((e.reason(), e.http_status()), ("overloaded", 503));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    assert_eq!(
        *log.lock(),
        ["governor admit publish"],
        "later hooks not asked"
    );
    // Nothing was appended: the stream does not even exist.
    assert!(engine
        .read(&Principal::Trusted, &stream(), ReadQuery::all(10))
        .await
        .is_err());
    let m = engine.metrics();
    assert_eq!(m.admission_refused.get(["publish", "overloaded"]).get(), 1);
    assert_eq!(m.ingest_errors.get(["tcp", "overloaded"]).get(), 1);
    assert!(engine
        .registry()
        .render()
        .contains("busbar_admission_refused_total{kind=\"publish\",reason=\"overloaded\"} 1"));
}

/// Refuses one kind of request while its switch is on.
struct Gate {
    kind: &'static str,
    on: AtomicBool,
    asked: AtomicUsize,
}

impl Hook for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }

    fn admit(&self, request: &Admit<'_>) -> Result<(), Refusal> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        if let Admit::Read { op, .. } = request {
            assert!(matches!(
                op,
                ReadOp::Range | ReadOp::GroupRead | ReadOp::Live
            ));
        }
        if request.kind() == self.kind && self.on.load(Ordering::Relaxed) {
            return Err(Refusal::Paused {
                reason: format!("{} is stopped", self.kind),
            });
        }
        Ok(())
    }
}

#[tokio::test]
async fn reads_and_connections_are_admitted_too() {
    let engine = engine();
    publish(&engine, 1).await.unwrap();
    let gate = Arc::new(Gate {
        kind: "read",
        on: AtomicBool::new(true),
        asked: AtomicUsize::new(0),
    });
    engine.add_hook(gate.clone());
    let p = Principal::Trusted;
    let e = engine
        .read(&p, &stream(), ReadQuery::all(10))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "paused");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    let e = engine
        .read_live(&p, &stream(), ReadQuery::all(10))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "paused");
    engine
        .create_group(
            &p,
            &stream(),
            "g",
            busbar_store::group::GroupStart::Beginning,
            Default::default(),
        )
        .await
        .unwrap();
    let e = engine
        .read_group(&p, &stream(), "g", "c", 10, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "paused");
    // Publishing and connecting are not reads.
    publish(&engine, 1).await.unwrap();
    engine
        .admit_connection(Transport::Http, "127.0.0.1:9")
        .unwrap();
    gate.on.store(false, Ordering::Relaxed);
    assert_eq!(
        engine
            .read(&p, &stream(), ReadQuery::all(10))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        engine
            .metrics()
            .admission_refused
            .get(["read", "paused"])
            .get(),
        3
    );
}

#[tokio::test]
async fn a_connection_refusal_names_its_transport_and_peer() {
    let engine = engine();
    struct Peers(Mutex<Vec<String>>);
    impl Hook for Peers {
        fn name(&self) -> &'static str {
            "peers"
        }
        fn admit(&self, request: &Admit<'_>) -> Result<(), Refusal> {
            if let Admit::Connect { transport, peer } = request {
                self.0.lock().push(format!("{} {peer}", transport.as_str()));
                return Err(Refusal::Overloaded {
                    reason: "too many peers".into(),
                    retry_after: Duration::from_millis(500),
                });
            }
            Ok(())
        }
    }
    let peers = Arc::new(Peers(Mutex::new(Vec::new())));
    engine.add_hook(peers.clone());
    let e = engine
        .admit_connection(Transport::WebSocket, "10.0.0.1:5")
        .unwrap_err();
    assert_eq!(e.reason(), "overloaded");
    assert_eq!(*peers.0.lock(), ["ws 10.0.0.1:5"]);
    assert_eq!(
        engine
            .metrics()
            .admission_refused
            .get(["connect", "overloaded"])
            .get(),
        1
    );
}
