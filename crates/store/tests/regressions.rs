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

/// The `streams` directory was created on first open without syncing the
/// data directory it is in: a power cut could take it away, and with it
/// every stream appended to since, acknowledged under `always` or not.
#[tokio::test]
async fn a_power_cut_after_the_first_open_keeps_the_streams_directory() {
    use std::sync::Arc;

    use busbar_event::EventId;
    use busbar_store::fs::{CutMode, Fs, SimFs};
    use busbar_store::ReadQuery;

    let dir = tempfile::tempdir().unwrap();
    let fs = SimFs::new();
    fs.create_dir_all(dir.path()).unwrap();
    for d in dir.path().ancestors() {
        fs.sync_dir(d).unwrap();
    }
    let open = |fs: &SimFs| {
        let mut config = EmbeddedConfig::new(dir.path());
        config.fs = Arc::new(fs.clone());
        EmbeddedStore::open(config).unwrap()
    };
    let store = open(&fs);
    let s = StreamName::new("s").unwrap();
    let acked = store
        .append(&s, one(), AppendOptions::default())
        .await
        .unwrap();
    let after = fs.power_cut(CutMode::Drop, &mut rand::thread_rng());
    drop(store);

    let store = open(&after);
    let found: Vec<EventId> = store
        .read(&s, &ReadQuery::all(10))
        .await
        .expect("the stream survives")
        .iter()
        .map(|e| e.id())
        .collect();
    assert_eq!(found, acked);
}

/// Under `interval`, the thread that wakes the writer held a sender of the
/// writer's queue: a store dropped without `close` kept its writer thread
/// (and every file it had open) alive for good.
#[tokio::test]
async fn dropping_an_interval_store_without_close_stops_its_writer() {
    use std::sync::Arc;

    use busbar_store::fs::{Fs, RealFs};

    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn Fs> = Arc::new(RealFs);
    let mut config = EmbeddedConfig::new(dir.path());
    config.durability = Durability::Interval(Duration::from_millis(5));
    config.fs = fs.clone();
    let store = EmbeddedStore::open(config).unwrap();
    store
        .append(
            &StreamName::new("s").unwrap(),
            one(),
            AppendOptions::default(),
        )
        .await
        .unwrap();
    drop(store);
    // The writer holds the last other reference to the file system.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&fs) > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer thread outlived its store"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A trim to an id above every id yet (`MinId` in the future) set a floor
/// that events appended after it were below: they were read until the
/// store reopened, and hidden by the floor from then on.
#[tokio::test]
async fn events_appended_after_a_trim_to_a_future_id_survive_a_reopen() {
    use busbar_event::EventId;
    use busbar_store::{ReadQuery, Trim};

    let dir = tempfile::tempdir().unwrap();
    let s = StreamName::new("s").unwrap();
    let ids = |events: Vec<busbar_event::Event>| events.iter().map(|e| e.id()).collect::<Vec<_>>();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    store
        .append(&s, one(), AppendOptions::default())
        .await
        .unwrap();
    let future = EventId::new(busbar_event::now_ms() + 86_400_000, 0);
    store
        .trim(
            &s,
            Trim::MinId {
                id: future,
                approx: false,
            },
        )
        .await
        .unwrap();
    let appended = store
        .append(&s, one(), AppendOptions::default())
        .await
        .unwrap();
    let before = ids(store.read(&s, &ReadQuery::all(100)).await.unwrap());
    assert_eq!(before, appended);
    store.close().await.unwrap();
    drop(store);

    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
    let after = ids(store.read(&s, &ReadQuery::all(100)).await.unwrap());
    assert_eq!(after, before, "events appended after the trim are gone");
    store.close().await.unwrap();
}

/// After an explicit id of `EventId::MAX`, the next automatic id was
/// `EventId::MAX` again: two events with one id, ids no longer strictly
/// increasing. There is no greater id to give: the append is refused.
#[tokio::test]
async fn an_append_after_the_largest_id_is_refused_not_given_that_id_again() {
    use std::sync::Arc;

    use busbar_event::EventId;
    use busbar_store::memory::MemoryStore;
    use busbar_store::{ReadQuery, StoreError};

    let dir = tempfile::tempdir().unwrap();
    let stores: [Arc<dyn Store>; 2] = [
        Arc::new(MemoryStore::new()),
        Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap()),
    ];
    let s = StreamName::new("s").unwrap();
    for store in stores {
        let mut last = EventBatch::new();
        last.push(&NewEvent::new("t", b"{}").with_id(EventId::MAX))
            .unwrap();
        store
            .append(&s, last, AppendOptions::default())
            .await
            .unwrap();
        match store.append(&s, one(), AppendOptions::default()).await {
            Err(StoreError::IdNotGreater { .. }) => {}
            other => panic!("{}: expected a refusal, got {other:?}", store.kind()),
        }
        let events = store.read(&s, &ReadQuery::all(10)).await.unwrap();
        assert_eq!(events.len(), 1, "{}", store.kind());
        store.close().await.unwrap();
    }
}
