//! A harness: the real router on a 127.0.0.1:0 listener over a memory
//! store, and a small HTTP/1.1 client.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use busbar_api::HttpConfig;
use busbar_engine::{Auth, Engine, EngineConfig, Scope, TokenSpec};
use busbar_store::memory::MemoryStore;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper::{HeaderMap, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What a test server runs with.
#[derive(Default)]
pub struct Setup {
    pub tokens: Vec<TokenSpec>,
    pub http: HttpConfig,
    pub engine: EngineConfig,
}

/// The tokens most auth tests use.
pub fn tokens() -> Vec<TokenSpec> {
    let token = |name: &str, scopes: &[Scope], tenant: Option<&str>| TokenSpec {
        name: name.into(),
        secret: format!("{name}-secret"),
        scopes: scopes.to_vec(),
        tenant: tenant.map(Into::into),
    };
    vec![
        token("ops", &[Scope::Admin, Scope::Publish, Scope::Consume], None),
        token("acme", &[Scope::Publish, Scope::Consume], Some("acme")),
        token("reader", &[Scope::Consume], None),
    ]
}

pub struct Server {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn open() -> Server {
        Server::start(Setup::default()).await
    }

    pub async fn start(setup: Setup) -> Server {
        Server::start_over(Arc::new(MemoryStore::new()), setup).await
    }

    /// A server over `store`.
    pub async fn start_over(store: Arc<dyn busbar_store::Store>, setup: Setup) -> Server {
        let engine = Engine::builder(store)
            .auth(Auth::new(setup.tokens))
            .config(setup.engine)
            .build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(busbar_api::serve(
            listener,
            engine.clone(),
            setup.http,
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            addr,
            engine,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn get(&self, path: &str) -> Call {
        self.call("GET", path)
    }

    pub fn post(&self, path: &str) -> Call {
        self.call("POST", path)
    }

    pub fn delete(&self, path: &str) -> Call {
        self.call("DELETE", path)
    }

    pub fn call(&self, method: &str, path: &str) -> Call {
        Call {
            addr: self.addr,
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            chunked: false,
        }
    }

    /// Stops the server gracefully and checks it exited cleanly.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One request being built.
pub struct Call {
    addr: SocketAddr,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
}

impl Call {
    pub fn token(self, secret: &str) -> Call {
        self.header("authorization", &format!("Bearer {secret}"))
    }

    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Call {
        self.body = body.into();
        self
    }

    pub fn json(self, value: &Value) -> Call {
        self.header("content-type", "application/json")
            .body(value.to_string())
    }

    pub fn ndjson(self, lines: &str) -> Call {
        self.header("content-type", "application/x-ndjson")
            .body(lines)
    }

    /// Sends the body with chunked transfer encoding (no length up front).
    pub fn chunked(mut self) -> Call {
        self.chunked = true;
        self
    }

    pub async fn send(self) -> Reply {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut request = Request::builder()
            .method(self.method.as_str())
            .uri(self.path.as_str())
            .header("host", self.addr.to_string());
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let body = if self.chunked {
            let chunks = self.body.chunks(1024).map(Bytes::copy_from_slice).collect();
            Chunks(chunks).boxed()
        } else {
            Full::new(Bytes::from(self.body)).boxed()
        };
        let response = sender
            .send_request(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// A body of unknown length, sent chunked.
struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The error reason of an error reply.
    pub fn reason(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        self
    }
}

/// The ids of a 201 publish reply.
pub fn ids(reply: &Reply) -> Vec<String> {
    reply.json()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The `type` of each event of a read reply.
pub fn types(reply: &Reply) -> Vec<String> {
    reply.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}
