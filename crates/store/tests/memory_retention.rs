//! The memory engine applies `[storage.retention]` on every append.

use std::time::Duration;

use busbar_event::{EventBatch, NewEvent, StreamName};
use busbar_store::memory::MemoryStore;
use busbar_store::{AppendOptions, ReadQuery, Retention, Store};

fn batch(n: usize) -> EventBatch {
    let mut b = EventBatch::new();
    for _ in 0..n {
        b.push(&NewEvent::new("t", b"{\"n\":1}")).unwrap();
    }
    b
}

async fn append(store: &MemoryStore, stream: &StreamName, n: usize) {
    store
        .append(stream, batch(n), AppendOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn max_len_keeps_exactly_the_newest_events() {
    let store = MemoryStore::with_retention(Retention {
        max_len: Some(10),
        ..Retention::default()
    });
    let s = StreamName::new("bounded").unwrap();
    for _ in 0..7 {
        append(&store, &s, 3).await;
    }
    let info = store.info(&s).await.unwrap();
    assert_eq!(info.length, 10);
    let events = store.read(&s, &ReadQuery::all(100)).await.unwrap();
    assert_eq!(events.len(), 10);
    assert_eq!(events.last().unwrap().id(), info.last_id);
}

#[tokio::test]
async fn max_bytes_bounds_every_stream() {
    let store = MemoryStore::with_retention(Retention {
        max_bytes: Some(2_000),
        ..Retention::default()
    });
    let s = StreamName::new("a").unwrap();
    let t = StreamName::new("b").unwrap();
    for _ in 0..100 {
        append(&store, &s, 5).await;
        append(&store, &t, 1).await;
    }
    for name in [&s, &t] {
        let info = store.info(name).await.unwrap();
        assert!(info.bytes <= 2_000, "{name}: {} bytes", info.bytes);
        assert!(info.length > 0);
    }
}

#[tokio::test]
async fn max_age_drops_older_events_at_the_next_append() {
    let store = MemoryStore::with_retention(Retention {
        max_age: Some(Duration::from_millis(50)),
        ..Retention::default()
    });
    let s = StreamName::new("aging").unwrap();
    append(&store, &s, 5).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    append(&store, &s, 1).await;
    assert_eq!(store.info(&s).await.unwrap().length, 1);
}

#[tokio::test]
async fn without_retention_nothing_is_dropped() {
    let store = MemoryStore::new();
    let s = StreamName::new("all").unwrap();
    for _ in 0..50 {
        append(&store, &s, 20).await;
    }
    assert_eq!(store.info(&s).await.unwrap().length, 1_000);
}
