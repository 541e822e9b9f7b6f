use std::time::{Duration, Instant};

use busbar_engine::EngineConfig;
use serde_json::json;

use crate::common::{ids, types, Server, Setup};

const EVENTS: &str = "/api/streams/shop/events";

async fn seed(server: &Server) -> Vec<String> {
    let batch = json!([
        {"type":"order.created","n":1},
        {"type":"user.created","n":2},
        {"type":"order.paid","n":3},
        {"type":"order.shipped","n":4},
        {"type":"user.deleted","n":5},
    ]);
    ids(&server.post(EVENTS).json(&batch).send().await.expect(201))
}

#[tokio::test]
async fn reads_forward_with_a_type_filter_and_pages_with_next() {
    let server = Server::open().await;
    let ids = seed(&server).await;

    let page = server
        .get(&format!("{EVENTS}?types=order.*&limit=2"))
        .send()
        .await
        .expect(200);
    assert_eq!(types(&page), ["order.created", "order.paid"]);
    let next = page.json()["next"].as_str().unwrap().to_owned();

    let rest = server
        .get(&format!("{EVENTS}?types=order.*&limit=2&from={next}"))
        .send()
        .await
        .expect(200);
    assert_eq!(types(&rest), ["order.shipped"]);
    assert!(rest.json().get("next").is_none(), "{}", rest.text());

    // Exact types and both bounds inclusive.
    let range = server
        .get(&format!(
            "{EVENTS}?types=user.created,user.deleted&from={}&to={}",
            ids[1], ids[4]
        ))
        .send()
        .await
        .expect(200);
    assert_eq!(types(&range), ["user.created", "user.deleted"]);
}

#[tokio::test]
async fn reads_backward_like_xrevrange() {
    let server = Server::open().await;
    let ids = seed(&server).await;

    let page = server
        .get(&format!("{EVENTS}?reverse=true&limit=2"))
        .send()
        .await
        .expect(200);
    assert_eq!(types(&page), ["user.deleted", "order.shipped"]);
    let next = page.json()["next"].as_str().unwrap().to_owned();
    let rest = server
        .get(&format!("{EVENTS}?reverse=true&from={next}&to={}", ids[1]))
        .send()
        .await
        .expect(200);
    assert_eq!(types(&rest), ["order.paid", "user.created"]);

    // The default count bounds a read; an inverted range is refused.
    let inverted = server
        .get(&format!("{EVENTS}?from={}&to={}", ids[3], ids[1]))
        .send()
        .await
        .expect(400);
    assert_eq!(inverted.reason(), "inverted_range");
    for bad in [
        "limit=0",
        "from=x",
        "reverse=maybe",
        "colour=red",
        "wait_ms=30001",
    ] {
        let reply = server
            .get(&format!("{EVENTS}?{bad}"))
            .send()
            .await
            .expect(400);
        assert!(!reply.reason().is_empty(), "{bad}");
    }
    let missing = server
        .get("/api/streams/nope/events")
        .send()
        .await
        .expect(404);
    assert_eq!(missing.reason(), "no_such_stream");
    let invalid = server
        .get("/api/streams/.bad/events")
        .send()
        .await
        .expect(400);
    assert_eq!(invalid.reason(), "invalid_stream");
}

#[tokio::test]
async fn a_long_poll_wakes_on_the_next_append() {
    let server = Server::open().await;
    let url = format!("{EVENTS}?wait_ms=10000");
    let started = Instant::now();
    let waiting = tokio::spawn(server.get(&url).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    server
        .post(EVENTS)
        .body(r#"{"type":"late"}"#)
        .send()
        .await
        .expect(201);
    let reply = waiting.await.unwrap().expect(200);
    assert_eq!(types(&reply), ["late"]);
    assert!(started.elapsed() < Duration::from_secs(5));

    // With nothing new it answers empty once the wait is over.
    let next = reply.json()["events"][0]["id"].as_str().unwrap().to_owned();
    let after: busbar_event::EventId = next.parse().unwrap();
    let from = after.successor().unwrap();
    let empty = server
        .get(&format!("{EVENTS}?wait_ms=50&from={from}"))
        .send()
        .await
        .expect(200);
    assert_eq!(empty.json(), json!({"events": []}));
}

#[tokio::test]
async fn shutdown_answers_long_polls_at_once() {
    let server = Server::open().await;
    let started = Instant::now();
    let waiting = tokio::spawn(server.get(&format!("{EVENTS}?wait_ms=30000")).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown().await;
    let reply = waiting.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    // The stream never existed: the poll ends with the read's own answer.
    assert_eq!(reply.expect(404).reason(), "no_such_stream");
}

#[tokio::test]
async fn a_limit_over_max_read_count_reads_that_many_with_next() {
    let server = Server::start(Setup {
        engine: EngineConfig {
            max_read_count: 2,
            ..EngineConfig::default()
        },
        ..Setup::default()
    })
    .await;
    seed(&server).await;
    let page = server
        .get(&format!("{EVENTS}?limit=100"))
        .send()
        .await
        .expect(200);
    assert_eq!(types(&page), ["order.created", "user.created"]);
    let next = page.json()["next"].as_str().unwrap().to_owned();
    // A limit within the cap is not counted.
    let rest = server
        .get(&format!("{EVENTS}?limit=2&from={next}"))
        .send()
        .await
        .expect(200);
    assert_eq!(types(&rest), ["order.paid", "order.shipped"]);
    let metrics = server.get("/metrics").send().await.expect(200).text();
    let counted = r#"busbar_reads_clamped_total{op="range"} 1"#;
    assert!(metrics.contains(counted), "{metrics}");
}
