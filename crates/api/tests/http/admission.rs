//! Admission hooks over HTTP: a refused publish, read or connection is a
//! 503 with the reason and `Retry-After`, and the server goes on.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{Admit, Hook, Refusal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::Server;

/// Refuses one kind of request at a time (0: nothing).
#[derive(Default)]
struct Switch(AtomicU8);

const NOTHING: u8 = 0;
const PUBLISH: u8 = 1;
const READ: u8 = 2;
const CONNECT: u8 = 3;

impl Hook for Switch {
    fn name(&self) -> &'static str {
        "switch"
    }

    fn admit(&self, request: &Admit<'_>) -> Result<(), Refusal> {
        let refused = match request {
            Admit::Publish { .. } => PUBLISH,
            Admit::Read { .. } => READ,
            Admit::Connect { .. } => CONNECT,
            _ => NOTHING,
        };
        if self.0.load(Ordering::Relaxed) != refused {
            return Ok(());
        }
        if refused == READ {
            return Err(Refusal::Paused {
                reason: "delivery is stopped".into(),
            });
        }
        Err(Refusal::Overloaded {
            reason: "memory is critical".into(),
            retry_after: Duration::from_millis(2500),
        })
    }
}

#[tokio::test]
async fn refused_requests_are_503_with_retry_after_and_nothing_is_stored() {
    let s = Server::open().await;
    let switch = Arc::new(Switch::default());
    s.engine.add_hook(switch.clone());

    switch.0.store(PUBLISH, Ordering::Relaxed);
    let r = s
        .post("/api/streams/orders/events")
        .json(&serde_json::json!({"type": "t"}))
        .send()
        .await
        .expect(503);
    assert_eq!(r.reason(), "overloaded");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("memory is critical"));
    assert_eq!(r.headers["retry-after"], "3", "2.5 s rounds up");
    s.get("/api/streams/orders").send().await.expect(404);

    switch.0.store(READ, Ordering::Relaxed);
    s.post("/api/streams/orders/events")
        .json(&serde_json::json!({"type": "t"}))
        .send()
        .await
        .expect(201);
    let r = s.get("/api/streams/orders/events").send().await.expect(503);
    assert_eq!(r.reason(), "paused");
    assert_eq!(r.headers["retry-after"], "1");

    switch.0.store(NOTHING, Ordering::Relaxed);
    let r = s.get("/api/streams/orders/events").send().await.expect(200);
    assert_eq!(r.json()["events"].as_array().unwrap().len(), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn a_refused_connection_gets_a_503_and_is_closed() {
    let s = Server::open().await;
    let switch = Arc::new(Switch::default());
    s.engine.add_hook(switch.clone());
    switch.0.store(CONNECT, Ordering::Relaxed);
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    // The answer comes without a request: the connection is never served.
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut answer))
        .await
        .expect("the refusal arrives and the connection closes")
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Retry-After: 3\r\n"), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"], "overloaded");
    let _ = conn.shutdown().await;
    let m = s.engine.metrics();
    assert_eq!(m.admission_refused.get(["connect", "overloaded"]).get(), 1);
    assert_eq!(
        m.connections.get(["http"]).get(),
        0,
        "never counted as open"
    );
    // Admitted again, the server serves as before and counts the connection.
    switch.0.store(NOTHING, Ordering::Relaxed);
    s.get("/health").send().await.expect(200);
    s.shutdown().await;
}
