//! Consumer groups over the socket protocol: reading, acking, nacking to
//! the dead-letter stream, blocking reads, bad ops and token scopes.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::group_client::{
    ack_op, create_group, deliveries, ids, publish_n, read_op, Conn, Delivery,
};
use crate::harness::{http, options, read_all, start_in, Daemon};

fn conn(d: &Daemon, unix: bool) -> Conn {
    if unix {
        Conn::unix(d)
    } else {
        Conn::tcp(d, None)
    }
}

#[test]
fn consume_a_stream_in_a_group_over_tcp_and_unix() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    for unix in [false, true] {
        let stream = if unix { "orders-unix" } else { "orders-tcp" };
        let mut c = conn(&d, unix);
        // The first line is an op on the Unix socket: answers are on.
        create_group(&mut c, stream, "billing", json!({}));
        let published = publish_n(&mut c, stream, "order.created", 120);

        let mut seen = Vec::new();
        let mut answer = c.call(read_op(stream, "billing", "w1", 50, 0));
        loop {
            let got = deliveries(&answer);
            if got.is_empty() {
                break;
            }
            for g in &got {
                assert_eq!(g.count, 1, "first delivery");
                assert_eq!(g.event["id"], g.id.as_str());
                assert_eq!(g.event["type"], "order.created");
                assert_eq!(g.event["stream"], stream);
            }
            let batch: Vec<String> = got.iter().map(|g| g.id.clone()).collect();
            seen.extend(batch.clone());
            // The ack and the next read are pipelined in one write.
            c.send_raw(&format!(
                "{}\n{}",
                ack_op(stream, "billing", "w1", &batch),
                read_op(stream, "billing", "w1", 50, 0)
            ));
            let acked = c.recv();
            assert_eq!(ids(&acked, "acked"), batch, "{acked}");
            assert!(acked.get("error").is_none(), "{acked}");
            answer = c.recv();
        }
        assert_eq!(seen, published, "every event once, in order");
        let info = c.call(json!({"op": "group", "stream": stream, "group": "billing"}));
        assert_eq!(info["group"]["pending"], 0, "{info}");
        assert_eq!(info["group"]["lag"], 0, "{info}");
        assert_eq!(info["group"]["last_delivered_id"], published[119].as_str());
    }
}

#[test]
fn nack_until_dead_lettered_lands_once_in_the_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let mut c = Conn::tcp(&d, None);
    create_group(&mut c, "jobs", "workers", json!({"max_deliver": 2}));
    let published = publish_n(&mut c, "jobs", "job.run", 3);

    // First delivery, nacked: retried at once.
    let got = deliveries(&c.call(read_op("jobs", "workers", "w1", 10, 0)));
    assert_eq!(got.len(), 3);
    let first: Vec<String> = got.iter().map(|g| g.id.clone()).collect();
    let nacked = c.call(json!({"op": "nack", "stream": "jobs", "group": "workers",
        "consumer": "w1", "ids": first, "error": "handler failed"}));
    assert_eq!(ids(&nacked, "retried"), published, "{nacked}");

    // Second delivery (another consumer), count 2: the last attempt.
    let got: Vec<Delivery> = deliveries(&c.call(read_op("jobs", "workers", "w2", 10, 0)));
    assert!(got.iter().all(|g| g.count == 2), "{got:?}");
    // One is terminally refused, one acked, one nacked out of attempts.
    let t = c.call(json!({"op": "nack", "stream": "jobs", "group": "workers",
        "consumer": "w2", "ids": [published[0]], "terminal": true, "error": "poison"}));
    assert_eq!(ids(&t, "dead_lettered"), [published[0].clone()], "{t}");
    let a = c.call(ack_op("jobs", "workers", "w2", &[published[1].clone()]));
    assert_eq!(ids(&a, "acked"), [published[1].clone()]);
    let n = c.call(json!({"op": "nack", "stream": "jobs", "group": "workers",
        "consumer": "w2", "ids": [published[2]], "delay_ms": 10}));
    assert_eq!(ids(&n, "dead_lettered"), [published[2].clone()], "{n}");

    // Nothing is left to deliver, and each dead letter is there once.
    let empty = c.call(read_op("jobs", "workers", "w1", 10, 0));
    assert!(deliveries(&empty).is_empty(), "{empty}");
    let pending = c.call(
        json!({"op": "pending", "stream": "jobs", "group": "workers",
        "count": 100}),
    );
    assert_eq!(pending["pending"], json!([]), "{pending}");
    let dlq = read_all(&d, "jobs:dlq", None);
    let origins: Vec<(String, u64, Value)> = dlq
        .iter()
        .map(|e| {
            let m = &e["meta"];
            (
                m["original_id"].as_str().unwrap().to_owned(),
                m["attempts"].as_u64().unwrap(),
                m["last_error"].clone(),
            )
        })
        .collect();
    assert_eq!(
        origins,
        [
            (published[0].clone(), 2, json!("poison")),
            (published[2].clone(), 2, json!("handler failed")),
        ]
    );
    assert!(dlq
        .iter()
        .all(|e| e["type"] == "job.run" && e["data"]["n"].is_u64()));
}

#[test]
fn bad_ops_are_answered_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let mut c = Conn::tcp(&d, None);
    create_group(&mut c, "s", "g", json!({}));
    let published = publish_n(&mut c, "s", "t", 2);
    let got = deliveries(&c.call(read_op("s", "g", "owner", 10, 0)));
    assert_eq!(got.len(), 2);

    let cases: Vec<(Value, &str)> = vec![
        (json!({"op": "fetch", "group": "g"}), "unknown_op"),
        (
            json!({"op": "read", "stream": "s", "group": "g"}),
            "missing_field",
        ),
        (
            json!({"op": "read", "stream": "s", "group": "g", "consumer": "c",
                "count": "ten"}),
            "invalid_op",
        ),
        (
            json!({"op": "read", "stream": "s", "group": "nope", "consumer": "c"}),
            "no_such_group",
        ),
        (
            json!({"op": "read", "stream": "missing", "group": "g", "consumer": "c"}),
            "no_such_stream",
        ),
        (
            json!({"op": "create_group", "stream": "s", "group": "g"}),
            "group_exists",
        ),
        (
            json!({"op": "read", "stream": "s", "group": "g", "consumer": "bad name!"}),
            "invalid_name",
        ),
        (ack_op("s", "g", "owner", &["1-0".to_owned()]), "unknown_id"),
        (
            ack_op("s", "g", "intruder", &[published[0].clone()]),
            "wrong_consumer",
        ),
    ];
    // Pipelined: every line is written before any answer is read.
    let text: Vec<String> = cases.iter().map(|(op, _)| op.to_string()).collect();
    c.send_raw(&text.join("\n"));
    for (op, reason) in &cases {
        let answer = c.recv();
        assert_eq!(answer["error"], *reason, "{op} -> {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // The partial answers say exactly what happened.
    let a = c.call(ack_op(
        "s",
        "g",
        "owner",
        &[published[0].clone(), "9-9".to_owned()],
    ));
    assert_eq!(a["error"], "unknown_id");
    assert_eq!(ids(&a, "acked"), [published[0].clone()]);
    assert_eq!(ids(&a, "unknown"), ["9-9".to_owned()]);
    // An event line right after still gets its id, and a good op works.
    let more = publish_n(&mut c, "s", "t", 1);
    let got = deliveries(&c.call(read_op("s", "g", "owner", 10, 0)));
    assert_eq!(got.iter().map(|g| &g.id).collect::<Vec<_>>(), [&more[0]]);
    // An event whose payload has an `op` member is still an event.
    c.send_raw(r#"{"type":"db.change","stream":"s","op":"insert"}"#);
    assert!(c.recv()["id"].is_string());
    // Even with `op` first.
    c.send_raw(r#"{"op":"insert","type":"db.change","stream":"s"}"#);
    assert!(c.recv()["id"].is_string());
    // And an op whose `op` is not first is still an op.
    c.send_raw(r#"{"group":"g","stream":"s","op":"group"}"#);
    assert_eq!(c.recv()["group"]["name"], "g");
}

#[test]
fn a_blocking_read_wakes_on_publish_without_holding_up_earlier_answers() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let mut admin = Conn::tcp(&d, None);
    create_group(&mut admin, "feed", "g", json!({}));

    let mut consumer = Conn::unix(&d);
    // Its first line is an op, which turns answers on.
    let info = consumer.call(json!({"op": "group", "stream": "feed", "group": "g"}));
    assert_eq!(info["group"]["lag"], 0);
    // An event line, then a read that must wait: the event's ack comes
    // back before the read answers.
    consumer.send_raw(&format!(
        "{}\n{}",
        json!({"type": "other", "stream": "elsewhere"}),
        read_op("feed", "g", "c1", 10, 20_000)
    ));
    let started = Instant::now();
    let first = consumer.recv();
    assert!(first["id"].is_string(), "{first}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Other connections go on while it blocks.
    std::thread::sleep(Duration::from_millis(300));
    let info = admin.call(json!({"op": "group", "stream": "feed", "group": "g"}));
    assert_eq!(info["group"]["pending"], 0);
    let ids = publish_n(&mut admin, "feed", "tick", 1);
    let got = deliveries(&consumer.recv());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, ids[0]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the publish"
    );

    // An ack pipelined before a read that must wait is answered at once.
    consumer.send_raw(&format!(
        "{}\n{}",
        ack_op("feed", "g", "c1", &ids),
        read_op("feed", "g", "c1", 10, 20_000)
    ));
    let t = Instant::now();
    let acked = consumer.recv();
    assert_eq!(crate::group_client::ids(&acked, "acked"), ids, "{acked}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let next = publish_n(&mut admin, "feed", "tick", 1);
    let got = deliveries(&consumer.recv());
    assert_eq!(got.iter().map(|g| &g.id).collect::<Vec<_>>(), [&next[0]]);
    let a = consumer.call(ack_op("feed", "g", "c1", &next));
    assert!(a.get("error").is_none(), "{a}");

    // An empty blocking read answers with no deliveries when time is up.
    let t = Instant::now();
    let empty = consumer.call(read_op("feed", "g", "c1", 10, 300));
    assert!(deliveries(&empty).is_empty());
    assert!(t.elapsed() >= Duration::from_millis(250));
}

const TOKENS: &str = r#"
[[auth.tokens]]
name = "producer"
secret = "producer-secret-1"
scopes = ["publish"]

[[auth.tokens]]
name = "acme"
secret = "acme-secret-0123"
scopes = ["publish", "consume"]
tenant = "acme"
"#;

#[test]
fn tcp_ops_need_the_consume_scope_and_the_right_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options().config(TOKENS));

    let mut producer = Conn::tcp(&d, Some("producer-secret-1"));
    let a = producer.call(json!({"op": "create_group", "stream": "orders", "group": "g"}));
    assert_eq!(a["error"], "forbidden", "{a}");
    // The connection goes on: it may still publish.
    assert_eq!(publish_n(&mut producer, "orders", "t", 1).len(), 1);

    let mut acme = Conn::tcp(&d, Some("acme-secret-0123"));
    let a = acme.call(json!({"op": "create_group", "stream": "orders", "group": "g"}));
    assert_eq!(a["error"], "wrong_tenant", "{a}");
    create_group(&mut acme, "acme:orders", "g", json!({}));
    let published = publish_n(&mut acme, "acme:orders", "t", 2);
    // The default stream of a tenant token is its tenant's.
    let got = deliveries(
        &acme.call(json!({"op": "read", "group": "g", "consumer": "c",
        "count": 10, "stream": "acme:orders"})),
    );
    assert_eq!(
        got.iter().map(|g| g.id.clone()).collect::<Vec<_>>(),
        published
    );

    // The Unix socket is trusted without a token.
    let mut local = Conn::unix(&d);
    let info = local.call(json!({"op": "group", "stream": "acme:orders", "group": "g"}));
    assert_eq!(info["group"]["pending"], 2, "{info}");
}

#[test]
fn ops_on_a_fire_and_forget_connection_are_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let mut admin = Conn::tcp(&d, None);
    create_group(&mut admin, "events", "g", json!({}));
    let mut s = d.unix().unwrap();
    use std::io::Write;
    s.write_all(b"{\"type\":\"first\"}\n{\"op\":\"read\",\"group\":\"g\",\"consumer\":\"c\"}\n")
        .unwrap();
    drop(s);
    crate::harness::eventually("the refusal is counted", || {
        let text = d.metrics().unwrap();
        text.lines().any(|l| {
            l.starts_with("busbar_ingest_errors_total")
                && l.contains("reason=\"acks_required\"")
                && !l.ends_with(" 0")
        })
    });
    // The refusal is counted when the line is read, the event before it is
    // appended a moment later: wait for it, then check the read did not
    // run.
    let mut info = json!(null);
    crate::harness::eventually("the event is appended", || {
        info = admin.call(json!({"op": "group", "stream": "events", "group": "g"}));
        info["group"]["lag"] == 1
    });
    assert_eq!(info["group"]["pending"], 0, "the read did not run: {info}");
}

/// Every consumer of a group sees each event once when all of them ack.
#[test]
fn several_consumers_share_a_group_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let mut admin = Conn::tcp(&d, None);
    create_group(&mut admin, "work", "g", json!({}));
    let published: HashSet<String> = publish_n(&mut admin, "work", "t", 400)
        .into_iter()
        .collect();
    let handles: Vec<_> = (0..4)
        .map(|n| {
            let mut c = if n % 2 == 0 {
                Conn::unix(&d)
            } else {
                Conn::tcp(&d, None)
            };
            std::thread::spawn(move || {
                let name = format!("c{n}");
                let mut mine = Vec::new();
                loop {
                    let got = deliveries(&c.call(read_op("work", "g", &name, 7, 0)));
                    if got.is_empty() {
                        return mine;
                    }
                    let batch: Vec<String> = got.iter().map(|g| g.id.clone()).collect();
                    let a = c.call(ack_op("work", "g", &name, &batch));
                    assert_eq!(ids(&a, "acked"), batch);
                    mine.extend(batch);
                }
            })
        })
        .collect();
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for h in handles {
        for id in h.join().unwrap() {
            *counts.entry(id).or_default() += 1;
        }
    }
    assert_eq!(counts.len(), published.len());
    assert!(counts.values().all(|n| *n == 1));
    let (status, v) = http(&d, "GET", "/health", None, None);
    assert_eq!(status, 200, "{v}");
}

/// `busbar dlq stats`: the runbook's count of dead letters by type and by
/// error, in one command.
#[test]
fn dlq_stats_count_dead_letters_by_type_and_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let events = serde_json::json!([
        {"type": "order.created"}, {"type": "order.created"}, {"type": "order.created"},
        {"type": "order.paid"}, {"type": "order.paid"}
    ]);
    let (status, _) = http(
        &d,
        "POST",
        "/api/streams/shop/events",
        None,
        Some(events.to_string().as_bytes()),
    );
    assert_eq!(status, 201);
    let group = serde_json::json!({"name": "g", "start": "beginning"});
    http(
        &d,
        "POST",
        "/api/streams/shop/groups",
        None,
        Some(group.to_string().as_bytes()),
    );
    let read = serde_json::json!({"consumer": "c", "count": 5});
    let (_, got) = http(
        &d,
        "POST",
        "/api/streams/shop/groups/g/read",
        None,
        Some(read.to_string().as_bytes()),
    );
    let ids: Vec<String> = got["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 5, "{got}");
    for (some, error) in [(&ids[..3], "db down"), (&ids[3..], "bad input")] {
        let nack =
            serde_json::json!({"consumer": "c", "ids": some, "terminal": true, "error": error});
        let (status, v) = http(
            &d,
            "POST",
            "/api/streams/shop/groups/g/nack",
            None,
            Some(nack.to_string().as_bytes()),
        );
        assert_eq!(status, 200, "{v}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(["dlq", "stats", "shop", "--json", "--url", &d.http_url()])
        .env_remove("BUSBAR_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["total"], 5);
    assert_eq!(
        stats["byType"][0],
        serde_json::json!({"key": "order.created", "count": 3})
    );
    assert_eq!(
        stats["byError"][1],
        serde_json::json!({"key": "bad input", "count": 2})
    );
    assert_eq!(stats["truncated"], false);
}
