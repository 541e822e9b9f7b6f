//! The live protocol (the `/ws` JSON messages, also spoken on a socket
//! that switched to it) on any input: each line of the input is one client
//! message, served by the transport-free connection logic to a hub over an
//! engine on the memory store whose streams already hold a few events. The
//! caller depends on the input's length: trusted; a token that publishes,
//! consumes and directs; or one bound to tenant `acme`.
//!
//! Invariants: the connection ends (time is virtual), every message busbar
//! sends is a JSON object with a known `type`, every id it names is an id,
//! and each subscription's events arrive with strictly increasing ids.

#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_engine::{Engine, Principal, Scope, Transport};
use busbar_event::{EventBatch, EventId, NewEvent, StreamName};
use busbar_fanout::connection::{serve, Caller, Flow, Inbound, Incoming, Outbound};
use busbar_fanout::{Fanout, FanoutConfig, Outgoing, Text};
use busbar_store::memory::MemoryStore;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

thread_local! {
    static RT: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime"),
    );
}

/// The non-blank lines of `data`, as the line transport splits them: each
/// at most `limit` bytes (a longer one is `Err(len)`).
fn lines(data: &[u8], limit: usize) -> Vec<Result<Vec<u8>, usize>> {
    data.split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|l| {
            if l.len() > limit {
                Err(l.len())
            } else {
                Ok(l.to_vec())
            }
        })
        .collect()
}

/// The client's messages, one at a time; the time virtually passes
/// between them, so subscriptions deliver what they can first.
struct Client {
    messages: std::vec::IntoIter<Result<Vec<u8>, usize>>,
    limit: usize,
}

impl Inbound for Client {
    async fn next(&mut self) -> Incoming {
        tokio::time::sleep(Duration::from_millis(5)).await;
        match self.messages.next() {
            None => Incoming::End,
            Some(Ok(line)) => match String::from_utf8(line) {
                Ok(text) => Incoming::Text(Text::from(text)),
                Err(_) => Incoming::Refused {
                    reason: "bad_message",
                    message: "a line must be UTF-8 JSON text".to_owned(),
                },
            },
            Some(Err(len)) => Incoming::Refused {
                reason: "too_large",
                message: format!(
                    "a message of {len} bytes is over the limit of {} bytes",
                    self.limit
                ),
            },
        }
    }

    fn has_heartbeats(&self) -> bool {
        false
    }
}

/// Whatever busbar writes, kept.
struct Wire(Arc<Mutex<Vec<String>>>);

impl Outbound for Wire {
    async fn write(&mut self, batch: &mut Vec<Outgoing>) -> io::Result<Flow> {
        let mut got = self.0.lock().unwrap();
        for message in batch.drain(..) {
            match message {
                Outgoing::Text(text) => got.push(text.as_str().to_owned()),
                Outgoing::Ping => {}
                Outgoing::Close(_) => return Ok(Flow::Done),
            }
        }
        Ok(Flow::More)
    }

    async fn close(&mut self) {}
}

fn principal(data: &[u8]) -> Principal {
    match data.len() % 3 {
        0 => Principal::Trusted,
        1 => Principal::Token {
            name: "p".into(),
            scopes: vec![Scope::Publish, Scope::Consume, Scope::Director],
            tenant: None,
        },
        _ => Principal::Token {
            name: "t".into(),
            scopes: vec![Scope::Publish, Scope::Consume],
            tenant: Some("acme".into()),
        },
    }
}

async fn seed(engine: &Engine, stream: &str, tenant: Option<&str>) {
    let mut batch = EventBatch::new();
    for (n, session) in ["s1", "s2", "s1"].into_iter().enumerate() {
        let payload = format!(r#"{{"n":{n}}}"#);
        let mut event = NewEvent::new("order.created", payload.as_bytes());
        event.session = Some(session);
        event.ts = Some(1_700_000_000_000);
        event.tenant = tenant;
        batch.push(&event).expect("a seed event");
    }
    engine
        .publish(
            &Principal::Trusted,
            &StreamName::new(stream).unwrap(),
            batch,
            Default::default(),
            Transport::Local,
        )
        .await
        .expect("seed events are published");
}

const TYPES: [&str; 9] = [
    "event",
    "lagged",
    "subscribed",
    "joined",
    "left",
    "ack",
    "delay",
    "error",
    "pong",
];

fn id(value: &Value) -> EventId {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{value} is not an id"))
}

fuzz_target!(|data: &[u8]| {
    let limit = 16 * 1024;
    let caller = principal(data);
    let tenant = caller.tenant().map(str::to_owned);
    let messages = lines(data, limit);
    let sent = Arc::new(Mutex::new(Vec::new()));
    RT.with(|rt| {
        rt.borrow().block_on(async {
            let engine = Engine::builder(Arc::new(MemoryStore::new())).build();
            seed(&engine, "events", None).await;
            seed(&engine, "acme:events", Some("acme")).await;
            let hub = Fanout::new(
                engine,
                FanoutConfig {
                    feed_capacity: 16,
                    send_queue: 64,
                    max_message_bytes: limit,
                    max_depth: 16,
                    max_subscriptions: 8,
                    ..FanoutConfig::default()
                },
            );
            let guard = hub.sockets().register(
                Transport::WebSocket,
                tenant,
                "fuzz".to_owned(),
                busbar_event::now_ms(),
            );
            let client = Client {
                messages: messages.into_iter(),
                limit,
            };
            let caller = Caller {
                principal: caller,
                transport: Transport::WebSocket,
                shutdown: None,
            };
            tokio::time::timeout(
                Duration::from_secs(24 * 3600),
                serve(hub.clone(), client, Wire(sent.clone()), caller, guard),
            )
            .await
            .expect("the connection ends");
            hub.shutdown();
        })
    });

    // Per subscription: the last id it delivered.
    let mut last: HashMap<String, EventId> = HashMap::new();
    for text in sent.lock().unwrap().iter() {
        let value: Value = serde_json::from_str(text).expect("a message is JSON");
        let kind = value["type"].as_str().expect("a message has a type");
        assert!(TYPES.contains(&kind), "unknown message type {kind}");
        match kind {
            "subscribed" => {
                last.remove(value["sub"].as_str().expect("a sub"));
            }
            "ack" => {
                for v in value["ids"].as_array().expect("ids") {
                    id(v);
                }
            }
            "event" => {
                let sub = value["sub"].as_str().expect("a sub");
                let event = &value["event"];
                let this = id(&event["id"]);
                assert!(event["stream"].is_string() && event["type"].is_string());
                // Rooms deliver under their own name; only subscriptions
                // promise order without repeats.
                if sub.starts_with("session:") || sub.starts_with("broadcast:") {
                    continue;
                }
                if let Some(before) = last.insert(sub.to_owned(), this) {
                    assert!(before < this, "sub {sub}: {this} after {before}");
                }
            }
            _ => {}
        }
    }
});
