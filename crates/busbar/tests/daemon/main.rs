//! End-to-end tests of the `busbar serve` binary: the same scenarios over
//! the Unix socket, TCP and HTTP, bad input, authentication, shutdown,
//! crash recovery and a full disk.

mod audit;
mod churn;
mod consume;
mod dedup;
mod doctor;
mod full_disk;
mod group_client;
mod group_crash;
mod harness;
mod hostile;
mod input;
mod limits;
mod live;
mod ops;
mod reload;
mod socket_live;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{
    eventually, exchange, http, options, publish, read_all, start_in, stop, Answer, Transport, ALL,
};

fn stream_of(t: Transport) -> &'static str {
    match t {
        Transport::Unix => "via-unix",
        Transport::Tcp => "via-tcp",
        Transport::Http => "via-http",
    }
}

#[test]
fn publish_and_read_back_over_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    for t in ALL {
        let stream = stream_of(t);
        let lines: Vec<String> = (0..3)
            .map(|n| {
                format!(
                    r#"{{"type":"order.created","stream":"{stream}","n": {n}, "tags":["a", "b"]}}"#
                )
            })
            .collect();
        let answers = publish(&d, t, None, &lines);
        assert_eq!(answers.len(), 3, "{t:?}: {answers:?}");
        let events = read_all(&d, stream, None);
        let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        let acked: Vec<&str> = answers.iter().map(Answer::id).collect();
        assert_eq!(ids, acked, "{t:?}");
        for (n, e) in events.iter().enumerate() {
            assert_eq!(e["type"], "order.created");
            assert_eq!(e["data"], serde_json::json!({"n": n, "tags": ["a", "b"]}));
        }
    }
}

#[test]
fn fire_and_forget_over_the_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let mut s = d.unix().unwrap();
    s.write_all(b"{\"type\":\"test\"}\n").unwrap();
    // The daemon closes its side at once: nothing will be written back.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    eventually("the event", || read_all(&d, "events", None).len() == 1);
}

#[test]
fn malformed_json_is_answered_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    for t in ALL {
        let stream = stream_of(t);
        let lines = vec![
            format!(r#"{{"type":"ok","stream":"{stream}","n":1}}"#),
            format!(r#"{{"type":"ok","stream":"{stream}","n":"#),
            format!(r#"{{"stream":"{stream}","n":3}}"#),
            format!(r#"{{"type":"ok","stream":"{stream}","n":4}}"#),
        ];
        let answers = publish(&d, t, None, &lines);
        assert_eq!(answers.len(), 4, "{t:?}");
        assert_eq!(answers[1].reason(), "malformed_json", "{t:?}");
        assert_eq!(answers[2].reason(), "missing_type", "{t:?}");
        let events = read_all(&d, stream, None);
        let kept: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(kept, [answers[0].id(), answers[3].id()], "{t:?}");
    }
}

#[test]
fn oversize_line_is_refused_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options().env("BUSBAR_MAX_LINE_BYTES", "1 KiB"));
    let big = "x".repeat(8 * 1024);
    for t in [Transport::Unix, Transport::Tcp] {
        let stream = stream_of(t);
        let lines = vec![
            format!(r#"{{"type":"ok","stream":"{stream}"}}"#),
            format!(r#"{{"type":"big","stream":"{stream}","pad":"{big}"}}"#),
            format!(r#"{{"type":"ok","stream":"{stream}"}}"#),
        ];
        let answers = publish(&d, t, None, &lines);
        assert_eq!(answers.len(), 3, "{t:?}: {answers:?}");
        assert_eq!(answers[1].reason(), "too_large");
        let events = read_all(&d, stream, None);
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e["type"] == "ok"));
    }
}

#[test]
fn half_closed_socket_gets_every_ack_then_eof() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let lines: Vec<String> = (0..5000)
        .map(|n| format!(r#"{{"type":"bulk","n":{n}}}"#))
        .collect();
    for t in [Transport::Unix, Transport::Tcp] {
        let answers = publish(&d, t, None, &lines);
        assert_eq!(answers.len(), lines.len(), "{t:?}");
        let ids: HashSet<&str> = answers.iter().map(Answer::id).collect();
        assert_eq!(ids.len(), lines.len(), "ids are distinct");
    }
    assert_eq!(read_all(&d, "events", None).len(), 10_000);
}

/// An admin token and one bound to tenant `acme`.
const TOKENS: &str = r#"
[[auth.tokens]]
name = "ops"
secret = "ops-secret-0123"
scopes = ["publish", "consume", "admin"]

[[auth.tokens]]
name = "acme"
secret = "acme-secret-0123"
scopes = ["publish", "consume"]
tenant = "acme"
"#;

#[test]
fn tcp_hello_rejects_bad_tokens_and_other_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options().config(TOKENS));

    let accepted = publish(
        &d,
        Transport::Tcp,
        Some("acme-secret-0123"),
        &[r#"{"type":"first"}"#.to_owned()],
    );
    let first_id = accepted[0].id().to_owned();

    let answers = publish(
        &d,
        Transport::Tcp,
        Some("wrong-secret"),
        &[r#"{"type":"t"}"#.to_owned()],
    );
    assert_eq!(
        answers,
        [Answer::Error("bad_token".to_owned())],
        "one error, then closed"
    );

    let no_hello = exchange(
        d.tcp().unwrap(),
        None,
        &[r#"{"type":"t"}"#.to_owned()],
        |s| s.shutdown(Shutdown::Write).unwrap(),
    );
    assert_eq!(no_hello, [Answer::Error("unauthenticated".to_owned())]);

    let answers = publish(
        &d,
        Transport::Tcp,
        Some("acme-secret-0123"),
        &[
            r#"{"type":"t","stream":"globex:events"}"#.to_owned(),
            r#"{"type":"t","tenant":"globex"}"#.to_owned(),
            r#"{"type":"second"}"#.to_owned(),
        ],
    );
    assert_eq!(answers[0].reason(), "wrong_tenant");
    assert_eq!(answers[1].reason(), "wrong_tenant");
    let second_id = answers[2].id().to_owned();

    // The Unix socket stays trusted without a token.
    let unix = publish(
        &d,
        Transport::Unix,
        None,
        &[r#"{"type":"local"}"#.to_owned()],
    );
    unix[0].id();

    let events = read_all(&d, "acme:events", Some("ops-secret-0123"));
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [first_id.as_str(), second_id.as_str()]);
    assert!(events.iter().all(|e| e["tenant"] == "acme"));
    assert!(read_all(&d, "globex:events", Some("ops-secret-0123")).is_empty());
    let (status, _) = http(&d, "GET", "/api/streams/acme:events/events", None, None);
    assert_eq!(status, 401);
}

#[test]
fn sigterm_drains_exits_zero_and_keeps_acked_events() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let lines: Vec<String> = (0..500)
        .map(|n| format!(r#"{{"type":"t","n":{n}}}"#))
        .collect();
    let answers = publish(&d, Transport::Unix, None, &lines);
    let acked: Vec<String> = answers.iter().map(|a| a.id().to_owned()).collect();
    let durable = d.addresses().backend == "embedded";
    let log = d.log();
    let status = stop(d);
    assert!(status.success(), "exit status {status}:\n{log}");
    assert!(
        !dir.path().join("data/sock/events.sock").exists(),
        "sockets are removed"
    );
    if durable {
        let d = start_in(dir.path(), &options());
        let ids: Vec<String> = read_all(&d, "events", None)
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, acked);
    }
}

/// Several producers with acks under `durability = always`; the daemon is
/// SIGKILLed mid-stream. Every acknowledged id must survive the restart.
#[test]
fn sigkill_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let options = options().env("BUSBAR_DURABILITY", "always");
    let d = start_in(dir.path(), &options);
    if d.addresses().backend != "embedded" {
        eprintln!(
            "skipped: the daemon runs the {} backend",
            d.addresses().backend
        );
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let mut producers = Vec::new();
    for p in 0..4 {
        let socket = d.unix().unwrap();
        let (stop, acked) = (stop.clone(), acked.clone());
        producers.push(std::thread::spawn(move || {
            use std::io::BufRead;
            let stream = format!("crash-{p}");
            let mut writer = socket.try_clone().unwrap();
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                for line in std::io::BufReader::new(socket).lines() {
                    let Ok(line) = line else { break };
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                    let id = v["id"].as_str();
                    got.push(id.unwrap_or_else(|| panic!("an id, not {line}")).to_owned());
                }
                got
            });
            let _ = writer.write_all(b"{\"hello\":{\"acks\":true}}\n");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut chunk = String::new();
                for _ in 0..50 {
                    chunk.push_str(&format!(
                        "{{\"type\":\"t\",\"stream\":\"{stream}\",\"n\":{n}}}\n"
                    ));
                    n += 1;
                }
                if writer.write_all(chunk.as_bytes()).is_err() {
                    break;
                }
            }
            let ids = reader.join().unwrap();
            acked
                .lock()
                .unwrap()
                .extend(ids.into_iter().map(|id| (stream.clone(), id)));
        }));
    }
    std::thread::sleep(Duration::from_millis(400));
    d.kill();
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "producers got acks before the kill ({})",
        acked.len()
    );

    let d = start_in(dir.path(), &options);
    for p in 0..4 {
        let stream = format!("crash-{p}");
        let present: HashSet<String> = read_all(&d, &stream, None)
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        let missing: Vec<&String> = acked
            .iter()
            .filter(|(s, id)| *s == stream && !present.contains(id))
            .map(|(_, id)| id)
            .collect();
        assert!(
            missing.is_empty(),
            "{stream}: {} acknowledged ids lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

#[test]
fn command_socket_answers_each_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    publish(&d, Transport::Unix, None, &[r#"{"type":"t"}"#.to_owned()]);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
            .arg("cmd")
            .args(args)
            .arg("--json")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("BUSBAR_COMMANDS_SOCKET")
            .env_remove("BUSBAR_CONFIG")
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.success(), v)
    };
    let (ok, health) = run(&["health"]);
    assert!(ok);
    assert_eq!(health["status"], "ok");
    let (ok, rotated) = run(&["rotate", r#"{"reason":"manual"}"#]);
    assert!(ok, "{rotated}");
    assert_eq!(rotated["rotated"][0]["stream"], "events");
    assert!(d.log().contains("manual"), "the reason is logged");
    let (ok, stats) = run(&["stats"]);
    assert!(ok);
    assert_eq!(stats["events"], 1);
    let (ok, flush) = run(&["flush"]);
    assert!(ok);
    assert_eq!(flush["flushed"], 0);
    assert!(flush["message"]
        .as_str()
        .unwrap()
        .contains("no relay sink is configured"));
    let (ok, unknown) = run(&["bogus"]);
    assert!(!ok);
    let listed = unknown["message"].as_str().unwrap();
    for command in ["health", "stats", "rotate", "flush", "streams"] {
        assert!(listed.contains(command), "{listed}");
    }
}

#[test]
fn cli_publishes_and_reads_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let busbar = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
            .args(args)
            .args(["--url", &d.http_url()])
            .env_remove("BUSBAR_TOKEN")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let ndjson: String = (0..2500)
        .map(|n| format!("{{\"type\":\"bulk\",\"n\":{n}}}\n"))
        .collect();
    let summary = busbar(&["publish", "--stream", "cli", "--json"], &ndjson);
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(v["count"], 2500);
    let one = busbar(&["publish", "--stream", "cli", r#"{"type":"single"}"#], "");
    let id = one.trim();
    let range = busbar(&["range", "cli", "--reverse", "--count", "1", "--json"], "");
    let last: serde_json::Value = serde_json::from_str(range.trim()).unwrap();
    assert_eq!(last["id"], id);
    let table = busbar(&["streams"], "");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("cli") && l.contains("2501")),
        "{table}"
    );

    let failed = std::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(["streams", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("is `busbar serve` running?"));
}

/// `busbar cmd health` agrees with `/readyz`: a daemon below its free-disk
/// floor answers 503 there and fails the command, naming why.
#[test]
fn command_health_agrees_with_readyz() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(
        dir.path(),
        &options().config("[readiness]\nmin_free_disk = \"1000000 TiB\"\n"),
    );
    if d.addresses().backend != "embedded" {
        eprintln!("skipped: the memory backend has no disk to check");
        return;
    }
    let (status, body) = http(&d, "GET", "/readyz", None, None);
    assert_eq!(status, 503, "{body}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(["cmd", "health", "--json", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("BUSBAR_COMMANDS_SOCKET")
        .env_remove("BUSBAR_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["error"].as_str()),
        (Some(false), Some("not_ready"))
    );
    assert!(
        v["message"].as_str().unwrap().contains("disk_nearly_full"),
        "{v}"
    );
}
