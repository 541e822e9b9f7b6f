use serde_json::json;

use crate::common::{ids, types, Server};

async fn seeded(server: &Server, stream: &str, n: usize) -> Vec<String> {
    let lines = (0..n)
        .map(|i| format!("{{\"type\":\"t{i}\"}}\n"))
        .collect::<String>();
    ids(&server
        .post(&format!("/api/streams/{stream}/events"))
        .ndjson(&lines)
        .send()
        .await
        .expect(201))
}

#[tokio::test]
async fn lists_and_describes_streams() {
    let server = Server::open().await;
    let ids = seeded(&server, "b", 2).await;
    seeded(&server, "a", 1).await;
    let list = server.get("/api/streams").send().await.expect(200).json();
    let names: Vec<&str> = list["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let info = server.get("/api/streams/b").send().await.expect(200).json();
    assert_eq!(info["length"], 2);
    assert_eq!(info["first_id"], ids[0].as_str());
    assert_eq!(info["last_id"], ids[1].as_str());
    let missing = server.get("/api/streams/zzz").send().await.expect(404);
    assert_eq!(missing.reason(), "no_such_stream");
}

#[tokio::test]
async fn trims_by_length_id_and_age() {
    let server = Server::open().await;
    let ids = seeded(&server, "t", 6).await;
    let trim = |body: serde_json::Value| server.post("/api/streams/t/trim").json(&body).send();

    let removed = trim(json!({"maxlen": 4})).await.expect(200).json();
    assert_eq!(removed, json!({"removed": 2}));
    let removed = trim(json!({"minid": ids[3]})).await.expect(200).json();
    assert_eq!(removed, json!({"removed": 1}));
    let removed = trim(json!({"max_age": "1h"})).await.expect(200).json();
    assert_eq!(removed, json!({"removed": 0}));
    let read = server.get("/api/streams/t/events").send().await.expect(200);
    assert_eq!(types(&read), ["t3", "t4", "t5"]);

    for bad in [
        json!({}),
        json!({"maxlen": 1, "minid": "1-0"}),
        json!({"max_age": "later"}),
        json!({"maxlen": -1}),
        json!({"maxlen": 1, "colour": "red"}),
    ] {
        let reply = trim(bad.clone()).await.expect(400);
        assert!(
            ["invalid_param", "invalid_body"].contains(&reply.reason().as_str()),
            "{bad}: {}",
            reply.text()
        );
    }
    let reply = server
        .post("/api/streams/t/trim")
        .body("{not json")
        .send()
        .await
        .expect(400);
    assert_eq!(reply.reason(), "invalid_body");
}

#[tokio::test]
async fn deletes_events_and_streams() {
    let server = Server::open().await;
    let ids = seeded(&server, "d", 4).await;
    let one = server
        .delete(&format!("/api/streams/d/events/{}", ids[0]))
        .send()
        .await
        .expect(200);
    assert_eq!(one.json(), json!({"deleted": 1}));
    let many = server
        .post("/api/streams/d/events/delete")
        .json(&json!({"ids": [ids[0], ids[1], ids[2]]}))
        .send()
        .await
        .expect(200);
    assert_eq!(many.json(), json!({"deleted": 2}));
    let read = server.get("/api/streams/d/events").send().await.expect(200);
    assert_eq!(types(&read), ["t3"]);
    let bad = server
        .post("/api/streams/d/events/delete")
        .json(&json!({"ids": ["nope"]}))
        .send()
        .await
        .expect(400);
    assert_eq!(bad.reason(), "invalid_id");

    let gone = server.delete("/api/streams/d").send().await.expect(200);
    assert_eq!(gone.json(), json!({"stream": "d", "deleted": true}));
    server.get("/api/streams/d").send().await.expect(404);
    server.delete("/api/streams/d").send().await.expect(404);
}

#[tokio::test]
async fn rotates_a_stream() {
    let server = Server::open().await;
    seeded(&server, "r", 1).await;
    let rotated = server
        .post("/api/streams/r/rotate")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(rotated["stream"], "r");
    assert!(rotated["sealed"].is_boolean());
    assert!(rotated["segments"].is_u64());
    server
        .post("/api/streams/none/rotate")
        .send()
        .await
        .expect(404);
}
