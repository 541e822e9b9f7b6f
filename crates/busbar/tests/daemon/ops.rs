//! The ops API through the real daemon: the summary, ops events, traces
//! and support packs over HTTP and the CLI, with bad input, no token, a
//! wrong one and another tenant's; and a support pack that must not carry
//! any secret seeded into the config, events, logs or ops events.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::harness::{eventually, options, start_in};

const OPS: &str = "ops-secret-0123456789";
/// A token secret shaped like a JWT: a pack must not carry it either way.
const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJvcHMtcm9vdCJ9.c2lnbmF0dXJlLW9wcw";
/// A JWT busbar knows nothing of, in an event's payload.
const OTHER_JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJ1c2VyIjoiYm9iIn0.b3RoZXItc2lnbmF0dXJl";
const ACME: &str = "acme-admin-secret-0123";
const GLOBEX: &str = "globex-admin-secret-0123";
const READER: &str = "reader-secret-0123";

fn tokens() -> String {
    format!(
        r#"
[[auth.tokens]]
name = "ops"
secret = "{OPS}"
scopes = ["publish", "consume", "admin"]

[[auth.tokens]]
name = "jwt-shaped"
secret = "{JWT}"
scopes = ["admin"]

[[auth.tokens]]
name = "acme-admin"
secret = "{ACME}"
scopes = ["publish", "consume", "admin"]
tenant = "acme"

[[auth.tokens]]
name = "globex-admin"
secret = "{GLOBEX}"
scopes = ["publish", "consume", "admin"]
tenant = "globex"

[[auth.tokens]]
name = "reader"
secret = "{READER}"
scopes = ["consume"]
"#
    )
}

/// One request: status and body text.
fn http(
    d: &busbar_testkit::Daemon,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, String) {
    d.http(method, path, token, body).unwrap()
}

fn get(d: &busbar_testkit::Daemon, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, text) = http(d, "GET", path, token, None);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn post(d: &busbar_testkit::Daemon, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let (status, text) = http(d, "POST", path, token, Some(body.to_string().as_bytes()));
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn busbar(d: &busbar_testkit::Daemon, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(args)
        .args(["--url", &d.http_url(), "--token", token])
        .env_remove("BUSBAR_TOKEN")
        .output()
        .unwrap()
}

fn ops_events(d: &busbar_testkit::Daemon, query: &str, token: &str) -> Vec<Value> {
    let (status, v) = get(d, &format!("/api/ops/events{query}"), Some(token));
    assert_eq!(status, 200, "{query}: {v}");
    v["events"].as_array().unwrap().clone()
}

#[test]
fn every_ops_route_needs_an_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options().config(&tokens()));
    let routes: [(&str, &str, Option<Value>); 5] = [
        ("GET", "/api/ops/summary", None),
        ("GET", "/api/ops/events", None),
        ("GET", "/api/ops/trace", None),
        (
            "POST",
            "/api/ops/trace/start",
            Some(json!({"stream": "orders", "durationSec": 1})),
        ),
        ("POST", "/api/ops/support-pack", Some(json!({}))),
    ];
    for (method, path, body) in &routes {
        let body = body.as_ref().map(|b| b.to_string());
        for (token, want) in [
            (None, 401),
            (Some("not-a-token-at-all"), 401),
            (Some(READER), 403),
        ] {
            let (status, text) = http(&d, method, path, token, body.as_deref().map(str::as_bytes));
            assert_eq!(status, want, "{method} {path} as {token:?}: {text}");
        }
    }
}

#[test]
fn ops_events_record_what_happened_and_filter_by_type_time_and_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options().config(&tokens()));
    // Refused requests, a session per tenant, a rotation.
    let (status, _) = http(
        &d,
        "POST",
        "/api/streams/orders/events",
        Some(OPS),
        Some(b"{nope"),
    );
    assert_eq!(status, 400);
    let (status, body) = post(
        &d,
        "/api/streams/_busbar:ops/events",
        Some(OPS),
        &json!({"type": "forged"}),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("reserved_stream"))
    );
    for (token, stream, session) in [
        (ACME, "acme:orders", "acme-car-7"),
        (GLOBEX, "globex:orders", "globex-car-9"),
    ] {
        let event = json!({"type": "lap", "session": session, "ts": busbar_event::now_ms()});
        let (status, _) = post(
            &d,
            &format!("/api/streams/{stream}/events"),
            Some(token),
            &event,
        );
        assert_eq!(status, 201);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(["cmd", "rotate", r#"{"reason":"before-upgrade"}"#, "--json"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("BUSBAR_COMMANDS_SOCKET")
        .env_remove("BUSBAR_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    eventually("the journal's writes", || {
        ops_events(&d, "?type=storage", OPS).len() >= 2
            && ops_events(&d, "?type=session", OPS).len() == 2
    });
    let errors = ops_events(&d, "?type=error", OPS);
    let reasons: Vec<&str> = errors.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(
        reasons.contains(&"malformed_json") && reasons.contains(&"reserved_stream"),
        "{errors:?}"
    );
    assert!(errors
        .iter()
        .all(|e| e["transport"] == "http" && e["category"] == "error"));
    let rotations = ops_events(&d, "?type=storage:rotate", OPS);
    assert!(
        rotations.iter().all(|e| e["reason"] == "before-upgrade"),
        "{rotations:?}"
    );
    // Newest first, limited, and `since` in the future holds nothing.
    let all = ops_events(&d, "?limit=3", OPS);
    assert_eq!(all.len(), 3);
    assert!(all[0]["id"].as_str() > all[2]["id"].as_str());
    assert!(ops_events(
        &d,
        &format!("?since={}", busbar_event::now_ms() + 60_000),
        OPS
    )
    .is_empty());
    assert_eq!(ops_events(&d, "?since=1h&type=session:start", OPS).len(), 2);
    // A tenant sees its own, never the process's errors or another tenant's.
    let acme = ops_events(&d, "", ACME);
    assert!(!acme.is_empty());
    assert!(acme.iter().all(|e| e["tenant"] == "acme"), "{acme:?}");
    assert!(!serde_json::to_string(&acme).unwrap().contains("globex"));
    // Bad input is named.
    for (query, param) in [
        ("?limit=0", "limit"),
        ("?limit=5000", "limit"),
        ("?since=soon", "since"),
        ("?limit=x", ""),
    ] {
        let (status, v) = get(&d, &format!("/api/ops/events{query}"), Some(OPS));
        assert_eq!(status, 400, "{query}: {v}");
        assert_eq!(v["error"], "invalid_param");
        assert!(v["message"].as_str().unwrap().contains(param), "{v}");
    }
    // Every existing tool reads the journal.
    let (status, v) = get(&d, "/api/streams/_busbar:ops/events?limit=1000", Some(OPS));
    assert_eq!(status, 200);
    assert!(v["events"].as_array().unwrap().len() >= 6, "{v}");
    let (status, _) = get(&d, "/api/streams/_busbar:ops/events", Some(ACME));
    assert_eq!(status, 403, "a tenant cannot read busbar's own stream");
    // And the CLI.
    let out = busbar(
        &d,
        OPS,
        &["ops", "events", "--type", "error", "--limit", "5"],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("malformed_json") && text.contains("error"),
        "{text}"
    );
}

#[test]
fn the_summary_shows_rates_storage_and_groups_as_each_caller_may_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options().config(&tokens()));
    let batch: Vec<Value> = (0..40)
        .map(|i| json!({"type": if i % 4 == 0 { "order.paid" } else { "order.created" }}))
        .collect();
    assert_eq!(
        post(&d, "/api/streams/orders/events", Some(OPS), &json!(batch)).0,
        201
    );
    assert_eq!(
        post(
            &d,
            "/api/streams/acme:orders/events",
            Some(ACME),
            &json!([{"type": "t"}, {"type": "t"}])
        )
        .0,
        201
    );
    assert_eq!(
        post(
            &d,
            "/api/streams/orders/groups",
            Some(OPS),
            &json!({"name": "billing", "start": "beginning"})
        )
        .0,
        201
    );
    http(
        &d,
        "POST",
        "/api/streams/orders/events",
        Some(OPS),
        Some(b"[nope"),
    );

    let (status, s) = get(&d, "/api/ops/summary", Some(OPS));
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["ready"], true);
    assert_eq!(s["ingest"]["total"], 42);
    assert!(s["ingest"]["rate1m"].as_f64().unwrap() > 0.0, "{s}");
    let types = s["ingest"]["byType"].as_array().unwrap();
    let created = types.iter().find(|t| t["type"] == "order.created").unwrap();
    assert_eq!(
        (created["stream"].as_str(), created["total"].as_u64()),
        (Some("orders"), Some(30))
    );
    let producers = s["ingest"]["topProducers"].as_array().unwrap();
    assert_eq!(producers[0]["producer"], "ops");
    assert_eq!(s["ingest"]["byTransport"][0]["transport"], "http");
    assert!(s["errors"]["byReason"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["reason"] == "malformed_json"));
    assert!(s["storage"]["streams"].as_u64().unwrap() >= 2);
    assert!(s["storage"]["freeBytes"].as_u64().unwrap() > 0);
    assert_eq!(s["groups"][0]["group"], "billing");
    assert_eq!(s["groups"][0]["lag"], 40);
    assert_eq!(s["live"]["sockets"], 0);
    // Written by the audit log's own thread: the group's creation may not
    // be in yet.
    assert_eq!(
        s["audit"]["headHash"].as_str().map(str::len),
        Some(64),
        "{s}"
    );

    // A tenant: its streams only, no process-wide figures.
    let (status, a) = get(&d, "/api/ops/summary", Some(ACME));
    assert_eq!(status, 200);
    assert_eq!(a["ingest"]["total"], 2);
    let text = a.to_string();
    assert!(
        !text.contains("\"orders\"")
            && !text.contains("billing")
            && !text.contains("order.created"),
        "{text}"
    );
    assert!(a.get("errors").is_none() && a["storage"].get("freeBytes").is_none());
    assert!(a["audit"].is_null());

    let out = busbar(&d, OPS, &["ops", "summary"]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("stream orders") && table.contains("group orders/billing"),
        "{table}"
    );
}

#[test]
fn traces_capture_a_session_with_its_anomalies_and_stay_with_their_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options().config(&tokens()));
    let (status, started) = post(
        &d,
        "/api/ops/trace/start",
        Some(ACME),
        &json!({"sessionId": "acme-car-7", "durationSec": 2}),
    );
    assert_eq!(status, 201, "{started}");
    let id = started["traceId"].as_str().unwrap().to_owned();
    let now = busbar_event::now_ms();
    for (seq, ts) in [(1, now), (2, now), (5, now), (6, now - 60_000)] {
        let event = json!({"type": "lap", "session": "acme-car-7", "seq": seq, "ts": ts});
        assert_eq!(
            post(&d, "/api/streams/acme:laps/events", Some(ACME), &event).0,
            201
        );
    }
    // Another session and another tenant's stream are not captured.
    post(
        &d,
        "/api/streams/acme:laps/events",
        Some(ACME),
        &json!({"type": "lap", "session": "acme-car-8"}),
    );
    post(
        &d,
        "/api/streams/globex:laps/events",
        Some(GLOBEX),
        &json!({"type": "lap", "session": "acme-car-7", "secret": "globex-payload"}),
    );
    eventually("the trace to finish", || {
        get(&d, &format!("/api/ops/trace/{id}"), Some(ACME)).1["state"] == "finished"
    });
    let (status, trace) = get(&d, &format!("/api/ops/trace/{id}"), Some(ACME));
    assert_eq!(status, 200);
    let events = trace["events"].as_array().unwrap();
    assert_eq!(events.len(), 4, "{trace}");
    assert!(events
        .iter()
        .all(|e| e["stream"] == "acme:laps" && e["data"]["seq"].is_number()));
    let kinds: Vec<&str> = trace["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"seq_gap") && kinds.contains(&"drift_spike"),
        "{kinds:?}"
    );
    assert!(!trace.to_string().contains("globex-payload"));
    assert_eq!(
        trace["counters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["events"].as_u64().unwrap())
            .sum::<u64>(),
        4
    );

    // Another tenant's trace is unknown to it; the untenanted admin sees it.
    let (status, v) = get(&d, &format!("/api/ops/trace/{id}"), Some(GLOBEX));
    assert_eq!((status, v["error"].as_str()), (404, Some("no_such_trace")));
    assert!(get(&d, "/api/ops/trace", Some(GLOBEX)).1["traces"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(get(&d, &format!("/api/ops/trace/{id}"), Some(OPS)).0, 200);
    // Bad input.
    for (body, reason) in [
        (json!({"sessionId": "s", "durationSec": 0}), "invalid_param"),
        (
            json!({"sessionId": "s", "durationSec": 86_400}),
            "invalid_param",
        ),
        (json!({"sessionId": "s"}), "invalid_param"),
        (json!({"durationSec": 5}), "invalid_param"),
        (
            json!({"stream": "a", "sessionId": "s", "durationSec": 5}),
            "invalid_param",
        ),
        (
            json!({"connection": 999_999, "durationSec": 5}),
            "invalid_param",
        ),
        (
            json!({"stream": "globex:laps", "durationSec": 5}),
            "wrong_tenant",
        ),
        (json!({"sessionID": "s", "durationSec": 5}), "invalid_param"),
    ] {
        let (status, v) = post(&d, "/api/ops/trace/start", Some(ACME), &body);
        assert_eq!(v["error"], reason, "{body}: {status} {v}");
    }
    assert_eq!(get(&d, "/api/ops/trace/tr_nope", Some(OPS)).0, 404);
    // A stream trace, as the runbook's curl sends it.
    let (status, text) = http(
        &d,
        "POST",
        "/api/ops/trace/start",
        Some(OPS),
        Some(br#"{"stream":"orders","durationSec":1}"#),
    );
    assert_eq!(status, 201, "{text}");
    let out = busbar(&d, OPS, &["trace", "show", &id]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("seq_gap"));
}

/// Every file of an extracted pack, as text.
fn unpack(archive: &Path) -> Vec<(String, String)> {
    let dir = archive.with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("tar")
        .arg("xzf")
        .arg(archive)
        .arg("-C")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut files = Vec::new();
    for top in std::fs::read_dir(&dir).unwrap() {
        for f in std::fs::read_dir(top.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
    files.sort();
    files
}

#[test]
fn support_packs_hold_the_diagnostics_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}\n[live]\ndrift_warn = \"1s\"\n", tokens());
    let d = start_in(dir.path(), &options().config(&config));
    // Seed secrets into events, ops events and logs: an e-mail address as
    // a session id (journaled, logged with the drift warning), a JWT and a
    // password in a traced event's payload.
    let email_session = "jane.doe@example.com";
    let long_session = "sess_4f9a2b7c1d";
    let (status, started) = post(
        &d,
        "/api/ops/trace/start",
        Some(OPS),
        &json!({"stream": "secrets", "durationSec": 1}),
    );
    assert_eq!(status, 201);
    let trace = started["traceId"].as_str().unwrap().to_owned();
    let old = busbar_event::now_ms() - 120_000;
    for session in [email_session, long_session] {
        let event = json!({
            "type": "login", "session": session, "ts": old,
            "password": "hunter2hunter2", "jwt": JWT, "id_token": OTHER_JWT, "contact": "bob.smith@corp.example.org",
        });
        assert_eq!(
            post(&d, "/api/streams/secrets/events", Some(OPS), &event).0,
            201
        );
    }
    eventually("the drift warning in the log", || {
        d.log().contains(long_session)
    });
    eventually("the trace to finish", || {
        get(&d, &format!("/api/ops/trace/{trace}"), Some(OPS)).1["state"] == "finished"
    });

    let archive = dir.path().join("pack.tar.gz");
    let out = busbar(
        &d,
        OPS,
        &[
            "support-pack",
            "--include-config",
            "--session",
            long_session,
            "--trace",
            &trace,
            "-o",
            archive.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let files = unpack(&archive);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "README.txt",
        "config.toml",
        "environment.txt",
        "log.txt",
        "metrics.txt",
        "ops-events.json",
        "session.json",
        "sessions.json",
        "sockets.json",
        "summary.json",
        "trace.json",
        "versions.json",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let secrets = [
        OPS,
        JWT,
        ACME,
        GLOBEX,
        READER,
        "hunter2hunter2",
        "jane.doe",
        "example.com",
        "bob.smith",
        "corp.example.org",
        long_session,
        email_session,
    ];
    for (name, text) in &files {
        for s in secrets {
            assert!(!text.contains(s), "{name} holds `{s}`:\n{text}");
        }
    }
    let text = |name: &str| files.iter().find(|(n, _)| n == name).unwrap().1.clone();
    // What was redacted is still there in shape.
    // The JWT-shaped token secret goes as a secret, before the JWT rule.
    let traced = text("trace.json");
    assert!(
        traced.contains("[redacted:token]") && traced.contains("j***@***"),
        "{traced}"
    );
    assert!(text("config.toml").contains("[redacted:token]"));
    assert!(text("log.txt").contains("drift_warn") && text("log.txt").contains("sess…"));
    assert!(text("ops-events.json").contains("drift_warn"));
    for name in [
        "summary.json",
        "trace.json",
        "session.json",
        "ops-events.json",
        "versions.json",
    ] {
        serde_json::from_str::<Value>(&text(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    // Bad input and other tenants.
    let (status, v) = post(
        &d,
        "/api/ops/support-pack",
        Some(OPS),
        &json!({"sessionId": "nobody"}),
    );
    assert_eq!(
        (status, v["error"].as_str()),
        (404, Some("no_such_session"))
    );
    let (status, v) = post(
        &d,
        "/api/ops/support-pack",
        Some(OPS),
        &json!({"traceId": "tr_nope"}),
    );
    assert_eq!((status, v["error"].as_str()), (404, Some("no_such_trace")));
    let (status, v) = post(
        &d,
        "/api/ops/support-pack",
        Some(ACME),
        &json!({"includeConfig": true}),
    );
    assert_eq!((status, v["error"].as_str()), (403, Some("forbidden")));
    let (status, v) = post(
        &d,
        "/api/ops/support-pack",
        Some(ACME),
        &json!({"sessionId": long_session}),
    );
    assert_eq!(
        (status, v["error"].as_str()),
        (404, Some("no_such_session")),
        "another tenant's session"
    );
    let (status, v) = post(
        &d,
        "/api/ops/support-pack",
        Some(OPS),
        &json!({"include": true}),
    );
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_param")));
    let (status, _) = http(&d, "POST", "/api/ops/support-pack", Some(OPS), Some(b"{"));
    assert_eq!(status, 400);
}

#[test]
fn diagnostics_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(
        dir.path(),
        &options().config(&tokens()).env("DIAGNOSTICS_ENABLED", "0"),
    );
    let (status, v) = post(
        &d,
        "/api/ops/trace/start",
        Some(OPS),
        &json!({"stream": "s", "durationSec": 1}),
    );
    assert_eq!(
        (status, v["error"].as_str()),
        (404, Some("diagnostics_off"))
    );
    let (status, _) = post(&d, "/api/ops/support-pack", Some(OPS), &json!({}));
    assert_eq!(status, 404);
    assert_eq!(
        get(&d, "/api/ops/summary", Some(OPS)).0,
        200,
        "the rest of the ops API stays"
    );
    assert_eq!(
        post(&d, "/api/ops/trace/start", None, &json!({})).0,
        401,
        "still authenticated first"
    );
}

#[test]
fn a_connection_trace_counts_what_it_was_sent_and_its_joins_are_journaled() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let mut live = d.tcp().unwrap();
    live.write_all(b"{\"op\":\"subscribe\",\"id\":\"a\",\"stream\":\"laps\",\"from\":\"live\"}\n{\"op\":\"join\",\"room\":\"session:car-1\",\"stream\":\"laps\"}\n")
        .unwrap();
    let mut reader = BufReader::new(live.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("subscribed"), "{line}");
    let (_, sockets) = get(&d, "/api/ops/sockets", None);
    let id = sockets["sockets"][0]["id"].as_u64().unwrap();
    let (status, started) = post(
        &d,
        "/api/ops/trace/start",
        None,
        &json!({"connection": id, "durationSec": 2}),
    );
    assert_eq!(status, 201, "{started}");
    let trace = started["traceId"].as_str().unwrap().to_owned();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let batch: Vec<Value> = (0..25).map(|i| json!({"type": "lap", "i": i})).collect();
    assert_eq!(
        post(&d, "/api/streams/laps/events", None, &json!(batch)).0,
        201
    );
    eventually("the trace to finish", || {
        get(&d, &format!("/api/ops/trace/{trace}"), None).1["state"] == "finished"
    });
    let (_, t) = get(&d, &format!("/api/ops/trace/{trace}"), None);
    let sent: u64 = t["counters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["sent"].as_u64())
        .sum();
    assert!(sent >= 25, "{t}");
    drop(reader);
    drop(live);
    eventually("the disconnect in the journal", || {
        let events = ops_events_open(&d, "?type=socket");
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        kinds.contains(&"socket:connect")
            && kinds.contains(&"socket:join")
            && kinds.contains(&"socket:leave")
            && kinds.contains(&"socket:disconnect")
    });
    let joins = ops_events_open(&d, "?type=socket:join");
    assert_eq!(joins[0]["room"], "session:car-1");
    assert_eq!(joins[0]["transport"], "tcp");
    assert_eq!(joins[0]["socket"], id);
}

fn ops_events_open(d: &busbar_testkit::Daemon, query: &str) -> Vec<Value> {
    let (status, v) = get(d, &format!("/api/ops/events{query}"), None);
    assert_eq!(status, 200, "{v}");
    v["events"].as_array().unwrap().clone()
}

/// Refused events are logged, at most once a second per reason, and never
/// with what they held.
#[test]
fn refused_events_are_logged_rate_limited_without_their_payload() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options().log_level("info"));
    for _ in 0..50 {
        let (status, _) = http(
            &d,
            "POST",
            "/api/streams/orders/events",
            None,
            Some(br#"{"type":"t","card":"4111-1111-1111-1111""#),
        );
        assert_eq!(status, 400);
    }
    eventually("the refusal in the log", || {
        d.log().contains("request or event refused")
    });
    let log = d.log();
    let lines = log.matches("request or event refused").count();
    assert!(
        (1..=10).contains(&lines),
        "{lines} lines for 50 refusals:\n{log}"
    );
    assert!(log.contains("malformed_json"), "{log}");
    assert!(!log.contains("4111"), "the payload is never logged:\n{log}");
}
