//! A crash between a dead-letter append and the removal from the pending
//! list it is followed by: the state is made by cutting the removal record
//! off the stream's active segment, then the store is reopened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use busbar_event::{EventBatch, EventId, NewEvent, StreamName};
use busbar_store::embedded::{EmbeddedConfig, EmbeddedStore};
use busbar_store::group::{dlq_stream, DlqOrigin, GroupConfig, GroupStart, NackOptions};
use busbar_store::{ReadQuery, Store};

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig::new(dir)).expect("open")
}

fn active_segment(dir: &Path, stream: &str) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.join("streams").join(stream))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

async fn pending_ids(store: &EmbeddedStore, s: &StreamName, group: &str) -> Vec<EventId> {
    store
        .pending(s, group, None, EventId::ZERO, EventId::MAX, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect()
}

async fn dead_letters(store: &EmbeddedStore, s: &StreamName, group: &str) -> Vec<EventId> {
    store
        .read(&dlq_stream(s).unwrap(), &ReadQuery::all(1000))
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(DlqOrigin::of)
        .filter(|o| o.group == group)
        .map(|o| o.original_id)
        .collect()
}

/// Two groups share the dead-letter stream; the one whose removal is lost
/// must still be repaired when the other moved entries after it.
#[tokio::test]
async fn a_lost_removal_is_completed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = StreamName::new("jobs").unwrap();
    let config = GroupConfig {
        max_deliver: 1,
        ack_wait: Duration::from_secs(60),
        ..GroupConfig::default()
    };
    let (cut_at, lost) = {
        let store = open(dir.path());
        for g in ["a", "b"] {
            store
                .create_group(&s, g, GroupStart::Beginning, config)
                .await
                .unwrap();
        }
        let mut batch = EventBatch::new();
        for n in 0..6 {
            batch
                .push(&NewEvent::new("t", format!("{{\"n\":{n}}}").as_bytes()))
                .unwrap();
        }
        store.append(&s, batch, Default::default()).await.unwrap();
        let read_a = store.read_group(&s, "a", "c", 3).await.unwrap();
        let ids_a: Vec<EventId> = read_a.deliveries.iter().map(|d| d.event.id()).collect();
        // Group a dead-letters its batch; the removal record is what a
        // crash would lose.
        let cut_at = std::fs::metadata(active_segment(dir.path(), "jobs"))
            .unwrap()
            .len();
        let out = store
            .nack(&s, "a", "c", &ids_a, NackOptions::default())
            .await
            .unwrap();
        assert_eq!(out.dead_lettered, ids_a);
        store.close().await.unwrap();
        (cut_at, ids_a)
    };
    let seg = active_segment(dir.path(), "jobs");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut_at)
        .unwrap();

    let store = open(dir.path());
    assert_eq!(pending_ids(&store, &s, "a").await, Vec::<EventId>::new());
    assert_eq!(dead_letters(&store, &s, "a").await, lost);
    // Group b goes on: its own dead letters land after group a's.
    let read_b = store.read_group(&s, "b", "c", 6).await.unwrap();
    let ids_b: Vec<EventId> = read_b.deliveries.iter().map(|d| d.event.id()).collect();
    store
        .nack(&s, "b", "c", &ids_b, NackOptions::default())
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(pending_ids(&store, &s, "a").await, Vec::<EventId>::new());
    assert_eq!(pending_ids(&store, &s, "b").await, Vec::<EventId>::new());
    assert_eq!(dead_letters(&store, &s, "a").await, lost);
    assert_eq!(dead_letters(&store, &s, "b").await, ids_b);
}
