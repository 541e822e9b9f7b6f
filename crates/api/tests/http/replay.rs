use std::time::Duration;

use busbar_engine::{EngineConfig, HealthThresholds, JobsConfig};
use serde_json::{json, Value};

use crate::common::{ids, types, Server, Setup};

async fn publish(server: &Server, stream: &str, types: &[&str]) -> Vec<String> {
    let lines: String = types
        .iter()
        .map(|t| format!("{{\"type\":\"{t}\"}}\n"))
        .collect();
    ids(&server
        .post(&format!("/api/streams/{stream}/events"))
        .ndjson(&lines)
        .send()
        .await
        .expect(201))
}

async fn wait_for(server: &Server, job: &str) -> Value {
    for _ in 0..500 {
        let status = server
            .get(&format!("/api/replay/{job}"))
            .send()
            .await
            .expect(200)
            .json();
        if status["state"] != "running" {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {job} did not finish");
}

async fn start(server: &Server, body: Value) -> Value {
    server
        .post("/api/replay")
        .json(&body)
        .send()
        .await
        .expect(202)
        .json()
}

#[tokio::test]
async fn the_runbook_replay_body_republishes_onto_the_stream() {
    let server = Server::open().await;
    publish(&server, "events", &["approval.item.created", "other"]).await;
    // The runbook's body, as written: times and types, no stream, no target.
    let job = start(
        &server,
        json!({
            "startTime": "2020-12-01T00:00:00Z",
            "endTime": "2099-12-01T23:59:59Z",
            "eventTypes": ["approval.item.created"]
        }),
    )
    .await;
    assert_eq!(job["kind"], "replay");
    assert_eq!(job["stream"], "events");
    assert_eq!(job["target"], "stream events");
    let done = wait_for(&server, job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "done");
    assert_eq!(done["published"], 1);
    assert_eq!(done["scanned"], 2);
    assert_eq!(done["total_estimate"], 1);
    let read = server
        .get("/api/streams/events/events")
        .send()
        .await
        .expect(200);
    assert_eq!(
        types(&read),
        ["approval.item.created", "other", "approval.item.created"]
    );
    let copy = &read.json()["events"][2];
    assert_eq!(copy["meta"]["job"], job["id"]);

    // By type with a limit, into another stream, snake_case keys.
    let job = start(
        &server,
        json!({"stream": "events", "event_types": ["approval.*"], "limit": 1,
               "batch_size": 10, "rate": 1000, "target": {"stream": "audit"}}),
    )
    .await;
    wait_for(&server, job["id"].as_str().unwrap()).await;
    let audit = server
        .get("/api/streams/audit/events")
        .send()
        .await
        .expect(200);
    assert_eq!(types(&audit), ["approval.item.created"]);

    let replays = server.get("/api/replay").send().await.expect(200).json();
    assert_eq!(replays["jobs"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn replay_into_groups() {
    let server = Server::open().await;
    let published = publish(&server, "orders", &["a", "b", "c"]).await;
    server
        .post("/api/streams/orders/groups")
        .json(&json!({"name": "billing", "start": "beginning"}))
        .send()
        .await
        .expect(201);
    let read = |consumer: &'static str| {
        server
            .post("/api/streams/orders/groups/billing/read")
            .json(&json!({"consumer": consumer, "count": 10}))
            .send()
    };
    read("c").await.expect(200);

    let job = start(
        &server,
        json!({"stream": "orders", "from": published[1], "target": {"group": "billing"}}),
    )
    .await;
    let again = read("c").await.expect(200).json();
    assert_eq!(again["deliveries"].as_array().unwrap().len(), 2);
    let done = wait_for(&server, job["id"].as_str().unwrap()).await;
    assert_eq!(done["delivered"], 2);

    let job = start(
        &server,
        json!({"stream": "orders", "target": {"newGroup": "late", "maxDeliver": 5}}),
    )
    .await;
    assert_eq!(job["target"], "new group late");
    let late = server
        .get("/api/streams/orders/groups/late")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(late["lag"], 3);
    assert_eq!(late["config"]["max_deliver"], 5);
    let id = job["id"].as_str().unwrap();
    let cancelled = server
        .post(&format!("/api/replay/{id}/cancel"))
        .send()
        .await
        .expect(200);
    assert_eq!(cancelled.json()["id"], id);
    assert_eq!(wait_for(&server, id).await["state"], "cancelled");
    let again = server
        .post(&format!("/api/jobs/{id}/cancel"))
        .send()
        .await
        .expect(409);
    assert_eq!(again.reason(), "job_not_running");
}

#[tokio::test]
async fn configured_job_limits_answer_with_their_errors_and_metrics() {
    let server = Server::start(Setup {
        engine: EngineConfig {
            jobs: JobsConfig {
                max_running: 1,
                max_rate: 50,
                ..JobsConfig::default()
            },
            ..EngineConfig::default()
        },
        ..Setup::default()
    })
    .await;
    publish(&server, "orders", &["a"; 20]).await;
    let slow = json!({"stream": "orders", "rate": 1});
    let job = start(&server, slow.clone()).await;
    let refused = server
        .post("/api/replay")
        .json(&slow)
        .send()
        .await
        .expect(429);
    assert_eq!(refused.reason(), "too_many_jobs");
    let message = refused.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("limit of 1 running jobs"), "{message}");
    let too_fast = server
        .post("/api/streams/orders/dlq/reprocess")
        .json(&json!({"all": true, "rate": 51}))
        .send()
        .await
        .expect(400);
    assert_eq!(too_fast.reason(), "invalid_param");
    let message = too_fast.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("1 to 50 events per second"), "{message}");

    let metrics = server.get("/metrics").send().await.expect(200).text();
    for line in [
        r#"busbar_jobs_running{kind="replay"} 1"#,
        r#"busbar_jobs_rejected_total{kind="replay",limit="max_running"} 1"#,
        r#"busbar_jobs_rejected_total{kind="dlq_reprocess",limit="max_rate"} 1"#,
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
    let id = job["id"].as_str().unwrap();
    server
        .post(&format!("/api/jobs/{id}/cancel"))
        .send()
        .await
        .expect(200);
    assert_eq!(wait_for(&server, id).await["state"], "cancelled");
    let metrics = server.get("/metrics").send().await.expect(200).text();
    assert!(metrics.contains(r#"busbar_jobs_running{kind="replay"} 0"#));
}

#[tokio::test]
async fn bad_replays_are_clear_errors() {
    let server = Server::open().await;
    let published = publish(&server, "orders", &["a", "b"]).await;
    let inverted = server
        .post("/api/replay")
        .json(&json!({"stream": "orders", "from": published[1], "to": published[0]}))
        .send()
        .await
        .expect(400);
    assert_eq!(inverted.reason(), "inverted_range");
    let message = inverted.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("after its end"), "{message}");
    let inverted_times = server
        .post("/api/replay")
        .json(
            &json!({"stream": "orders", "startTime": "2025-12-02T00:00:00Z",
                      "endTime": "2025-12-01T00:00:00Z"}),
        )
        .send()
        .await
        .expect(400);
    assert_eq!(inverted_times.reason(), "inverted_range");

    for (body, reason) in [
        (
            json!({"stream": "orders", "from": "1-0", "startTime": 5}),
            "invalid_param",
        ),
        (
            json!({"stream": "orders", "startTime": "last tuesday"}),
            "invalid_param",
        ),
        (json!({"stream": "orders", "target": {}}), "invalid_param"),
        (
            json!({"stream": "orders", "target": {"group": "g", "stream": "s"}}),
            "invalid_param",
        ),
        (
            json!({"stream": "orders", "eventTypes": ["a"], "target": {"group": "billing"}}),
            "invalid_param",
        ),
        (json!({"stream": "orders", "batchSize": 0}), "invalid_param"),
        (json!({"stream": "orders", "rate": 0}), "invalid_param"),
        (json!({"stream": "orders", "colour": "red"}), "invalid_body"),
        (json!({"stream": "../etc"}), "invalid_stream"),
    ] {
        let reply = server
            .post("/api/replay")
            .json(&body)
            .send()
            .await
            .expect(400);
        assert_eq!(reply.reason(), reason, "{body}: {}", reply.text());
    }
    let missing = server
        .post("/api/replay")
        .json(&json!({"stream": "nope"}))
        .send()
        .await
        .expect(404);
    assert_eq!(missing.reason(), "no_such_stream");
    let no_group = server
        .post("/api/replay")
        .json(&json!({"stream": "orders", "target": {"group": "ghost"}}))
        .send()
        .await
        .expect(404);
    assert_eq!(no_group.reason(), "no_such_group");
    let no_job = server
        .get("/api/replay/replay-0-1")
        .send()
        .await
        .expect(404);
    assert_eq!(no_job.reason(), "no_such_job");
}

#[tokio::test]
async fn events_health_has_the_runbook_shape() {
    let server = Server::start(Setup {
        engine: EngineConfig {
            health: HealthThresholds {
                max_dlq: 1,
                max_lag: 1000,
            },
            ..EngineConfig::default()
        },
        ..Setup::default()
    })
    .await;
    // Before anything was published: zeros, healthy.
    let empty = server.get("/events/health").send().await.expect(200).json();
    assert_eq!(
        empty,
        json!({"status": "healthy", "streamLength": 0, "dlqLength": 0,
               "consumerGroups": 0, "lastProcessedAt": null, "streams": []})
    );

    let published = publish(&server, "events", &["a", "b", "c"]).await;
    server
        .post("/api/streams/events/groups")
        .json(&json!({"name": "g", "start": "beginning"}))
        .send()
        .await
        .expect(201);
    server
        .post("/api/streams/events/groups/g/read")
        .json(&json!({"consumer": "c", "count": 3}))
        .send()
        .await
        .expect(200);
    server
        .post("/api/streams/events/groups/g/ack")
        .json(&json!({"ids": [published[0]]}))
        .send()
        .await
        .expect(200);
    server
        .post("/api/streams/events/groups/g/nack")
        .json(&json!({"consumer": "c", "ids": [published[1]], "terminal": true}))
        .send()
        .await
        .expect(200);
    let health = server.get("/events/health").send().await.expect(200).json();
    let keys: Vec<&String> = health.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "consumerGroups",
            "dlqLength",
            "lastProcessedAt",
            "status",
            "streamLength",
            "streams"
        ]
    );
    // Every stream, each with its own figures; its dead letters count
    // with it, not as a stream of their own.
    assert_eq!(health["streams"].as_array().unwrap().len(), 1, "{health}");
    assert_eq!(health["streams"][0]["stream"], "events");
    assert_eq!(health["streams"][0]["dlqLength"], 1);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["streamLength"], 3);
    assert_eq!(health["dlqLength"], 1);
    assert_eq!(health["consumerGroups"], 1);
    let at = health["lastProcessedAt"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.contains('T'), "{at}");

    server
        .post("/api/streams/events/groups/g/nack")
        .json(&json!({"consumer": "c", "ids": [published[2]], "terminal": true}))
        .send()
        .await
        .expect(200);
    let degraded = server.get("/events/health").send().await.expect(200).json();
    assert_eq!(degraded["status"], "degraded");
    let metrics = server.get("/metrics").send().await.expect(200).text();
    assert!(
        metrics.contains("busbar_stream_degraded{stream=\"events\"} 1\n"),
        "{metrics}"
    );

    publish(&server, "other", &["x"]).await;
    let other = server
        .get("/events/health?stream=other")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(other["streamLength"], 1);
    // Without `?stream=`: every stream summed, the worst status, and each
    // stream's own (the runbook's stream need not be named `events`).
    let all = server.get("/events/health").send().await.expect(200).json();
    assert_eq!(all["streamLength"], 4, "{all}");
    assert_eq!(all["status"], "degraded");
    let names: Vec<&str> = all["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["events", "other"]);
    let missing = server
        .get("/events/health?stream=nope")
        .send()
        .await
        .expect(404);
    assert_eq!(missing.reason(), "no_such_stream");
}
