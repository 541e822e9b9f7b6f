//! The behaviour every [`Store`] backend must show.
//!
//! A backend's test file implements [`Harness`] and invokes
//! [`store_conformance!`](crate::store_conformance), which expands to one
//! `#[tokio::test]` per case so a failure names the behaviour that broke.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use busbar_event::{EventBatch, EventId, NewEvent, StreamName};

use crate::{AppendOptions, Dedup, ReadQuery, Store, StoreError, Trim, TypeFilter};

mod dedup;
mod groups;
pub use dedup::*;
pub use groups::*;

/// Opens (and reopens) the backend under test.
#[async_trait]
pub trait Harness: Send {
    /// Opens the store.
    async fn open(&mut self) -> Arc<dyn Store>;
    /// Closes `store` and opens it again over the same data. Backends that
    /// keep nothing across restarts return `store` itself.
    async fn reopen(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store>;
    /// The duplicate window the next opens (and reopens) use; until it is
    /// called, [`Dedup::default`].
    fn set_dedup(&mut self, dedup: Dedup);
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("valid stream name")
}

/// A batch of `n` events of type `t`, payload `{"i":<k>}`.
pub fn batch(t: &str, n: usize, start: usize) -> EventBatch {
    let mut b = EventBatch::new();
    for i in start..start + n {
        let payload = format!(r#"{{"i":{i}}}"#);
        b.push(&NewEvent::new(t, payload.as_bytes()))
            .expect("event fits");
    }
    b
}

async fn append(store: &dyn Store, s: &StreamName, b: EventBatch) -> Vec<EventId> {
    store
        .append(s, b, AppendOptions::default())
        .await
        .expect("append")
}

async fn ids(store: &dyn Store, s: &StreamName, q: ReadQuery) -> Vec<EventId> {
    store
        .read(s, &q)
        .await
        .expect("read")
        .iter()
        .map(|e| e.id())
        .collect()
}

/// Generates one test per conformance case for a harness expression.
#[macro_export]
macro_rules! store_conformance {
    ($harness:expr) => {
        $crate::store_conformance!(@cases $harness;
            append_assigns_increasing_ids, events_round_trip, explicit_ids_must_increase,
            read_ranges_forward_and_backward, read_filters_types, read_unknown_stream_fails,
            inverted_range_fails, trim_by_maxlen, trim_by_min_id, trim_by_age, trim_in_append,
            delete_entries, info_tracks_length_and_bytes, added_counts_removed_events,
            last_id_survives_full_trim, single_partition_streams_address_partition_zero,
            list_and_delete_streams, rotate_keeps_events, data_survives_reopen,
            concurrent_appends_are_ordered, group_lifecycle, group_delivers_each_event_once,
            group_ack_rules, group_nack_redelivers, group_ack_wait_expiry,
            group_dead_letters_exactly_once, group_terminal_nack_and_drop, group_claim_idle,
            group_pause_resume, group_consumers_and_caps, group_expire_and_rewind,
            group_state_survives_reopen, dedup_answers_a_repeat_with_the_original_id,
            dedup_within_one_batch, dedup_only_when_asked, dedup_window_expires,
            dedup_bound_forgets_the_oldest_and_counts, dedup_off_stores_every_event,
            dedup_failed_append_remembers_nothing, dedup_concurrent_repeats_store_one,
            dedup_window_survives_reopen);
    };
    (@cases $harness:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::conformance::$case($harness).await;
            }
        )*
    };
}

/// A backend with one partition per stream reports it, takes appends and
/// reads naming partition 0 (or none), and refuses any other partition.
pub async fn single_partition_streams_address_partition_zero(mut h: impl Harness) {
    use crate::partition::PartitionId;
    let store = h.open().await;
    let s = name("partitions");
    let zero = AppendOptions {
        partition: Some(PartitionId(0)),
        ..AppendOptions::default()
    };
    let first = store.append(&s, batch("t", 2, 0), zero).await.unwrap();
    let second = append(&*store, &s, batch("t", 1, 2)).await;
    assert_eq!(store.info(&s).await.unwrap().partitions, 1);
    let one = ReadQuery {
        partition: Some(PartitionId(0)),
        ..ReadQuery::all(10)
    };
    let all: Vec<EventId> = first.iter().chain(&second).copied().collect();
    assert_eq!(ids(&*store, &s, one).await, all);
    assert_eq!(ids(&*store, &s, ReadQuery::all(10)).await, all);
    let elsewhere = AppendOptions {
        partition: Some(PartitionId(1)),
        ..AppendOptions::default()
    };
    let refused = store.append(&s, batch("t", 1, 3), elsewhere).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::NoSuchPartition {
                partition: PartitionId(1),
                partitions: 1,
                ..
            })
        ),
        "{refused:?}"
    );
    let read = ReadQuery {
        partition: Some(PartitionId(3)),
        ..ReadQuery::all(10)
    };
    assert!(matches!(
        store.read(&s, &read).await,
        Err(StoreError::NoSuchPartition { .. })
    ));
    assert_eq!(
        store.info(&s).await.unwrap().length,
        3,
        "nothing refused was stored"
    );
}

/// Ids strictly increase within a stream, across batches.
pub async fn append_assigns_increasing_ids(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("ids");
    let mut all = append(&*store, &s, batch("t", 50, 0)).await;
    all.extend(append(&*store, &s, batch("t", 50, 50)).await);
    assert_eq!(all.len(), 100);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "ids not increasing");
}

/// Every field written is read back unchanged.
pub async fn events_round_trip(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("roundtrip");
    let mut b = EventBatch::new();
    let mut e = NewEvent::new("user.created", br#"{"name":"ada", "n": [1, 2.50]}"#)
        .with_key("k")
        .with_tenant("acme");
    e.ts = Some(1_700_000_000_123);
    e.session = Some("sess-1");
    e.idempotency_key = Some("idem-1");
    b.push(&e).unwrap();
    let ids = append(&*store, &s, b).await;
    let got = store.read(&s, &ReadQuery::all(10)).await.unwrap();
    assert_eq!(got.len(), 1);
    let g = &got[0];
    assert_eq!(g.id(), ids[0]);
    assert_eq!(g.event_type(), "user.created");
    assert_eq!(g.payload(), br#"{"name":"ada", "n": [1, 2.50]}"#);
    assert_eq!(g.key(), Some("k"));
    assert_eq!(g.tenant(), Some("acme"));
    assert_eq!(g.ts(), Some(1_700_000_000_123));
    assert_eq!(g.session(), Some("sess-1"));
    assert_eq!(g.idempotency_key(), Some("idem-1"));
    assert!(g.received_ms() > 0);
}

/// Explicit ids are accepted when greater than the last, and a batch with a
/// bad one appends nothing.
pub async fn explicit_ids_must_increase(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("explicit");
    let mut b = EventBatch::new();
    b.push(&NewEvent::new("t", b"{}").with_id(EventId::new(10, 5)))
        .unwrap();
    assert_eq!(append(&*store, &s, b).await, vec![EventId::new(10, 5)]);

    let mut bad = EventBatch::new();
    bad.push(&NewEvent::new("t", b"{}").with_id(EventId::new(20, 0)))
        .unwrap();
    bad.push(&NewEvent::new("t", b"{}").with_id(EventId::new(10, 5)))
        .unwrap();
    let err = store
        .append(&s, bad, AppendOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::IdNotGreater { requested, last, .. }
            if requested == EventId::new(10, 5) && last == EventId::new(20, 0)),
        "{err}"
    );
    assert_eq!(store.info(&s).await.unwrap().length, 1);
    // An automatic id after an explicit one far in the future stays greater.
    let mut future = EventBatch::new();
    future
        .push(&NewEvent::new("t", b"{}").with_id(EventId::new(u64::MAX / 2, 0)))
        .unwrap();
    append(&*store, &s, future).await;
    let next = append(&*store, &s, batch("t", 1, 0)).await;
    assert_eq!(next[0], EventId::new(u64::MAX / 2, 1));
}

/// XRANGE / XREVRANGE semantics with counts.
pub async fn read_ranges_forward_and_backward(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("ranges");
    let all = append(&*store, &s, batch("t", 30, 0)).await;
    assert_eq!(ids(&*store, &s, ReadQuery::all(usize::MAX)).await, all);
    assert_eq!(ids(&*store, &s, ReadQuery::all(5)).await, all[..5]);
    assert_eq!(
        ids(&*store, &s, ReadQuery::range(all[10], all[19], 100)).await,
        all[10..20]
    );
    let rev = ids(
        &*store,
        &s,
        ReadQuery::range(all[10], all[19], 3).reversed(),
    )
    .await;
    assert_eq!(rev, vec![all[19], all[18], all[17]]);
    let after_last = all[29].successor().unwrap();
    assert!(
        ids(&*store, &s, ReadQuery::range(after_last, EventId::MAX, 10))
            .await
            .is_empty()
    );
}

/// A type filter keeps exact types and `prefix.*` patterns.
pub async fn read_filters_types(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("types");
    append(&*store, &s, batch("order.created", 3, 0)).await;
    append(&*store, &s, batch("user.created", 2, 0)).await;
    append(&*store, &s, batch("order.paid", 3, 0)).await;
    let mut q = ReadQuery::all(100);
    q.types = Some(TypeFilter::new(["order.*"]));
    assert_eq!(store.read(&s, &q).await.unwrap().len(), 6);
    q.types = Some(TypeFilter::new(["user.created"]));
    q.count = 1;
    let got = store.read(&s, &q.clone().reversed()).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event_type(), "user.created");
}

/// Reading a stream that does not exist names it.
pub async fn read_unknown_stream_fails(mut h: impl Harness) {
    let store = h.open().await;
    let err = store
        .read(&name("nope"), &ReadQuery::all(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchStream { .. }), "{err}");
    assert!(matches!(
        store.info(&name("nope")).await,
        Err(StoreError::NoSuchStream { .. })
    ));
}

/// A range whose start is after its end is an error, not an empty read.
pub async fn inverted_range_fails(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("inverted");
    append(&*store, &s, batch("t", 1, 0)).await;
    let q = ReadQuery::range(EventId::new(5, 0), EventId::new(4, 0), 10);
    assert!(matches!(
        store.read(&s, &q).await,
        Err(StoreError::InvertedRange { .. })
    ));
}

/// Exact MAXLEN keeps exactly the newest `max` events.
pub async fn trim_by_maxlen(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("maxlen");
    let all = append(&*store, &s, batch("t", 100, 0)).await;
    let removed = store
        .trim(
            &s,
            Trim::MaxLen {
                max: 40,
                approx: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(removed, 60);
    assert_eq!(ids(&*store, &s, ReadQuery::all(1000)).await, all[60..]);
    let info = store.info(&s).await.unwrap();
    assert_eq!((info.length, info.first_id), (40, Some(all[60])));
    // Approximate trims never remove more than asked.
    store
        .trim(
            &s,
            Trim::MaxLen {
                max: 30,
                approx: true,
            },
        )
        .await
        .unwrap();
    assert!(store.info(&s).await.unwrap().length >= 30);
}

/// MINID removes events below an id.
pub async fn trim_by_min_id(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("minid");
    let all = append(&*store, &s, batch("t", 20, 0)).await;
    let removed = store
        .trim(
            &s,
            Trim::MinId {
                id: all[5],
                approx: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(removed, 5);
    assert_eq!(ids(&*store, &s, ReadQuery::all(1000)).await, all[5..]);
}

/// Age trims use the id's time.
pub async fn trim_by_age(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("age");
    let mut old = EventBatch::new();
    old.push(&NewEvent::new("t", b"{}").with_id(EventId::new(1_000, 0)))
        .unwrap();
    append(&*store, &s, old).await;
    let fresh = append(&*store, &s, batch("t", 3, 0)).await;
    let removed = store
        .trim(
            &s,
            Trim::MaxAge {
                age: Duration::from_secs(3600),
                approx: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(ids(&*store, &s, ReadQuery::all(10)).await, fresh);
}

/// A trim passed with an append applies in the same call.
pub async fn trim_in_append(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("xadd-maxlen");
    for round in 0..5 {
        let opts = AppendOptions {
            trim: Some(Trim::MaxLen {
                max: 10,
                approx: false,
            }),
            ..AppendOptions::default()
        };
        store
            .append(&s, batch("t", 7, round * 7), opts)
            .await
            .unwrap();
    }
    let got = store.read(&s, &ReadQuery::all(100)).await.unwrap();
    assert_eq!(got.len(), 10);
    assert_eq!(got[9].payload(), br#"{"i":34}"#);
}

/// Deleting entries removes exactly those that exist.
pub async fn delete_entries(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("xdel");
    let all = append(&*store, &s, batch("t", 10, 0)).await;
    let missing = all[9].successor().unwrap();
    let removed = store.delete(&s, &[all[2], all[5], missing]).await.unwrap();
    assert_eq!(removed, 2);
    assert_eq!(store.delete(&s, &[all[2]]).await.unwrap(), 0);
    let left = ids(&*store, &s, ReadQuery::all(100)).await;
    let want: Vec<_> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2 && *i != 5)
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(left, want);
    assert_eq!(store.info(&s).await.unwrap().length, 8);
}

/// Length, ids and bytes follow appends and trims.
pub async fn info_tracks_length_and_bytes(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("info");
    let all = append(&*store, &s, batch("t", 10, 0)).await;
    let info = store.info(&s).await.unwrap();
    assert_eq!(info.length, 10);
    assert_eq!(info.first_id, Some(all[0]));
    assert_eq!(info.last_id, all[9]);
    assert!(info.bytes >= 10 * 48, "bytes {}", info.bytes);
    let before = info.bytes;
    store
        .trim(
            &s,
            Trim::MaxLen {
                max: 5,
                approx: false,
            },
        )
        .await
        .unwrap();
    let after = store.info(&s).await.unwrap();
    assert!(after.bytes <= before);
    assert_eq!(after.length, 5);
}

/// `added` counts every append and only grows; trims and deletes leave it.
pub async fn added_counts_removed_events(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("added");
    let all = append(&*store, &s, batch("t", 10, 0)).await;
    assert_eq!(store.added(&s).await.unwrap(), 10);
    store
        .trim(
            &s,
            Trim::MaxLen {
                max: 4,
                approx: false,
            },
        )
        .await
        .unwrap();
    store.delete(&s, &[all[9]]).await.unwrap();
    append(&*store, &s, batch("t", 5, 10)).await;
    let info = store.info(&s).await.unwrap();
    assert_eq!(info.added, 15);
    assert_eq!(store.added(&s).await.unwrap(), 15);
    assert_eq!(info.length, 8);
    assert!(store.added(&name("nope")).await.is_err());
}

/// Trimming everything keeps the last id, so new ids stay greater.
pub async fn last_id_survives_full_trim(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("emptied");
    let all = append(&*store, &s, batch("t", 5, 0)).await;
    store
        .trim(
            &s,
            Trim::MaxLen {
                max: 0,
                approx: false,
            },
        )
        .await
        .unwrap();
    let info = store.info(&s).await.unwrap();
    assert_eq!(
        (info.length, info.first_id, info.last_id),
        (0, None, all[4])
    );
    let store = h.reopen(store).await;
    let next = append(&*store, &s, batch("t", 1, 0)).await;
    assert!(next[0] > all[4]);
}

/// Streams are listed by name and can be deleted.
pub async fn list_and_delete_streams(mut h: impl Harness) {
    let store = h.open().await;
    for s in ["b", "a", "c:dlq"] {
        append(&*store, &name(s), batch("t", 1, 0)).await;
    }
    let names: Vec<String> = store
        .streams()
        .await
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, ["a", "b", "c:dlq"]);
    assert!(store.delete_stream(&name("b")).await.unwrap());
    assert!(!store.delete_stream(&name("b")).await.unwrap());
    assert!(matches!(
        store.read(&name("b"), &ReadQuery::all(1)).await,
        Err(StoreError::NoSuchStream { .. })
    ));
    // A deleted stream can be created again from scratch.
    append(&*store, &name("b"), batch("t", 2, 0)).await;
    assert_eq!(store.info(&name("b")).await.unwrap().length, 2);
}

/// Rotation never loses or reorders events.
pub async fn rotate_keeps_events(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("rotate");
    let mut all = append(&*store, &s, batch("t", 5, 0)).await;
    store.rotate(&s).await.unwrap();
    all.extend(append(&*store, &s, batch("t", 5, 5)).await);
    store.rotate(&s).await.unwrap();
    assert_eq!(ids(&*store, &s, ReadQuery::all(100)).await, all);
    let store = h.reopen(store).await;
    assert_eq!(ids(&*store, &s, ReadQuery::all(100)).await, all);
}

/// What was acknowledged is there after a reopen (memory: the same store).
pub async fn data_survives_reopen(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("reopen");
    let all = append(&*store, &s, batch("t", 20, 0)).await;
    store.delete(&s, &[all[3]]).await.unwrap();
    store
        .trim(
            &s,
            Trim::MinId {
                id: all[2],
                approx: false,
            },
        )
        .await
        .unwrap();
    let store = h.reopen(store).await;
    let mut want = all[2..].to_vec();
    want.retain(|id| *id != all[3]);
    assert_eq!(ids(&*store, &s, ReadQuery::all(100)).await, want);
    let info = store.info(&s).await.unwrap();
    assert_eq!((info.length, info.last_id), (17, all[19]));
}

/// Concurrent appenders to one stream each get increasing ids and together
/// produce one ordered stream with every event.
pub async fn concurrent_appends_are_ordered(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("concurrent");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for round in 0..20 {
                mine.extend(append(&*store, &s, batch("t", 5, t * 1000 + round * 5)).await);
            }
            mine
        }));
    }
    let mut total = 0;
    for task in tasks {
        let mine = task.await.unwrap();
        assert!(mine.windows(2).all(|w| w[0] < w[1]));
        total += mine.len();
    }
    let all = ids(&*store, &s, ReadQuery::all(10_000)).await;
    assert_eq!(all.len(), total);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
}
