//! Tenant-bound principals through the engine: operations over "all"
//! streams stay inside the caller's tenant.

use std::sync::Arc;

use busbar_engine::{Engine, Principal, Scope, Transport};
use busbar_event::{EventBatch, NewEvent, StreamName};
use busbar_store::memory::MemoryStore;

fn tenant(t: &str) -> Principal {
    Principal::Token {
        name: t.into(),
        scopes: vec![Scope::Admin, Scope::Publish, Scope::Consume],
        tenant: Some(t.into()),
    }
}

async fn seed(e: &Engine, streams: &[&str]) {
    for s in streams {
        let mut batch = EventBatch::new();
        batch.push(&NewEvent::new("t", b"{}")).unwrap();
        let stream = StreamName::new(s).unwrap();
        e.publish(
            &Principal::Trusted,
            &stream,
            batch,
            Default::default(),
            Transport::Local,
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn rotating_every_stream_rotates_only_the_callers() {
    let e = Engine::builder(Arc::new(MemoryStore::new())).build();
    seed(&e, &["a:one", "b:one", "events", "a:two"]).await;
    let rotated = e.rotate(&tenant("a"), None).await.unwrap();
    let mut names: Vec<&str> = rotated.iter().map(|(s, _)| s.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a:one", "a:two"]);
    let all = e.rotate(&Principal::Trusted, None).await.unwrap();
    assert_eq!(all.len(), 4);
}

#[tokio::test]
async fn pausing_all_delivery_covers_the_callers_tenant_only() {
    let e = Engine::builder(Arc::new(MemoryStore::new())).build();
    let stream = |s: &str| StreamName::new(s).unwrap();
    e.set_all_paused(&tenant("a"), true).unwrap();
    assert!(e.delivery_paused(&stream("a:one")));
    assert!(!e.delivery_paused(&stream("b:one")));
    assert!(
        !e.delivery_paused(&stream("ab:one")),
        "a prefix is not a tenant"
    );
    assert!(!e.delivery_paused(&stream("events")));
    assert!(!e.all_paused());
    e.set_all_paused(&Principal::Trusted, true).unwrap();
    assert!(e.delivery_paused(&stream("b:one")));
    e.set_all_paused(&Principal::Trusted, false).unwrap();
    assert!(e.delivery_paused(&stream("a:one")));
    e.set_all_paused(&tenant("a"), false).unwrap();
    assert!(!e.delivery_paused(&stream("a:one")));
}
