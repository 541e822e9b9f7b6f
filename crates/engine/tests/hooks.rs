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

/// Keeps `<actor> <action> <target> <params>` for each administrative
/// action.
#[derive(Default)]
struct Admin(Mutex<Vec<String>>);

impl Hook for Admin {
    fn name(&self) -> &'static str {
        "admin"
    }

    fn administered(&self, principal: &Principal, action: &busbar_engine::AdminAction<'_>) {
        let who = match principal {
            Principal::Token { name, .. } => name.as_str(),
            Principal::Trusted => "trusted",
            Principal::Open => "open",
        };
        self.0.lock().push(format!(
            "{who} {} {} {}",
            action.name(),
            action.target(),
            action.params()
        ));
    }
}

#[tokio::test]
async fn every_administrative_action_reaches_the_hooks_once_it_succeeded() {
    use busbar_engine::{ReplaySpec, Scope};
    use busbar_store::group::{GroupConfig, GroupStart, NackOptions};
    use busbar_store::Trim;

    let engine = engine();
    let admin = Arc::new(Admin::default());
    engine.add_hook(admin.clone());
    let ops = Principal::Token {
        name: "ops".into(),
        scopes: vec![Scope::Admin, Scope::Consume, Scope::Publish],
        tenant: None,
    };
    let s = stream();
    let ids = publish(&engine, 4).await.unwrap();
    engine
        .create_group(&ops, &s, "g", GroupStart::Beginning, GroupConfig::default())
        .await
        .unwrap();
    let read = engine
        .read_group(&ops, &s, "g", "c", 2, Duration::ZERO)
        .await
        .unwrap();
    let terminal = NackOptions {
        terminal: true,
        ..NackOptions::default()
    };
    let delivered: Vec<EventId> = read.deliveries.iter().map(|d| d.event.id()).collect();
    engine
        .nack(&ops, &s, "g", "c", &delivered, terminal)
        .await
        .unwrap();
    let dead = engine
        .dlq_list(&ops, &s, busbar_engine::DlqQuery::all(10))
        .await
        .unwrap();
    let (first, second) = (dead.entries[0].event.id(), dead.entries[1].event.id());
    let moved = engine.dlq_reprocess(&ops, &s, first).await.unwrap();
    engine.dlq_delete(&ops, &s, second).await.unwrap();
    engine.dlq_purge(&ops, &s, true).await.unwrap();
    let job = engine
        .dlq_reprocess_all(&ops, &s, None, Some(10))
        .await
        .unwrap();
    let mut spec = ReplaySpec::new(s.clone());
    spec.rate = Some(1);
    let replay = engine.start_replay(&ops, spec).await.unwrap();
    engine.cancel_job(&ops, &replay.id).unwrap();
    engine.set_group_paused(&ops, &s, "g", true).await.unwrap();
    engine.set_group_paused(&ops, &s, "g", false).await.unwrap();
    engine.set_all_paused(&ops, true).unwrap();
    engine.set_all_paused(&Principal::Trusted, false).unwrap();
    engine
        .set_group_cursor(&ops, &s, "g", ids[0])
        .await
        .unwrap();
    engine.delete_consumer(&ops, &s, "g", "c").await.unwrap();
    engine.rotate(&ops, Some(&s)).await.unwrap();
    engine
        .trim(
            &ops,
            &s,
            Trim::MaxLen {
                max: 3,
                approx: false,
            },
        )
        .await
        .unwrap();
    engine.delete(&ops, &s, &ids[3..]).await.unwrap();
    engine.delete_group(&ops, &s, "g").await.unwrap();
    // Refused calls change nothing and are not reported.
    let reader = Principal::Token {
        name: "reader".into(),
        scopes: vec![Scope::Consume],
        tenant: None,
    };
    assert!(engine.delete_stream(&reader, &s).await.is_err());
    assert!(engine.set_all_paused(&reader, true).is_err());
    engine.delete_stream(&ops, &s).await.unwrap();

    let seen = admin.0.lock().clone();
    let actions: Vec<&str> = seen.iter().map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert_eq!(
        actions,
        [
            "group.create",
            "dlq.reprocess",
            "dlq.delete",
            "dlq.purge",
            "dlq.reprocess_all",
            "replay.start",
            "job.cancel",
            "group.pause",
            "group.resume",
            "delivery.pause",
            "delivery.resume",
            "group.set_cursor",
            "consumer.delete",
            "stream.rotate",
            "stream.trim",
            "events.delete",
            "group.delete",
            "stream.delete",
        ],
        "{seen:#?}"
    );
    assert!(seen
        .iter()
        .all(|l| l.starts_with("ops ") || l.starts_with("trusted ")));
    assert!(
        seen[1].contains(&format!("\"dlq_id\":\"{first}\"")),
        "{}",
        seen[1]
    );
    assert!(
        seen[1].contains(&format!("\"id\":\"{}\"", moved.id)),
        "{}",
        seen[1]
    );
    assert!(
        seen[4].contains(&format!("\"job\":\"{}\"", job.id)),
        "{}",
        seen[4]
    );
    assert!(
        seen[6].starts_with(&format!("ops job.cancel {} ", replay.id)),
        "{}",
        seen[6]
    );
    assert!(seen[7].contains("orders/g"), "{}", seen[7]);
    assert!(
        seen[15].contains(&format!("\"ids\":[\"{}\"]", ids[3])),
        "{}",
        seen[15]
    );
}
