//! The live protocol on the daemon's Unix socket and TCP port: a
//! connection switches at its first live op and is then served like a
//! `/ws` client, one message per line.

use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{
    eventually, http, options, publish, read_all, start_in, stop, Daemon, Transport,
};
use crate::TOKENS;

/// One connection: lines in, lines out.
struct Client<S: std::io::Read + Write> {
    reader: BufReader<S>,
    writer: S,
}

impl Client<std::os::unix::net::UnixStream> {
    fn unix(d: &Daemon) -> Self {
        let s = d.unix().unwrap();
        Client {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }
}

impl Client<std::net::TcpStream> {
    fn tcp(d: &Daemon) -> Self {
        let s = d.tcp().unwrap();
        Client {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }
}

impl<S: std::io::Read + Write> Client<S> {
    fn send(&mut self, v: Value) {
        self.writer.write_all(format!("{v}\n").as_bytes()).unwrap();
    }

    /// The next line as JSON; `None` once the daemon closed.
    fn next(&mut self) -> Option<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .expect("a line before the read timeout");
        (n > 0).then(|| serde_json::from_str(&line).unwrap())
    }

    fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let v = self.next().expect("open");
            if v["type"] == kind {
                return v;
            }
        }
    }
}

#[test]
fn subscribe_on_the_unix_socket_from_an_id_while_tcp_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let lines: Vec<String> = (0..200)
        .map(|n| format!(r#"{{"type":"t","stream":"orders","n":{n}}}"#))
        .collect();
    let first = publish(&d, Transport::Tcp, None, &lines);
    let start = first[50].id().to_owned();

    let publisher = {
        let lines = lines.clone();
        let tcp = d.tcp().unwrap();
        std::thread::spawn(move || {
            let mut tcp = tcp;
            tcp.write_all(b"{\"hello\":{\"acks\":true}}\n").unwrap();
            let mut acks = BufReader::new(tcp.try_clone().unwrap());
            for _ in 0..10 {
                let chunk: String = lines.iter().map(|l| format!("{l}\n")).collect();
                tcp.write_all(chunk.as_bytes()).unwrap();
                for _ in 0..lines.len() {
                    let mut ack = String::new();
                    acks.read_line(&mut ack).unwrap();
                }
            }
        })
    };
    let mut c = Client::unix(&d);
    c.send(json!({"op":"hello","role":"dashboard"}));
    c.send(json!({"op":"subscribe","id":"a","stream":"orders","from":start}));
    let mut got = Vec::new();
    while got.len() < 150 + 2000 {
        let v = c.next_of("event");
        got.push(v["event"]["id"].as_str().unwrap().to_owned());
    }
    publisher.join().unwrap();
    let all: Vec<String> = read_all(&d, "orders", None)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .skip(50)
        .collect();
    assert_eq!(got, all, "no gap, no duplicate");

    let (_, sockets) = http(&d, "GET", "/api/ops/sockets", None, None);
    let me = &sockets["sockets"][0];
    assert_eq!(me["transport"], "unix", "{sockets}");
    assert_eq!(me["role"], "dashboard");
    assert_eq!(me["subscriptions"], 1);
}

#[test]
fn a_tcp_subscriber_that_vanishes_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let mut c = Client::tcp(&d);
    c.send(json!({"op":"join","room":"session:car7","stream":"telemetry"}));
    c.next_of("joined");
    c.send(json!({"op":"subscribe","id":"all","stream":"telemetry"}));
    c.next_of("subscribed");
    let frame = r#"{"type":"frame","stream":"telemetry","session":"car7","rpm":9000}"#;
    publish(&d, Transport::Unix, None, &[frame.to_owned()]);
    let got = c.next_of("event");
    assert_eq!(got["event"]["data"]["rpm"], 9000);

    let (_, rooms) = http(&d, "GET", "/api/ops/rooms", None, None);
    assert_eq!(rooms["rooms"]["session:car7"], 1, "{rooms}");
    let text = d.metrics().unwrap();
    assert!(
        text.contains("busbar_ws_clients{transport=\"tcp\",role=\"consumer\"} 1"),
        "{text}"
    );
    // Gone without a word.
    drop(c);
    eventually("the socket to be gone", || {
        let (_, sockets) = http(&d, "GET", "/api/ops/sockets", None, None);
        let (_, rooms) = http(&d, "GET", "/api/ops/rooms", None, None);
        sockets["sockets"].as_array().unwrap().is_empty()
            && rooms["rooms"].as_object().unwrap().is_empty()
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.metrics().unwrap().contains("busbar_live_feeds 0") {
        assert!(Instant::now() < deadline, "{}", d.metrics().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!d
        .metrics()
        .unwrap()
        .contains("busbar_ws_clients{transport=\"tcp\""));
}

#[test]
fn tcp_subscriptions_are_bound_to_the_hello_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options().config(TOKENS));
    let mut c = Client::tcp(&d);
    c.send(json!({"hello":{"acks":true,"token":"acme-secret-0123"}}));
    // Acked as an ingest line, then the switch.
    c.send(json!({"type":"before"}));
    let before = c.next().unwrap()["id"].as_str().unwrap().to_owned();
    c.send(json!({"op":"subscribe","id":"x","stream":"globex:events"}));
    let refused = c.next().unwrap();
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["error"], "wrong_tenant");
    c.send(json!({"op":"subscribe","id":"mine","from":before}));
    let first = c.next_of("event");
    assert_eq!(first["event"]["id"], before.as_str());
    assert_eq!(first["event"]["stream"], "acme:events");

    // Without the token TCP refuses before any switch.
    let mut anonymous = Client::tcp(&d);
    anonymous.send(json!({"op":"subscribe","id":"x"}));
    assert_eq!(anonymous.next().unwrap()["error"], "unauthenticated");
    assert!(anonymous.next().is_none());
}

#[test]
fn the_end_of_a_socket_clients_input_answers_then_closes() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let mut c = Client::unix(&d);
    c.send(json!({"op":"publish","ref":1,"events":[{"type":"a"},{"type":"b"}]}));
    c.send(json!({"op":"nope"}));
    c.writer.shutdown(Shutdown::Write).unwrap();
    let ack = c.next().unwrap();
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["ids"].as_array().unwrap().len(), 2);
    assert_eq!(c.next().unwrap()["error"], "bad_message");
    assert!(c.next().is_none(), "closed after the answers");
    assert_eq!(read_all(&d, "events", None).len(), 2);
}

#[test]
fn an_open_socket_subscriber_does_not_hold_up_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let mut c = Client::unix(&d);
    c.send(json!({"op":"subscribe","id":"a","stream":"quiet"}));
    c.next_of("subscribed");
    let started = Instant::now();
    let status = stop(d);
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(c.next().is_none(), "the daemon closed the connection");
}

/// With nobody connected, `busbar_ws_clients` is there at 0 for every
/// role, so an alert on `== 0` can fire.
#[test]
fn ws_clients_are_reported_at_zero_when_nobody_is_connected() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let text = d.metrics().unwrap();
    for role in ["producer", "dashboard", "overlay", "consumer"] {
        let line = format!("busbar_ws_clients{{transport=\"ws\",role=\"{role}\"}} 0");
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
}
