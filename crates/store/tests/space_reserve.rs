//! The space reserve on a full disk: the embedded engine gives the reserve
//! back, refuses appends up front, lets consumers and trims go on in the
//! space it freed, and takes appends again by itself once space returns,
//! with nothing acknowledged lost. Runs on [`SimFs`] with a capacity (a
//! disk that really fills up) and on [`FaultFs`] (errors on purpose).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_event::{EventBatch, EventId, NewEvent, StreamName};
use busbar_store::embedded::{EmbeddedConfig, EmbeddedStore};
use busbar_store::fs::{CutMode, Fault, FaultFs, FaultOp, Fs, Injection, RealFs, SimFs};
use busbar_store::group::{GroupConfig, GroupStart};
use busbar_store::{ReadQuery, Result, Store, StoreError, StoreMetrics, Trim, WriteHealth};

const RESERVE: u64 = 16 * 1024;

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

fn config(dir: &Path, fs: Arc<dyn Fs>, reserve: u64) -> EmbeddedConfig {
    let mut c = EmbeddedConfig::new(dir);
    c.segment_bytes = 1 << 20;
    c.index_interval_bytes = 256;
    c.fs = fs;
    c.reserve_bytes = reserve;
    c.space_check_interval = Duration::from_millis(20);
    c
}

/// A disk whose data directory exists durably, as before a first open.
fn disk(dir: &Path) -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(dir).unwrap();
    for d in dir.ancestors() {
        fs.sync_dir(d).unwrap();
    }
    fs
}

fn batch(tag: &str, n: usize) -> EventBatch {
    let mut b = EventBatch::new();
    for i in 0..n {
        let payload = format!(r#"{{"tag":"{tag}","i":{i},"pad":"{}"}}"#, "x".repeat(40));
        b.push(&NewEvent::new("t", payload.as_bytes())).unwrap();
    }
    b
}

async fn append(store: &EmbeddedStore, stream: &str, n: usize) -> Result<Vec<EventId>> {
    store
        .append(&name(stream), batch(stream, n), Default::default())
        .await
}

async fn ids(store: &EmbeddedStore, stream: &str) -> Vec<EventId> {
    store
        .read(&name(stream), &ReadQuery::all(usize::MAX))
        .await
        .expect("read")
        .iter()
        .map(|e| e.id())
        .collect()
}

/// Appends until the disk is full; returns what was acknowledged and the
/// refusal.
async fn fill(store: &EmbeddedStore, stream: &str) -> (Vec<EventId>, StoreError) {
    let mut acked = Vec::new();
    loop {
        match append(store, stream, 10).await {
            Ok(ids) => acked.extend(ids),
            Err(e) => return (acked, e),
        }
        assert!(acked.len() < 100_000, "the disk never filled");
    }
}

fn assert_full<T: std::fmt::Debug>(result: Result<T>) {
    match result {
        Err(StoreError::Full { .. }) => {}
        other => panic!("expected a full disk, got {other:?}"),
    }
}

/// Bytes in a stream's files: a refused append must not change them.
fn stream_bytes(fs: &dyn Fs, dir: &Path, stream: &str) -> u64 {
    let dir = dir.join("streams").join(stream);
    fs.read_dir(&dir)
        .unwrap()
        .iter()
        .map(|p| fs.file_size(p).unwrap())
        .sum()
}

fn reserve_path(dir: &Path) -> PathBuf {
    dir.join("RESERVE")
}

async fn wait_for_ok(store: &EmbeddedStore) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.write_health() != WriteHealth::Ok {
        assert!(
            Instant::now() < deadline,
            "writes never came back: {:?}",
            store.write_health()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_full_disk_refuses_appends_while_consumers_ack_and_recovers_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fs = disk(dir);
    fs.set_capacity(Some(64 * 1024));
    let metrics = Arc::new(StoreMetrics::default());
    let mut c = config(dir, Arc::new(fs.clone()), RESERVE);
    c.metrics = metrics.clone();
    let store = EmbeddedStore::open(c).unwrap();
    assert_eq!(fs.file_size(&reserve_path(dir)).unwrap(), RESERVE);
    assert_eq!(metrics.reserve_bytes.get(), RESERVE as i64);

    let s = name("s");
    store
        .create_group(&s, "g", GroupStart::Beginning, GroupConfig::default())
        .await
        .unwrap();
    let old = append(&store, "old", 20).await.unwrap();
    let (mut acked, refused) = fill(&store, "s").await;
    assert!(matches!(refused, StoreError::Full { .. }), "{refused:?}");
    assert!(!acked.is_empty());
    assert!(matches!(store.write_health(), WriteHealth::Full { .. }));
    assert!(
        !fs.exists(&reserve_path(dir)).unwrap(),
        "the reserve is given back"
    );
    assert_eq!(metrics.reserve_bytes.get(), 0);

    // Appends are refused before anything is written, though there is room.
    let before = stream_bytes(&fs, dir, "s");
    assert_full(append(&store, "s", 1).await);
    assert_full(append(&store, "new-stream", 1).await);
    assert_eq!(stream_bytes(&fs, dir, "s"), before);
    assert_eq!(ids(&store, "s").await, acked, "reads go on");

    // The consumer drains everything acknowledged, in the freed space.
    let mut delivered = Vec::new();
    loop {
        let read = store.read_group(&s, "g", "c", 50).await.expect("deliver");
        if read.deliveries.is_empty() {
            break;
        }
        let got: Vec<EventId> = read.deliveries.iter().map(|d| d.event.id()).collect();
        store.ack(&s, "g", Some("c"), &got).await.expect("ack");
        delivered.extend(got);
    }
    assert_eq!(delivered, acked);
    // An operator trims another stream.
    let trimmed = store
        .trim(
            &name("old"),
            Trim::MaxLen {
                max: 0,
                approx: false,
            },
        )
        .await
        .expect("trim while full");
    assert_eq!(trimmed, old.len() as u64);
    assert!(ids(&store, "old").await.is_empty());
    // Still less free than the reserve and as much again: still full.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(store.write_health(), WriteHealth::Full { .. }));
    assert_full(append(&store, "s", 1).await);

    fs.set_capacity(None);
    wait_for_ok(&store).await;
    assert_eq!(fs.file_size(&reserve_path(dir)).unwrap(), RESERVE);
    assert_eq!(metrics.reserve_bytes.get(), RESERVE as i64);
    let after = append(&store, "s", 3).await.expect("space is back");
    acked.extend(after.iter().copied());

    // The power goes: everything acknowledged, acks included, is on disk.
    let fs = fs.power_cut(CutMode::Drop, &mut rand::thread_rng());
    drop(store);
    let store = EmbeddedStore::open(config(dir, Arc::new(fs.clone()), RESERVE)).unwrap();
    assert_eq!(ids(&store, "s").await, acked);
    let pending = store
        .pending(&s, "g", None, EventId::ZERO, EventId::MAX, 1000)
        .await
        .unwrap();
    assert!(pending.is_empty(), "acks survive: {pending:?}");
    let read = store.read_group(&s, "g", "c", 1000).await.unwrap();
    let got: Vec<EventId> = read.deliveries.iter().map(|d| d.event.id()).collect();
    assert_eq!(got, after, "nothing acked is delivered again");
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_store_opened_on_a_full_disk_starts_full_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fs = disk(dir);
    let store = EmbeddedStore::open(config(dir, Arc::new(fs.clone()), 0)).unwrap();
    let acked = append(&store, "s", 5).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let probe = 1 << 30;
    fs.set_capacity(Some(probe));
    let used = probe - fs.available_space(dir).unwrap();
    fs.set_capacity(Some(used + RESERVE / 2));

    let store = EmbeddedStore::open(config(dir, Arc::new(fs.clone()), RESERVE))
        .expect("a full disk does not stop the open");
    assert!(matches!(store.write_health(), WriteHealth::Full { .. }));
    assert!(!fs.exists(&reserve_path(dir)).unwrap());
    assert_eq!(ids(&store, "s").await, acked);
    assert_full(append(&store, "s", 1).await);

    fs.set_capacity(None);
    wait_for_ok(&store).await;
    append(&store, "s", 1).await.expect("space is back");
    assert_eq!(fs.file_size(&reserve_path(dir)).unwrap(), RESERVE);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_failed_reserve_rewrite_is_retried_until_it_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let faults = FaultFs::new(RealFs);
    let store = EmbeddedStore::open(config(dir, Arc::new(faults.clone()), RESERVE)).unwrap();
    let s = name("s");
    store
        .create_group(&s, "g", GroupStart::Beginning, GroupConfig::default())
        .await
        .unwrap();
    let mut acked = append(&store, "s", 4).await.unwrap();

    faults.set_available_space(Some(0));
    faults.fail_writes(Fault::NoSpace);
    assert_full(append(&store, "s", 1).await);
    assert!(!reserve_path(dir).exists());
    // The reserve's space is free again; the disk still looks full.
    faults.clear();
    let writes_failed = faults.injected(FaultOp::Write);
    assert_full(append(&store, "s", 1).await);
    assert_eq!(
        faults.injected(FaultOp::Write),
        writes_failed,
        "nothing tried"
    );
    let read = store.read_group(&s, "g", "c", 10).await.expect("deliver");
    let got: Vec<EventId> = read.deliveries.iter().map(|d| d.event.id()).collect();
    assert_eq!(got, acked);
    let acked_now = store.ack(&s, "g", Some("c"), &got).await.expect("ack");
    assert_eq!(acked_now.acked, got);
    assert!(matches!(store.write_health(), WriteHealth::Full { .. }));

    // Space returns, but the first rewrite of the reserve fails.
    faults.inject(
        Injection::new(FaultOp::Create, Fault::Io)
            .matching("RESERVE")
            .once(),
    );
    faults.set_available_space(None);
    wait_for_ok(&store).await;
    assert_eq!(
        faults.injected(FaultOp::Create),
        1,
        "the failure was retried"
    );
    assert_eq!(std::fs::metadata(reserve_path(dir)).unwrap().len(), RESERVE);
    acked.extend(append(&store, "s", 2).await.expect("space is back"));
    store.close().await.unwrap();
    drop(store);

    let store = EmbeddedStore::open(config(dir, Arc::new(RealFs), RESERVE)).unwrap();
    assert_eq!(ids(&store, "s").await, acked);
    let read = store.read_group(&s, "g", "c", 10).await.unwrap();
    let got: Vec<EventId> = read.deliveries.iter().map(|d| d.event.id()).collect();
    assert_eq!(got, acked[4..], "the ack made while full held");
    store.close().await.unwrap();
}

#[tokio::test]
async fn without_a_reserve_a_full_disk_fails_writes_as_they_come() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fs = disk(dir);
    // A reserve left by an earlier configuration is removed.
    let store = EmbeddedStore::open(config(dir, Arc::new(fs.clone()), RESERVE)).unwrap();
    store.close().await.unwrap();
    drop(store);
    assert!(fs.exists(&reserve_path(dir)).unwrap());
    fs.set_capacity(Some(32 * 1024));
    let store = EmbeddedStore::open(config(dir, Arc::new(fs.clone()), 0)).unwrap();
    assert!(!fs.exists(&reserve_path(dir)).unwrap());

    let (mut acked, refused) = fill(&store, "s").await;
    assert!(matches!(refused, StoreError::Full { .. }), "{refused:?}");
    assert!(matches!(store.write_health(), WriteHealth::Full { .. }));
    // The next write is simply tried, and brings the store back at once.
    fs.set_capacity(None);
    acked.extend(append(&store, "s", 1).await.expect("space is back"));
    assert_eq!(store.write_health(), WriteHealth::Ok);
    assert_eq!(ids(&store, "s").await, acked);
    store.close().await.unwrap();
}
