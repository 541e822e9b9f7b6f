use busbar_api::HttpConfig;
use busbar_engine::EngineConfig;
use busbar_event::Limits;
use serde_json::json;

use crate::common::{ids, types, Server, Setup};

const EVENTS: &str = "/api/streams/orders/events";

#[tokio::test]
async fn publishes_an_object_an_array_and_ndjson() {
    let server = Server::open().await;
    let one = server
        .post(EVENTS)
        .body(r#"{"type":"order.created","n": 1, "tags":["a"]}"#)
        .send()
        .await
        .expect(201);
    assert_eq!(ids(&one).len(), 1);

    let array = json!([{"type":"order.paid","n":2}, {"type":"order.shipped","n":3}]);
    let two = server.post(EVENTS).json(&array).send().await.expect(201);
    assert_eq!(ids(&two).len(), 2);

    let declared = "{\"type\":\"a\"}\n{\"type\":\"b\",\"stream\":\"orders\"}\n";
    assert_eq!(
        ids(&server
            .post(EVENTS)
            .ndjson(declared)
            .send()
            .await
            .expect(201))
        .len(),
        2
    );

    // NDJSON without a content type is detected.
    let detected = "{\"type\":\"c\"}\r\n\n{\"type\":\"d\"}";
    assert_eq!(
        ids(&server.post(EVENTS).body(detected).send().await.expect(201)).len(),
        2
    );

    let read = server.get(EVENTS).send().await.expect(200);
    assert_eq!(
        types(&read),
        [
            "order.created",
            "order.paid",
            "order.shipped",
            "a",
            "b",
            "c",
            "d"
        ]
    );
    // Ids come back in order and the payload is stored byte-for-byte.
    let all: Vec<String> = [ids(&one), ids(&two)].concat();
    let events = read.json()["events"].as_array().unwrap().clone();
    for (event, id) in events.iter().zip(&all) {
        assert_eq!(event["id"].as_str().unwrap(), id);
        assert_eq!(event["stream"], "orders");
    }
    assert!(
        read.text().contains(r#""data":{"n": 1, "tags":["a"]}"#),
        "{}",
        read.text()
    );
}

#[tokio::test]
async fn explicit_ids_must_increase() {
    let server = Server::open().await;
    let first = server
        .post("/api/streams/ids/events?id=5-1")
        .body(r#"{"type":"t"}"#)
        .send()
        .await
        .expect(201);
    assert_eq!(ids(&first), ["5-1"]);
    for stale in ["5-1", "5-0", "4-9"] {
        let reply = server
            .post(&format!("/api/streams/ids/events?id={stale}"))
            .body(r#"{"type":"t"}"#)
            .send()
            .await
            .expect(409);
        assert_eq!(reply.reason(), "id_not_greater");
    }
    // An explicit id names one event only.
    let reply = server
        .post("/api/streams/ids/events?id=9-0")
        .json(&json!([{"type":"t"},{"type":"t"}]))
        .send()
        .await
        .expect(400);
    assert_eq!(reply.reason(), "invalid_param");
    let bad = server
        .post("/api/streams/ids/events?id=nine")
        .body(r#"{"type":"t"}"#)
        .send()
        .await
        .expect(400);
    assert_eq!(bad.reason(), "invalid_id");
    let info = server
        .get("/api/streams/ids")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(info["length"], 1);
}

#[tokio::test]
async fn a_bad_event_rejects_the_whole_batch_with_its_index() {
    let server = Server::open().await;
    server
        .post(EVENTS)
        .body(r#"{"type":"kept"}"#)
        .send()
        .await
        .expect(201);

    let lines = "{\"type\":\"a\"}\n{\"type\":\"b\"}\n{\"type\":\n";
    let reply = server.post(EVENTS).ndjson(lines).send().await.expect(400);
    let body = reply.json();
    assert_eq!(body["error"], "malformed_json");
    assert_eq!(body["index"], 2);
    assert!(body["message"].as_str().unwrap().starts_with("event 2:"));

    let array = json!([{"type":"a"}, {"no_type":"secret-payload"}]);
    let reply = server.post(EVENTS).json(&array).send().await.expect(400);
    assert_eq!(reply.reason(), "missing_type");
    assert_eq!(reply.json()["index"], 1);
    assert!(!reply.text().contains("secret-payload"));

    let reply = server
        .post(EVENTS)
        .body("{\"type\":\"a\"}\n{\"type\":\"b\",\"stream\":\"elsewhere\"}")
        .send()
        .await
        .expect(400);
    assert_eq!(reply.reason(), "stream_mismatch");
    assert_eq!(reply.json()["index"], 1);

    for (body, reason) in [
        ("", "empty_batch"),
        ("[]", "empty_batch"),
        ("[1]", "not_an_object"),
    ] {
        let reply = server.post(EVENTS).body(body).send().await.expect(400);
        assert_eq!(reply.reason(), reason, "{body}");
    }

    // Only the first event made it.
    let read = server.get(EVENTS).send().await.expect(200);
    assert_eq!(types(&read), ["kept"]);
    let metrics = server.engine.render_metrics().await;
    assert!(
        metrics
            .contains(r#"busbar_ingest_errors_total{transport="http",reason="malformed_json"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn oversize_bodies_and_batches_get_413() {
    let server = Server::start(Setup {
        http: HttpConfig {
            max_body_bytes: 1024,
            event_limits: Limits {
                max_event_bytes: 100,
                ..Limits::default()
            },
            ..HttpConfig::default()
        },
        engine: EngineConfig {
            max_batch_events: 3,
            ..EngineConfig::default()
        },
        ..Setup::default()
    })
    .await;
    let big = format!(r#"{{"type":"t","pad":"{}"}}"#, "x".repeat(2000));
    let reply = server
        .post(EVENTS)
        .body(big.clone())
        .send()
        .await
        .expect(413);
    assert_eq!(reply.reason(), "body_too_large");
    // Without a length up front the body is cut off at the limit.
    let reply = server
        .post(EVENTS)
        .body(big)
        .chunked()
        .send()
        .await
        .expect(413);
    assert_eq!(reply.reason(), "body_too_large");

    let four = "{\"type\":\"t\"}\n".repeat(4);
    let reply = server.post(EVENTS).ndjson(&four).send().await.expect(413);
    assert_eq!(reply.reason(), "batch_too_large");
    let message = reply.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("over the limit of 3"), "{message}");
    let metrics = server.get("/metrics").send().await.expect(200).text();
    let counted = r#"busbar_ingest_errors_total{transport="http",reason="batch_too_large"} 1"#;
    assert!(metrics.contains(counted), "{metrics}");

    // One event over the event limit refuses the batch, naming it.
    let padded = format!(
        "{{\"type\":\"t\"}}\n{{\"type\":\"t\",\"pad\":\"{}\"}}\n",
        "y".repeat(120)
    );
    let reply = server.post(EVENTS).ndjson(&padded).send().await.expect(413);
    assert_eq!(reply.reason(), "too_large");
    assert_eq!(reply.json()["index"], 1);

    // A chunked body under the limit is fine.
    let ok = server
        .post(EVENTS)
        .ndjson(&"{\"type\":\"t\"}\n".repeat(3))
        .chunked()
        .send()
        .await
        .expect(201);
    assert_eq!(ids(&ok).len(), 3);
}

#[tokio::test]
async fn publish_can_trim_in_the_same_call() {
    let server = Server::open().await;
    for _ in 0..3 {
        server
            .post("/api/streams/capped/events?maxlen=2")
            .body(r#"{"type":"t"}"#)
            .send()
            .await
            .expect(201);
    }
    let info = server
        .get("/api/streams/capped")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(info["length"], 2);
    let reply = server
        .post("/api/streams/capped/events?maxlen=2&minid=1-0")
        .body(r#"{"type":"t"}"#)
        .send()
        .await
        .expect(400);
    assert_eq!(reply.reason(), "invalid_param");
}

/// Bodies past the input limits (max_depth 8 here) are refused with the
/// reason, on publish and on every other JSON body, and counted.
#[tokio::test]
async fn bodies_past_the_input_limits_are_refused_with_their_reason() {
    let server = Server::start(Setup {
        http: HttpConfig {
            event_limits: Limits {
                max_depth: 8,
                ..Limits::default()
            },
            ..HttpConfig::default()
        },
        ..Setup::default()
    })
    .await;
    let nested = |depth: usize| {
        let n = depth - 1;
        format!(r#"{{"type":"t","d":{}1{}}}"#, "[".repeat(n), "]".repeat(n))
    };
    let pretty_deep = format!(
        "{{\n  \"type\": \"t\",\n  \"d\": {}1{}\n}}",
        "[".repeat(8),
        "]".repeat(8)
    );
    let hundred_thousand = format!(
        r#"{{"type":"t","d":{}1{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let cases: Vec<(String, bool, &str, Option<u64>)> = vec![
        (nested(9), false, "too_deep", Some(0)),
        (pretty_deep, false, "too_deep", Some(0)),
        (hundred_thousand, false, "too_deep", Some(0)),
        (
            format!("[{},{}]", nested(2), nested(9)),
            false,
            "too_deep",
            None,
        ),
        (
            format!("{}\n{}\n", nested(2), nested(9)),
            false,
            "too_deep",
            Some(1),
        ),
        (
            format!("{}\n{}\n", nested(9), nested(2)),
            true,
            "too_deep",
            Some(0),
        ),
        (
            r#"{"type":"t","n":1e999}"#.to_owned(),
            false,
            "invalid_number",
            Some(0),
        ),
        (
            r#"[{"type":"t"},{"type":"t","n":-1e400}]"#.to_owned(),
            false,
            "invalid_number",
            None,
        ),
        (
            r#"{"type":"t","n":12345678901234567890123456789012345678901}"#.to_owned(),
            false,
            "invalid_number",
            Some(0),
        ),
        (
            r#"{"type":"t","s":"\udc00"}"#.to_owned(),
            false,
            "malformed_json",
            Some(0),
        ),
    ];
    for (body, ndjson, reason, index) in &cases {
        let call = server.post(EVENTS);
        let call = if *ndjson {
            call.ndjson(body)
        } else {
            call.body(body.clone())
        };
        let reply = call.send().await.expect(400);
        let shown = &body[..body.len().min(60)];
        assert_eq!(reply.reason(), *reason, "{shown}");
        assert_eq!(reply.json()["index"].as_u64(), *index, "{shown}");
        if *reason == "too_deep" {
            let message = reply.json()["message"].as_str().unwrap().to_owned();
            assert!(
                message.ends_with("nesting depth 9 is over the limit of 8"),
                "{message}"
            );
        }
    }
    // At the limit, in an array too: accepted, and read back.
    server
        .post(EVENTS)
        .body(format!("[{}]", nested(8)))
        .send()
        .await
        .expect(201);
    let read = server.get(EVENTS).send().await.expect(200).json();
    assert_eq!(read["events"].as_array().unwrap().len(), 1);
    let metrics = server.engine.render_metrics().await;
    assert!(
        metrics.contains(r#"busbar_ingest_errors_total{transport="http",reason="too_deep"} 6"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"busbar_ingest_errors_total{transport="http",reason="invalid_number"} 3"#),
        "{metrics}"
    );

    // Other JSON bodies: the same limits, the same reasons.
    let deep_create = format!(
        r#"{{"name":"g","x":{}1{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let reply = server
        .post("/api/streams/orders/groups")
        .body(deep_create)
        .send()
        .await
        .expect(400);
    assert_eq!(reply.reason(), "too_deep");
    let reply = server
        .post("/api/streams/orders/groups")
        .body(r#"{"name":"g","max_deliver":1e999}"#)
        .send()
        .await
        .expect(400);
    assert_eq!(reply.reason(), "invalid_number");
    let reply = server
        .post("/api/streams/orders/groups")
        .body(r#"{"name":"g""#)
        .send()
        .await
        .expect(400);
    assert_eq!(reply.reason(), "invalid_body");
}
