//! Regression tests named after what broke.

use std::time::Duration;

use busbar_event::{EventBatch, NewEvent, StreamName};
use busbar_store::embedded::{EmbeddedConfig, EmbeddedStore};
use busbar_store::{AppendOptions, Durability, Store};

fn one() -> EventBatch {
    let mut b = EventBatch::new();
    b.push(&NewEvent::new("t", b"{}")).unwrap();
    b
}

/// Under `interval`, a stream created and deleted between two periodic
/// syncs left its directory in the list of directories to sync; the next
/// sync failed on the missing directory and the store stopped taking writes.
#[tokio::test]
async fn deleting_a_new_stream_before_the_interval_sync_keeps_the_store_writable() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path());
    config.durability = Durability::Interval(Duration::from_millis(100));
    let store = EmbeddedStore::open(config).unwrap();
    let s1 = StreamName::new("s1").unwrap();
    let s2 = StreamName::new("s2").unwrap();
    store
        .append(&s1, one(), AppendOptions::default())
        .await
        .unwrap();
    assert!(store.delete_stream(&s1).await.unwrap());
    tokio::time::sleep(Duration::from_millis(250)).await;
    store
        .append(&s2, one(), AppendOptions::default())
        .await
        .expect("the store still takes writes");
    store.sync().await.unwrap();
    store.close().await.unwrap();
}
