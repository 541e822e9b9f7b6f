use serde_json::json;

use crate::common::{tokens, types, Server, Setup};

async fn secured() -> Server {
    Server::start(Setup {
        tokens: tokens(),
        ..Setup::default()
    })
    .await
}

#[tokio::test]
async fn api_routes_need_a_valid_token() {
    let server = secured().await;
    let missing = server.get("/api/streams").send().await.expect(401);
    assert_eq!(missing.reason(), "unauthenticated");
    assert!(missing.headers.contains_key("www-authenticate"));
    let wrong = server
        .get("/api/streams")
        .token("guess")
        .send()
        .await
        .expect(401);
    assert_eq!(wrong.reason(), "bad_token");
    assert!(!wrong.text().contains("guess"));
    let basic = server
        .get("/api/streams")
        .header("authorization", "Basic b3BzOm9wcw==")
        .send()
        .await
        .expect(401);
    assert_eq!(basic.reason(), "unauthenticated");
    server.get("/api/openapi.json").send().await.expect(401);
    server
        .post("/api/streams/events/events")
        .body(r#"{"type":"t"}"#)
        .send()
        .await
        .expect(401);

    // Probes need no secret; scrapes and the runbook's health do.
    for open in ["/health", "/readyz"] {
        server.get(open).send().await.expect(200);
    }
    for closed in ["/metrics", "/events/health"] {
        let missing = server.get(closed).send().await.expect(401);
        assert_eq!(missing.reason(), "unauthenticated");
        server.get(closed).token("guess").send().await.expect(401);
    }
    server
        .get("/api/streams")
        .token("ops-secret")
        .send()
        .await
        .expect(200);
}

#[tokio::test]
async fn scopes_are_enforced() {
    let server = secured().await;
    let reply = server
        .post("/api/streams/logs/events")
        .token("reader-secret")
        .body(r#"{"type":"t"}"#)
        .send()
        .await
        .expect(403);
    assert_eq!(reply.reason(), "forbidden");
    server
        .post("/api/streams/logs/events")
        .token("ops-secret")
        .body(r#"{"type":"t"}"#)
        .send()
        .await
        .expect(201);
    let reply = server
        .post("/api/streams/logs/trim")
        .token("reader-secret")
        .json(&json!({"maxlen": 0}))
        .send()
        .await
        .expect(403);
    assert_eq!(reply.reason(), "forbidden");
    // Trimming inside a publish needs admin too.
    server
        .post("/api/streams/acme:logs/events?maxlen=1")
        .token("acme-secret")
        .body(r#"{"type":"t"}"#)
        .send()
        .await
        .expect(403);
    server
        .get("/api/streams/logs/events")
        .token("reader-secret")
        .send()
        .await
        .expect(200);
}

#[tokio::test]
async fn a_tenant_token_stays_in_its_tenant() {
    let server = secured().await;
    for stream in ["acme:orders", "globex:orders"] {
        server
            .post(&format!("/api/streams/{stream}/events"))
            .token("ops-secret")
            .body(r#"{"type":"seed"}"#)
            .send()
            .await
            .expect(201);
    }
    let acme = "acme-secret";
    let other = "/api/streams/globex:orders";
    let reply = server
        .post(&format!("{other}/events"))
        .token(acme)
        .body(r#"{"type":"t"}"#)
        .send()
        .await
        .expect(403);
    assert_eq!(reply.reason(), "wrong_tenant");
    server
        .get(&format!("{other}/events"))
        .token(acme)
        .send()
        .await
        .expect(403);
    server.get(other).token(acme).send().await.expect(403);

    let listed = server
        .get("/api/streams")
        .token(acme)
        .send()
        .await
        .expect(200)
        .json();
    let names: Vec<&str> = listed["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme:orders"]);

    // An event naming another tenant is refused, with its index.
    let reply = server
        .post("/api/streams/acme:orders/events")
        .token(acme)
        .json(&json!([{"type":"a"}, {"type":"b","tenant":"globex"}]))
        .send()
        .await
        .expect(403);
    assert_eq!(reply.reason(), "wrong_tenant");
    assert_eq!(reply.json()["index"], 1);

    // Its events carry its tenant.
    server
        .post("/api/streams/acme:orders/events")
        .token(acme)
        .body(r#"{"type":"mine"}"#)
        .send()
        .await
        .expect(201);
    let read = server
        .get("/api/streams/acme:orders/events?types=mine")
        .token(acme)
        .send()
        .await
        .expect(200);
    assert_eq!(types(&read), ["mine"]);
    assert_eq!(read.json()["events"][0]["tenant"], "acme");
}
