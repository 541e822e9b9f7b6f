//! The NDJSON protocol over real sockets, against an engine on the memory
//! store.

use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{Auth, Engine, EngineConfig, Principal, Scope, TokenSpec};
use busbar_event::StreamName;
use busbar_ingest::{Ingest, IngestOptions};
use busbar_listen::{bind_tcp, bind_unix};
use busbar_store::memory::MemoryStore;
use busbar_store::ReadQuery;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;

struct Server {
    engine: Arc<Engine>,
    tcp: std::net::SocketAddr,
    unix: std::path::PathBuf,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn start(tokens: Vec<TokenSpec>, max_connections: usize) -> Server {
    start_with(
        tokens,
        IngestOptions {
            max_line_bytes: 256,
            max_connections,
            drain_timeout: Duration::from_secs(2),
            max_depth: 8,
            ..IngestOptions::default()
        },
    )
    .await
}

async fn start_with(tokens: Vec<TokenSpec>, options: IngestOptions) -> Server {
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .auth(Auth::new(tokens))
        .config(EngineConfig::default())
        .build();
    let dir = tempfile::tempdir().unwrap();
    let unix = dir.path().join("sock").join("events.sock");
    let socket = bind_unix(&unix, 0o600).unwrap();
    let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let tcp = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let ingest = Ingest::new(engine.clone(), options, rx);
    let i2 = ingest.clone();
    tokio::spawn(async move { ingest.serve_unix(socket).await });
    tokio::spawn(async move { i2.serve_tcp(listener).await });
    Server {
        engine,
        tcp,
        unix,
        stop,
        _dir: dir,
    }
}

async fn read_lines<R: tokio::io::AsyncRead + Unpin>(r: R) -> Vec<Value> {
    let mut lines = BufReader::new(r).lines();
    let mut out = Vec::new();
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .expect("answers within 5s")
    {
        out.push(serde_json::from_str(&line).unwrap());
    }
    out
}

async fn stream_len(engine: &Engine, stream: &str) -> usize {
    engine
        .read(
            &Principal::Trusted,
            &StreamName::new(stream).unwrap(),
            ReadQuery::all(10_000),
        )
        .await
        .map(|e| e.len())
        .unwrap_or(0)
}

#[tokio::test]
async fn fire_and_forget_over_unix_writes_nothing_back() {
    let s = start(vec![], 16).await;
    let mut c = UnixStream::connect(&s.unix).await.unwrap();
    c.write_all(b"{\"type\":\"test\"}\n{\"type\":\"test\",\"n\":2}")
        .await
        .unwrap();
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    // Fire-and-forget: the events land without an answer to wait for.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while stream_len(&s.engine, "events").await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events never landed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn acks_in_order_with_errors_and_half_close() {
    let s = start(vec![], 16).await;
    let c = UnixStream::connect(&s.unix).await.unwrap();
    let (r, mut w) = c.into_split();
    let long = format!("{{\"type\":\"t\",\"pad\":\"{}\"}}\n", "x".repeat(300));
    let input = [
        "{\"hello\":{\"acks\":true}}\n",
        "{\"type\":\"a\"}\n",
        "{not json\n",
        "\n",
        &long,
        "{\"type\":\"b\",\"stream\":\"other\"}\n",
        "{\"stream\":\"x\"}\n",
        "{\"type\":\"c\"}",
    ]
    .concat();
    w.write_all(input.as_bytes()).await.unwrap();
    w.shutdown().await.unwrap();
    let answers = read_lines(r).await;
    let kinds: Vec<String> = answers
        .iter()
        .map(|a| match a.get("id") {
            Some(_) => "id".to_owned(),
            None => a["error"].as_str().unwrap().to_owned(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "id",
            "malformed_json",
            "too_large",
            "id",
            "missing_type",
            "id"
        ]
    );
    assert_eq!(stream_len(&s.engine, "events").await, 2);
    assert_eq!(stream_len(&s.engine, "other").await, 1);
}

/// The server's `max_depth` is 8: lines past it, or holding numbers or
/// escapes no reader could take back, are answered with their reason,
/// counted, and the connection goes on.
#[tokio::test]
async fn lines_past_the_input_limits_are_refused_with_their_reason() {
    let s = start(vec![], 16).await;
    let nested = |depth: usize| {
        let n = depth - 1;
        format!(
            "{{\"type\":\"t\",\"d\":{}1{}}}\n",
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    let deep_op = format!(
        "{{\"op\":\"ack\",\"group\":\"g\",\"x\":{}1{}}}\n",
        "[".repeat(8),
        "]".repeat(8)
    );
    // Unclosed past the limit: refused for its depth, not read to its end.
    let endless = format!("{{\"type\":\"t\",\"d\":{}\n", "[".repeat(200));
    let input = [
        "{\"hello\":{\"acks\":true}}\n",
        &nested(8),
        &nested(9),
        &deep_op,
        "{\"type\":\"t\",\"n\":1e999}\n",
        "{\"type\":\"t\",\"n\":123456789012345678901234567890123456789012345}\n",
        "{\"type\":\"t\",\"s\":\"\\ud800\"}\n",
        &endless,
        "{\"type\":\"t\",\"n\":1.5e300,\"s\":\"\\ud83d\\ude00\"}\n",
    ]
    .concat();
    let c = UnixStream::connect(&s.unix).await.unwrap();
    let (r, mut w) = c.into_split();
    w.write_all(input.as_bytes()).await.unwrap();
    w.shutdown().await.unwrap();
    let answers = read_lines(r).await;
    let kinds: Vec<&str> = answers
        .iter()
        .map(|a| a["error"].as_str().unwrap_or("id"))
        .collect();
    assert_eq!(
        kinds,
        [
            "id",
            "too_deep",
            "too_deep",
            "invalid_number",
            "invalid_number",
            "malformed_json",
            "too_deep",
            "id"
        ]
    );
    assert_eq!(
        answers[1]["message"],
        "nesting depth 9 is over the limit of 8"
    );
    assert_eq!(stream_len(&s.engine, "events").await, 2);
    let errors = &s.engine.metrics().ingest_errors;
    assert_eq!(errors.get(["unix", "too_deep"]).get(), 3);
    assert_eq!(errors.get(["unix", "invalid_number"]).get(), 2);
}

#[tokio::test]
async fn tcp_requires_a_valid_token_and_the_right_tenant() {
    let tokens = vec![TokenSpec {
        name: "acme".into(),
        secret: "acme-secret".into(),
        scopes: vec![Scope::Publish],
        tenant: Some("acme".into()),
    }];
    let s = start(tokens, 16).await;

    let mut c = TcpStream::connect(s.tcp).await.unwrap();
    c.write_all(b"{\"type\":\"t\"}\n").await.unwrap();
    let answers = read_lines(c).await;
    assert_eq!(answers[0]["error"], "unauthenticated");

    let mut c = TcpStream::connect(s.tcp).await.unwrap();
    c.write_all(b"{\"hello\":{\"acks\":true,\"token\":\"nope\"}}\n{\"type\":\"t\"}\n")
        .await
        .unwrap();
    let answers = read_lines(c).await;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0]["error"], "bad_token");

    let mut c = TcpStream::connect(s.tcp).await.unwrap();
    c.write_all(
        b"{\"hello\":{\"acks\":true,\"token\":\"acme-secret\"}}\n{\"type\":\"t\"}\n{\"type\":\"t\",\"stream\":\"globex:events\"}\n{\"type\":\"t\",\"tenant\":\"globex\"}\n{\"type\":\"t\"}\n",
    )
    .await
    .unwrap();
    c.shutdown().await.unwrap();
    let answers = read_lines(c).await;
    let kinds: Vec<&str> = answers
        .iter()
        .map(|a| a.get("error").and_then(Value::as_str).unwrap_or("id"))
        .collect();
    assert_eq!(kinds, ["id", "wrong_tenant", "wrong_tenant", "id"]);
    assert_eq!(stream_len(&s.engine, "acme:events").await, 2);
}

#[tokio::test]
async fn connections_over_the_limit_get_an_error_line() {
    let s = start(vec![], 1).await;
    let mut held = UnixStream::connect(&s.unix).await.unwrap();
    held.write_all(b"{\"hello\":{\"acks\":true}}\n{\"type\":\"t\"}\n")
        .await
        .unwrap();
    // Once the first is answered it certainly holds the only slot.
    let mut first = [0u8; 8];
    held.read_exact(&mut first).await.unwrap();
    let refused = UnixStream::connect(&s.unix).await.unwrap();
    let answers = read_lines(refused).await;
    assert_eq!(answers[0]["error"], "too_many_connections");
    assert_eq!(
        s.engine
            .metrics()
            .connections_rejected
            .get(["unix", "too_many_connections"])
            .get(),
        1
    );
    drop(held);
}

#[tokio::test]
async fn shutdown_answers_what_was_read_then_closes() {
    let s = start(vec![], 16).await;
    let c = UnixStream::connect(&s.unix).await.unwrap();
    let (r, mut w) = c.into_split();
    w.write_all(b"{\"hello\":{\"acks\":true}}\n{\"type\":\"t\"}\n{\"type\":\"t\"}\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(r).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    assert!(first.contains("\"id\""));
    s.stop.send(true).unwrap();
    let second = lines.next_line().await.unwrap().unwrap();
    assert!(second.contains("\"id\""));
    // The connection ends even though the producer keeps its side open.
    let end = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None)));
    drop(w);
}

/// A refused TCP producer that keeps writing still gets its error line
/// (closing with unread input risks a reset that destroys it).
#[tokio::test]
async fn refusal_reaches_a_producer_that_keeps_writing() {
    let tokens = vec![TokenSpec {
        name: "ops".into(),
        secret: "ops-secret".into(),
        scopes: vec![Scope::Publish],
        tenant: None,
    }];
    let s = start(tokens, 16).await;
    let c = TcpStream::connect(s.tcp).await.unwrap();
    let (r, mut w) = c.into_split();
    let writer = tokio::spawn(async move {
        let _ = w
            .write_all(b"{\"hello\":{\"acks\":true,\"token\":\"bad\"}}\n")
            .await;
        let lines = "{\"type\":\"t\"}\n".repeat(100_000);
        let _ = w.write_all(lines.as_bytes()).await;
        w
    });
    let answers = read_lines(r).await;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0]["error"], "bad_token");
    drop(writer.await.unwrap());
}

/// Refuses publishes or connections while switched on.
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
                reason: "memory is critical".into(),
                retry_after: Duration::from_millis(1500),
            });
        }
        Ok(())
    }
}

#[tokio::test]
async fn refused_publishes_are_error_lines_and_the_connection_goes_on() {
    let s = start(vec![], 16).await;
    let hook = Arc::new(Refuser {
        kind: "publish",
        on: true.into(),
    });
    s.engine.add_hook(hook.clone());
    let c = UnixStream::connect(&s.unix).await.unwrap();
    let (r, mut w) = c.into_split();
    let mut lines = BufReader::new(r).lines();
    w.write_all(b"{\"hello\":{\"acks\":true}}\n{\"type\":\"a\"}\n")
        .await
        .unwrap();
    let refused: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(refused["error"], "overloaded");
    assert_eq!(refused["retry_after_ms"], 1500);
    assert!(refused["message"]
        .as_str()
        .unwrap()
        .contains("memory is critical"));
    // The same connection publishes once admission lets it.
    hook.on.store(false, std::sync::atomic::Ordering::Relaxed);
    w.write_all(b"{\"type\":\"b\"}\n").await.unwrap();
    let ok: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert!(ok["id"].is_string(), "{ok}");
    assert_eq!(
        stream_len(&s.engine, "events").await,
        1,
        "only `b` was stored"
    );
}

#[tokio::test]
async fn refused_connections_get_one_error_line_on_both_sockets() {
    let s = start(vec![], 16).await;
    s.engine.add_hook(Arc::new(Refuser {
        kind: "connect",
        on: true.into(),
    }));
    let unix = read_lines(UnixStream::connect(&s.unix).await.unwrap()).await;
    let tcp = read_lines(TcpStream::connect(s.tcp).await.unwrap()).await;
    for answer in [unix, tcp] {
        assert_eq!(answer.len(), 1, "{answer:?}");
        assert_eq!(answer[0]["error"], "overloaded");
        assert_eq!(answer[0]["retry_after_ms"], 1500);
    }
    assert_eq!(
        s.engine
            .metrics()
            .admission_refused
            .get(["connect", "overloaded"])
            .get(),
        2
    );
}

fn producer_token() -> Vec<TokenSpec> {
    vec![TokenSpec {
        name: "p".into(),
        secret: "p-secret".into(),
        scopes: vec![Scope::Publish, Scope::Consume],
        tenant: None,
    }]
}

#[tokio::test]
async fn a_connection_without_a_first_line_is_told_and_closed() {
    let s = start_with(
        vec![],
        IngestOptions {
            first_line_timeout: Duration::from_millis(300),
            ..IngestOptions::default()
        },
    )
    .await;
    let started = std::time::Instant::now();
    let mut c = TcpStream::connect(s.tcp).await.unwrap();
    // Half a line is not a first line.
    c.write_all(b"{\"type\":").await.unwrap();
    let answers = read_lines(c).await;
    assert_eq!(answers[0]["error"], "first_line_timeout", "{answers:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        s.engine
            .metrics()
            .connection_timeouts
            .get(["tcp", "first_line"])
            .get(),
        1
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_not_one_waiting_for_its_answer() {
    let s = start_with(
        vec![],
        IngestOptions {
            idle_timeout: Duration::from_millis(400),
            ..IngestOptions::default()
        },
    )
    .await;
    // Acked, then silent: closed after the idle timeout, answers first.
    let c = UnixStream::connect(&s.unix).await.unwrap();
    let (r, mut w) = c.into_split();
    w.write_all(b"{\"hello\":{\"acks\":true}}\n{\"type\":\"t\"}\n")
        .await
        .unwrap();
    let answers = read_lines(r).await;
    assert!(answers[0]["id"].is_string(), "{answers:?}");
    assert_eq!(answers[1]["error"], "idle_timeout", "{answers:?}");
    // A blocking group read longer than the idle timeout is waiting for
    // its answer, not idle: it gets its deliveries.
    let c = UnixStream::connect(&s.unix).await.unwrap();
    let (r, mut w) = c.into_split();
    w.write_all(
        b"{\"op\":\"create_group\",\"stream\":\"s\",\"group\":\"g\",\"start\":\"$\"}\n\
          {\"op\":\"read\",\"stream\":\"s\",\"group\":\"g\",\"consumer\":\"c\",\"block_ms\":1500}\n",
    )
    .await
    .unwrap();
    let engine = s.engine.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let mut b = busbar_event::EventBatch::new();
        b.push(&busbar_event::NewEvent::new("t", b"{}")).unwrap();
        engine
            .publish(
                &Principal::Trusted,
                &StreamName::new("s").unwrap(),
                b,
                Default::default(),
                busbar_engine::Transport::Local,
            )
            .await
            .unwrap();
    });
    let mut lines = BufReader::new(r).lines();
    let created: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert!(created["group"].is_object(), "{created}");
    let read: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(read["deliveries"].as_array().unwrap().len(), 1, "{read}");
}

#[tokio::test]
async fn unauthenticated_connections_have_a_budget_and_a_byte_limit() {
    let s = start_with(
        producer_token(),
        IngestOptions {
            max_unauthenticated: 3,
            max_unauthenticated_per_peer: 2,
            unauthenticated_bytes: 1024,
            first_line_timeout: Duration::from_secs(30),
            ..IngestOptions::default()
        },
    )
    .await;
    // Two silent connections take this peer's share...
    let silent: Vec<TcpStream> = futures_join(2, s.tcp).await;
    let gauge = || s.engine.metrics().unauthenticated.get(["tcp"]).get();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gauge() < 2 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...so a third from the same address is refused at once.
    let answers = read_lines(TcpStream::connect(s.tcp).await.unwrap()).await;
    assert_eq!(
        answers[0]["error"], "too_many_unauthenticated",
        "{answers:?}"
    );
    drop(silent);
    // A first line longer than the unauthenticated limit is refused, and
    // the connection closed.
    let mut c = TcpStream::connect(s.tcp).await.unwrap();
    let long = format!("{{\"hello\":{{\"token\":\"{}\"}}}}\n", "x".repeat(4096));
    c.write_all(long.as_bytes()).await.unwrap();
    let answers = read_lines(c).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0]["error"], "unauthenticated", "{answers:?}");
    // A producer that authenticates gets the full line limit back at once,
    // for what follows its hello in the same write.
    let c = TcpStream::connect(s.tcp).await.unwrap();
    let (r, mut w) = c.into_split();
    let big = format!("{{\"type\":\"t\",\"pad\":\"{}\"}}\n", "y".repeat(8192));
    w.write_all(
        format!("{{\"hello\":{{\"acks\":true,\"token\":\"p-secret\"}}}}\n{big}").as_bytes(),
    )
    .await
    .unwrap();
    w.shutdown().await.unwrap();
    let answers = read_lines(r).await;
    assert!(answers[0]["id"].is_string(), "{answers:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gauge() != 0 {
        assert!(std::time::Instant::now() < deadline, "gauge {}", gauge());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `n` connections to `addr`.
async fn futures_join(n: usize, addr: std::net::SocketAddr) -> Vec<TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(TcpStream::connect(addr).await.unwrap());
    }
    out
}

/// Serves one connection over an in-memory stream through
/// `Ingest::serve_stream`, as the listener serves an accepted socket.
async fn serve_in_memory(
    tokens: Vec<TokenSpec>,
    peer: Option<std::net::SocketAddr>,
    input: &[u8],
) -> (Arc<Engine>, Vec<Value>) {
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .auth(Auth::new(tokens))
        .build();
    let (_stop, rx) = watch::channel(false);
    let ingest = Ingest::new(engine.clone(), IngestOptions::default(), rx);
    let (client, server) = tokio::io::duplex(4096);
    let (r, w) = tokio::io::split(server);
    let serving = tokio::spawn(async move { ingest.serve_stream(r, w, peer).await });
    let (client_r, mut client_w) = tokio::io::split(client);
    client_w.write_all(input).await.unwrap();
    client_w.shutdown().await.unwrap();
    let answers = read_lines(client_r).await;
    serving.await.unwrap();
    (engine, answers)
}

#[tokio::test]
async fn serve_stream_answers_like_a_unix_socket_connection() {
    let (engine, answers) = serve_in_memory(
        vec![],
        None,
        b"{\"hello\":{\"acks\":true}}\n{\"type\":\"a\"}\n{nope\n\n{\"type\":\"b\"}",
    )
    .await;
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(answers[0]["id"].is_string(), "{answers:?}");
    assert_eq!(answers[1]["error"], "malformed_json");
    assert!(answers[2]["id"].is_string(), "{answers:?}");
    assert_eq!(stream_len(&engine, "events").await, 2);
}

#[tokio::test]
async fn serve_stream_makes_a_tcp_caller_authenticate() {
    let tokens = vec![TokenSpec {
        name: "p".into(),
        secret: "p-secret".into(),
        scopes: vec![Scope::Publish],
        tenant: None,
    }];
    let peer = Some("127.0.0.1:5000".parse().unwrap());
    let (engine, answers) = serve_in_memory(tokens.clone(), peer, b"{\"type\":\"a\"}\n").await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0]["error"], "unauthenticated");
    assert_eq!(stream_len(&engine, "events").await, 0);

    let hello = b"{\"hello\":{\"acks\":true,\"token\":\"p-secret\"}}\n{\"type\":\"a\"}\n";
    let (engine, answers) = serve_in_memory(tokens, peer, hello).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(answers[0]["id"].is_string(), "{answers:?}");
    assert_eq!(stream_len(&engine, "events").await, 1);
}

#[tokio::test(start_paused = true)]
async fn first_line_deadline_follows_the_runtime_clock() {
    // The runtime's clock is an hour ahead of the wall clock: a deadline
    // taken on the wall clock would have passed before the connection
    // opened, and the first line, sent a second later, would be refused.
    tokio::time::advance(Duration::from_secs(3600)).await;
    let engine = Engine::builder(Arc::new(MemoryStore::new())).build();
    let (_stop, rx) = watch::channel(false);
    let options = IngestOptions {
        first_line_timeout: Duration::from_secs(10),
        ..IngestOptions::default()
    };
    let ingest = Ingest::new(engine.clone(), options, rx);
    let (client, server) = tokio::io::duplex(4096);
    let (r, w) = tokio::io::split(server);
    let serving = tokio::spawn(async move { ingest.serve_stream(r, w, None).await });
    let (client_r, mut client_w) = tokio::io::split(client);
    tokio::time::sleep(Duration::from_secs(1)).await;
    client_w
        .write_all(b"{\"hello\":{\"acks\":true}}\n{\"type\":\"a\"}\n")
        .await
        .unwrap();
    client_w.shutdown().await.unwrap();
    let answers = read_lines(client_r).await;
    serving.await.unwrap();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(answers[0]["id"].is_string(), "{answers:?}");
}
