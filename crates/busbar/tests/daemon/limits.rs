//! The engine's limits, set in the config file or the environment, take
//! effect in the daemon: each answers clients with its documented error
//! and shows in `/metrics`.

use std::process::Output;

use serde_json::{json, Value};

use crate::group_client::{create_group, deliveries, publish_n as publish_over, read_op, Conn};
use crate::harness::{eventually, http, options, start_in, Daemon};

fn assert_metric(d: &Daemon, line: &str) {
    let text = d.metrics().unwrap();
    assert!(text.contains(line), "no {line} in /metrics:\n{text}");
}

fn post(d: &Daemon, path: &str, body: &Value) -> (u16, Value) {
    http(d, "POST", path, None, Some(body.to_string().as_bytes()))
}

/// Publishes `n` events to `stream` in one HTTP request.
fn publish_n(d: &Daemon, stream: &str, n: usize) -> (u16, Value) {
    let events: Vec<Value> = (0..n).map(|i| json!({"type": "t", "n": i})).collect();
    post(d, &format!("/api/streams/{stream}/events"), &json!(events))
}

fn cli(d: &Daemon, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(args)
        .args(["--url", &d.http_url()])
        .env_remove("BUSBAR_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn jobs_max_running_refuses_a_second_concurrent_job() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options().config("[jobs]\nmax_running = 1\n"));
    assert_eq!(publish_n(&d, "orders", 20).0, 201);
    // One event a second: still running while the second is asked for.
    let slow = json!({"stream": "orders", "rate": 1});
    let (status, job) = post(&d, "/api/replay", &slow);
    assert_eq!(status, 202, "{job}");

    let (status, refused) = post(&d, "/api/replay", &slow);
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["error"], "too_many_jobs");
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("limit of 1 running jobs"), "{message}");
    let out = cli(&d, &["replay", "orders", "--rate", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(too_many_jobs, HTTP 429)"), "{stderr}");

    assert_metric(&d, r#"busbar_jobs_running{kind="replay"} 1"#);
    assert_metric(
        &d,
        r#"busbar_jobs_rejected_total{kind="replay",limit="max_running"} 2"#,
    );

    // Once it stops, the next one may start.
    let id = job["id"].as_str().unwrap();
    let (status, _) = post(&d, &format!("/api/jobs/{id}/cancel"), &json!({}));
    assert_eq!(status, 200);
    eventually("a job to start after the cancel", || {
        post(&d, "/api/replay", &json!({"stream": "orders"})).0 == 202
    });
}

#[test]
fn health_max_dlq_zero_degrades_a_stream_with_one_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options().config("[health]\nmax_dlq = 0\n"));
    assert_eq!(publish_n(&d, "orders", 1).0, 201);
    assert_eq!(publish_n(&d, "calm", 1).0, 201);
    let health = |stream: &str| {
        http(
            &d,
            "GET",
            &format!("/events/health?stream={stream}"),
            None,
            None,
        )
    };
    assert_eq!(health("orders").1["status"], "healthy");

    let (status, _) = post(
        &d,
        "/api/streams/orders/groups",
        &json!({"name": "g", "start": "beginning"}),
    );
    assert_eq!(status, 201);
    let (status, read) = post(
        &d,
        "/api/streams/orders/groups/g/read",
        &json!({"consumer": "c", "count": 1}),
    );
    assert_eq!(status, 200, "{read}");
    let id = read["deliveries"][0]["event"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, nacked) = post(
        &d,
        "/api/streams/orders/groups/g/nack",
        &json!({"consumer": "c", "ids": [id], "terminal": true}),
    );
    assert_eq!(status, 200, "{nacked}");

    let (status, orders) = health("orders");
    assert_eq!(status, 200);
    assert_eq!(orders["dlqLength"], 1);
    assert_eq!(orders["status"], "degraded");
    assert_eq!(health("calm").1["status"], "healthy");
    assert_metric(&d, "busbar_stream_degraded{stream=\"orders\"} 1\n");
    assert_metric(&d, "busbar_stream_degraded{stream=\"calm\"} 0\n");
}

#[test]
fn batch_and_read_limits_come_from_the_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(
        dir.path(),
        &options()
            .config("[http]\nmax_read_count = 512\nmax_batch_events = 10\n")
            .env("BUSBAR_MAX_BATCH_EVENTS", "600"),
    );
    // The environment wins over the file.
    let (status, refused) = publish_n(&d, "bulk", 601);
    assert_eq!(status, 413, "{refused}");
    assert_eq!(refused["error"], "batch_too_large");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("601 events is over the limit of 600"),
        "{refused}"
    );
    assert_eq!(publish_n(&d, "bulk", 600).0, 201);
    assert_eq!(publish_n(&d, "bulk", 100).0, 201);
    assert_metric(
        &d,
        r#"busbar_ingest_errors_total{transport="http",reason="batch_too_large"} 1"#,
    );

    // A read asking for more than max_read_count gets that many, and where
    // to go on.
    let (status, page) = http(&d, "GET", "/api/streams/bulk/events?limit=1000", None, None);
    assert_eq!(status, 200);
    assert_eq!(page["events"].as_array().unwrap().len(), 512);
    assert!(page["next"].is_string(), "no next after a clamped read");
    assert_metric(&d, r#"busbar_reads_clamped_total{op="range"} 1"#);

    // The CLI pages on with `next` to give what --count asked for.
    let out = cli(&d, &["range", "bulk", "--count", "650", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 650);
    assert_eq!(lines[649]["data"]["n"], 49);
}

#[test]
fn a_socket_group_read_over_max_read_count_gets_that_many() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(
        dir.path(),
        &options().config("[http]\nmax_read_count = 512\n"),
    );
    let mut c = Conn::tcp(&d, None);
    create_group(&mut c, "s", "g", json!({}));
    publish_over(&mut c, "s", "t", 600);
    // Even a count no answer could ever hold is an ordinary ask.
    let answer = c.call(read_op("s", "g", "c", 1 << 60, 0));
    assert_eq!(deliveries(&answer).len(), 512, "{answer}");
    let answer = c.call(read_op("s", "g", "c", 1000, 0));
    assert_eq!(deliveries(&answer).len(), 88, "{answer}");
    assert_metric(&d, r#"busbar_reads_clamped_total{op="group_read"} 2"#);
}
