//! Tenant-bound principals through the engine: operations over "all"
//! streams stay inside the caller's tenant.

use std::sync::Arc;

use busbar_engine::{Engine, Principal, Scope};
use busbar_event::StreamName;
use busbar_store::memory::MemoryStore;

fn tenant(t: &str) -> Principal {
    Principal::Token {
        name: t.into(),
        scopes: vec![Scope::Admin, Scope::Publish, Scope::Consume],
        tenant: Some(t.into()),
    }
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
