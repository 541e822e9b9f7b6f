//! The live hub through the daemon: `/ws` on the HTTP listener, sessions
//! from socket ingest, and shutdown with WebSockets open.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{http, options, start_in, stop, Daemon};

type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

fn connect(d: &Daemon) -> Ws {
    let url = d.http_url().replacen("http://", "ws://", 1) + "/ws";
    let (ws, _) = tungstenite::connect(url).expect("websocket");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    ws
}

fn send(ws: &mut Ws, v: Value) {
    ws.send(tungstenite::Message::Text(v.to_string().into()))
        .unwrap();
}

fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        if let tungstenite::Message::Text(t) = ws.read().expect("message") {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == kind {
                return v;
            }
        }
    }
}

#[test]
fn websocket_rooms_receive_socket_ingest_and_shutdown_closes_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let mut dash = connect(&d);
    send(
        &mut dash,
        serde_json::json!({"op":"hello","role":"dashboard"}),
    );
    send(
        &mut dash,
        serde_json::json!({"op":"join","room":"session:car7","stream":"telemetry"}),
    );
    next_of(&mut dash, "joined");

    let ts = busbar_event_now() - 250;
    let line = format!(
        r#"{{"type":"frame","stream":"telemetry","session":"car7","ts":{ts},"rpm":11000}}"#
    );
    let mut s = d.unix().unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    drop(s);
    let got = next_of(&mut dash, "event");
    assert_eq!(got["event"]["session"], "car7");
    assert_eq!(got["event"]["data"]["rpm"], 11000);

    let (status, sessions) = http(&d, "GET", "/api/ops/sessions", None, None);
    assert_eq!(status, 200);
    let s0 = &sessions["sessions"][0];
    assert_eq!(
        (s0["sessionId"].as_str(), s0["frames"].as_u64()),
        (Some("car7"), Some(1))
    );
    assert!(s0["driftP95"].as_u64().unwrap() >= 200);
    let (_, sockets) = http(&d, "GET", "/api/ops/sockets", None, None);
    assert_eq!(sockets["sockets"][0]["role"], "dashboard");
    assert_eq!(sockets["sockets"][0]["joinedRooms"][0], "session:car7");

    // An open WebSocket does not hold shutdown up.
    let started = Instant::now();
    let status = stop(d);
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn busbar_event_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
