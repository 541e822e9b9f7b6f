//! What one tenant's token reaches of another tenant: nothing. Scrapes,
//! the runbook's health, pausing all delivery and jobs, each named after a
//! leak it closes. (Every route against every token is the matrix in
//! `busbar-live`'s `tests/tenancy.rs`.)

use busbar_engine::{Scope, TokenSpec};
use serde_json::{json, Value};

use crate::common::{Server, Setup};

fn token(name: &str, scopes: &[Scope], tenant: Option<&str>) -> TokenSpec {
    TokenSpec {
        name: name.into(),
        secret: format!("{name}-secret"),
        scopes: scopes.to_vec(),
        tenant: tenant.map(Into::into),
    }
}

const EVERY: [Scope; 5] = [
    Scope::Publish,
    Scope::Consume,
    Scope::Admin,
    Scope::Director,
    Scope::Metrics,
];

/// Tenants `a` and `b` with every scope, an untenanted admin, scrapers
/// with only the `metrics` scope, and a reader.
async fn server() -> Server {
    Server::start(Setup {
        tokens: vec![
            token("ops", &[Scope::Admin, Scope::Publish, Scope::Consume], None),
            token("a", &EVERY, Some("a")),
            token("b", &EVERY, Some("b")),
            token("scraper", &[Scope::Metrics], None),
            token("a-scraper", &[Scope::Metrics], Some("a")),
            token("reader", &[Scope::Consume], None),
        ],
        ..Setup::default()
    })
    .await
}

/// Publishes `n` events to `stream` and makes `group` read from the start.
async fn seed(server: &Server, stream: &str, group: &str, n: usize) {
    let events: Vec<Value> = (0..n).map(|i| json!({"type": "t", "i": i})).collect();
    server
        .post(&format!("/api/streams/{stream}/events"))
        .token("ops-secret")
        .json(&json!(events))
        .send()
        .await
        .expect(201);
    server
        .post(&format!("/api/streams/{stream}/groups"))
        .token("ops-secret")
        .json(&json!({"name": group, "start": "beginning"}))
        .send()
        .await
        .expect(201);
}

async fn scrape(server: &Server, secret: &str) -> String {
    server
        .get("/metrics")
        .token(secret)
        .send()
        .await
        .expect(200)
        .text()
}

/// The `stream` label of every sample that has one.
fn streams_of(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let at = l.find("stream=\"")? + "stream=\"".len();
            let end = l[at..].find('"')?;
            Some(l[at..at + end].to_owned())
        })
        .collect()
}

#[tokio::test]
async fn metrics_need_the_metrics_scope_and_a_tenant_sees_only_its_streams() {
    let server = server().await;
    seed(&server, "a:orders", "ga", 2).await;
    seed(&server, "b:orders", "gb", 3).await;

    let reply = server.get("/metrics").send().await.expect(401);
    assert_eq!(reply.reason(), "unauthenticated");
    let reply = server
        .get("/metrics")
        .token("reader-secret")
        .send()
        .await
        .expect(403);
    assert_eq!(reply.reason(), "forbidden");
    assert!(reply.text().contains("metrics"), "{}", reply.text());

    // Untenanted: everything, with `metrics` alone or through `admin`.
    for secret in ["scraper-secret", "ops-secret"] {
        let all = streams_of(&scrape(&server, secret).await);
        for stream in ["a:orders", "b:orders"] {
            assert!(all.iter().any(|s| s == stream), "{secret}: {all:?}");
        }
    }

    // Tenant-bound: its streams' samples and the process-wide ones only.
    for (secret, own, other) in [
        ("a-scraper-secret", "a:", "b:"),
        ("a-secret", "a:", "b:"),
        ("b-secret", "b:", "a:"),
    ] {
        let text = scrape(&server, secret).await;
        let seen = streams_of(&text);
        assert!(!seen.is_empty(), "{secret}: no stream samples");
        assert!(
            seen.iter().all(|s| s.starts_with(own)),
            "{secret}: {seen:?}"
        );
        assert!(!text.contains(other), "{secret} sees {other}:\n{text}");
        assert!(text.contains("\nbusbar_uptime_seconds "), "{text}");
        assert!(text.contains("busbar_stream_length{stream=\"") && text.contains(own));
    }
    let a = scrape(&server, "a-secret").await;
    assert!(
        a.contains("busbar_group_lag{stream=\"a:orders\",group=\"ga\"} 2\n"),
        "{a}"
    );
    assert!(!a.contains("gb"), "{a}");
}

#[tokio::test]
async fn events_health_needs_consume_and_is_no_oracle_for_another_tenants_streams() {
    let server = server().await;
    seed(&server, "a:orders", "ga", 2).await;
    let health = |secret: &'static str, query: &'static str| {
        server
            .get(&format!("/events/health{query}"))
            .token(secret)
            .send()
    };

    let own = health("a-secret", "?stream=a:orders")
        .await
        .expect(200)
        .json();
    assert_eq!(own["streamLength"], 2);
    assert_eq!(own["consumerGroups"], 1);
    // Without a stream: every stream of the caller's, and only those.
    let all = health("a-secret", "").await.expect(200).json();
    assert_eq!(all["streamLength"], 2);
    assert_eq!(all["streams"][0]["stream"], "a:orders");
    let b_all = health("b-secret", "").await.expect(200).json();
    assert_eq!(b_all["streamLength"], 0, "{b_all}");
    assert!(!b_all.to_string().contains("a:orders"));

    // b asking for a's stream gets what it gets for a stream that does not
    // exist, word for word but the name it asked for.
    let existing = health("b-secret", "?stream=a:orders").await.expect(404);
    let missing = health("b-secret", "?stream=a:nothing").await.expect(404);
    assert_eq!(existing.reason(), "no_such_stream");
    assert_eq!(
        existing.text().replace("a:orders", "X"),
        missing.text().replace("a:nothing", "X")
    );
    assert!(!existing.text().contains("streamLength"));

    let reply = health("a-scraper-secret", "?stream=a:orders")
        .await
        .expect(403);
    assert_eq!(reply.reason(), "forbidden");
    health("ops-secret", "?stream=a:orders").await.expect(200);
}

async fn paused(server: &Server, secret: &str, stream: &str, group: &str) -> bool {
    let info = server
        .get(&format!("/api/streams/{stream}/groups/{group}"))
        .token(secret)
        .send()
        .await
        .expect(200)
        .json();
    info["paused"].as_bool().unwrap()
}

/// How many events one read of `group` delivers.
async fn delivered(server: &Server, secret: &str, stream: &str, group: &str) -> usize {
    let reply = server
        .post(&format!("/api/streams/{stream}/groups/{group}/read"))
        .token(secret)
        .json(&json!({"consumer": "w", "count": 10}))
        .send()
        .await
        .expect(200)
        .json();
    reply["deliveries"].as_array().unwrap().len()
}

async fn set_all(server: &Server, secret: &str, pause: bool) -> Value {
    let verb = if pause { "pause" } else { "resume" };
    server
        .post(&format!("/api/consumers/{verb}"))
        .token(secret)
        .send()
        .await
        .expect(200)
        .json()
}

#[tokio::test]
async fn a_tenant_admins_pause_all_pauses_only_its_groups_and_group_info_says_so() {
    let server = server().await;
    seed(&server, "a:orders", "ga", 1).await;
    seed(&server, "b:orders", "gb", 2).await;

    let answer = set_all(&server, "a-secret", true).await;
    assert_eq!(answer, json!({"paused": true, "tenant": "a"}));
    assert!(paused(&server, "a-secret", "a:orders", "ga").await);
    assert_eq!(delivered(&server, "a-secret", "a:orders", "ga").await, 0);
    // b is untouched, and its info says so.
    assert!(!paused(&server, "b-secret", "b:orders", "gb").await);
    assert_eq!(delivered(&server, "b-secret", "b:orders", "gb").await, 2);
    // A group created under a tenant's pause is paused too.
    let created = server
        .post("/api/streams/a:orders/groups")
        .token("a-secret")
        .json(&json!({"name": "late"}))
        .send()
        .await
        .expect(201)
        .json();
    assert_eq!(created["paused"], true);

    // The operator's pause covers everyone; its resume lifts only its own.
    set_all(&server, "ops-secret", true).await;
    assert!(paused(&server, "b-secret", "b:orders", "gb").await);
    let listed = server
        .get("/api/streams/b:orders/groups")
        .token("b-secret")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(listed["groups"][0]["paused"], true);
    assert_eq!(
        set_all(&server, "ops-secret", false).await,
        json!({"paused": false})
    );
    assert!(!paused(&server, "b-secret", "b:orders", "gb").await);
    assert!(paused(&server, "ops-secret", "a:orders", "ga").await);

    // b's resume does nothing to a.
    set_all(&server, "b-secret", false).await;
    assert!(paused(&server, "a-secret", "a:orders", "ga").await);
    set_all(&server, "a-secret", false).await;
    assert!(!paused(&server, "a-secret", "a:orders", "ga").await);
    assert_eq!(delivered(&server, "a-secret", "a:orders", "ga").await, 1);

    // A group's own pause outlives a resume of all delivery.
    server
        .post("/api/streams/a:orders/groups/ga/pause")
        .token("a-secret")
        .send()
        .await
        .expect(200);
    set_all(&server, "a-secret", false).await;
    set_all(&server, "ops-secret", false).await;
    assert!(paused(&server, "a-secret", "a:orders", "ga").await);
}

#[tokio::test]
async fn another_tenants_job_is_neither_visible_nor_cancellable() {
    let server = server().await;
    seed(&server, "a:orders", "ga", 50).await;
    let job = server
        .post("/api/replay")
        .token("a-secret")
        .json(&json!({"stream": "a:orders", "rate": 1, "batchSize": 1}))
        .send()
        .await
        .expect(202)
        .json();
    let id = job["id"].as_str().unwrap().to_owned();
    for path in [format!("/api/jobs/{id}"), format!("/api/replay/{id}")] {
        let reply = server.get(&path).token("b-secret").send().await.expect(404);
        assert_eq!(reply.reason(), "no_such_job");
        let cancel = format!("{path}/cancel");
        let reply = server
            .post(&cancel)
            .token("b-secret")
            .send()
            .await
            .expect(404);
        assert_eq!(reply.reason(), "no_such_job");
    }
    for list in ["/api/jobs", "/api/replay"] {
        let listed = server.get(list).token("b-secret").send().await.expect(200);
        assert!(!listed.text().contains(&id), "{}", listed.text());
    }
    let status = server
        .get(&format!("/api/jobs/{id}"))
        .token("a-secret")
        .send()
        .await
        .expect(200)
        .json();
    assert_eq!(status["state"], "running");
    server
        .post(&format!("/api/jobs/{id}/cancel"))
        .token("a-secret")
        .send()
        .await
        .expect(200);
}
