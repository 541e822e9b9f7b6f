//! What the embedded engine does when the disk fails it, through
//! [`FaultFs`]: a full disk fails one write and heals when space returns; a
//! failed `fdatasync` acknowledges nothing of its group and rolls the stream
//! back to what is known to be on disk; a failed read is an error.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use busbar_event::{EventBatch, EventId, NewEvent, StreamName};
use busbar_store::embedded::{EmbeddedConfig, EmbeddedStore};
use busbar_store::fs::{Fault, FaultFs, FaultOp, Injection, RealFs};
use busbar_store::group::{GroupConfig, GroupStart};
use busbar_store::{AppendOptions, Durability, ReadQuery, Result, Store, StoreError, WriteHealth};

fn stream() -> StreamName {
    StreamName::new("s").unwrap()
}

fn config(dir: &Path, faults: &FaultFs) -> EmbeddedConfig {
    let mut c = EmbeddedConfig::new(dir);
    c.segment_bytes = 2048;
    c.index_interval_bytes = 256;
    c.fs = Arc::new(faults.clone());
    c
}

fn open(dir: &Path, faults: &FaultFs) -> EmbeddedStore {
    EmbeddedStore::open(config(dir, faults)).expect("open")
}

fn batch(tag: &str, n: usize) -> EventBatch {
    let mut b = EventBatch::new();
    for i in 0..n {
        let payload = format!(r#"{{"tag":"{tag}","i":{i},"pad":"{}"}}"#, "x".repeat(40));
        b.push(&NewEvent::new("t", payload.as_bytes())).unwrap();
    }
    b
}

async fn append(store: &EmbeddedStore, tag: &str, n: usize) -> Result<Vec<EventId>> {
    store
        .append(&stream(), batch(tag, n), Default::default())
        .await
}

async fn ids(store: &EmbeddedStore) -> Vec<EventId> {
    store
        .read(&stream(), &ReadQuery::all(usize::MAX))
        .await
        .expect("read")
        .iter()
        .map(|e| e.id())
        .collect()
}

/// Closes the store and opens it again on the plain file system.
async fn reopen_ids(store: EmbeddedStore, dir: &Path) -> Vec<EventId> {
    store.close().await.expect("close");
    drop(store);
    let store = open(dir, &FaultFs::new(RealFs));
    let found = ids(&store).await;
    store.close().await.unwrap();
    found
}

fn assert_full(result: Result<Vec<EventId>>) {
    match result {
        Err(StoreError::Full { .. }) => {}
        other => panic!("expected a full disk, got {other:?}"),
    }
}

#[tokio::test]
async fn enospc_on_append_fails_that_append_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultFs::new(RealFs);
    let store = open(dir.path(), &faults);
    let mut acked = append(&store, "before", 3).await.unwrap();

    faults.fail_writes(Fault::NoSpace);
    assert_full(append(&store, "refused", 2).await);
    assert!(faults.injected(FaultOp::Write) >= 1);
    assert!(
        matches!(store.write_health(), WriteHealth::Full { .. }),
        "{:?}",
        store.write_health()
    );
    // Every later write is tried again, and fails while the disk is full.
    assert_full(append(&store, "refused again", 1).await);
    assert_eq!(
        ids(&store).await,
        acked,
        "acknowledged events stay readable"
    );

    faults.clear();
    acked.extend(append(&store, "after", 2).await.expect("space is back"));
    assert_eq!(store.write_health(), WriteHealth::Ok);
    assert_eq!(ids(&store).await, acked);
    // Nothing of the refused appends is left half-written in the segment.
    assert_eq!(reopen_ids(store, dir.path()).await, acked);
}

#[tokio::test]
async fn enospc_on_segment_roll_fails_that_append_and_keeps_the_old_segment() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultFs::new(RealFs);
    let store = open(dir.path(), &faults);
    let mut acked = append(&store, "first", 1).await.unwrap();
    faults.inject(Injection::new(FaultOp::Create, Fault::NoSpace).matching(".seg"));

    // Fill the first segment until an append needs a new one.
    let refused = loop {
        match append(&store, "fill", 1).await {
            Ok(ids) => acked.extend(ids),
            Err(e) => break e,
        }
        assert!(acked.len() < 100, "the segment never rolled");
    };
    assert!(matches!(refused, StoreError::Full { .. }), "{refused:?}");
    assert_eq!(faults.injected(FaultOp::Create), 1);
    assert!(matches!(store.write_health(), WriteHealth::Full { .. }));
    assert_eq!(store.info(&stream()).await.unwrap().segments, 1);
    assert_eq!(ids(&store).await, acked);

    faults.clear();
    acked.extend(append(&store, "rolled", 1).await.expect("space is back"));
    assert_eq!(store.write_health(), WriteHealth::Ok);
    assert_eq!(store.info(&stream()).await.unwrap().segments, 2);
    assert_eq!(reopen_ids(store, dir.path()).await, acked);
}

#[tokio::test]
async fn eio_on_read_is_an_error_not_an_empty_answer() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultFs::new(RealFs);
    let store = open(dir.path(), &faults);
    let acked = append(&store, "a", 20).await.unwrap();

    faults.fail_reads(Fault::Io);
    let read = store.read(&stream(), &ReadQuery::all(usize::MAX)).await;
    assert!(matches!(read, Err(StoreError::Io { .. })), "{read:?}");
    assert!(faults.injected(FaultOp::Read) >= 1);
    // Writes do not read: they go on, and the store stays healthy.
    append(&store, "b", 1)
        .await
        .expect("append while reads fail");
    assert_eq!(store.write_health(), WriteHealth::Ok);

    faults.clear();
    assert_eq!(ids(&store).await.len(), acked.len() + 1);
    store.close().await.unwrap();
}

/// Polls a future once, so its request is queued before it is awaited.
async fn queue<T>(fut: &mut Pin<Box<dyn Future<Output = T> + Send + '_>>) {
    std::future::poll_fn(|cx| {
        assert!(fut.as_mut().poll(cx).is_pending(), "answered too early");
        Poll::Ready(())
    })
    .await;
}

/// Holds the writer in the sync of `first` (which succeeds), queues
/// `appends` behind it so they form the next group, and fails that group's
/// sync. Returns the answers of `first` and of the group.
async fn fail_one_group(
    store: &EmbeddedStore,
    faults: &FaultFs,
    appends: Vec<EventBatch>,
) -> (Result<Vec<EventId>>, Vec<Result<Vec<EventId>>>) {
    let s = stream();
    faults.hold_syncs();
    let mut first: Pin<Box<dyn Future<Output = _> + Send>> =
        Box::pin(store.append(&s, batch("first", 1), Default::default()));
    queue(&mut first).await;
    while faults.syncs_held() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut group: Vec<Pin<Box<dyn Future<Output = _> + Send>>> = appends
        .into_iter()
        .map(|b| {
            Box::pin(store.append(&s, b, Default::default()))
                as Pin<Box<dyn Future<Output = _> + Send>>
        })
        .collect();
    for fut in &mut group {
        queue(fut).await;
    }
    faults.inject(
        Injection::new(FaultOp::Sync, Fault::Io)
            .matching(".seg")
            .once(),
    );
    faults.release_syncs();
    let first = first.await;
    let mut answers = Vec::new();
    for fut in group {
        answers.push(fut.await);
    }
    (first, answers)
}

/// Explicit ids far ahead of the clock, so a clock that went back after
/// the failure would show.
fn future_batch(ms: u64, n: u64) -> EventBatch {
    let mut b = EventBatch::new();
    for seq in 0..n {
        b.push(&NewEvent::new("t", b"{}").with_id(EventId::new(ms, seq)))
            .unwrap();
    }
    b
}

#[tokio::test]
async fn failed_fdatasync_acknowledges_nothing_in_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultFs::new(RealFs);
    let store = open(dir.path(), &faults);
    let mut acked = append(&store, "before", 2).await.unwrap();

    let far = busbar_event::now_ms() + 1_000_000_000;
    let appends = vec![
        batch("g1", 3),
        batch("g2", 1),
        future_batch(far, 2),
        batch("g4", 2),
    ];
    let (first, group) = fail_one_group(&store, &faults, appends).await;
    acked.extend(first.expect("the group before the failure is acknowledged"));
    assert_eq!(group.len(), 4);
    for answer in &group {
        assert!(
            matches!(answer, Err(StoreError::Io { .. })),
            "every append of the group fails: {answer:?}"
        );
    }
    assert_eq!(faults.injected(FaultOp::Sync), 1);
    assert!(matches!(store.write_health(), WriteHealth::Failed { .. }));
    assert_eq!(ids(&store).await, acked, "nothing of the group is readable");

    let next = append(&store, "after", 1).await.expect("writes go on");
    assert!(
        next[0] > EventId::new(far, 1),
        "ids never repeat: {} after a failed {far}-1",
        next[0]
    );
    acked.extend(next);
    assert_eq!(store.write_health(), WriteHealth::Ok);
    assert_eq!(ids(&store).await, acked);
    assert_eq!(reopen_ids(store, dir.path()).await, acked);
}

/// An event with idempotency key `key`.
fn keyed(key: &str) -> EventBatch {
    let mut b = EventBatch::new();
    b.push(&NewEvent {
        idempotency_key: Some(key),
        ..NewEvent::new("t", b"{}")
    })
    .unwrap();
    b
}

#[tokio::test]
async fn failed_fdatasync_forgets_the_keys_of_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultFs::new(RealFs);
    let store = open(dir.path(), &faults);
    let (first, group) = fail_one_group(&store, &faults, vec![keyed("k")]).await;
    first.expect("the group before the failure is acknowledged");
    assert!(matches!(group[0], Err(StoreError::Io { .. })));
    let dedup = AppendOptions {
        dedup: true,
        ..AppendOptions::default()
    };
    let again = store
        .append_detailed(&stream(), keyed("k"), dedup)
        .await
        .expect("writes go on");
    assert!(
        again.duplicates.is_empty(),
        "a key whose event was never stored answers nothing: {again:?}"
    );
    assert_eq!(ids(&store).await.last(), Some(&again.ids[0]));
    let repeat = store
        .append_detailed(&stream(), keyed("k"), dedup)
        .await
        .unwrap();
    assert_eq!(repeat.ids, again.ids);
    assert_eq!(repeat.duplicates, vec![0]);
}

#[tokio::test]
async fn failed_fdatasync_rolls_back_group_ops() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultFs::new(RealFs);
    let store = open(dir.path(), &faults);
    let s = stream();
    store
        .create_group(&s, "g", GroupStart::Beginning, GroupConfig::default())
        .await
        .unwrap();
    let acked = append(&store, "a", 3).await.unwrap();

    faults.inject(
        Injection::new(FaultOp::Sync, Fault::Io)
            .matching(".seg")
            .once(),
    );
    let read = store.read_group(&s, "g", "c", 10).await;
    assert!(read.is_err(), "a read whose commit failed: {read:?}");
    let pending = store
        .pending(&s, "g", None, EventId::ZERO, EventId::MAX, 100)
        .await
        .unwrap();
    assert!(pending.is_empty(), "rolled back: {pending:?}");

    // The same events are delivered again, once.
    let read = store.read_group(&s, "g", "c", 10).await.unwrap();
    let delivered: Vec<EventId> = read.deliveries.iter().map(|d| d.event.id()).collect();
    assert_eq!(delivered, acked);
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path(), &FaultFs::new(RealFs));
    let pending: Vec<EventId> = store
        .pending(&s, "g", None, EventId::ZERO, EventId::MAX, 100)
        .await
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(pending, acked);
}

#[tokio::test]
async fn a_failed_recovery_after_a_failed_fdatasync_is_retried_on_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultFs::new(RealFs);
    let store = open(dir.path(), &faults);
    let mut acked = append(&store, "before", 2).await.unwrap();

    // The group's sync fails, then the sync of the cut that repairs it.
    faults.inject(
        Injection::new(FaultOp::Sync, Fault::Io)
            .matching(".seg")
            .times(2),
    );
    assert!(append(&store, "lost", 1).await.is_err());
    assert_eq!(faults.injected(FaultOp::Sync), 2);
    assert!(matches!(store.write_health(), WriteHealth::Failed { .. }));
    assert_eq!(ids(&store).await, acked, "reads go on while it is broken");

    acked.extend(
        append(&store, "after", 1)
            .await
            .expect("repaired, then written"),
    );
    assert_eq!(store.write_health(), WriteHealth::Ok);
    assert_eq!(ids(&store).await, acked);
    assert_eq!(reopen_ids(store, dir.path()).await, acked);
}

#[tokio::test]
async fn enospc_on_a_trim_record_fails_the_trim_and_keeps_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultFs::new(RealFs);
    let store = open(dir.path(), &faults);
    let mut acked = append(&store, "a", 5).await.unwrap();

    faults.fail_writes(Fault::NoSpace);
    let trim = busbar_store::Trim::MaxLen {
        max: 2,
        approx: false,
    };
    let trimmed = store.trim(&stream(), trim).await;
    assert!(
        matches!(trimmed, Err(StoreError::Full { .. })),
        "{trimmed:?}"
    );
    assert!(matches!(store.write_health(), WriteHealth::Full { .. }));
    assert_eq!(
        ids(&store).await,
        acked,
        "a trim that was not logged hides nothing"
    );

    faults.clear();
    assert_eq!(store.trim(&stream(), trim).await.unwrap(), 3);
    assert_eq!(store.write_health(), WriteHealth::Ok);
    acked.drain(..3);
    assert_eq!(ids(&store).await, acked);
    assert_eq!(reopen_ids(store, dir.path()).await, acked);
}

/// Under `never`, events appended since the last `sync` are acknowledged
/// from the page cache. A seal whose `fdatasync` fails counts as a power
/// loss of the segment (the recovery that follows cuts those events off,
/// at once when `repair_fails` is 0, at the next `sync` otherwise), so
/// the next `sync` must fail instead of calling them durable; the one
/// after it has nothing left to report.
async fn sync_after_a_failed_seal(repair_fails: u64) {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultFs::new(RealFs);
    let mut c = config(dir.path(), &faults);
    c.durability = Durability::Never;
    let store = EmbeddedStore::open(c).expect("open");
    let synced = append(&store, "synced", 2).await.unwrap();
    store.sync().await.unwrap();
    append(&store, "in the page cache", 2).await.unwrap();

    faults.inject(
        Injection::new(FaultOp::Sync, Fault::Io)
            .matching(".seg")
            .times(1 + repair_fails),
    );
    assert!(store.rotate(&stream()).await.is_err());
    assert_eq!(faults.injected(FaultOp::Sync), 1 + repair_fails);
    assert!(matches!(store.write_health(), WriteHealth::Failed { .. }));

    let after = store.sync().await;
    assert!(
        matches!(after, Err(StoreError::Io { .. })),
        "acknowledged events were lost: {after:?}"
    );
    assert_eq!(ids(&store).await, synced);
    store.sync().await.expect("the loss is reported once");

    let mut acked = synced;
    acked.extend(append(&store, "after", 1).await.expect("repaired"));
    assert_eq!(store.write_health(), WriteHealth::Ok);
    assert_eq!(reopen_ids(store, dir.path()).await, acked);
}

#[tokio::test]
async fn sync_fails_when_a_recovery_cut_off_acknowledged_events() {
    sync_after_a_failed_seal(0).await;
}

#[tokio::test]
async fn sync_fails_on_a_stream_broken_by_a_failed_fdatasync() {
    sync_after_a_failed_seal(1).await;
}
