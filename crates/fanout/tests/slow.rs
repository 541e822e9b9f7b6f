//! Slow clients through the transport-free connection code, with a wire
//! whose writes the test controls: a client that takes nothing is closed
//! after the stall timeout; one that reads slowly keeps its connection and
//! is told what its lossy subscription skipped, unless it asked to be
//! disconnected instead (then it is closed with 1008).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{Engine, Principal, Transport};
use busbar_event::{EventBatch, NewEvent, StreamName};
use busbar_fanout::connection::{serve, Caller, Flow, Inbound, Incoming, Outbound};
use busbar_fanout::{Fanout, FanoutConfig, Outgoing, Text};
use busbar_store::memory::MemoryStore;
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Client messages from a channel; pends when there are none.
struct Script(mpsc::Receiver<&'static str>);

impl Inbound for Script {
    async fn next(&mut self) -> Incoming {
        match self.0.recv().await {
            Some(text) => Incoming::Text(Text::from_static(text)),
            None => std::future::pending().await,
        }
    }

    fn has_heartbeats(&self) -> bool {
        false
    }
}

/// A client that takes each batch after `delay`, or never.
struct Client {
    delay: Option<Duration>,
    got: Arc<Mutex<Vec<String>>>,
}

impl Outbound for Client {
    async fn write(&mut self, batch: &mut Vec<Outgoing>) -> io::Result<Flow> {
        match self.delay {
            None => std::future::pending().await,
            Some(d) => tokio::time::sleep(d).await,
        }
        let mut got = self.got.lock();
        for msg in batch.drain(..) {
            match msg {
                Outgoing::Text(t) => got.push(t.to_string()),
                Outgoing::Close(reason) => {
                    let code = reason.map_or(0, |r| r.code);
                    got.push(format!("close {code}"));
                    return Ok(Flow::Done);
                }
                Outgoing::Ping => {}
            }
        }
        Ok(Flow::More)
    }

    async fn close(&mut self) {}
}

async fn publish(engine: &Engine, n: usize) {
    let mut b = EventBatch::new();
    for _ in 0..n {
        b.push(&NewEvent::new("t", b"{}")).unwrap();
    }
    engine
        .publish(
            &Principal::Trusted,
            &StreamName::new("s").unwrap(),
            b,
            Default::default(),
            Transport::Local,
        )
        .await
        .unwrap();
}

fn hub(config: FanoutConfig) -> (Arc<Engine>, Arc<Fanout>) {
    let engine = Engine::builder(Arc::new(MemoryStore::new())).build();
    let hub = Fanout::new(engine.clone(), config);
    (engine, hub)
}

type Connected = (
    mpsc::Sender<&'static str>,
    Arc<Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
);

fn connect(hub: &Arc<Fanout>, delay: Option<Duration>) -> Connected {
    let (tx, rx) = mpsc::channel(8);
    let got = Arc::new(Mutex::new(Vec::new()));
    let client = Client {
        delay,
        got: got.clone(),
    };
    let guard = hub
        .sockets()
        .register(Transport::WebSocket, None, "test".into(), 0);
    let caller = Caller {
        principal: Principal::Trusted,
        transport: Transport::WebSocket,
        shutdown: None,
    };
    let served = tokio::spawn(serve(hub.clone(), Script(rx), client, caller, guard));
    (tx, got, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_takes_nothing_is_closed_after_the_stall_timeout() {
    let (engine, hub) = hub(FanoutConfig {
        stall_timeout: Duration::from_millis(300),
        ..FanoutConfig::default()
    });
    let (tx, _got, served) = connect(&hub, None);
    tx.send(r#"{"op":"subscribe","id":"a","stream":"s"}"#)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    publish(&engine, 3).await;
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("closed after the stall timeout")
        .unwrap();
    assert_eq!(hub.metrics().closes.get(["too_slow"]).get(), 1);
    // Its subscriptions end as their tasks are aborted; the socket goes
    // with the last of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !hub.sockets().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "socket still listed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_keeps_its_connection_and_is_told_what_it_missed() {
    let (engine, hub) = hub(FanoutConfig {
        send_queue: 4,
        stall_timeout: Duration::from_secs(10),
        ..FanoutConfig::default()
    });
    let (tx, got, served) = connect(&hub, Some(Duration::from_millis(20)));
    tx.send(r#"{"op":"subscribe","id":"a","stream":"s","slow":"drop"}"#)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..20 {
        publish(&engine, 50).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (events, missed) = {
            let got = got.lock();
            let events = got
                .iter()
                .filter(|m| m.contains(r#""type":"event""#))
                .count() as u64;
            let missed: u64 = got
                .iter()
                .filter(|m| m.contains(r#""type":"lagged""#))
                .map(|m| {
                    let v: serde_json::Value = serde_json::from_str(m).unwrap();
                    v["missed"].as_u64().unwrap()
                })
                .sum();
            (events, missed)
        };
        // The last notice goes out with the next event that fits: publish
        // one more now and then until every event is accounted for.
        if events + missed >= 1000 {
            assert!(missed > 0, "a reader this slow misses some");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events {events} + missed {missed} never reached 1000"
        );
        publish(&engine, 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!served.is_finished(), "the connection stays");
    assert_eq!(hub.metrics().closes.get(["too_slow"]).get(), 0);
    assert_eq!(hub.sockets().len(), 1);
    served.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_subscriber_behind_the_write_deadline_is_closed_with_1008() {
    let (engine, hub) = hub(FanoutConfig {
        send_queue: 2,
        write_deadline: Duration::from_millis(50),
        stall_timeout: Duration::from_secs(10),
        ..FanoutConfig::default()
    });
    let (tx, got, served) = connect(&hub, Some(Duration::from_millis(100)));
    tx.send(r#"{"op":"subscribe","id":"d","stream":"s","slow":"disconnect"}"#)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    publish(&engine, 200).await;
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("disconnected")
        .unwrap();
    let got = got.lock();
    assert_eq!(
        got.last().map(String::as_str),
        Some("close 1008"),
        "{got:?}"
    );
    // Cut off, not drained: far fewer than the 200 events reached it.
    let events = got
        .iter()
        .filter(|m| m.contains(r#""type":"event""#))
        .count();
    assert!(events < 200, "{events} events");
    assert_eq!(hub.metrics().closes.get(["too_slow"]).get(), 1);
}
