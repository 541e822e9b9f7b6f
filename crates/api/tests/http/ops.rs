use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::Server;

#[tokio::test]
async fn health_and_readiness() {
    let server = Server::open().await;
    let health = server.get("/health").send().await.expect(200);
    assert_eq!(health.json(), serde_json::json!({"status": "ok"}));
    let ready = server.get("/readyz").send().await.expect(200);
    assert_eq!(ready.json(), serde_json::json!({"status": "ready"}));

    server.engine.readiness().set_shutting_down();
    let draining = server.get("/readyz").send().await.expect(503).json();
    assert_eq!(draining["status"], "not_ready");
    assert_eq!(draining["reasons"][0]["reason"], "shutting_down");
    // Liveness does not change while draining.
    server.get("/health").send().await.expect(200);
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_json() {
    let server = Server::open().await;
    let missing = server.get("/api/nothing").send().await.expect(404);
    assert_eq!(missing.reason(), "not_found");
    let method = server.call("PUT", "/api/streams").send().await.expect(405);
    assert_eq!(method.reason(), "method_not_allowed");
    assert!(method.headers.contains_key("allow"));
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let server = Server::open().await;
    server
        .post("/api/streams/m1/events")
        .body(r#"{"type":"t"}"#)
        .send()
        .await
        .expect(201);
    server
        .get("/api/streams/m2/events")
        .send()
        .await
        .expect(404);
    server.get("/nowhere").send().await.expect(404);
    let reply = server.get("/metrics").send().await.expect(200);
    let content_type = reply.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = reply.text();
    for line in [
        r#"busbar_http_requests_total{route="/api/streams/{stream}/events",status="201"} 1"#,
        r#"busbar_http_requests_total{route="/api/streams/{stream}/events",status="404"} 1"#,
        r#"busbar_http_requests_total{route="unmatched",status="404"} 1"#,
        r#"busbar_events_ingested_total{stream="m1",transport="http"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("m2"), "raw paths leak into labels:\n{text}");
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let server = Server::open().await;
    // Touch every labelled family so each renders members, not just headers.
    server
        .post("/api/streams/p/events")
        .body(r#"{"type":"t"}"#)
        .send()
        .await
        .expect(201);
    server
        .post("/api/streams/p/events")
        .body("{")
        .send()
        .await
        .expect(400);
    let metrics = server.engine.metrics();
    metrics.connections.get(["http"]).add(1);
    metrics
        .connections_rejected
        .get(["tcp", "too_many_connections"])
        .inc();
    metrics
        .accept_errors
        .get(["tcp", "out_of_descriptors"])
        .inc();
    metrics.connection_timeouts.get(["http", "header"]).inc();
    metrics
        .command_seconds
        .get(["health"])
        .observe(std::time::Duration::from_micros(300));
    metrics.jobs_rejected.get(["replay", "max_running"]).inc();
    metrics.jobs_forgotten.inc();
    metrics.reads_clamped.get(["range"]).inc();
    let text = server.get("/metrics").send().await.expect(200).text();
    for line in [
        "busbar_stream_degraded{stream=\"p\"} 0",
        "busbar_jobs_running{kind=\"replay\"} 0",
        "busbar_jobs_rejected_total{kind=\"replay\",limit=\"max_running\"} 1",
        "busbar_jobs_forgotten_total 1",
        "busbar_reads_clamped_total{op=\"range\"} 1",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }

    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!(
            "SKIPPED metrics_pass_promtool: promtool is not on PATH \
             (Debian: apt-get install prometheus)"
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `(path, method)` of every operation in the OpenAPI document.
fn documented_operations(doc: &Value) -> Vec<(String, String)> {
    let methods = ["get", "post", "put", "delete", "patch"];
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (key, _) in item.as_object().unwrap() {
            if methods.contains(&key.as_str()) {
                ops.push((path.clone(), key.to_uppercase()));
            }
        }
    }
    ops
}

#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    let server = Server::open().await;
    let served = server
        .get("/api/openapi.json")
        .send()
        .await
        .expect(200)
        .json();
    let doc: Value = serde_json::from_str(busbar_api::OPENAPI_JSON).unwrap();
    assert_eq!(served, doc);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));

    let routed: BTreeSet<String> = busbar_api::route_paths()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        routed, documented,
        "router paths and documented paths differ"
    );

    // Every documented operation is served: no 405, no unmatched route.
    for (path, method) in documented_operations(&doc) {
        let concrete = path
            .replace("{stream}", "probe")
            .replace("{id}", "1-0")
            .replace("{group}", "g")
            .replace("{consumer}", "c")
            .replace("{job}", "replay-0-0");
        let reply = server.call(&method, &concrete).body("{}").send().await;
        assert_ne!(
            reply.status, 405,
            "{method} {path} is documented but not routed"
        );
        if reply.status == 404 {
            assert_ne!(reply.reason(), "not_found", "{method} {path} is not routed");
        }
        // Every documented error shape is the shared one.
        if reply.status >= 400 {
            let body = reply.json();
            assert!(
                body["error"].is_string() && body["message"].is_string(),
                "{body}"
            );
        }
    }

    // Every $ref resolves.
    let text = busbar_api::OPENAPI_JSON;
    for part in text.split("\"$ref\": \"#/").skip(1) {
        let pointer = format!("/{}", &part[..part.find('"').unwrap()]);
        assert!(doc.pointer(&pointer).is_some(), "dangling $ref {pointer}");
    }
}
