use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{ids, tokens, Server, Setup};

const G: &str = "/api/streams/orders/groups/billing";

async fn publish(server: &Server, stream: &str, types: &[&str]) -> Vec<String> {
    let lines: String = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{{\"type\":\"{t}\",\"n\":{i}}}\n"))
        .collect();
    ids(&server
        .post(&format!("/api/streams/{stream}/events"))
        .ndjson(&lines)
        .send()
        .await
        .expect(201))
}

async fn create(server: &Server, body: Value) -> Value {
    server
        .post("/api/streams/orders/groups")
        .json(&body)
        .send()
        .await
        .expect(201)
        .json()
}

async fn read(server: &Server, consumer: &str, count: usize) -> Value {
    server
        .post(&format!("{G}/read"))
        .json(&json!({"consumer": consumer, "count": count}))
        .send()
        .await
        .expect(200)
        .json()
}

/// `(id, delivery_count)` of each delivery of a read reply.
fn delivered(reply: &Value) -> Vec<(String, u64)> {
    reply["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["event"]["id"].as_str().unwrap().to_owned(),
                d["delivery_count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn create_list_describe_and_delete_groups() {
    let server = Server::open().await;
    let info = create(
        &server,
        json!({"name": "billing", "start": "beginning", "max_deliver": 5, "ack_wait_ms": 1000}),
    )
    .await;
    assert_eq!(info["name"], "billing");
    assert_eq!(info["config"]["max_deliver"], 5);
    assert_eq!(info["config"]["ack_wait"], 1000);
    create(&server, json!({"name": "mailer"})).await;

    let dup = server
        .post("/api/streams/orders/groups")
        .json(&json!({"name": "billing"}))
        .send()
        .await
        .expect(409);
    assert_eq!(dup.reason(), "group_exists");
    for (bad, reason) in [
        (json!({"name": "no spaces"}), "invalid_name"),
        (json!({"name": "g", "start": "yesterday"}), "invalid_param"),
        (json!({"name": "g", "max_deliver": 0}), "invalid_param"),
        (json!({"name": "g", "colour": "red"}), "invalid_body"),
        (json!({}), "invalid_body"),
    ] {
        let reply = server
            .post("/api/streams/orders/groups")
            .json(&bad)
            .send()
            .await
            .expect(400);
        assert_eq!(reply.reason(), reason, "{bad}: {}", reply.text());
    }

    let list = server
        .get("/api/streams/orders/groups")
        .send()
        .await
        .expect(200)
        .json();
    let names: Vec<&str> = list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["billing", "mailer"]);
    let one = server.get(G).send().await.expect(200).json();
    assert_eq!(one["lag"], 0);
    assert_eq!(one["paused"], false);

    let deleted = server
        .delete("/api/streams/orders/groups/mailer")
        .send()
        .await
        .expect(200);
    assert_eq!(deleted.json()["deleted"], true);
    let gone = server
        .delete("/api/streams/orders/groups/mailer")
        .send()
        .await
        .expect(404);
    assert_eq!(gone.reason(), "no_such_group");
    let missing = server
        .get("/api/streams/orders/groups/mailer")
        .send()
        .await
        .expect(404);
    assert_eq!(missing.reason(), "no_such_group");
    assert!(missing.json()["message"]
        .as_str()
        .unwrap()
        .contains("mailer"));
}

#[tokio::test]
async fn read_ack_and_the_clear_ack_errors() {
    let server = Server::open().await;
    create(&server, json!({"name": "billing", "start": "beginning"})).await;
    let published = publish(&server, "orders", &["order.created", "order.paid", "x"]).await;

    let first = read(&server, "alice", 2).await;
    assert_eq!(
        delivered(&first),
        [(published[0].clone(), 1), (published[1].clone(), 1)]
    );
    let event = &first["deliveries"][0]["event"];
    assert_eq!(event["type"], "order.created");
    assert_eq!(event["data"], json!({"n": 0}));
    assert_eq!(first["redelivered"], 0);
    let bob = read(&server, "bob", 5).await;
    assert_eq!(delivered(&bob), [(published[2].clone(), 1)]);

    let ack = |body: Value| server.post(&format!("{G}/ack")).json(&body).send();
    // Unknown ids only: 409 unknown_ids, naming them.
    let unknown = ack(json!({"consumer": "alice", "ids": ["1-0"]}))
        .await
        .expect(409);
    assert_eq!(unknown.reason(), "unknown_ids");
    assert!(unknown.json()["message"].as_str().unwrap().contains("1-0"));
    // Held by another consumer only: 409 wrong_consumer.
    let wrong = ack(json!({"consumer": "alice", "ids": [published[2]]}))
        .await
        .expect(409);
    assert_eq!(wrong.reason(), "wrong_consumer");
    // Partial: 200, every kind listed.
    let partial = ack(json!({"consumer": "alice", "ids": [published[0], published[2], "1-0"]}))
        .await
        .expect(200)
        .json();
    assert_eq!(
        partial,
        json!({"acked": [published[0]], "unknown": ["1-0"], "wrong_consumer": [published[2]]})
    );
    // Without a consumer, whoever holds them.
    let anyone = ack(json!({"ids": [published[1], published[2]]}))
        .await
        .expect(200)
        .json();
    assert_eq!(anyone["acked"].as_array().unwrap().len(), 2);
    for (bad, reason) in [
        (json!({"ids": []}), "invalid_param"),
        (json!({"ids": ["nope"]}), "invalid_id"),
        (json!({"consumer": "alice"}), "invalid_body"),
    ] {
        assert_eq!(ack(bad).await.expect(400).reason(), reason);
    }
    let info = server.get(G).send().await.expect(200).json();
    assert_eq!(info["pending"], 0);
    assert!(info["last_ack_ms"].is_u64());
}

#[tokio::test]
async fn nack_retries_then_dead_letters() {
    let server = Server::open().await;
    create(
        &server,
        json!({"name": "billing", "start": "beginning", "max_deliver": 2}),
    )
    .await;
    let published = publish(&server, "orders", &["order.created"]).await;
    let nack = |body: Value| server.post(&format!("{G}/nack")).json(&body).send();

    read(&server, "c", 1).await;
    let retried = nack(json!({"consumer": "c", "ids": published, "error": "db down"}))
        .await
        .expect(200)
        .json();
    assert_eq!(retried["retried"], json!(published));
    let again = read(&server, "c", 1).await;
    assert_eq!(delivered(&again), [(published[0].clone(), 2)]);
    assert_eq!(again["redelivered"], 1);
    let pending = server
        .get(&format!("{G}/pending"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(pending["pending"][0]["delivery_count"], 2);
    assert_eq!(pending["pending"][0]["last_error"], "db down");

    let out = nack(json!({"consumer": "c", "ids": published}))
        .await
        .expect(200)
        .json();
    assert_eq!(out["dead_lettered"], json!(published));
    let dlq = server
        .get("/api/streams/orders/dlq")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(dlq["entries"][0]["meta"]["last_error"], "db down");
    assert_eq!(dlq["entries"][0]["meta"]["attempts"], 2);

    // Nothing left to nack: the same 409 as ack.
    let none = nack(json!({"consumer": "c", "ids": published}))
        .await
        .expect(409);
    assert_eq!(none.reason(), "unknown_ids");
    let long = "x".repeat(2000);
    let reply = nack(json!({"consumer": "c", "ids": published, "error": long}))
        .await
        .expect(400);
    assert!(!reply.text().contains("xxxx"), "error text echoed back");
}

#[tokio::test]
async fn a_blocked_read_wakes_on_publish_and_on_shutdown() {
    let server = Server::open().await;
    create(&server, json!({"name": "billing"})).await;
    let started = Instant::now();
    let waiting = server
        .post(&format!("{G}/read"))
        .json(&json!({"consumer": "c", "count": 10, "block_ms": 10_000}))
        .send();
    let publisher = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        publish(&server, "orders", &["late"]).await
    };
    let (reply, published) = tokio::join!(waiting, publisher);
    assert_eq!(delivered(&reply.expect(200).json())[0].0, published[0]);
    assert!(started.elapsed() < Duration::from_secs(5));

    let too_long = server
        .post(&format!("{G}/read"))
        .json(&json!({"consumer": "c", "block_ms": 600_000}))
        .send()
        .await
        .expect(400);
    assert_eq!(too_long.reason(), "invalid_param");

    // A long poll does not hold a graceful shutdown up.
    let blocked = server
        .post(&format!("{G}/read"))
        .json(&json!({"consumer": "c", "block_ms": 60_000}))
        .send();
    let blocked = tokio::spawn(blocked);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    server.shutdown().await;
    let reply = blocked.await.unwrap().expect(200).json();
    assert!(reply["deliveries"].as_array().unwrap().is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn pause_resume_claim_and_remove_consumers() {
    let server = Server::open().await;
    create(&server, json!({"name": "billing", "start": "beginning"})).await;
    let published = publish(&server, "orders", &["a", "b"]).await;

    let paused = server
        .post(&format!("{G}/pause"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(
        paused,
        json!({"paused": true, "stream": "orders", "group": "billing"})
    );
    assert!(delivered(&read(&server, "c", 5).await).is_empty());
    server.post(&format!("{G}/resume")).send().await.expect(200);
    assert_eq!(delivered(&read(&server, "c", 1).await).len(), 1);

    // All delivery at once, as the runbook's events/consumers/pause.
    let all = server
        .post("/api/consumers/pause")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(all, json!({"paused": true}));
    assert!(delivered(&read(&server, "c", 5).await).is_empty());
    server
        .post("/api/consumers/resume")
        .send()
        .await
        .expect(200);
    assert_eq!(delivered(&read(&server, "c", 5).await).len(), 1);
    let half = server
        .post("/api/consumers/pause")
        .json(&json!({"stream": "orders"}))
        .send()
        .await
        .expect(400);
    assert_eq!(half.reason(), "invalid_param");

    // Claim: c holds both; d takes them over.
    let claimed = server
        .post(&format!("{G}/claim"))
        .json(&json!({"consumer": "d", "min_idle_ms": 0}))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(claimed["deliveries"].as_array().unwrap().len(), 2);
    assert!(claimed["next"].is_null());
    assert_eq!(claimed["deleted"], json!([]));
    let of_d = server
        .get(&format!("{G}/pending?consumer=d&limit=1"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(of_d["pending"].as_array().unwrap().len(), 1);
    assert_eq!(of_d["pending"][0]["id"], published[0].as_str());

    let removed = server
        .delete(&format!("{G}/consumers/d"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(removed, json!({"consumer": "d", "released": 2}));
    let info = server.get(G).send().await.expect(200).json();
    assert_eq!(info["consumers"][0]["name"], "c");
}

#[tokio::test]
async fn scopes_and_tenants_apply_to_groups() {
    let server = Server::start(Setup {
        tokens: tokens(),
        ..Setup::default()
    })
    .await;
    let reader = "reader-secret";
    // Consume may create, read and ack; deleting and pausing need admin.
    server
        .post("/api/streams/orders/groups")
        .token(reader)
        .json(&json!({"name": "billing"}))
        .send()
        .await
        .expect(201);
    server
        .post(&format!("{G}/read"))
        .token(reader)
        .json(&json!({"consumer": "c"}))
        .send()
        .await
        .expect(200);
    for (method, path) in [
        ("DELETE", G.to_owned()),
        ("POST", format!("{G}/pause")),
        ("POST", "/api/consumers/pause".to_owned()),
        ("DELETE", format!("{G}/consumers/c")),
    ] {
        let reply = server
            .call(method, &path)
            .token(reader)
            .send()
            .await
            .expect(403);
        assert_eq!(reply.reason(), "forbidden");
    }
    let other_tenant = server
        .get("/api/streams/orders/groups")
        .token("acme-secret")
        .send()
        .await
        .expect(403);
    assert_eq!(other_tenant.reason(), "wrong_tenant");
    server.get(G).send().await.expect(401);
}
