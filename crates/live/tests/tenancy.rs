//! The tenancy matrix: every HTTP route of the OpenAPI document, every
//! `/api/ops/*` route, every op of the socket protocol and of the live
//! protocol (WebSocket and a TCP connection that switched), called with no
//! token, a wrong token and tenant `b`'s token (which has every scope)
//! against tenant `a`'s stream, groups, events, dead letters, job and
//! session. No answer may carry anything of `a`'s, and `a`'s state (read
//! by an untenanted admin) must be the same after the matrix as before.
//!
//! The routes and ops are not listed here by hand: they are read from the
//! OpenAPI document, the ops registry and the protocols' docs, so a new
//! route or op fails this test until the matrix knows how to call it.
//! Then, as a control, `a` makes every HTTP call itself: each must be
//! allowed, so `b` was refused for being `b`, not for a bad request.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{Auth, Engine, Scope, TokenSpec};
use busbar_event::StreamName;
use busbar_fanout::{Fanout, FanoutConfig};
use busbar_ingest::{Ingest, IngestOptions};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const A: &str = "a-secret-0123";
const B: &str = "b-secret-0123";
const OPS: &str = "ops-secret-0123";
const WRONG: &str = "wrong-secret-0123";

/// Strings only `a`'s data holds.
const PAYLOAD: &str = "apayload-7c1e";
const FAILURE: &str = "a-failure-7d2";
const STREAM: &str = "a:orders";
const BILLING: &str = "a-billing";
const AUDIT: &str = "a-audit";
const WORKER: &str = "a-worker";
const SESSION: &str = "a-car";
/// A session of `a`'s that `b` never names (`b` uses `a-car` in its own
/// streams, which is its right).
const PIT: &str = "a-pit";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Daemon {
    engine: Arc<Engine>,
    http: SocketAddr,
    tcp: SocketAddr,
    ops_endpoints: Vec<(&'static str, &'static str)>,
    _stop: tokio::sync::watch::Sender<bool>,
}

/// What `serve` wires, over a memory store: the API with the live and ops
/// routes, and TCP ingest that hands live ops to the hub.
async fn daemon() -> Daemon {
    let every = vec![
        Scope::Publish,
        Scope::Consume,
        Scope::Admin,
        Scope::Director,
        Scope::Metrics,
    ];
    let token = |name: &str, secret: &str, tenant: Option<&str>| TokenSpec {
        name: name.into(),
        secret: secret.into(),
        scopes: every.clone(),
        tenant: tenant.map(Into::into),
    };
    let tokens = vec![
        token("a", A, Some("a")),
        token("b", B, Some("b")),
        token("ops", OPS, None),
    ];
    let engine = Engine::builder(Arc::new(busbar_store::memory::MemoryStore::new()))
        .auth(Auth::new(tokens))
        .build();
    let live = Fanout::new(engine.clone(), FanoutConfig::default());
    let ops = busbar_ops::Ops::new(engine.clone());
    busbar_live::register_ops(&live, &ops);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let listener = busbar_listen::bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let tcp = listener.local_addr().unwrap();
    let ingest = Ingest::new(engine.clone(), IngestOptions::default(), stopping)
        .with_live(Arc::new(busbar_live::SocketUpgrade(live.clone())));
    tokio::spawn(async move { ingest.serve_tcp(listener).await });
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = http_listener.local_addr().unwrap();
    let extra = busbar_live::router(live, None).merge(ops.router());
    let e = engine.clone();
    tokio::spawn(async move {
        let config = busbar_api::HttpConfig::default();
        busbar_api::serve_with(http_listener, e, config, extra, std::future::pending()).await
    });
    Daemon {
        engine,
        http,
        tcp,
        ops_endpoints: ops.endpoints(),
        _stop: stop,
    }
}

/// One HTTP/1.1 exchange on a fresh connection: status and body.
async fn http(
    d: &Daemon,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(d.http).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n",
        d.http
    );
    if let Some(t) = token {
        req.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("content-type: application/json\r\n");
    }
    req.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").expect("a full answer");
    let status = head[9..12].parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            unchunk(rest)
        } else {
            rest.to_owned()
        },
    )
}

fn unchunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

async fn get_json(d: &Daemon, path: &str, token: &str) -> Value {
    let (status, body) = http(d, "GET", path, Some(token), "").await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn post_json(d: &Daemon, path: &str, token: &str, body: Value) -> Value {
    let (status, text) = http(d, "POST", path, Some(token), &body.to_string()).await;
    assert!(status < 300, "POST {path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

async fn ws(d: &Daemon, token: Option<&str>) -> Result<Ws, u16> {
    let mut req = format!("ws://{}/ws", d.http).into_client_request().unwrap();
    if let Some(t) = token {
        let value = format!("Bearer {t}").parse().unwrap();
        req.headers_mut().insert("authorization", value);
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

/// How many pongs answer `op` and the ping sent after it.
fn pongs(op: &Value) -> usize {
    if op["op"] == "ping" {
        2
    } else {
        1
    }
}

/// Sends `op`, then a ping, and returns every message up to the pong
/// that answers that ping.
async fn ws_call(ws: &mut Ws, op: &Value) -> Vec<String> {
    ws.send(Message::Text(op.to_string().into())).await.unwrap();
    let ping = json!({"op": "ping"}).to_string();
    ws.send(Message::Text(ping.into())).await.unwrap();
    let mut got = Vec::new();
    let mut pongs = pongs(op);
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an answer within 5 s")
            .expect("open")
            .expect("ok");
        if let Message::Text(t) = msg {
            if t.contains(r#""type":"pong""#) {
                pongs -= 1;
                if pongs == 0 {
                    return got;
                }
                continue;
            }
            got.push(t.to_string());
        }
    }
}

/// A line client on the TCP ingest port.
struct Line {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Line {
    async fn open(d: &Daemon) -> Line {
        let (r, w) = TcpStream::connect(d.tcp).await.unwrap().into_split();
        Line {
            lines: BufReader::new(r).lines(),
            writer: w,
        }
    }

    async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The next line; `None` once closed or after `wait` of silence.
    async fn next(&mut self, wait: Duration) -> Option<String> {
        match tokio::time::timeout(wait, self.lines.next_line()).await {
            Ok(Ok(line)) => line,
            _ => None,
        }
    }

    /// Sends `line` and returns the one answer it gets (ops and acked
    /// events get exactly one).
    async fn call(&mut self, line: &str) -> String {
        self.send(line).await;
        self.next(Duration::from_secs(5)).await.expect("an answer")
    }

    /// Sends a live op then a ping; every message up to the pong.
    async fn live_call(&mut self, op: &Value) -> Vec<String> {
        self.send(&op.to_string()).await;
        self.send(r#"{"op":"ping"}"#).await;
        let mut got = Vec::new();
        let mut pongs = pongs(op);
        while let Some(line) = self.next(Duration::from_secs(5)).await {
            if line.contains(r#""type":"pong""#) {
                pongs -= 1;
                if pongs == 0 {
                    return got;
                }
                continue;
            }
            got.push(line);
        }
        panic!("no pong after {op}");
    }
}

/// What `a` owns, for building requests and recognising its data.
struct Ids {
    events: Vec<String>,
    pending: Vec<String>,
    dlq: String,
    job: String,
    trace: String,
}

impl Ids {
    /// Strings of `a`'s data a caller could only have learnt from an
    /// answer: each is a leak unless the request itself carried it.
    fn markers(&self) -> Vec<String> {
        let mut m: Vec<String> = [
            PAYLOAD,
            FAILURE,
            STREAM,
            "a:replays",
            BILLING,
            AUDIT,
            WORKER,
            PIT,
            r#""tenant":"a""#,
            A,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        m.extend(self.events.iter().cloned());
        m.extend([self.dlq.clone(), self.job.clone(), self.trace.clone()]);
        m
    }
}

/// Everything `a` has, as `a`'s own and the untenanted admin's eyes see
/// it, without what time alone changes (idle times, the job's progress).
async fn snapshot(d: &Daemon) -> Value {
    let mut streams = get_json(d, "/api/streams", OPS).await["streams"].take();
    let streams: Vec<Value> = streams
        .as_array_mut()
        .unwrap()
        .drain(..)
        .filter(|s| {
            let name = s["name"].as_str().unwrap();
            name.starts_with("a:") && name != "a:replays"
        })
        .collect();
    let base = format!("/api/streams/{STREAM}");
    let mut groups = get_json(d, &format!("{base}/groups"), OPS).await;
    for g in groups["groups"].as_array_mut().unwrap() {
        for c in g["consumers"].as_array_mut().unwrap() {
            c.as_object_mut().unwrap().remove("idle_ms");
        }
    }
    let mut pending = Vec::new();
    for g in [BILLING, AUDIT] {
        let mut p = get_json(d, &format!("{base}/groups/{g}/pending?limit=1000"), OPS).await;
        for e in p["pending"].as_array_mut().unwrap() {
            e.as_object_mut().unwrap().remove("idle_ms");
        }
        let own = d
            .engine
            .store()
            .group(&StreamName::new(STREAM).unwrap(), g)
            .await
            .unwrap()
            .paused;
        pending.push(json!({"group": g, "pending": p, "own_pause": own}));
    }
    let jobs: Vec<Value> = get_json(d, "/api/jobs", OPS).await["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["stream"].as_str().unwrap().starts_with("a:"))
        .map(|j| json!([j["id"], j["kind"], j["target"], j["state"], j["rate"]]))
        .collect();
    let by_a = |v: &Value| v["tenant"] == "a";
    let of_a = |mut v: Value, keys: &[&str]| {
        for k in keys {
            v[*k] = Value::Array(
                v[*k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|x| by_a(x))
                    .cloned()
                    .collect(),
            );
        }
        v
    };
    json!({
        "streams": streams,
        "events": get_json(d, &format!("{base}/events?limit=1000"), OPS).await,
        "groups": groups,
        "pending": pending,
        "tenant_paused": d.engine.delivery_paused(&StreamName::new(STREAM).unwrap()),
        "dlq": get_json(d, &format!("{base}/dlq"), OPS).await,
        "health": get_json(d, &format!("/events/health?stream={STREAM}"), OPS).await,
        "jobs": jobs,
        "sessions": of_a(get_json(d, "/api/ops/sessions", OPS).await, &["sessions", "events"]),
        "sockets": of_a(get_json(d, "/api/ops/sockets", OPS).await, &["sockets", "events"]),
        "rooms": get_json(d, "/api/ops/rooms", A).await,
    })
}

/// Seeds `a` with its own token: events of its session, two groups (one
/// paused by its own pause), pending entries, a dead letter, a running
/// job, a broadcast delay, connections in a room and on a subscription,
/// and a pause of all its delivery. `b` gets a stream of its own.
async fn seed(d: &Daemon) -> (Ids, Vec<Ws>, Line) {
    let now = busbar_event::now_ms();
    let events: Vec<Value> = (0..200)
        .map(|i| json!({"type": "order", "marker": PAYLOAD, "i": i, "session": SESSION, "ts": now - 40}))
        .collect();
    let base = format!("/api/streams/{STREAM}");
    let ids = post_json(d, &format!("{base}/events"), A, json!(events)).await;
    let events: Vec<String> = serde_json::from_value(ids["ids"].clone()).unwrap();
    for g in [BILLING, AUDIT] {
        let body = json!({"name": g, "start": "beginning"});
        post_json(d, &format!("{base}/groups"), A, body).await;
    }
    post_json(d, &format!("{base}/groups/{AUDIT}/pause"), A, json!({})).await;
    let read = json!({"consumer": WORKER, "count": 5});
    let got = post_json(d, &format!("{base}/groups/{BILLING}/read"), A, read).await;
    let mut pending: Vec<String> = got["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["event"]["id"].as_str().unwrap().to_owned())
        .collect();
    let dead = pending.remove(0);
    let nack = json!({"consumer": WORKER, "ids": [dead], "terminal": true, "error": FAILURE});
    post_json(d, &format!("{base}/groups/{BILLING}/nack"), A, nack).await;
    let dlq = get_json(d, &format!("{base}/dlq"), A).await["entries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let replay =
        json!({"stream": STREAM, "rate": 1, "batchSize": 1, "target": {"stream": "a:replays"}});
    let job = post_json(d, "/api/replay", A, replay).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut producer = ws(d, Some(A)).await.unwrap();
    let hello = json!({"op": "hello", "role": "producer", "session": SESSION});
    assert!(ws_call(&mut producer, &hello).await.is_empty());
    let delay = json!({"op": "set_delay", "session": SESSION, "delay_ms": 5000});
    assert!(ws_call(&mut producer, &delay).await[0].contains(r#""type":"delay""#));
    let mut dashboard = ws(d, Some(A)).await.unwrap();
    let join = json!({"op": "join", "room": format!("session:{SESSION}"), "stream": STREAM});
    assert!(ws_call(&mut dashboard, &join).await[0].contains("joined"));
    let pit = json!({"op": "join", "room": format!("session:{PIT}"), "stream": STREAM});
    assert!(ws_call(&mut dashboard, &pit).await[0].contains("joined"));
    let mut subscriber = Line::open(d).await;
    subscriber
        .send(&json!({"hello": {"acks": true, "token": A}}).to_string())
        .await;
    let sub = json!({"op": "subscribe", "id": "a-sub", "stream": STREAM, "from": "live"});
    assert!(subscriber.live_call(&sub).await[0].contains("subscribed"));
    post_json(d, "/api/consumers/pause", A, json!({})).await;

    post_json(
        d,
        "/api/streams/b:orders/events",
        B,
        json!({"type": "b-own"}),
    )
    .await;
    // A trace of a's stream, running through the whole matrix.
    let started = post_json(
        d,
        "/api/ops/trace/start",
        A,
        json!({"stream": STREAM, "durationSec": 600}),
    )
    .await;
    let trace = started["traceId"].as_str().unwrap().to_owned();
    let ids = Ids {
        events,
        pending,
        dlq,
        job,
        trace,
    };
    (ids, vec![producer, dashboard], subscriber)
}

/// `text` naming a stream of `a`'s that does not exist instead of `a`'s.
fn nowhere(text: &str) -> String {
    text.replace(STREAM, "a:nowhere")
}

/// One HTTP request of the matrix.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    body: String,
}

/// Every operation of the OpenAPI document, and every `/api/ops/*` route.
fn routes(d: &Daemon) -> Vec<(String, String)> {
    let doc: Value = serde_json::from_str(busbar_api::OPENAPI_JSON).unwrap();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                out.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(!d.ops_endpoints.is_empty());
    for (method, path) in &d.ops_endpoints {
        out.push(((*method).to_owned(), (*path).to_owned()));
    }
    out
}

/// The calls of one route against `a`'s things: the route itself with a
/// body that would change `a`'s state, and for some routes more ways in
/// (another tenant's name in a body, a tenant's own stream naming `a`'s
/// session). A route this does not know fails the test.
fn requests(method: &str, template: &str, ids: &Ids) -> Vec<Req> {
    let group = if template.ends_with("/resume") {
        AUDIT
    } else {
        BILLING
    };
    let id = if template.contains("/dlq/") {
        &ids.dlq
    } else if template.contains("/trace/") {
        &ids.trace
    } else {
        &ids.events[0]
    };
    let path = template
        .replace("{stream}", STREAM)
        .replace("{group}", group)
        .replace("{consumer}", WORKER)
        .replace("{job}", &ids.job)
        .replace("{id}", id);
    let pending = json!(ids.pending);
    let one = |body: Value| vec![body.to_string()];
    let bodies: Vec<String> = match (method, template) {
        ("GET" | "DELETE", _) => vec![String::new()],
        ("POST", "/api/streams/{stream}/events") => one(json!([{"type": "intrusion"}])),
        ("POST", "/api/streams/{stream}/events/delete") => one(json!({"ids": [ids.events[0]]})),
        ("POST", "/api/streams/{stream}/trim") => one(json!({"maxlen": 0})),
        ("POST", "/api/streams/{stream}/groups") => {
            one(json!({"name": "b-made", "start": "beginning"}))
        }
        ("POST", "/api/streams/{stream}/groups/{group}/read") => {
            one(json!({"consumer": "b-intruder", "count": 100}))
        }
        ("POST", "/api/streams/{stream}/groups/{group}/ack") => one(json!({"ids": pending})),
        ("POST", "/api/streams/{stream}/groups/{group}/nack") => {
            one(json!({"consumer": WORKER, "ids": pending, "terminal": true}))
        }
        ("POST", "/api/streams/{stream}/groups/{group}/claim") => {
            one(json!({"consumer": "b-intruder", "min_idle_ms": 0}))
        }
        ("POST", "/api/consumers/pause" | "/api/consumers/resume") => {
            let g = if template.ends_with("resume") {
                AUDIT
            } else {
                BILLING
            };
            vec![
                String::new(),
                json!({"stream": STREAM, "group": g}).to_string(),
            ]
        }
        ("POST", "/api/streams/{stream}/dlq/reprocess") => one(json!({"all": true})),
        ("POST", "/api/streams/{stream}/dlq/purge") => one(json!({"confirm": true})),
        ("POST", "/api/replay") => vec![
            json!({"stream": STREAM}).to_string(),
            json!({"stream": "b:orders", "target": {"stream": STREAM}}).to_string(),
        ],
        ("POST", t) if t.ends_with("/rotate") || t.ends_with("/pause") => vec![String::new()],
        ("POST", t) if t.ends_with("/resume") || t.ends_with("/cancel") => vec![String::new()],
        ("POST", "/api/streams/{stream}/dlq/{id}/reprocess") => vec![String::new()],
        ("POST", "/api/ops/trace/start") => vec![
            json!({"stream": STREAM, "durationSec": 1}).to_string(),
            json!({"sessionId": SESSION, "durationSec": 1}).to_string(),
        ],
        ("POST", "/api/ops/support-pack") => vec![
            json!({}).to_string(),
            json!({"sessionId": PIT}).to_string(),
            json!({"traceId": ids.trace}).to_string(),
            json!({"includeConfig": true}).to_string(),
        ],
        _ => panic!("the tenancy matrix has no request for {method} {template}: add one"),
    };
    let query = match template {
        "/events/health" => format!("?stream={STREAM}"),
        "/api/streams/{stream}/events" if method == "GET" => "?limit=1000".to_owned(),
        "/api/streams/{stream}/groups/{group}/pending" => "?limit=1000".to_owned(),
        _ => String::new(),
    };
    let mut out: Vec<Req> = bodies
        .into_iter()
        .map(|body| Req {
            method: method.to_owned(),
            path: format!("{path}{query}"),
            body,
        })
        .collect();
    // A tenant's own stream, naming a's tenant or a's session.
    if (method, template) == ("POST", "/api/streams/{stream}/events") {
        for body in [
            json!({"type": "t", "tenant": "a"}),
            json!({"type": "t", "session": SESSION, "ts": 1}),
            json!({"type": "t", "stream": STREAM}),
        ] {
            out.push(Req {
                method: "POST".into(),
                path: "/api/streams/b:orders/events".into(),
                body: body.to_string(),
            });
        }
    }
    if template == "/events/health" {
        out.push(Req {
            method: "GET".into(),
            path: "/events/health".into(),
            body: String::new(),
        });
    }
    out
}

/// The ops of the socket protocol, as its docs' table lists them.
fn documented_socket_ops() -> BTreeSet<String> {
    include_str!("../../ingest/src/lib.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//! | `")?.split_once('`'))
        .map(|(op, _)| op.to_owned())
        .collect()
}

/// The ops of the live protocol, as its docs list them.
fn documented_live_ops() -> BTreeSet<String> {
    include_str!("../../fanout/src/protocol.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//! {\"op\":\""))
        .filter_map(|l| l.split_once('"'))
        .map(|(op, _)| op.to_owned())
        .collect()
}

/// The socket protocol's ops and events against `a`'s things.
fn socket_lines(ids: &Ids) -> Vec<(&'static str, String)> {
    let g = |op: &str, more: Value| {
        let mut v = json!({"op": op, "stream": STREAM, "group": BILLING});
        v.as_object_mut()
            .unwrap()
            .extend(more.as_object().unwrap().clone());
        v.to_string()
    };
    vec![
        (
            "create_group",
            g("create_group", json!({"group": "b-made", "start": "0"})),
        ),
        ("group", g("group", json!({}))),
        (
            "read",
            g("read", json!({"consumer": "b-intruder", "count": 100})),
        ),
        ("ack", g("ack", json!({"ids": ids.pending}))),
        (
            "nack",
            g(
                "nack",
                json!({"consumer": WORKER, "ids": ids.pending, "terminal": true}),
            ),
        ),
        (
            "claim",
            g("claim", json!({"consumer": "b-intruder", "min_idle_ms": 0})),
        ),
        ("pending", g("pending", json!({"count": 1000}))),
        ("event", json!({"type": "t", "stream": STREAM}).to_string()),
        ("event", json!({"type": "t", "tenant": "a"}).to_string()),
        (
            "event",
            json!({"type": "t", "session": SESSION, "ts": 1}).to_string(),
        ),
    ]
}

/// The live protocol's ops against `a`'s things.
fn live_ops() -> Vec<(&'static str, Value)> {
    let room = format!("session:{SESSION}");
    let delayed = format!("broadcast:session:{SESSION}");
    vec![
        (
            "hello",
            json!({"op": "hello", "role": "producer", "session": SESSION}),
        ),
        (
            "subscribe",
            json!({"op": "subscribe", "id": "x", "stream": STREAM, "from": "0-0"}),
        ),
        (
            "subscribe",
            json!({"op": "subscribe", "id": "y", "tenant": "a", "from": "0-0"}),
        ),
        ("unsubscribe", json!({"op": "unsubscribe", "id": "x"})),
        (
            "join",
            json!({"op": "join", "room": room, "stream": STREAM}),
        ),
        (
            "join",
            json!({"op": "join", "room": delayed, "stream": STREAM}),
        ),
        ("join", json!({"op": "join", "room": room})),
        ("leave", json!({"op": "leave", "room": room})),
        (
            "publish",
            json!({"op": "publish", "events": [{"type": "t", "stream": STREAM}]}),
        ),
        (
            "publish",
            json!({"op": "publish", "event": {"type": "t", "tenant": "a"}}),
        ),
        (
            "publish",
            json!({"op": "publish", "event": {"type": "t", "session": SESSION, "ts": 1}}),
        ),
        (
            "set_delay",
            json!({"op": "set_delay", "session": SESSION, "delay_ms": 0}),
        ),
        ("ping", json!({"op": "ping"})),
    ]
}

/// Calls made and what crossed from `a` to another caller.
#[derive(Default)]
struct Tally {
    calls: usize,
    crossings: Vec<String>,
}

impl Tally {
    /// Counts a call and records every marker of `a` its answer carries
    /// that its request did not.
    fn check(&mut self, what: &str, request: &str, answer: &str, markers: &[String]) {
        self.calls += 1;
        for m in markers {
            if answer.contains(m.as_str()) && !request.contains(m.as_str()) {
                self.crossings
                    .push(format!("{what}: the answer holds `{m}`: {answer}"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_or_op_lets_another_tenant_see_or_touch_a() {
    let d = daemon().await;
    let (ids, mut a_live, mut a_line) = seed(&d).await;
    let markers = ids.markers();
    let before = snapshot(&d).await;
    let mut tally = Tally::default();

    // Every HTTP route, with no token, a wrong one, and b's.
    let routes = routes(&d);
    let mut all = Vec::new();
    for (method, template) in &routes {
        all.extend(requests(method, template, &ids));
    }
    let open = ["/health", "/readyz"];
    for req in &all {
        for (who, token) in [("none", None), ("wrong", Some(WRONG)), ("b", Some(B))] {
            let (status, answer) = http(&d, &req.method, &req.path, token, &req.body).await;
            let what = format!(
                "{} {} {} as {who} -> {status}",
                req.method, req.path, req.body
            );
            if who != "b" && !open.contains(&req.path.as_str()) {
                assert_eq!(status, 401, "{what}: {answer}");
            }
            tally.check(
                &what,
                &format!("{} {}", req.path, req.body),
                &answer,
                &markers,
            );
            // No existence oracle: a's stream answers as one a does not have.
            if who == "b" && (req.path.contains(STREAM) || req.body.contains(STREAM)) {
                let (path, body) = (nowhere(&req.path), nowhere(&req.body));
                let (twin_status, twin) = http(&d, &req.method, &path, token, &body).await;
                tally.calls += 1;
                if (twin_status, nowhere(&answer)) != (status, twin.clone()) {
                    tally.crossings.push(format!(
                        "{what}: tells a's stream from a missing one: {answer} / {twin_status} {twin}"
                    ));
                }
            }
        }
    }
    let http_calls = tally.calls;

    // Every op of the socket protocol over TCP.
    let ops: BTreeSet<String> = socket_lines(&ids)
        .iter()
        .map(|(op, _)| (*op).to_owned())
        .filter(|op| *op != "event")
        .collect();
    assert_eq!(
        ops,
        documented_socket_ops(),
        "the matrix and the socket protocol's docs differ"
    );
    for (op, line) in socket_lines(&ids) {
        // No token: the first line must be a hello on TCP.
        let mut c = Line::open(&d).await;
        let answer = c.call(&line).await;
        tally.check(&format!("tcp {op} as none"), &line, &answer, &markers);
        let mut c = Line::open(&d).await;
        let answer = c
            .call(&json!({"hello": {"acks": true, "token": WRONG}}).to_string())
            .await;
        tally.check(&format!("tcp {op} as wrong"), &line, &answer, &markers);
    }
    let mut b_line = Line::open(&d).await;
    b_line
        .send(&json!({"hello": {"acks": true, "token": B}}).to_string())
        .await;
    for (op, line) in socket_lines(&ids) {
        let answer = b_line.call(&line).await;
        tally.check(&format!("tcp {op} {line} as b"), &line, &answer, &markers);
        if line.contains(STREAM) {
            let twin = b_line.call(&nowhere(&line)).await;
            tally.calls += 1;
            if nowhere(&answer) != twin {
                tally.crossings.push(format!(
                    "tcp {op} as b tells a's stream from a missing one: {answer} / {twin}"
                ));
            }
        }
    }
    let socket_calls = tally.calls - http_calls;

    // Every op of the live protocol, over WebSocket and over TCP.
    let live: BTreeSet<String> = live_ops().iter().map(|(op, _)| (*op).to_owned()).collect();
    assert_eq!(
        live,
        documented_live_ops(),
        "the matrix and the live protocol's docs differ"
    );
    for (op, msg) in live_ops() {
        for token in [None, Some(WRONG)] {
            assert_eq!(
                ws(&d, token).await.err(),
                Some(401),
                "/ws {op} as {token:?}"
            );
            tally.calls += 1;
            let mut c = Line::open(&d).await;
            let first = match token {
                None => msg.to_string(),
                Some(t) => json!({"hello": {"acks": true, "token": t}}).to_string(),
            };
            let answer = c.call(&first).await;
            tally.check(
                &format!("tcp live {op} as {token:?}"),
                &msg.to_string(),
                &answer,
                &markers,
            );
        }
    }
    let mut b_ws = ws(&d, Some(B)).await.unwrap();
    let mut b_live = Line::open(&d).await;
    b_live
        .send(&json!({"hello": {"acks": true, "token": B}}).to_string())
        .await;
    for (op, msg) in live_ops() {
        let request = msg.to_string();
        let over_ws = ws_call(&mut b_ws, &msg).await.join("\n");
        tally.check(
            &format!("ws {op} {request} as b"),
            &request,
            &over_ws,
            &markers,
        );
        let over_tcp = b_live.live_call(&msg).await.join("\n");
        tally.check(
            &format!("tcp live {op} {request} as b"),
            &request,
            &over_tcp,
            &markers,
        );
        if op == "hello" || op == "set_delay" {
            for answer in [over_ws, over_tcp] {
                assert!(answer.contains("session_taken"), "{op}: {answer}");
            }
        }
    }
    let live_calls = tally.calls - http_calls - socket_calls;

    // Whatever b's subscriptions and rooms would still deliver.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = ws_call(&mut b_ws, &json!({"op": "ping"})).await.join("\n");
    tally.check("b's WebSocket, afterwards", "", &late, &markers);
    let late = b_live.live_call(&json!({"op": "ping"})).await.join("\n");
    tally.check("b's TCP live connection, afterwards", "", &late, &markers);
    let after = snapshot(&d).await;
    if before != after {
        tally.crossings.push(format!(
            "a's state changed:\nbefore: {before:#}\nafter: {after:#}"
        ));
    }
    println!(
        "tenancy matrix: {} calls ({http_calls} HTTP over {} routes, {socket_calls} socket-protocol over {} ops, \
         {live_calls} live-protocol over {} ops), {} crossings",
        tally.calls,
        routes.len(),
        ops.len(),
        live.len(),
        tally.crossings.len()
    );
    assert!(
        tally.crossings.is_empty(),
        "{}",
        tally.crossings.join("\n\n")
    );
    // a's connections heard nothing of it all (their counts of messages
    // sent are in the snapshots too).
    for c in &mut a_live {
        let heard = ws_call(c, &json!({"op": "ping"})).await;
        assert!(heard.is_empty(), "a's connection got {heard:?}");
    }
    assert!(a_line.live_call(&json!({"op": "ping"})).await.is_empty());

    // The control: a may make every one of those calls, and sees its data.
    let mut seen = String::new();
    all.sort_by_key(|r| match r.method.as_str() {
        "GET" => 0,
        "POST" => 1,
        _ => 2,
    });
    for req in all
        .iter()
        .filter(|r| !r.path.contains("b:") && !r.body.contains("b:"))
    {
        let (status, answer) = http(&d, &req.method, &req.path, Some(A), &req.body).await;
        let what = format!(
            "{} {} {} as a -> {status}: {answer}",
            req.method, req.path, req.body
        );
        assert!(![401, 403, 405].contains(&status), "{what}");
        assert!(!answer.contains(r#""error":"not_found""#), "{what}");
        seen.push_str(&answer);
    }
    for m in [
        PAYLOAD,
        FAILURE,
        BILLING,
        AUDIT,
        WORKER,
        PIT,
        r#""tenant":"a""#,
    ] {
        assert!(seen.contains(m), "a's own answers never showed `{m}`");
    }
}
