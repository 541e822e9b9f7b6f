//! Handing a connection to the live hub: what comes before the live op is
//! answered first, the hub gets every byte after it, and without a hub the
//! op is refused while the connection goes on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{Auth, Engine, EngineConfig, Principal, Scope, TokenSpec};
use busbar_ingest::{Ingest, IngestOptions, LiveConnection, LiveUpgrade};
use busbar_listen::{bind_tcp, bind_unix};
use busbar_store::memory::MemoryStore;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;

/// A stand-in hub: says who it got, then echoes the buffered bytes and
/// everything read after them.
struct Echo;

impl LiveUpgrade for Echo {
    fn upgrade(
        self: Arc<Self>,
        mut conn: LiveConnection,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let who = match &conn.principal {
                Principal::Trusted => "trusted".to_owned(),
                p => p.tenant().unwrap_or("open").to_owned(),
            };
            let head = serde_json::json!({
                "hub": who,
                "transport": conn.transport.as_str(),
                "remote": conn.remote,
            });
            let mut out = format!("{head}\n").into_bytes();
            out.extend_from_slice(&conn.buffered);
            conn.writer.write_all(&out).await.unwrap();
            tokio::io::copy(&mut conn.reader, &mut conn.writer)
                .await
                .unwrap();
            conn.writer.shutdown().await.unwrap();
        })
    }
}

struct Server {
    tcp: std::net::SocketAddr,
    unix: std::path::PathBuf,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn start(tokens: Vec<TokenSpec>, hub: bool) -> Server {
    let engine = Engine::builder(Arc::new(MemoryStore::new()))
        .auth(Auth::new(tokens))
        .config(EngineConfig::default())
        .build();
    let dir = tempfile::tempdir().unwrap();
    let unix = dir.path().join("events.sock");
    let socket = bind_unix(&unix, 0o600).unwrap();
    let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let tcp = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let mut ingest = Ingest::new(engine, IngestOptions::default(), rx);
    if hub {
        ingest = ingest.with_live(Arc::new(Echo));
    }
    let i2 = ingest.clone();
    tokio::spawn(async move { ingest.serve_unix(socket).await });
    tokio::spawn(async move { i2.serve_tcp(listener).await });
    Server {
        tcp,
        unix,
        _stop: stop,
        _dir: dir,
    }
}

/// Writes `input`, half-closes, and returns every line read back.
async fn exchange<S>(s: S, input: &str) -> Vec<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (r, mut w) = tokio::io::split(s);
    w.write_all(input.as_bytes()).await.unwrap();
    w.shutdown().await.unwrap();
    let mut lines = BufReader::new(r).lines();
    let mut out = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .expect("answers within 5s")
        .unwrap()
    {
        out.push(line);
    }
    out
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[tokio::test]
async fn without_a_hub_a_live_op_is_refused_and_the_connection_goes_on() {
    let s = start(vec![], false).await;
    let c = UnixStream::connect(&s.unix).await.unwrap();
    let lines = exchange(
        c,
        "{\"op\":\"subscribe\",\"id\":\"a\",\"stream\":\"orders\"}\n{\"type\":\"t\"}\n",
    )
    .await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let refused = json(&lines[0]);
    assert_eq!(refused["error"], "unsupported");
    assert!(
        refused["message"].as_str().unwrap().contains("subscribe"),
        "{refused}"
    );
    assert!(json(&lines[1])["id"].is_string(), "the next line is served");
}

#[tokio::test]
async fn lines_before_the_live_op_are_answered_first_and_the_hub_gets_the_rest() {
    let s = start(vec![], true).await;
    let c = UnixStream::connect(&s.unix).await.unwrap();
    // One write: the live op and what follows it arrive with the events.
    let input = concat!(
        "{\"hello\":{\"acks\":true}}\n",
        "{\"type\":\"a\"}\n",
        "{\"op\":\"group\",\"group\":\"none\"}\n",
        "{\"type\":\"b\"}\n",
        "{\"op\":\"join\",\"room\":\"session:s1\"}\n",
        "{\"op\":\"ping\"}\n",
        "{\"type\":\"not an event any more\"}\n",
        "partial line without newline",
    );
    let lines = exchange(c, input).await;
    assert_eq!(lines.len(), 8, "{lines:?}");
    assert!(json(&lines[0])["id"].is_string());
    assert_eq!(json(&lines[1])["error"], "no_such_group");
    assert!(json(&lines[2])["id"].is_string());
    let hub = json(&lines[3]);
    assert_eq!(hub["hub"], "trusted");
    assert_eq!(hub["transport"], "unix");
    assert!(hub["remote"].as_str().unwrap().starts_with("unix"), "{hub}");
    assert_eq!(
        &lines[4..],
        [
            "{\"op\":\"join\",\"room\":\"session:s1\"}",
            "{\"op\":\"ping\"}",
            "{\"type\":\"not an event any more\"}",
            "partial line without newline",
        ]
    );
}

#[tokio::test]
async fn a_live_op_first_switches_at_once_and_keeps_the_token_principal() {
    let token = TokenSpec {
        name: "acme".into(),
        secret: "acme-secret".into(),
        scopes: vec![Scope::Publish, Scope::Consume],
        tenant: Some("acme".into()),
    };
    let s = start(vec![token], true).await;
    let c = TcpStream::connect(s.tcp).await.unwrap();
    let lines = exchange(
        c,
        "{\"hello\":{\"token\":\"acme-secret\"}}\n{\"op\":\"subscribe\",\"id\":\"x\"}\n",
    )
    .await;
    let hub = json(&lines[0]);
    assert_eq!(hub["hub"], "acme");
    assert_eq!(hub["transport"], "tcp");
    assert!(hub["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(lines[1], "{\"op\":\"subscribe\",\"id\":\"x\"}");

    // Without a token, TCP refuses the connection before any hand-over.
    let c = TcpStream::connect(s.tcp).await.unwrap();
    let lines = exchange(c, "{\"op\":\"subscribe\",\"id\":\"x\"}\n").await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(json(&lines[0])["error"], "unauthenticated");
}

#[tokio::test]
async fn a_connection_that_does_not_answer_is_not_handed_over() {
    let s = start(vec![], true).await;
    let mut c = UnixStream::connect(&s.unix).await.unwrap();
    c.write_all(b"{\"type\":\"t\"}\n{\"op\":\"subscribe\",\"id\":\"a\"}\n")
        .await
        .unwrap();
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}
