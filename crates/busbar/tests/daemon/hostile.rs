//! Hostile clients against the real daemon: a crowd of silent, slowloris
//! and unauthenticated connections must not lock out a legitimate
//! producer on any transport; every limit answers with its reason and
//! shows in `/metrics`; deadlines close what holds a slot for nothing.
//!
//! The crowd connects from 127.0.0.2 (any 127.x address is loopback on
//! Linux), the legitimate producer from 127.0.0.1, so the per-peer limits
//! tell them apart as they would tell an attacker's address from a
//! customer's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{eventually, http, options, start_in, Daemon};

const TOKEN: &str = "producer-secret";

fn config(extra: &str) -> String {
    config_with("2s", extra)
}

fn config_with(first_line_timeout: &str, extra: &str) -> String {
    format!(
        r#"
[[auth.tokens]]
name = "producer"
secret = "{TOKEN}"
scopes = ["publish", "consume", "admin"]

[ingest]
first_line_timeout = "{first_line_timeout}"
max_unauthenticated = 64
max_unauthenticated_per_peer = 16

[http]
header_timeout = "2s"
body_timeout = "2s"
{extra}
"#
    )
}

/// Raises this process's open-file limit to its hard limit (the crowd
/// needs a descriptor per connection).
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only touch the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// A TCP connection to `to` from 127.0.0.2.
fn from_elsewhere(to: SocketAddr) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .ok()?;
    socket
        .connect_timeout(&to.into(), Duration::from_secs(2))
        .ok()?;
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    Some(stream)
}

fn tcp_addr(d: &Daemon) -> SocketAddr {
    d.addresses().tcp
}

fn http_addr(d: &Daemon) -> SocketAddr {
    d.addresses().http
}

fn metric(d: &Daemon, prefix: &str) -> f64 {
    let text = d.metrics_as(Some(TOKEN)).unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Publishes one event with acks over each transport as the legitimate
/// producer and returns how long each took.
fn legitimate_round(d: &Daemon, n: usize) -> Vec<(&'static str, Duration)> {
    let mut took = Vec::new();
    let line = |via: &str| format!(r#"{{"type":"legit","via":"{via}","n":{n}}}"#);
    // Unix socket: trusted.
    let started = Instant::now();
    let mut unix = d.unix().unwrap();
    writeln!(unix, r#"{{"hello":{{"acks":true}}}}"#).unwrap();
    writeln!(unix, "{}", line("unix")).unwrap();
    unix.shutdown(Shutdown::Write).unwrap();
    let answer = BufReader::new(unix).lines().next().unwrap().unwrap();
    assert!(answer.contains("\"id\""), "unix: {answer}");
    took.push(("unix", started.elapsed()));
    // TCP with a token, from 127.0.0.1.
    let started = Instant::now();
    let mut tcp = d.tcp().unwrap();
    writeln!(tcp, r#"{{"hello":{{"acks":true,"token":"{TOKEN}"}}}}"#).unwrap();
    writeln!(tcp, "{}", line("tcp")).unwrap();
    tcp.shutdown(Shutdown::Write).unwrap();
    let answer = BufReader::new(tcp).lines().next().unwrap().unwrap();
    assert!(answer.contains("\"id\""), "tcp: {answer}");
    took.push(("tcp", started.elapsed()));
    // HTTP.
    let started = Instant::now();
    let (status, body) = http(
        d,
        "POST",
        "/api/streams/events/events",
        Some(TOKEN),
        Some(line("http").as_bytes()),
    );
    assert_eq!(status, 201, "http: {body}");
    took.push(("http", started.elapsed()));
    // WebSocket publish.
    let started = Instant::now();
    let url = format!("ws://{}/ws?token={TOKEN}", http_addr(d));
    let (mut ws, _) = tungstenite::connect(url).expect("WebSocket connects");
    let publish =
        json!({"op": "publish", "ref": 1, "event": {"type": "legit", "via": "ws", "n": n}});
    ws.send(tungstenite::Message::Text(publish.to_string().into()))
        .unwrap();
    loop {
        let msg = ws.read().unwrap();
        if let tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["type"], "ack", "ws: {v}");
            break;
        }
    }
    let _ = ws.close(None);
    took.push(("ws", started.elapsed()));
    took
}

#[test]
fn a_crowd_of_silent_slow_and_unauthenticated_connections_locks_nobody_out() {
    raise_open_files();
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options().config(&config("")));
    // 2,000 hostile connections: silent TCP (no hello), silent HTTP, HTTP
    // slowloris (headers one byte at a time), TCP trickling a hello that
    // never ends, and silent Unix-socket connections.
    let mut crowd: Vec<TcpStream> = Vec::new();
    let mut slow: Vec<TcpStream> = Vec::new();
    let mut unix = Vec::new();
    for i in 0..2000 {
        match i % 5 {
            0 => crowd.extend(from_elsewhere(tcp_addr(&d))),
            1 => crowd.extend(from_elsewhere(http_addr(&d))),
            2 => {
                if let Some(mut s) = from_elsewhere(http_addr(&d)) {
                    let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n");
                    slow.push(s);
                }
            }
            3 => {
                if let Some(mut s) = from_elsewhere(tcp_addr(&d)) {
                    let _ = s.write_all(b"{\"hello\":{\"acks\":tr");
                    slow.push(s);
                }
            }
            _ => unix.extend(d.unix().ok()),
        }
    }
    // While the crowd holds on (and trickles), the legitimate producer is
    // served on every transport, promptly.
    let trickle = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            for s in &mut slow {
                let _ = s.write_all(b"x");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        slow
    });
    for n in 0..3 {
        for (via, took) in legitimate_round(&d, n) {
            assert!(
                took < Duration::from_secs(5),
                "{via} took {took:?} with the crowd connected"
            );
        }
    }
    let slow = trickle.join().unwrap();
    // The limits answered with their reasons.
    let text = d.metrics_as(Some(TOKEN)).unwrap();
    for line in [
        r#"busbar_connections_rejected_total{transport="tcp",reason="too_many_from_peer"}"#,
        r#"busbar_connections_rejected_total{transport="tcp",reason="too_many_unauthenticated"}"#,
        r#"busbar_connections_rejected_total{transport="http",reason="too_many_from_peer"}"#,
    ] {
        assert!(text.contains(line), "no {line} in /metrics:\n{text}");
    }
    // The deadlines close what holds a slot for nothing: every hostile TCP
    // and HTTP connection is closed by the daemon (EOF or a reset).
    for mut s in crowd.into_iter().chain(slow) {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut sink = [0u8; 4096];
        loop {
            match s.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    eventually("the crowd's TCP and HTTP connections to be closed", || {
        metric(&d, r#"busbar_connections{transport="tcp"}"#) == 0.0
            && metric(&d, r#"busbar_connections{transport="http"}"#) <= 1.0
    });
    assert!(
        metric(
            &d,
            "busbar_connection_timeouts_total{transport=\"http\",deadline=\"header\"}"
        ) > 0.0
    );
    assert!(
        metric(
            &d,
            "busbar_connection_timeouts_total{transport=\"tcp\",deadline=\"first_line\"}"
        ) > 0.0
    );
    assert_eq!(metric(&d, "busbar_unauthenticated_connections"), 0.0);
    // Silent Unix-socket clients are closed by the first-line deadline too.
    for mut s in unix {
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.contains("first_line_timeout"), "{answer}");
    }
    // Nothing the legitimate producer was acknowledged for is missing.
    let (_, events) = http(
        &d,
        "GET",
        "/api/streams/events/events?limit=100",
        Some(TOKEN),
        None,
    );
    assert_eq!(events["events"].as_array().unwrap().len(), 12, "{events}");
}

#[test]
fn a_trickled_body_gets_408_and_a_silent_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options().config(&config("")));
    let mut s = TcpStream::connect(http_addr(&d)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!(
            "POST /api/streams/s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: 100\r\n\r\n{{\"type\""
        )
        .as_bytes(),
    )
    .unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(8));
    // A connection that sends nothing at all is closed by the header
    // deadline, with nothing to say.
    let mut silent = TcpStream::connect(http_addr(&d)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut nothing = Vec::new();
    let _ = silent.read_to_end(&mut nothing);
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(
        metric(
            &d,
            "busbar_connection_timeouts_total{transport=\"http\",deadline=\"header\"}"
        ) >= 1.0
    );
}

#[test]
fn the_descriptor_budget_degrades_one_listener_and_spares_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(
        dir.path(),
        &options().config(&config_with("30s", "[listen]\nmax_connections = 16\n")),
    );
    // Each of the four listeners gets a share of four: TCP's is spent.
    let held: Vec<TcpStream> = (0..4).map(|_| d.tcp().unwrap()).collect();
    eventually("four connections held", || {
        metric(&d, r#"busbar_connections{transport="tcp"}"#) == 4.0
    });
    // The fifth is refused with the reason...
    let mut tcp = d.tcp().unwrap();
    let mut line = String::new();
    BufReader::new(&mut tcp).read_line(&mut line).unwrap();
    assert!(line.contains("out_of_descriptors"), "{line}");
    // ...and only TCP is degraded: HTTP, the Unix socket and WebSocket
    // still serve, and /metrics says what happened.
    let text = d.metrics_as(Some(TOKEN)).unwrap();
    assert!(
        text.contains(
            r#"busbar_connections_rejected_total{transport="tcp",reason="out_of_descriptors"} 1"#
        ),
        "{text}"
    );
    let mut unix = d.unix().unwrap();
    writeln!(unix, r#"{{"hello":{{"acks":true}}}}"#).unwrap();
    writeln!(unix, r#"{{"type":"t"}}"#).unwrap();
    unix.shutdown(Shutdown::Write).unwrap();
    let answer = BufReader::new(unix).lines().next().unwrap().unwrap();
    assert!(answer.contains("\"id\""), "{answer}");
    let url = format!("ws://{}/ws?token={TOKEN}", http_addr(&d));
    let (mut ws, _) = tungstenite::connect(url).expect("WebSocket connects");
    ws.send(tungstenite::Message::Text(r#"{"op":"ping"}"#.into()))
        .unwrap();
    assert!(matches!(ws.read().unwrap(), tungstenite::Message::Text(t) if t.contains("pong")));
    // The command socket is not in the budget: operators can always look.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(["cmd", "health", "--socket"])
        .arg(&d.addresses().commands_socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Slots come back as connections close.
    drop(held);
    eventually("TCP to be served again", || {
        let mut tcp = d.tcp().unwrap();
        let _ = writeln!(tcp, r#"{{"hello":{{"acks":true,"token":"{TOKEN}"}}}}"#);
        let _ = writeln!(tcp, r#"{{"type":"t"}}"#);
        let _ = tcp.shutdown(Shutdown::Write);
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        answer.contains("\"id\"")
    });
}
