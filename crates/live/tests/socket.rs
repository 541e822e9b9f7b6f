//! The live protocol over the ingest sockets: real Unix and TCP connections
//! through the ingest listener, handed over to the hub by their first live
//! op.

use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_engine::{Auth, Engine, EngineConfig, Scope, TokenSpec};
use busbar_event::{EventBatch, EventId, NewEvent, StreamName};
use busbar_fanout::{Fanout as Live, FanoutConfig as LiveConfig};
use busbar_ingest::{Ingest, IngestOptions};
use busbar_listen::{bind_tcp, bind_unix};
use busbar_store::{AppendOptions, ReadQuery};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;

struct Server {
    engine: Arc<Engine>,
    live: Arc<Live>,
    unix: std::path::PathBuf,
    tcp: std::net::SocketAddr,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn server(config: LiveConfig, tokens: Vec<TokenSpec>) -> Server {
    let engine = Engine::builder(Arc::new(busbar_store::memory::MemoryStore::new()))
        .auth(Auth::new(tokens))
        .config(EngineConfig::default())
        .build();
    let live = Live::new(engine.clone(), config);
    let dir = tempfile::tempdir().unwrap();
    let unix = dir.path().join("events.sock");
    let socket = bind_unix(&unix, 0o600).unwrap();
    let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let tcp = listener.local_addr().unwrap();
    let (stop, stopping) = watch::channel(false);
    let ingest = Ingest::new(engine.clone(), IngestOptions::default(), stopping)
        .with_live(Arc::new(busbar_live::SocketUpgrade(live.clone())));
    let i2 = ingest.clone();
    tokio::spawn(async move { ingest.serve_unix(socket).await });
    tokio::spawn(async move { i2.serve_tcp(listener).await });
    Server {
        engine,
        live,
        unix,
        tcp,
        _stop: stop,
        _dir: dir,
    }
}

/// One client connection, reading lines.
struct Client {
    lines: Lines<BufReader<Box<dyn AsyncRead + Send + Unpin>>>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
}

impl Client {
    async fn unix(s: &Server) -> Client {
        let (r, w) = UnixStream::connect(&s.unix).await.unwrap().into_split();
        Client::new(Box::new(r), Box::new(w))
    }

    async fn tcp(s: &Server) -> Client {
        let (r, w) = TcpStream::connect(s.tcp).await.unwrap().into_split();
        Client::new(Box::new(r), Box::new(w))
    }

    fn new(r: Box<dyn AsyncRead + Send + Unpin>, w: Box<dyn AsyncWrite + Send + Unpin>) -> Self {
        Client {
            lines: BufReader::new(r).lines(),
            writer: w,
        }
    }

    async fn send_raw(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).await.unwrap();
    }

    async fn send(&mut self, v: Value) {
        self.send_raw(&format!("{v}\n")).await;
    }

    /// The next line, within 5 s; `None` once the server closed.
    async fn line(&mut self) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
            .await
            .expect("a line within 5s")
            .expect("readable")
    }

    async fn next(&mut self) -> Value {
        let line = self.line().await.expect("the connection is open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["type"] == kind {
                return v;
            }
        }
    }
}

async fn publish(engine: &Engine, stream: &str, n: usize, session: Option<&str>) -> Vec<EventId> {
    let mut b = EventBatch::new();
    let payloads: Vec<String> = (0..n).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
    for p in &payloads {
        let mut e = NewEvent::new("t", p.as_bytes());
        e.session = session;
        b.push(&e).unwrap();
    }
    engine
        .store()
        .append(
            &StreamName::new(stream).unwrap(),
            b,
            AppendOptions::default(),
        )
        .await
        .unwrap()
}

fn id(v: &Value) -> EventId {
    v["event"]["id"].as_str().unwrap().parse().unwrap()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn feeds(live: &Live) -> String {
    let out = live.engine().registry().render();
    out.lines()
        .find(|l| l.starts_with("busbar_live_feeds "))
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_an_id_under_concurrent_publishing_has_no_gap_and_no_duplicate() {
    let s = server(
        LiveConfig {
            feed_capacity: 16,
            ..LiveConfig::default()
        },
        vec![],
    )
    .await;
    let first = publish(&s.engine, "orders", 300, None).await;
    let engine = s.engine.clone();
    let publisher = tokio::spawn(async move {
        for _ in 0..40 {
            publish(&engine, "orders", 50, None).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut c = Client::unix(&s).await;
    c.send(json!({"op":"subscribe","id":"a","stream":"orders","from": first[100].to_string()}))
        .await;
    let mut got = Vec::new();
    while got.len() < 200 + 2000 {
        let v = c.next_of("event").await;
        assert_eq!(v["sub"], "a");
        got.push(id(&v));
    }
    publisher.await.unwrap();
    let all: Vec<EventId> = s
        .engine
        .store()
        .read(
            &StreamName::new("orders").unwrap(),
            &ReadQuery::range(first[100], EventId::MAX, 10_000),
        )
        .await
        .unwrap()
        .iter()
        .map(|e| e.id())
        .collect();
    assert_eq!(
        got, all,
        "the subscription must equal the log from its start"
    );
}

/// An overlay shows the delayed broadcast: it may join
/// `broadcast:session:*` rooms only, and a refused join says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlay_joins_broadcast_rooms_only() {
    let s = server(LiveConfig::default(), vec![]).await;
    let mut c = Client::unix(&s).await;
    c.send(json!({"op":"hello","role":"overlay","session":"race-1"}))
        .await;
    c.send(json!({"op":"join","room":"session:race-1"})).await;
    let refused = c.next_of("error").await;
    assert_eq!(refused["error"], "role_forbids_room", "{refused}");
    assert!(refused["message"]
        .as_str()
        .unwrap()
        .contains("broadcast:session:"));
    c.send(json!({"op":"join","room":"broadcast:session:race-1"}))
        .await;
    assert_eq!(
        c.next_of("joined").await["room"],
        "broadcast:session:race-1"
    );
    // A dashboard may join either.
    let mut d = Client::unix(&s).await;
    d.send(json!({"op":"hello","role":"dashboard"})).await;
    d.send(json!({"op":"join","room":"session:race-1"})).await;
    assert_eq!(d.next_of("joined").await["room"], "session:race-1");
}

/// A client that reconnects resumes `after` the last id it handled: the
/// next event comes first, nothing is repeated, then it goes live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_an_id_starts_at_the_next_event_without_repeating_it() {
    let s = server(LiveConfig::default(), vec![]).await;
    let first = publish(&s.engine, "orders", 10, None).await;
    let mut c = Client::unix(&s).await;
    c.send(json!({"op":"subscribe","id":"a","stream":"orders","after": first[6].to_string()}))
        .await;
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(id(&c.next_of("event").await));
    }
    assert_eq!(got, first[7..]);
    let more = publish(&s.engine, "orders", 2, None).await;
    for want in more {
        assert_eq!(id(&c.next_of("event").await), want);
    }
    c.send(json!({"op":"subscribe","id":"b","stream":"orders","after":"1-0","from":"1-0"}))
        .await;
    let refused = c.next_of("error").await;
    assert!(
        refused["message"].as_str().unwrap().contains("not both"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_subscriber_that_falls_behind_is_told_how_many_it_missed() {
    let s = server(
        LiveConfig {
            feed_capacity: 8,
            send_queue: 4,
            ..LiveConfig::default()
        },
        vec![],
    )
    .await;
    let mut c = Client::tcp(&s).await;
    c.send(json!({"op":"subscribe","id":"live","stream":"fast"}))
        .await;
    c.next_of("subscribed").await;
    // Far more than the feed, the queue and the socket buffers hold, while
    // not reading.
    for _ in 0..40 {
        publish(&s.engine, "fast", 500, None).await;
    }
    let mut missed = 0u64;
    let mut events = 0u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && missed == 0 {
        let v = c.next().await;
        match v["type"].as_str() {
            Some("lagged") => {
                assert_eq!(v["sub"], "live");
                missed += v["missed"].as_u64().unwrap();
            }
            Some("event") => events += 1,
            _ => {}
        }
    }
    assert!(missed > 0, "no lag notice after {events} events");
    assert!(events + missed <= 20_000);
    let sockets = s.live.sockets().list();
    assert_eq!(sockets[0].transport, "tcp");
    assert!(sockets[0].dropped > 0, "the registry counts what it missed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slower_than_the_write_deadline_is_disconnected() {
    let s = server(
        LiveConfig {
            send_queue: 2,
            write_deadline: Duration::from_millis(100),
            ..LiveConfig::default()
        },
        vec![],
    )
    .await;
    let mut c = Client::unix(&s).await;
    c.send(json!({"op":"subscribe","id":"d","stream":"slow","slow":"disconnect"}))
        .await;
    c.next_of("subscribed").await;
    // Never read again; publish until the hub gives up on it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !s.live.sockets().is_empty() && Instant::now() < deadline {
        publish(&s.engine, "slow", 2000, None).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.live.sockets().is_empty(), "slow client still connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_session_room_delivers_that_session_only() {
    let s = server(LiveConfig::default(), vec![]).await;
    let mut c = Client::unix(&s).await;
    c.send(json!({"op":"hello","role":"dashboard"})).await;
    c.send(json!({"op":"join","room":"session:car7","stream":"telemetry"}))
        .await;
    assert_eq!(c.next_of("joined").await["room"], "session:car7");
    let sockets = s.live.sockets().list();
    assert_eq!(sockets.len(), 1);
    assert_eq!(sockets[0].transport, "unix");
    assert!(
        sockets[0].remote.starts_with("unix"),
        "{}",
        sockets[0].remote
    );
    assert_eq!(sockets[0].role.as_str(), "dashboard");
    assert_eq!(sockets[0].joined_rooms, ["session:car7"]);

    publish(&s.engine, "telemetry", 3, Some("car8")).await;
    let mine = publish(&s.engine, "telemetry", 2, Some("car7")).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let v = c.next_of("event").await;
        assert_eq!(v["sub"], "session:car7");
        assert_eq!(v["event"]["session"], "car7");
        got.push(id(&v));
    }
    assert_eq!(got, mine);
    c.send(json!({"op":"leave","room":"session:car7"})).await;
    c.next_of("left").await;
    assert!(s.live.sockets().rooms().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_live_ops_get_an_error_line_and_the_connection_goes_on() {
    let s = server(
        LiveConfig {
            max_message_bytes: 256,
            max_subscriptions: 1,
            ..LiveConfig::default()
        },
        vec![],
    )
    .await;
    let mut c = Client::unix(&s).await;
    c.send(json!({"op":"ping"})).await;
    assert_eq!(c.next().await["type"], "pong");
    let long = format!("{{\"op\":\"ping\",\"pad\":\"{}\"}}\n", "x".repeat(300));
    c.send_raw(&long).await;
    c.send_raw("\n   \n").await;
    c.send_raw("{\"type\":\"an event line\"}\n").await;
    c.send(json!({"op":"subscribe","stream":"s"})).await;
    c.send(json!({"op":"join","room":"lobby"})).await;
    c.send(json!({"op":"subscribe","id":"a","from":"yesterday"}))
        .await;
    c.send(json!({"op":"subscribe","id":"a"})).await;
    c.send(json!({"op":"subscribe","id":"b"})).await;
    let mut reasons = Vec::new();
    for _ in 0..6 {
        let v = c.next().await;
        reasons.push(match v["type"].as_str().unwrap() {
            "error" => v["error"].as_str().unwrap().to_owned(),
            other => other.to_owned(),
        });
    }
    assert_eq!(
        reasons,
        [
            "too_large",
            "bad_message",
            "bad_message",
            "bad_room",
            "bad_message",
            "subscribed"
        ]
    );
    assert_eq!(c.next().await["error"], "too_many_subscriptions");
    c.send(json!({"op":"ping"})).await;
    assert_eq!(c.next().await["type"], "pong", "still usable");
    assert_eq!(s.live.sockets().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_disconnects_leave_no_socket_subscription_or_feed() {
    let s = server(LiveConfig::default(), vec![]).await;
    let engine = s.engine.clone();
    let publisher = tokio::spawn(async move {
        for _ in 0..100 {
            publish(&engine, "busy", 20, Some("s1")).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    for i in 0..10 {
        let mut c = if i % 2 == 0 {
            Client::unix(&s).await
        } else {
            Client::tcp(&s).await
        };
        c.send(json!({"op":"subscribe","id":"a","stream":"busy","from":"0-0"}))
            .await;
        c.send(json!({"op":"join","room":"session:s1","stream":"busy"}))
            .await;
        c.next_of("subscribed").await;
        c.next_of("joined").await;
        // The one before it is cleaned up in the background; this one's
        // subscription is counted.
        until("one subscription, this connection's", || {
            s.live.sockets().subscriptions() == 1
        })
        .await;
        // Gone without a word, with unread events in its buffers.
        drop(c);
    }
    until("every socket to be gone", || {
        s.live.sockets().is_empty()
            && s.live.sockets().rooms().is_empty()
            && s.live.sockets().subscriptions() == 0
    })
    .await;
    publisher.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while feeds(&s.live) != "busbar_live_feeds 0" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(feeds(&s.live), "busbar_live_feeds 0");
    let events = s.live.sockets().events();
    let count = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count("join"), count("leave"));
    assert_eq!(count("connect"), count("disconnect"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_input_answers_what_was_sent_then_closes() {
    let s = server(LiveConfig::default(), vec![]).await;
    let mut c = Client::unix(&s).await;
    c.send(json!({"op":"subscribe","id":"a","stream":"quiet"}))
        .await;
    c.send(json!({"op":"publish","ref":1,"event":{"type":"t","stream":"other"}}))
        .await;
    c.writer.shutdown().await.unwrap();
    let mut kinds = Vec::new();
    while let Some(line) = c.line().await {
        let v: Value = serde_json::from_str(&line).unwrap();
        kinds.push(v["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds, ["subscribed", "ack"]);
    until("the socket to be gone", || s.live.sockets().is_empty()).await;
}

const ACME: &str = "acme-secret-0123";
const PUBLISHER: &str = "publish-only-0123";

fn tokens() -> Vec<TokenSpec> {
    vec![
        TokenSpec {
            name: "acme".into(),
            secret: ACME.into(),
            scopes: vec![Scope::Publish, Scope::Consume],
            tenant: Some("acme".into()),
        },
        TokenSpec {
            name: "publisher".into(),
            secret: PUBLISHER.into(),
            scopes: vec![Scope::Publish],
            tenant: None,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hello_token_gates_subscriptions_like_on_websocket() {
    let s = server(LiveConfig::default(), tokens()).await;
    let mut c = Client::tcp(&s).await;
    c.send(json!({"hello":{"token":ACME}})).await;
    c.send(json!({"op":"subscribe","id":"x","stream":"globex:events"}))
        .await;
    assert_eq!(c.next().await["error"], "wrong_tenant");
    c.send(json!({"op":"join","room":"session:s1","stream":"globex:events"}))
        .await;
    assert_eq!(c.next().await["error"], "wrong_tenant");
    // Its own tenant's stream, by default `acme:events`.
    c.send(json!({"op":"subscribe","id":"mine","from":"0-0"}))
        .await;
    c.next_of("subscribed").await;
    c.send(json!({"op":"publish","ref":7,"event":{"type":"t"}}))
        .await;
    let ack = c.next_of("ack").await;
    assert_eq!(ack["ref"], 7);
    let event = c.next_of("event").await;
    assert_eq!(event["event"]["stream"], "acme:events");
    assert_eq!(event["event"]["tenant"], "acme");
    assert_eq!(event["event"]["id"], ack["ids"][0]);

    let mut p = Client::tcp(&s).await;
    p.send(json!({"hello":{"token":PUBLISHER,"acks":true}}))
        .await;
    p.send(json!({"op":"subscribe","id":"x","stream":"events"}))
        .await;
    assert_eq!(p.next().await["error"], "forbidden");

    let mut anonymous = Client::tcp(&s).await;
    anonymous
        .send(json!({"op":"subscribe","id":"x","stream":"events"}))
        .await;
    assert_eq!(anonymous.next().await["error"], "unauthenticated");
    assert!(anonymous.line().await.is_none(), "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_ops_before_the_switch_are_acked_in_order() {
    let s = server(LiveConfig::default(), vec![]).await;
    let mut c = Client::unix(&s).await;
    let mut input = String::from("{\"hello\":{\"acks\":true}}\n");
    for n in 0..3 {
        input.push_str(&format!(
            "{{\"type\":\"t\",\"stream\":\"orders\",\"n\":{n}}}\n"
        ));
    }
    input.push_str(
        "{\"op\":\"create_group\",\"stream\":\"orders\",\"group\":\"g\",\"start\":\"0\"}\n",
    );
    input.push_str("{\"type\":\"t\",\"stream\":\"orders\",\"n\":3}\n");
    input.push_str("{\"op\":\"subscribe\",\"id\":\"a\",\"stream\":\"orders\",\"from\":\"0-0\"}\n");
    input.push_str("{\"op\":\"ping\"}\n");
    // One write: the switch happens in the middle of what was read.
    c.send_raw(&input).await;
    let mut acked = Vec::new();
    for _ in 0..3 {
        acked.push(c.next().await["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(c.next().await["group"]["name"], "g");
    acked.push(c.next().await["id"].as_str().unwrap().to_owned());
    let mut events = Vec::new();
    let mut others = Vec::new();
    while events.len() < 4 {
        let v = c.next().await;
        match v["type"].as_str() {
            Some("event") => events.push(v["event"]["id"].as_str().unwrap().to_owned()),
            Some(other) => others.push(other.to_owned()),
            None => panic!("an ingest answer after the switch: {v}"),
        }
    }
    assert_eq!(events, acked);
    while others.len() < 2 {
        others.push(c.next().await["type"].as_str().unwrap().to_owned());
    }
    others.sort();
    assert_eq!(others, ["pong", "subscribed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_written_over_several_lines_arrives_as_one() {
    let s = server(LiveConfig::default(), vec![]).await;
    let mut c = Client::unix(&s).await;
    c.send(json!({"op":"subscribe","id":"a","stream":"pretty"}))
        .await;
    c.next_of("subscribed").await;
    let mut b = EventBatch::new();
    b.push(&NewEvent::new(
        "t",
        b"{\n  \"n\": 1,\n  \"s\": \"a\\nb\"\n}",
    ))
    .unwrap();
    s.engine
        .store()
        .append(
            &StreamName::new("pretty").unwrap(),
            b,
            AppendOptions::default(),
        )
        .await
        .unwrap();
    let v = c.next_of("event").await;
    assert_eq!(v["event"]["data"], json!({"n": 1, "s": "a\nb"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_connection_limit_counts_socket_clients() {
    let s = server(
        LiveConfig {
            max_connections: 1,
            ..LiveConfig::default()
        },
        vec![],
    )
    .await;
    let mut first = Client::unix(&s).await;
    first.send(json!({"op":"ping"})).await;
    first.next_of("pong").await;
    let mut second = Client::tcp(&s).await;
    second.send(json!({"op":"ping"})).await;
    let refused = second.next().await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["error"], "too_many_connections");
    assert!(second.line().await.is_none(), "closed");
    let metrics = s.engine.registry().render();
    assert!(
        metrics.contains("busbar_ws_rejected_total{reason=\"too_many_connections\"} 1"),
        "{metrics}"
    );
}
