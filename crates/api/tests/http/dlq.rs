use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{ids, Server};

const DLQ: &str = "/api/streams/orders/dlq";

/// Publishes `types` to `orders` and dead-letters each with a terminal nack
/// whose error names its type. Returns the original ids.
async fn dead_letter(server: &Server, types: &[&str]) -> Vec<String> {
    let _ = server
        .post("/api/streams/orders/groups")
        .json(&json!({"name": "g", "start": "beginning"}))
        .send()
        .await;
    let lines: String = types
        .iter()
        .map(|t| format!("{{\"type\":\"{t}\",\"secret\":\"payload-{t}\"}}\n"))
        .collect();
    let published = ids(&server
        .post("/api/streams/orders/events")
        .ndjson(&lines)
        .send()
        .await
        .expect(201));
    let read = server
        .post("/api/streams/orders/groups/g/read")
        .json(&json!({"consumer": "c", "count": 1000}))
        .send()
        .await
        .expect(200)
        .json();
    for d in read["deliveries"].as_array().unwrap() {
        let t = d["event"]["type"].as_str().unwrap();
        server
            .post("/api/streams/orders/groups/g/nack")
            .json(
                &json!({"consumer": "c", "ids": [d["event"]["id"]], "terminal": true,
                          "error": format!("handler failed on {t}")}),
            )
            .send()
            .await
            .expect(200);
    }
    published
}

/// The ids and types of a listing.
fn listed(reply: &Value) -> Vec<(String, String)> {
    reply["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn wait_for_job(server: &Server, location: &str) -> Value {
    for _ in 0..500 {
        let status = server.get(location).send().await.expect(200).json();
        if status["state"] != "running" {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job at {location} did not finish");
}

#[tokio::test]
async fn lists_with_filters_and_pages() {
    let server = Server::open().await;
    let published = dead_letter(&server, &["order.created", "order.paid", "user.created"]).await;
    let all = server.get(DLQ).send().await.expect(200).json();
    assert_eq!(all["stream"], "orders:dlq");
    let entries = listed(&all);
    assert_eq!(entries.len(), 3);
    let first = &all["entries"][0];
    assert_eq!(first["meta"]["original_id"], published[0].as_str());
    assert_eq!(first["meta"]["group"], "g");
    assert_eq!(first["meta"]["stream"], "orders");
    assert_eq!(first["data"]["secret"], "payload-order.created");
    assert!(all.get("next").is_none());

    let typed = server
        .get(&format!("{DLQ}?type=order.*"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(listed(&typed).len(), 2);
    let by_error = server
        .get(&format!("{DLQ}?error=ON%20USER"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(listed(&by_error)[0].1, "user.created");
    let page = server
        .get(&format!("{DLQ}?limit=2"))
        .send()
        .await
        .expect(200)
        .json();
    let next = page["next"].as_str().unwrap();
    let rest = server
        .get(&format!("{DLQ}?limit=2&from={next}"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(listed(&rest), &entries[2..]);
    let newest = server
        .get(&format!("{DLQ}?reverse=true&limit=1"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(listed(&newest), &entries[2..]);
    // By dead-letter time: everything was dead-lettered after 2020.
    let since = server
        .get(&format!("{DLQ}?from=2020-01-01T00:00:00Z&to=%2B"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(listed(&since).len(), 3);
    let before = server
        .get(&format!("{DLQ}?to=2020-01-01T00:00:00Z"))
        .send()
        .await
        .expect(200)
        .json();
    assert!(listed(&before).is_empty());

    for (query, reason) in [
        ("from=yesterday", "invalid_param"),
        ("from=9-0&to=1-0", "inverted_range"),
        ("limit=0", "invalid_param"),
        ("colour=red", "invalid_param"),
    ] {
        let reply = server
            .get(&format!("{DLQ}?{query}"))
            .send()
            .await
            .expect(400);
        assert_eq!(reply.reason(), reason, "{query}");
    }
    let unknown = server.get("/api/streams/nope/dlq").send().await.expect(404);
    assert_eq!(unknown.reason(), "no_such_stream");
}

#[tokio::test]
async fn show_reprocess_and_delete_one() {
    let server = Server::open().await;
    let published = dead_letter(&server, &["order.created", "order.paid"]).await;
    let entries = listed(&server.get(DLQ).send().await.expect(200).json());
    let (dlq_id, _) = &entries[0];

    let shown = server
        .get(&format!("{DLQ}/{dlq_id}"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(shown["stream"], "orders:dlq");
    assert_eq!(
        shown["meta"]["last_error"],
        "handler failed on order.created"
    );

    let moved = server
        .post(&format!("{DLQ}/{dlq_id}/reprocess"))
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(moved["dlq_id"], dlq_id.as_str());
    assert_eq!(moved["original_id"], published[0].as_str());
    let new_id = moved["id"].as_str().unwrap();
    let copy = server
        .get(&format!(
            "/api/streams/orders/events?from={new_id}&to={new_id}"
        ))
        .send()
        .await
        .expect(200)
        .json();
    let copy = &copy["events"][0];
    assert_eq!(copy["type"], "order.created");
    assert_eq!(copy["data"]["secret"], "payload-order.created");
    assert_eq!(
        copy["meta"],
        json!({"reprocessed_from": dlq_id, "original_id": published[0], "dlq_stream": "orders:dlq"})
    );

    // The entry is gone: each operation on it is a clear 404.
    for (method, path) in [
        ("POST", format!("{DLQ}/{dlq_id}/reprocess")),
        ("GET", format!("{DLQ}/{dlq_id}")),
        ("DELETE", format!("{DLQ}/{dlq_id}")),
    ] {
        let reply = server.call(method, &path).send().await.expect(404);
        assert_eq!(reply.reason(), "no_such_dlq_entry", "{method} {path}");
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(dlq_id.as_str()), "{message}");
        assert!(!reply.text().contains("payload-"), "payload in an error");
    }
    let bad = server
        .post(&format!("{DLQ}/not-an-id/reprocess"))
        .send()
        .await
        .expect(400);
    assert_eq!(bad.reason(), "invalid_id");

    let (other, _) = &entries[1];
    let deleted = server
        .delete(&format!("{DLQ}/{other}"))
        .send()
        .await
        .expect(200);
    assert_eq!(deleted.json(), json!({"deleted": 1}));
    assert!(listed(&server.get(DLQ).send().await.expect(200).json()).is_empty());
}

#[tokio::test]
async fn bulk_reprocess_is_a_job() {
    let server = Server::open().await;
    dead_letter(&server, &["order.a", "user.b", "order.c"]).await;
    let reply = server
        .post(&format!("{DLQ}/reprocess"))
        .json(&json!({"type": "order.*", "rate": 10000}))
        .send()
        .await
        .expect(202);
    let location = reply.headers["location"].to_str().unwrap().to_owned();
    let job = reply.json();
    assert_eq!(
        location,
        format!("/api/jobs/{}", job["id"].as_str().unwrap())
    );
    assert_eq!(job["kind"], "dlq_reprocess");
    let done = wait_for_job(&server, &location).await;
    assert_eq!(done["state"], "done");
    assert_eq!(done["published"], 2);
    let left = listed(&server.get(DLQ).send().await.expect(200).json());
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1, "user.b");

    // The runbook's reprocess-type body, and reprocess-all.
    let by_runbook = server
        .post(&format!("{DLQ}/reprocess"))
        .json(&json!({"eventType": "user.b"}))
        .send()
        .await
        .expect(202);
    let location = by_runbook.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(wait_for_job(&server, &location).await["published"], 1);
    let all = server
        .post(&format!("{DLQ}/reprocess"))
        .json(&json!({"all": true}))
        .send()
        .await
        .expect(202)
        .json();
    assert_eq!(all["state"], "running");
    let jobs = server.get("/api/jobs").send().await.expect(200).json();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 3);

    for bad in [
        json!({}),
        json!({"all": true, "type": "x"}),
        json!({"all": false}),
        json!({"all": true, "rate": 0}),
        json!({"eventId": "1-0"}),
    ] {
        let reply = server
            .post(&format!("{DLQ}/reprocess"))
            .json(&bad)
            .send()
            .await
            .expect(400);
        assert!(
            ["invalid_param", "invalid_body"].contains(&reply.reason().as_str()),
            "{bad}: {}",
            reply.text()
        );
    }
}

#[tokio::test]
async fn purge_needs_confirmation() {
    let server = Server::open().await;
    dead_letter(&server, &["a", "b"]).await;
    for body in ["", "{}", r#"{"confirm":false}"#] {
        let reply = server
            .post(&format!("{DLQ}/purge"))
            .body(body)
            .send()
            .await
            .expect(400);
        assert_eq!(reply.reason(), "confirmation_required");
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains("confirm"), "{message}");
    }
    assert_eq!(
        listed(&server.get(DLQ).send().await.expect(200).json()).len(),
        2
    );
    let purged = server
        .post(&format!("{DLQ}/purge"))
        .json(&json!({"confirm": true}))
        .send()
        .await
        .expect(200);
    assert_eq!(purged.json(), json!({"deleted": 2}));
    assert!(listed(&server.get(DLQ).send().await.expect(200).json()).is_empty());
}
