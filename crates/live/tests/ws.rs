//! The live hub through a real WebSocket client against a real listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_engine::{Auth, Engine, EngineConfig, Scope, TokenSpec};
use busbar_event::{EventBatch, EventId, NewEvent, StreamName};
use busbar_fanout::{Fanout as Live, FanoutConfig as LiveConfig};
use busbar_store::memory::MemoryStore;
use busbar_store::{AppendOptions, ReadQuery};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Server {
    addr: SocketAddr,
    engine: Arc<Engine>,
    live: Arc<Live>,
}

async fn server(config: LiveConfig, tokens: Vec<TokenSpec>) -> Server {
    server_over(MemoryStore::new(), config, tokens).await
}

async fn server_over(store: MemoryStore, config: LiveConfig, tokens: Vec<TokenSpec>) -> Server {
    server_with(store, EngineConfig::default(), config, tokens).await
}

async fn server_with(
    store: MemoryStore,
    engine_config: EngineConfig,
    config: LiveConfig,
    tokens: Vec<TokenSpec>,
) -> Server {
    let engine = Engine::builder(Arc::new(store))
        .auth(Auth::new(tokens))
        .config(engine_config)
        .build();
    let live = Live::new(engine.clone(), config);
    let ops = busbar_ops::Ops::new(engine.clone());
    busbar_live::register_ops(&live, &ops);
    let app = busbar_live::router(live.clone(), None).merge(ops.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Server { addr, engine, live }
}

async fn connect(s: &Server, query: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws{query}", s.addr))
        .await
        .expect("connect");
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON message (skipping pings), within 5 s.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("message within 5s")
            .expect("open")
            .expect("ok");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = next(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
}

async fn publish(engine: &Engine, stream: &str, n: usize, session: Option<&str>) -> Vec<EventId> {
    let mut b = EventBatch::new();
    let payloads: Vec<String> = (0..n).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
    for p in &payloads {
        let mut e = NewEvent::new("t", p.as_bytes());
        e.session = session;
        e.ts = Some(busbar_event::now_ms() as i64);
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

async fn publish_via_engine(engine: &Engine, stream: &str, n: usize, session: &str) {
    let mut b = EventBatch::new();
    for _ in 0..n {
        let mut e = NewEvent::new("t", b"{}");
        e.session = Some(session);
        e.ts = Some(busbar_event::now_ms() as i64 - 7000);
        b.push(&e).unwrap();
    }
    engine
        .publish(
            &busbar_engine::Principal::Open,
            &StreamName::new(stream).unwrap(),
            b,
            AppendOptions::default(),
            busbar_engine::Transport::Local,
        )
        .await
        .unwrap();
}

fn id(v: &Value) -> EventId {
    v["event"]["id"].as_str().unwrap().parse().unwrap()
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
    let mut ws = connect(&s, "").await;
    send(&mut ws, serde_json::json!({"op":"subscribe","id":"a","stream":"orders","from": first[100].to_string()})).await;
    let mut got = Vec::new();
    while got.len() < 200 + 2000 {
        let v = next_of(&mut ws, "event").await;
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
    let mut ws = connect(&s, "").await;
    send(
        &mut ws,
        serde_json::json!({"op":"subscribe","id":"live","stream":"fast"}),
    )
    .await;
    next_of(&mut ws, "subscribed").await;
    // Publish far more than the feed and the queue hold while not reading.
    for _ in 0..40 {
        publish(&s.engine, "fast", 500, None).await;
    }
    let mut missed = 0u64;
    let mut events = 0u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && missed == 0 {
        let v = next(&mut ws).await;
        match v["type"].as_str() {
            Some("lagged") => missed += v["missed"].as_u64().unwrap(),
            Some("event") => events += 1,
            _ => {}
        }
    }
    assert!(missed > 0, "no lag notice after {events} events");
    assert!(events + missed <= 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slower_than_the_write_deadline_is_disconnected() {
    let cfg = LiveConfig {
        send_queue: 2,
        write_deadline: Duration::from_millis(100),
        ..LiveConfig::default()
    };
    let s = server(cfg, vec![]).await;
    let mut ws = connect(&s, "").await;
    send(
        &mut ws,
        serde_json::json!({"op":"subscribe","id":"d","stream":"slow","slow":"disconnect"}),
    )
    .await;
    next_of(&mut ws, "subscribed").await;
    // Never read again; publish until the server gives up on us.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !s.live.sockets().is_empty() && Instant::now() < deadline {
        publish(&s.engine, "slow", 2000, None).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.live.sockets().is_empty(), "slow client still connected");
    drop(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_broadcast_delay_at_run_time_loses_nothing() {
    let s = server(LiveConfig::default(), vec![]).await;
    let mut director = connect(&s, "").await;
    send(
        &mut director,
        serde_json::json!({"op":"set_delay","session":"race1","delay_ms":600}),
    )
    .await;
    assert_eq!(next_of(&mut director, "delay").await["delay_ms"], 600);
    let mut overlay = connect(&s, "").await;
    send(
        &mut overlay,
        serde_json::json!({"op":"hello","role":"overlay"}),
    )
    .await;
    send(
        &mut overlay,
        serde_json::json!({"op":"join","room":"broadcast:session:race1","stream":"telemetry"}),
    )
    .await;
    next_of(&mut overlay, "joined").await;
    let published_at = Instant::now();
    let mut ids = publish(&s.engine, "telemetry", 5, Some("race1")).await;
    publish(&s.engine, "telemetry", 5, Some("other")).await;
    let first = next_of(&mut overlay, "event").await;
    assert!(
        published_at.elapsed() >= Duration::from_millis(500),
        "delivered before the delay"
    );
    let mut got = vec![id(&first)];
    for _ in 0..4 {
        got.push(id(&next_of(&mut overlay, "event").await));
    }
    // Lengthen, publish, then shorten: the held-back events all arrive once.
    send(
        &mut director,
        serde_json::json!({"op":"set_delay","session":"race1","delay_ms":5000}),
    )
    .await;
    next_of(&mut director, "delay").await;
    ids.extend(publish(&s.engine, "telemetry", 5, Some("race1")).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(
        &mut director,
        serde_json::json!({"op":"set_delay","session":"race1","delay_ms":0}),
    )
    .await;
    next_of(&mut director, "delay").await;
    for _ in 0..5 {
        let v = next_of(&mut overlay, "event").await;
        assert_eq!(v["event"]["session"], "race1");
        got.push(id(&v));
    }
    assert_eq!(got, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_disconnects_leave_no_room_membership() {
    let s = server(LiveConfig::default(), vec![]).await;
    for i in 0..20 {
        let mut ws = connect(&s, "").await;
        send(
            &mut ws,
            serde_json::json!({"op":"hello","role":"dashboard","session":format!("s{i}")}),
        )
        .await;
        send(
            &mut ws,
            serde_json::json!({"op":"join","room":format!("session:s{}", i % 3)}),
        )
        .await;
        next_of(&mut ws, "joined").await;
        if i % 2 == 0 {
            // Drop the TCP connection without a close frame.
            drop(ws);
        } else {
            ws.close(None).await.unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while (!s.live.sockets().is_empty() || !s.live.sockets().rooms().is_empty())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.live.sockets().is_empty());
    assert!(s.live.sockets().rooms().is_empty());
    let joins = s
        .live
        .sockets()
        .events()
        .iter()
        .filter(|e| e.kind == "join")
        .count();
    let leaves = s
        .live
        .sockets()
        .events()
        .iter()
        .filter(|e| e.kind == "leave")
        .count();
    assert_eq!(joins, leaves);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_and_tokens_are_checked() {
    let tokens = vec![
        TokenSpec {
            name: "dash".into(),
            secret: "dash-secret".into(),
            scopes: vec![Scope::Consume, Scope::Publish],
            tenant: None,
        },
        TokenSpec {
            name: "dir".into(),
            secret: "dir-secret".into(),
            scopes: vec![Scope::Consume, Scope::Director],
            tenant: None,
        },
    ];
    let s = server(LiveConfig::default(), tokens).await;
    let url = format!("ws://{}/ws", s.addr);
    let refused = |req| async move {
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
            other => panic!("expected refusal, got {:?}", other.map(|_| ())),
        }
    };
    assert_eq!(
        refused(url.clone().into_client_request().unwrap()).await,
        401
    );
    assert_eq!(
        refused(format!("{url}?token=wrong").into_client_request().unwrap()).await,
        401
    );
    let mut evil = format!("{url}?token=dash-secret")
        .into_client_request()
        .unwrap();
    evil.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert_eq!(refused(evil).await, 403);
    let mut same = format!("{url}?token=dash-secret")
        .into_client_request()
        .unwrap();
    same.headers_mut()
        .insert("origin", format!("http://{}", s.addr).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(same)
        .await
        .expect("same-origin browser");
    send(
        &mut ws,
        serde_json::json!({"op":"set_delay","session":"x","delay_ms":10}),
    )
    .await;
    assert_eq!(next_of(&mut ws, "error").await["error"], "forbidden");
    let mut dir = connect(&s, "?token=dir-secret").await;
    send(
        &mut dir,
        serde_json::json!({"op":"set_delay","session":"x","delay_ms":10}),
    )
    .await;
    assert_eq!(next_of(&mut dir, "delay").await["delay_ms"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_over_websocket_and_bad_messages_keep_the_connection() {
    let s = server(LiveConfig::default(), vec![]).await;
    let mut ws = connect(&s, "").await;
    send(
        &mut ws,
        serde_json::json!({"op":"hello","role":"producer","session":"relay-1"}),
    )
    .await;
    ws.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(next_of(&mut ws, "error").await["error"], "bad_message");
    send(&mut ws, serde_json::json!({"op":"publish","ref":1,"events":[{"type":"lap","stream":"telemetry","ts":1},{"nope":1}]})).await;
    let err = next_of(&mut ws, "error").await;
    assert_eq!(
        (err["error"].as_str(), err["ref"].as_u64()),
        (Some("missing_type"), Some(1))
    );
    send(&mut ws, serde_json::json!({"op":"publish","ref":2,"events":[{"type":"lap","stream":"telemetry","ts":1},{"type":"lap","stream":"telemetry"}]})).await;
    let ack = next_of(&mut ws, "ack").await;
    assert_eq!(
        (ack["ref"].as_u64(), ack["ids"].as_array().unwrap().len()),
        (Some(2), 2)
    );
    let info = s
        .engine
        .store()
        .info(&StreamName::new("telemetry").unwrap())
        .await
        .unwrap();
    assert_eq!(info.length, 2);
    // The producer's hello session counts its frames.
    let stats = s.live.sessions().stats();
    assert_eq!(
        (stats[0].session_id.as_str(), stats[0].frames),
        ("relay-1", 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_is_acked_with_the_original_id() {
    let s = server(LiveConfig::default(), vec![]).await;
    let mut ws = connect(&s, "").await;
    let events = serde_json::json!([
        {"type":"lap","stream":"laps","idempotency_key":"a"},
        {"type":"lap","stream":"laps","idempotency_key":"a"},
        {"type":"lap","stream":"laps"}
    ]);
    send(
        &mut ws,
        serde_json::json!({"op":"publish","ref":1,"events":events}),
    )
    .await;
    let first = next_of(&mut ws, "ack").await;
    assert_eq!(first["ids"][0], first["ids"][1]);
    assert_eq!(first["duplicates"], 1);
    send(&mut ws, serde_json::json!({"op":"publish","ref":2,"events":[{"type":"lap","stream":"laps","idempotency_key":"a"}]})).await;
    let again = next_of(&mut ws, "ack").await;
    assert_eq!(again["ids"][0], first["ids"][0]);
    assert_eq!(again["duplicates"], 1);
    send(
        &mut ws,
        serde_json::json!({"op":"publish","ref":3,"events":[{"type":"lap","stream":"laps"}]}),
    )
    .await;
    assert_eq!(next_of(&mut ws, "ack").await.get("duplicates"), None);
    let info = s
        .engine
        .store()
        .info(&StreamName::new("laps").unwrap())
        .await
        .unwrap();
    assert_eq!(info.length, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_report_drift_and_warn() {
    let s = server(LiveConfig::default(), vec![]).await;
    publish_via_engine(&s.engine, "telemetry", 50, "late-relay").await;
    let body: Value = reqwest_get(s.addr, "/api/ops/sessions").await;
    let sess = &body["sessions"][0];
    assert_eq!(sess["sessionId"], "late-relay");
    assert_eq!(sess["frames"], 50);
    assert!(sess["driftP95"].as_u64().unwrap() >= 6900);
    assert_eq!(sess["driftWarn"], true);
    assert_eq!(body["events"][0]["type"], "drift_warn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_churn_at_100_hz_returns_to_baseline() {
    let s = server(LiveConfig::default(), vec![]).await;
    let engine = s.engine.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let publisher = tokio::spawn(async move {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            publish(&engine, "churn", 20, Some("c")).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 0..150 {
        tick.tick().await;
        let mut ws = connect(&s, "").await;
        send(
            &mut ws,
            serde_json::json!({"op":"subscribe","id":"x","stream":"churn"}),
        )
        .await;
        send(
            &mut ws,
            serde_json::json!({"op":"join","room":"session:c","stream":"churn"}),
        )
        .await;
        if i % 3 == 0 {
            next_of(&mut ws, "event").await;
        }
        drop(ws);
    }
    println!("150 churn cycles in {:?}", started.elapsed());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while (!s.live.sockets().is_empty() || s.live.sockets().subscriptions() > 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.live.sockets().is_empty());
    assert_eq!(s.live.sockets().subscriptions(), 0);
    assert!(s.live.sockets().rooms().is_empty());
    // Feeds stop once their last subscriber is gone.
    publish(&s.engine, "churn", 1, None).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while s.engine.uptime() > Duration::ZERO && Instant::now() < deadline {
        let text = s.engine.render_metrics().await;
        if text.contains("busbar_live_feeds 0") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("live feeds still running after every subscriber left");
}

async fn reqwest_get(addr: SocketAddr, path: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap_or_else(|_| panic!("body: {body}"))
}

#[tokio::test]
async fn a_close_frame_is_answered_with_one_and_cleans_up() {
    let s = server(LiveConfig::default(), vec![]).await;
    let mut ws = connect(&s, "").await;
    send(
        &mut ws,
        serde_json::json!({"op":"subscribe","id":"x","stream":"bye"}),
    )
    .await;
    next_of(&mut ws, "subscribed").await;
    ws.send(Message::Close(None)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return false,
            }
        }
    })
    .await
    .expect("an answer within 5 s");
    assert!(answer, "the close frame was not answered");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.live.sockets().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.live.sockets().is_empty());
    assert_eq!(s.live.sockets().subscriptions(), 0);
}

/// Events trimmed by retention before the feed read them are counted in a
/// `lagged` notice: received plus missed is everything appended.
#[tokio::test]
async fn events_trimmed_before_the_feed_read_them_are_reported_missed() {
    let store = MemoryStore::with_retention(busbar_store::Retention {
        max_len: Some(50),
        ..Default::default()
    });
    let s = server_over(store, LiveConfig::default(), vec![]).await;
    let mut ws = connect(&s, "").await;
    send(
        &mut ws,
        serde_json::json!({"op":"subscribe","id":"x","stream":"short"}),
    )
    .await;
    next_of(&mut ws, "subscribed").await;
    // One runtime thread: the feed cannot read between these appends, so
    // the stream's retention drops most of them first.
    for _ in 0..10 {
        publish(&s.engine, "short", 100, None).await;
    }
    let (mut events, mut missed) = (0u64, 0u64);
    while events + missed < 1000 {
        let v = next(&mut ws).await;
        match v["type"].as_str() {
            Some("event") => events += 1,
            Some("lagged") => missed += v["missed"].as_u64().unwrap(),
            _ => panic!("unexpected {v}"),
        }
    }
    assert_eq!(events + missed, 1000);
    assert!(missed >= 900, "missed {missed}, received {events}");
    assert_eq!(events, 50);
}

/// Catching up reads no more than the engine grants at a time, and a full
/// answer is not taken for the end: a small `max_read_count` loses nothing.
#[tokio::test]
async fn catch_up_under_a_small_read_limit_delivers_everything() {
    let s = server_with(
        MemoryStore::new(),
        EngineConfig {
            max_read_count: 7,
            ..EngineConfig::default()
        },
        LiveConfig::default(),
        vec![],
    )
    .await;
    let ids = publish(&s.engine, "paged", 100, None).await;
    let mut ws = connect(&s, "").await;
    send(
        &mut ws,
        serde_json::json!({"op":"subscribe","id":"p","stream":"paged","from":"0-0"}),
    )
    .await;
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let v = next_of(&mut ws, "event").await;
        got.push(
            v["event"]["id"]
                .as_str()
                .unwrap()
                .parse::<EventId>()
                .unwrap(),
        );
    }
    assert_eq!(got, ids);
}

/// Refuses one kind of request (`publish`, `read`, `connect`) while on.
struct Refuser {
    kind: &'static str,
    on: std::sync::atomic::AtomicBool,
}

impl busbar_engine::Hook for Refuser {
    fn name(&self) -> &'static str {
        "refuser"
    }

    fn admit(&self, request: &busbar_engine::Admit<'_>) -> Result<(), busbar_engine::Refusal> {
        if request.kind() == self.kind && self.on.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(busbar_engine::Refusal::Overloaded {
                reason: format!("{} is shed", self.kind),
                retry_after: Duration::from_millis(200),
            });
        }
        Ok(())
    }
}

fn refuser(s: &Server, kind: &'static str) -> Arc<Refuser> {
    let hook = Arc::new(Refuser {
        kind,
        on: true.into(),
    });
    s.engine.add_hook(hook.clone());
    hook
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_refused_by_admission_is_told_why_and_closed_with_1013() {
    let s = server(LiveConfig::default(), vec![]).await;
    let hook = refuser(&s, "connect");
    let mut ws = connect(&s, "").await;
    let refused = next(&mut ws).await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["error"], "overloaded");
    assert_eq!(refused["retry_after_ms"], 200);
    let close = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("closed within 5s");
    match close {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1013);
            assert_eq!(frame.reason.as_str(), "try again later");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(s.live.sockets().is_empty(), "never registered");
    hook.on.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut ws = connect(&s, "").await;
    send(&mut ws, serde_json::json!({"op":"ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publish_is_an_error_message_and_the_connection_goes_on() {
    let s = server(LiveConfig::default(), vec![]).await;
    let hook = refuser(&s, "publish");
    let mut ws = connect(&s, "").await;
    send(
        &mut ws,
        serde_json::json!({"op":"publish","ref":4,"event":{"type":"t","stream":"s"}}),
    )
    .await;
    let refused = next(&mut ws).await;
    assert_eq!(refused["error"], "overloaded");
    assert_eq!(refused["ref"], 4);
    assert_eq!(refused["retry_after_ms"], 200);
    hook.on.store(false, std::sync::atomic::Ordering::Relaxed);
    send(
        &mut ws,
        serde_json::json!({"op":"publish","ref":5,"event":{"type":"t","stream":"s"}}),
    )
    .await;
    let ack = next_of(&mut ws, "ack").await;
    assert_eq!(ack["ref"], 5);
    assert_eq!(ack["ids"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_cannot_read_says_so_and_loses_nothing_once_it_can() {
    let s = server(LiveConfig::default(), vec![]).await;
    let first = publish(&s.engine, "s", 3, None).await;
    let hook = refuser(&s, "read");
    let mut resumable = connect(&s, "").await;
    send(
        &mut resumable,
        serde_json::json!({"op":"subscribe","id":"r","stream":"s","from":first[0].to_string()}),
    )
    .await;
    let mut lossy = connect(&s, "").await;
    send(
        &mut lossy,
        serde_json::json!({"op":"subscribe","id":"l","stream":"s"}),
    )
    .await;
    next_of(&mut lossy, "subscribed").await;
    // The catch-up read is refused: the client is told, never given an
    // empty answer as if that were all.
    let told = next_of(&mut resumable, "error").await;
    assert_eq!(told["error"], "overloaded");
    assert_eq!(told["sub"], "r");
    let later = publish(&s.engine, "s", 2, None).await;
    // The feed's reads are refused too: the live subscriber is told.
    let told = next_of(&mut lossy, "error").await;
    assert_eq!(
        (told["error"].as_str(), told["sub"].as_str()),
        (Some("overloaded"), Some("l"))
    );
    hook.on.store(false, std::sync::atomic::Ordering::Relaxed);
    // Then everything arrives, in order, once, on both.
    let want: Vec<EventId> = first.iter().chain(&later).copied().collect();
    let mut got = Vec::new();
    while got.len() < want.len() {
        got.push(id(&next_of(&mut resumable, "event").await));
    }
    assert_eq!(got, want);
    let mut live = Vec::new();
    while live.len() < later.len() {
        live.push(id(&next_of(&mut lossy, "event").await));
    }
    assert_eq!(live, later, "the lossy subscription missed nothing either");
    let metrics = s.engine.registry().render();
    assert!(
        metrics.contains("busbar_live_feed_errors_total{reason=\"overloaded\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_message_is_closed_with_1009_and_the_reason() {
    let s = server(
        LiveConfig {
            max_message_bytes: 1024,
            ..LiveConfig::default()
        },
        vec![],
    )
    .await;
    let mut ws = connect(&s, "").await;
    let big = format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(4096));
    ws.send(Message::Text(big.into())).await.unwrap();
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed within 5s")
    .expect("with a code");
    assert_eq!(u16::from(close.code), 1009);
    assert_eq!(close.reason.as_str(), "message too big");
    assert_eq!(s.live.metrics().closes.get(["message too big"]).get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_error_is_closed_with_1002() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server(LiveConfig::default(), vec![]).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        s.addr
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    // A client's frame must be masked: this one is not.
    tcp.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    // A close frame (opcode 8) with code 1002 first in its payload.
    let at = answer
        .windows(2)
        .position(|w| w[0] == 0x88)
        .expect("a close frame");
    assert_eq!(
        &answer[at + 2..at + 4],
        &1002u16.to_be_bytes(),
        "{answer:?}"
    );
}

/// `max_depth` 8: messages past the input limits are answered with their
/// reason and counted, a publish's events are held to the same limits as
/// on any transport, and the connection goes on.
#[tokio::test]
async fn messages_past_the_input_limits_are_refused_and_the_connection_goes_on() {
    let config = LiveConfig {
        max_depth: 8,
        ..LiveConfig::default()
    };
    let s = server(config, vec![]).await;
    let mut ws = connect(&s, "").await;
    let nested = |depth: usize| {
        let n = depth - 1;
        format!(
            r#"{{"type":"t","stream":"s","d":{}1{}}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    let raw = |text: String| Message::Text(text.into());
    // At the limit: published, in `events` and as `event`.
    ws.send(raw(format!(
        r#"{{"op":"publish","ref":1,"events":[{}]}}"#,
        nested(8)
    )))
    .await
    .unwrap();
    assert_eq!(next_of(&mut ws, "ack").await["ref"], 1);
    ws.send(raw(format!(
        r#"{{"op":"publish","ref":2,"event":{}}}"#,
        nested(8)
    )))
    .await
    .unwrap();
    assert_eq!(next_of(&mut ws, "ack").await["ref"], 2);
    for message in [
        format!(r#"{{"op":"publish","ref":3,"events":[{}]}}"#, nested(9)),
        format!(r#"{{"op":"publish","ref":4,"event":{}}}"#, nested(9)),
        format!(
            r#"{{"op":"publish","ref":5,"event":{{"type":"t","d":{}"#,
            "[".repeat(100_000)
        ),
        format!(
            r#"{{"op":"subscribe","id":"a","from":{}"#,
            "{\"a\":".repeat(100_000)
        ),
        r#"{"op":"publish","ref":6,"event":{"type":"t","n":1e999}}"#.to_owned(),
        r#"{"op":"publish","ref":7,"event":{"type":"t","s":"\udc00"}}"#.to_owned(),
    ] {
        ws.send(raw(message)).await.unwrap();
    }
    let mut reasons = Vec::new();
    for _ in 0..6 {
        let e = next_of(&mut ws, "error").await;
        reasons.push((e["error"].as_str().unwrap().to_owned(), e["ref"].clone()));
        if e["error"] == "too_deep" {
            assert!(
                e["message"]
                    .as_str()
                    .unwrap()
                    .ends_with("nesting depth 9 is over the limit of 8"),
                "{e}"
            );
        }
    }
    let reasons: Vec<(&str, Value)> = reasons
        .iter()
        .map(|(r, f)| (r.as_str(), f.clone()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("too_deep", Value::Null),
            // Within the message's own limit: refused as the event it is.
            ("too_deep", Value::from(4)),
            ("too_deep", Value::Null),
            ("too_deep", Value::Null),
            ("invalid_number", Value::Null),
            // Not one of the limits: refused as the event it is.
            ("malformed_json", Value::from(7)),
        ]
    );
    send(&mut ws, serde_json::json!({"op":"ping"})).await;
    next_of(&mut ws, "pong").await;
    let stored = s
        .engine
        .read(
            &busbar_engine::Principal::Trusted,
            &StreamName::new("s").unwrap(),
            ReadQuery::all(10),
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    let metrics = s.engine.registry().render();
    for counted in [
        r#"busbar_ingest_errors_total{transport="ws",reason="too_deep"} 4"#,
        r#"busbar_ingest_errors_total{transport="ws",reason="invalid_number"} 1"#,
        r#"busbar_ingest_errors_total{transport="ws",reason="malformed_json"} 1"#,
    ] {
        assert!(metrics.contains(counted), "{counted} in {metrics}");
    }
}

/// Keeps each administrative action the engine is told about.
#[derive(Default)]
struct AdminLog(std::sync::Mutex<Vec<String>>);

impl busbar_engine::Hook for AdminLog {
    fn name(&self) -> &'static str {
        "admin-log"
    }

    fn administered(
        &self,
        principal: &busbar_engine::Principal,
        action: &busbar_engine::AdminAction<'_>,
    ) {
        let who = match principal {
            busbar_engine::Principal::Token { name, .. } => name.clone(),
            other => format!("{other:?}"),
        };
        self.0.lock().unwrap().push(format!(
            "{who} {} {} {}",
            action.name(),
            action.target(),
            action.params()
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_delay_change_is_reported_as_an_administrative_action() {
    let tokens = vec![
        TokenSpec {
            name: "dir".into(),
            secret: "dir-secret-0123".into(),
            scopes: vec![Scope::Consume, Scope::Director],
            tenant: Some("acme".into()),
        },
        TokenSpec {
            name: "dash".into(),
            secret: "dash-secret-0123".into(),
            scopes: vec![Scope::Consume],
            tenant: None,
        },
    ];
    let s = server(LiveConfig::default(), tokens).await;
    let log = Arc::new(AdminLog::default());
    s.engine.add_hook(log.clone());
    let mut dash = connect(&s, "?token=dash-secret-0123").await;
    send(
        &mut dash,
        serde_json::json!({"op":"set_delay","session":"car7","delay_ms":10}),
    )
    .await;
    assert_eq!(next_of(&mut dash, "error").await["error"], "forbidden");
    let mut dir = connect(&s, "?token=dir-secret-0123").await;
    send(
        &mut dir,
        serde_json::json!({"op":"set_delay","session":"car7","delay_ms":2500}),
    )
    .await;
    next_of(&mut dir, "delay").await;
    assert_eq!(
        *log.0.lock().unwrap(),
        [r#"dir broadcast_delay.set session:car7 {"delay_ms":2500,"session_tenant":"acme"}"#]
    );
}
