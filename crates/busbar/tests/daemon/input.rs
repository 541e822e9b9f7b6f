//! Input limits at the door: what the daemon refuses, it refuses on every
//! transport with a reason; what it accepts, every reader it ships reads
//! back (HTTP range and group reads, `busbar range` and `--json`, `busbar
//! groups consume`, group reads on a socket, WebSocket subscriptions), and
//! a strict parser (serde_json into a `Value`) reads each answer. An event
//! stored before the limits existed is named by the CLI, not hidden.

use std::process::Output;
use std::time::Duration;

use busbar_event::{EventBatch, NewEvent, StreamName};
use busbar_store::embedded::{EmbeddedConfig, EmbeddedStore};
use busbar_store::{AppendOptions, Store};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::group_client::{create_group, deliveries, read_op, Conn};
use crate::harness::{options, publish, start_in, Answer, Daemon, Transport};

type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

/// `{"d":…}` nested so that the event is `depth` deep (its object is 1).
fn nested(depth: usize) -> String {
    let n = depth - 1;
    format!(r#""d":{}1{}"#, "[".repeat(n), "]".repeat(n))
}

/// Payload members busbar must accept and every reader read back.
fn hostile_but_valid() -> Vec<(&'static str, String)> {
    vec![
        ("deepest", nested(64)),
        (
            "deepest-empty",
            format!(r#""d":{}{{}}{}"#, "[".repeat(62), "]".repeat(62)),
        ),
        (
            "numbers",
            concat!(
                r#""n":[1234567890123456789012345678901234567890,"#,
                r#"-1234567890.123456789012345678901234567890,1.7976931348623157e308,"#,
                r#"-1.7976931348623157e308,5e-324,1e-400,0e9999,-0.0,1E+2,-0]"#
            )
            .to_owned(),
        ),
        (
            "strings",
            r#""s":"\ud83d\ude00 \u00e9 \"q\" \\ \/ \n\t\u0000 é 😀","":1,"a b":{"\u0000":[]}"#
                .to_owned(),
        ),
        ("duplicates", r#""dup":1,"dup":[2]"#.to_owned()),
    ]
}

/// Payload members busbar must refuse, with the reason.
fn invalid() -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("too-deep", nested(65), "too_deep"),
        ("far-too-deep", nested(100_000), "too_deep"),
        (
            "empty-too-deep",
            format!(r#""d":{}[]{}"#, "[".repeat(63), "]".repeat(63)),
            "too_deep",
        ),
        ("overflow", r#""n":1e999999"#.to_owned(), "invalid_number"),
        (
            "edge-overflow",
            r#""n":1.7976931348623159e308"#.to_owned(),
            "invalid_number",
        ),
        (
            "negative-overflow",
            r#""n":[-1e309]"#.to_owned(),
            "invalid_number",
        ),
        (
            "long-integer",
            format!(r#""n":{}"#, "9".repeat(100_000)),
            "invalid_number",
        ),
        (
            "41-digits",
            format!(r#""n":{}"#, "1".repeat(41)),
            "invalid_number",
        ),
        (
            "long-exponent",
            r#""n":1e-00001"#.to_owned(),
            "invalid_number",
        ),
        ("lone-high", r#""s":"\ud800""#.to_owned(), "malformed_json"),
        (
            "lone-low",
            r#""s":"\udc00\ud800""#.to_owned(),
            "malformed_json",
        ),
    ]
}

fn line(stream: &str, ty: &str, members: &str) -> String {
    format!(r#"{{"type":"{ty}","stream":"{stream}",{members}}}"#)
}

fn ws(d: &Daemon) -> Ws {
    let url = d.http_url().replacen("http://", "ws://", 1) + "/ws";
    let (ws, _) = tungstenite::connect(url).expect("websocket");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    ws
}

/// The next message of one of `kinds`, parsed strictly.
fn next_of(ws: &mut Ws, kinds: &[&str]) -> Value {
    loop {
        if let tungstenite::Message::Text(t) = ws.read().expect("message") {
            let v: Value = serde_json::from_str(&t).expect("a strict parser reads every message");
            if kinds.iter().any(|k| v["type"] == *k) {
                return v;
            }
        }
    }
}

/// Publishes each line as one WebSocket `publish`; one answer per line.
fn publish_ws(d: &Daemon, lines: &[String]) -> Vec<Answer> {
    let mut socket = ws(d);
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let message = format!(r#"{{"op":"publish","ref":{i},"event":{l}}}"#);
            socket
                .send(tungstenite::Message::Text(message.into()))
                .unwrap();
            let answer = next_of(&mut socket, &["ack", "error"]);
            match answer["ids"][0].as_str() {
                Some(id) => Answer::Id(id.to_owned()),
                None => Answer::Error(answer["error"].as_str().unwrap().to_owned()),
            }
        })
        .collect()
}

fn cli(d: &Daemon, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(args)
        .args(["--url", &d.http_url()])
        .env_remove("BUSBAR_TOKEN")
        .output()
        .unwrap()
}

/// A GET or POST whose answer a strict parser must read.
fn strict(d: &Daemon, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string());
    let (status, text) = d
        .http(method, path, None, body.as_deref().map(str::as_bytes))
        .unwrap();
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The payload a reader should show for a published line: the line, minus
/// the reserved members, as a strict parser reads it.
fn payload_of(line: &str) -> Value {
    let mut v: Value = serde_json::from_str(line).unwrap();
    let map = v.as_object_mut().unwrap();
    map.remove("type");
    map.remove("stream");
    v
}

#[test]
fn every_transport_refuses_with_a_reason_or_every_reader_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let transports = [
        ("in-unix", Some(Transport::Unix)),
        ("in-tcp", Some(Transport::Tcp)),
        ("in-http", Some(Transport::Http)),
        ("in-ws", None),
    ];
    for (stream, transport) in transports {
        // Groups first, so they deliver everything published.
        strict(
            &d,
            "POST",
            &format!("/api/streams/{stream}/groups"),
            Some(json!({"name": "cli", "start": "beginning"})),
        );
        strict(
            &d,
            "POST",
            &format!("/api/streams/{stream}/groups"),
            Some(json!({"name": "http", "start": "beginning"})),
        );
        let valid = hostile_but_valid();
        let bad = invalid();
        let mut lines: Vec<String> = valid.iter().map(|(t, m)| line(stream, t, m)).collect();
        lines.extend(bad.iter().map(|(t, m, _)| line(stream, t, m)));
        let answers = match transport {
            Some(t) => publish(&d, t, None, &lines),
            None => publish_ws(&d, &lines),
        };
        assert_eq!(answers.len(), lines.len(), "{stream}");
        for (answer, (ty, _)) in answers.iter().zip(&valid) {
            assert!(matches!(answer, Answer::Id(_)), "{stream} {ty}: {answer:?}");
        }
        for (answer, (ty, _, reason)) in answers[valid.len()..].iter().zip(&bad) {
            assert_eq!(
                answer,
                &Answer::Error((*reason).to_owned()),
                "{stream} {ty}"
            );
        }
        let want: Vec<Value> = lines[..valid.len()].iter().map(|l| payload_of(l)).collect();
        let types: Vec<&str> = valid.iter().map(|(t, _)| *t).collect();

        // HTTP range read.
        let read = strict(&d, "GET", &format!("/api/streams/{stream}/events"), None);
        let events = read["events"].as_array().unwrap();
        let data: Vec<&Value> = events.iter().map(|e| &e["data"]).collect();
        assert_eq!(data, want.iter().collect::<Vec<_>>(), "{stream}");

        // `busbar range`, as JSON lines (exact text) and as a table.
        let out = cli(&d, &["range", stream, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let printed: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(printed, *events, "{stream}");
        assert!(text.contains("1234567890123456789012345678901234567890,"));
        let out = cli(&d, &["range", stream]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let table = String::from_utf8(out.stdout).unwrap();
        for ty in &types {
            assert!(table.contains(ty), "{ty} in {table}");
        }

        // `busbar groups consume`.
        let out = cli(
            &d,
            &[
                "groups", "consume", stream, "cli", "--count", "100", "--ack", "--json",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let consumed: Vec<Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(consumed.len(), want.len(), "{stream}");

        // Group reads over HTTP and on a socket.
        let read = strict(
            &d,
            "POST",
            &format!("/api/streams/{stream}/groups/http/read"),
            Some(json!({"consumer": "c", "count": 100})),
        );
        assert_eq!(read["deliveries"].as_array().unwrap().len(), want.len());
        let mut c = Conn::unix(&d);
        create_group(&mut c, stream, "socket", json!({}));
        let answer = c.call(read_op(stream, "socket", "c", 100, 0));
        let got: Vec<Value> = deliveries(&answer)
            .into_iter()
            .map(|d| d.event["data"].clone())
            .collect();
        assert_eq!(got, want, "{stream}");

        // A WebSocket subscription from the start.
        let mut socket = ws(&d);
        let first = events[0]["id"].as_str().unwrap();
        socket
            .send(tungstenite::Message::Text(
                json!({"op":"subscribe","id":"a","stream":stream,"from":first})
                    .to_string()
                    .into(),
            ))
            .unwrap();
        let live: Vec<Value> = (0..want.len())
            .map(|_| next_of(&mut socket, &["event"])["event"]["data"].clone())
            .collect();
        assert_eq!(live, want, "{stream}");
    }
    let metrics = d.metrics().unwrap();
    for transport in ["unix", "tcp", "http", "ws"] {
        for (reason, n) in [
            ("too_deep", 3),
            ("invalid_number", 6),
            ("malformed_json", 2),
        ] {
            let counted = format!(
                r#"busbar_ingest_errors_total{{transport="{transport}",reason="{reason}"}} {n}"#
            );
            assert!(metrics.contains(&counted), "{counted}");
        }
    }
}

/// Writes events no reader can decode straight into a data directory, as
/// a busbar without input limits did; returns their ids.
fn store_unreadable_events(data: &std::path::Path) -> Vec<String> {
    let deep = format!(r#"{{"d":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
    let payloads: [(&str, &[u8]); 4] = [
        ("ok", br#"{"n":1}"#),
        ("deep", deep.as_bytes()),
        ("huge", br#"{"n":1e999999}"#),
        ("ok", br#"{"n":2}"#),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = EmbeddedStore::open(EmbeddedConfig::new(data)).unwrap();
        let mut batch = EventBatch::new();
        for (ty, payload) in payloads {
            batch.push(&NewEvent::new(ty, payload)).unwrap();
        }
        let ids = store
            .append(
                &StreamName::new("old").unwrap(),
                batch,
                AppendOptions::default(),
            )
            .await
            .unwrap();
        store.close().await.unwrap();
        ids.iter().map(ToString::to_string).collect()
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_cli_names_an_event_it_cannot_decode_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let ids = store_unreadable_events(&dir.path().join("data"));
    let (ok, deep, huge) = ([&ids[0], &ids[3]], &ids[1], &ids[2]);
    let d = start_in(
        dir.path(),
        &options().env("BUSBAR_STORAGE_BACKEND", "embedded"),
    );
    let names_both = |out: &Output| {
        let err = stderr(out);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains(&format!(
                "{deep} could not be decoded: recursion limit exceeded"
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!("{huge} could not be decoded: number out of range")),
            "{err}"
        );
    };

    let out = cli(&d, &["range", "old", "--json"]);
    names_both(&out);
    let printed: Vec<String> = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(printed, [ok[0].as_str(), ok[1].as_str()]);

    let out = cli(&d, &["range", "old"]);
    names_both(&out);
    let table = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(!table.contains("(no events)"), "{table}");
    assert!(table.contains(ok[0]) && table.contains(ok[1]), "{table}");

    let out = cli(&d, &["tail", "old", "--from", "-"]);
    names_both(&out);
    assert!(stderr(&out).contains("--from"), "{}", stderr(&out));
    let tailed = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(tailed.contains(ok[0]) && tailed.contains(ok[1]), "{tailed}");

    strict(
        &d,
        "POST",
        "/api/streams/old/groups",
        Some(json!({"name": "g", "start": "beginning"})),
    );
    let out = cli(
        &d,
        &["groups", "consume", "old", "g", "--count", "10", "--ack"],
    );
    names_both(&out);
    let consumed = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(!consumed.contains("(nothing to deliver)"), "{consumed}");
    assert!(
        consumed.contains(ok[0]) && consumed.contains(ok[1]),
        "{consumed}"
    );
    // What could not be printed was not acknowledged.
    let pending = strict(&d, "GET", "/api/streams/old/groups/g/pending", None);
    let mut left: Vec<&str> = pending["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    left.sort_unstable();
    assert_eq!(left, [deep.as_str(), huge.as_str()]);

    // Dead-lettered, they are named by the DLQ commands too.
    strict(
        &d,
        "POST",
        "/api/streams/old/groups/g/nack",
        Some(json!({"consumer": "busbar-cli", "ids": [deep, huge], "terminal": true})),
    );
    let out = cli(&d, &["dlq", "list", "old"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.matches("could not be decoded").count(), 2, "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("(no dead-lettered"));
    let out = cli(&d, &["dlq", "list", "old", "--json"]);
    assert!(!out.status.success());
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["entries"], json!([]));

    #[derive(Deserialize)]
    struct Entry {
        id: String,
    }
    #[derive(Deserialize)]
    struct Entries {
        entries: Vec<Entry>,
    }
    let (_, text) = d.http("GET", "/api/streams/old/dlq", None, None).unwrap();
    let entries: Entries = serde_json::from_str(&text).unwrap();
    let dead = &entries.entries[0].id;
    let out = cli(&d, &["dlq", "show", "old", dead]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("dead letter {dead} could not be decoded")),
        "{}",
        stderr(&out)
    );
}
