//! A blocking group read waits on the runtime's clock: when the runtime's
//! time is paused and runs ahead of the wall clock (as in tests, and in
//! the protocol fuzzer), the read still ends after its block.

use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{Engine, Principal, Transport};
use busbar_event::{EventBatch, NewEvent, StreamName};
use busbar_store::group::{GroupConfig, GroupStart};
use busbar_store::memory::MemoryStore;

#[tokio::test(start_paused = true)]
async fn blocking_group_read_deadline_follows_the_runtime_clock() {
    let engine = Engine::builder(Arc::new(MemoryStore::new())).build();
    let stream = StreamName::new("orders").unwrap();
    let mut batch = EventBatch::new();
    batch.push(&NewEvent::new("t", b"{}")).unwrap();
    engine
        .publish(
            &Principal::Trusted,
            &stream,
            batch,
            Default::default(),
            Transport::Local,
        )
        .await
        .unwrap();
    engine
        .create_group(
            &Principal::Trusted,
            &stream,
            "g",
            GroupStart::End,
            GroupConfig::default(),
        )
        .await
        .unwrap();

    let start = tokio::time::Instant::now();
    let out = engine
        .read_group(
            &Principal::Trusted,
            &stream,
            "g",
            "w",
            10,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let waited = start.elapsed();
    assert!(out.deliveries.is_empty());
    // A deadline on the wall clock lets the paused runtime's time race
    // far past the block while the wall clock crawls to it.
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "blocked {waited:?} for a 5 s block"
    );
}
