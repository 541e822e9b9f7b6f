//! Idempotent appends ([`crate::Dedup`]): what every backend's duplicate
//! window must do.

use std::time::Duration;

use busbar_event::{EventBatch, EventId, NewEvent, StreamName};

use super::{name, Harness};
use crate::{AppendOptions, Appended, Dedup, ReadQuery, Store, StoreError};

/// A batch with one event per key (`None`: an event without one).
pub fn keyed(keys: &[Option<&str>]) -> EventBatch {
    let mut b = EventBatch::new();
    for key in keys {
        b.push(&NewEvent {
            idempotency_key: *key,
            ..NewEvent::new("t", br#"{"x":1}"#)
        })
        .expect("event fits");
    }
    b
}

const DEDUP: AppendOptions = AppendOptions {
    trim: None,
    partition: None,
    dedup: true,
};

async fn publish(store: &dyn Store, s: &StreamName, keys: &[Option<&str>]) -> Appended {
    store
        .append_detailed(s, keyed(keys), DEDUP)
        .await
        .expect("append")
}

async fn length(store: &dyn Store, s: &StreamName) -> u64 {
    store.info(s).await.expect("info").length
}

fn counter(store: &dyn Store, which: &str, stream: &str) -> u64 {
    let metrics = store
        .metrics()
        .expect("a backend with a duplicate window reports its metrics");
    let family = match which {
        "hits" => &metrics.dedup_hits,
        _ => &metrics.dedup_evicted,
    };
    family.get([stream]).get()
}

/// The same key twice: one stored event, and the repeat is answered with
/// its id and said to be a repeat; keyless events and new keys beside it
/// are stored.
pub async fn dedup_answers_a_repeat_with_the_original_id(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("dedup-repeat");
    let first = publish(&*store, &s, &[Some("k1")]).await;
    assert!(first.duplicates.is_empty());
    let again = publish(&*store, &s, &[Some("k1")]).await;
    assert_eq!(again.ids, first.ids);
    assert_eq!(again.duplicates, vec![0]);
    assert!(again.is_duplicate(0));
    assert_eq!(length(&*store, &s).await, 1);

    let mixed = publish(&*store, &s, &[Some("k1"), None, Some("k2")]).await;
    assert_eq!(mixed.ids[0], first.ids[0]);
    assert_eq!(mixed.duplicates, vec![0]);
    assert!(mixed.ids[1] > first.ids[0] && mixed.ids[2] > mixed.ids[1]);
    assert_eq!(mixed.stored_ids().count(), 2);
    assert_eq!(length(&*store, &s).await, 3);
    assert_eq!(counter(&*store, "hits", "dedup-repeat"), 2);

    // The repeat did not move the stream's clock.
    let info = store.info(&s).await.expect("info");
    assert_eq!(info.last_id, mixed.ids[2]);
    assert_eq!(info.added, 3);
}

/// A key repeated within one batch is stored once; the repeat gets the
/// first's id.
pub async fn dedup_within_one_batch(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("dedup-batch");
    let got = publish(
        &*store,
        &s,
        &[Some("a"), Some("a"), None, Some("b"), Some("a")],
    )
    .await;
    assert_eq!(got.ids.len(), 5);
    assert_eq!(got.duplicates, vec![1, 4]);
    assert_eq!(got.ids[1], got.ids[0]);
    assert_eq!(got.ids[4], got.ids[0]);
    let stored: Vec<EventId> = store
        .read(&s, &ReadQuery::all(10))
        .await
        .expect("read")
        .iter()
        .map(|e| e.id())
        .collect();
    assert_eq!(stored, vec![got.ids[0], got.ids[2], got.ids[3]]);
    let events = store.read(&s, &ReadQuery::all(10)).await.expect("read");
    assert_eq!(events[0].idempotency_key(), Some("a"));
    assert_eq!(events[1].idempotency_key(), None);
}

/// Appends without `dedup` (busbar's own copies) store every event; the
/// key stays remembered with its first id.
pub async fn dedup_only_when_asked(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("dedup-asked");
    let first = publish(&*store, &s, &[Some("k")]).await;
    let copy = store
        .append_detailed(&s, keyed(&[Some("k"), Some("k")]), AppendOptions::default())
        .await
        .expect("append");
    assert!(copy.duplicates.is_empty());
    assert!(copy.ids[0] > first.ids[0] && copy.ids[1] > copy.ids[0]);
    assert_eq!(length(&*store, &s).await, 3);
    let again = publish(&*store, &s, &[Some("k")]).await;
    assert_eq!(again.ids, first.ids);
}

/// After the window, a key is stored again.
pub async fn dedup_window_expires(mut h: impl Harness) {
    h.set_dedup(Dedup {
        window: Duration::from_millis(300),
        ..Dedup::default()
    });
    let store = h.open().await;
    let s = name("dedup-expiry");
    let first = publish(&*store, &s, &[Some("k")]).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let later = publish(&*store, &s, &[Some("k")]).await;
    assert!(later.duplicates.is_empty());
    assert!(later.ids[0] > first.ids[0]);
    assert_eq!(length(&*store, &s).await, 2);
}

/// Past `max_keys`, the oldest keys are forgotten early (and counted): a
/// repeat of one is stored again, a repeat of a newer one is not.
pub async fn dedup_bound_forgets_the_oldest_and_counts(mut h: impl Harness) {
    h.set_dedup(Dedup {
        max_keys: 3,
        ..Dedup::default()
    });
    let store = h.open().await;
    let s = name("dedup-bound");
    let first = publish(&*store, &s, &[Some("k0"), Some("k1")]).await;
    let next = publish(&*store, &s, &[Some("k2"), Some("k3"), Some("k4")]).await;
    assert_eq!(counter(&*store, "evicted", "dedup-bound"), 2);
    let newest = publish(&*store, &s, &[Some("k4")]).await;
    assert_eq!(newest.ids[0], next.ids[2]);
    assert_eq!(newest.duplicates, vec![0]);
    let oldest = publish(&*store, &s, &[Some("k0")]).await;
    assert!(oldest.duplicates.is_empty());
    assert!(oldest.ids[0] > first.ids[0]);
    assert_eq!(length(&*store, &s).await, 6);
    // Remembering k0 again pushed out k2.
    assert_eq!(counter(&*store, "evicted", "dedup-bound"), 3);
}

/// With the window off, every event is stored.
pub async fn dedup_off_stores_every_event(mut h: impl Harness) {
    h.set_dedup(Dedup::OFF);
    let store = h.open().await;
    let s = name("dedup-off");
    publish(&*store, &s, &[Some("k")]).await;
    let again = publish(&*store, &s, &[Some("k"), Some("k")]).await;
    assert!(again.duplicates.is_empty());
    assert_eq!(length(&*store, &s).await, 3);
}

/// An append that fails remembers none of its keys.
pub async fn dedup_failed_append_remembers_nothing(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("dedup-failed");
    let first = publish(&*store, &s, &[None]).await;
    let mut bad = keyed(&[Some("k")]);
    bad.push(&NewEvent::new("t", b"{}").with_id(first.ids[0]))
        .expect("event fits");
    let refused = store.append_detailed(&s, bad, DEDUP).await;
    assert!(matches!(refused, Err(StoreError::IdNotGreater { .. })));
    let later = publish(&*store, &s, &[Some("k")]).await;
    assert!(later.duplicates.is_empty());
    assert_eq!(length(&*store, &s).await, 2);
}

/// Appends racing with the same key store one event, and every one of
/// them is answered with its id.
pub async fn dedup_concurrent_repeats_store_one(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("dedup-race");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let s = s.clone();
            tokio::spawn(async move { publish(&*store, &s, &[Some("same"), None]).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("task"));
    }
    let original = answers[0].ids[0];
    assert!(answers.iter().all(|a| a.ids[0] == original));
    assert_eq!(
        answers.iter().filter(|a| a.duplicates.is_empty()).count(),
        1
    );
    assert_eq!(length(&*store, &s).await, 17);
}

/// A repeat after a restart is still answered with the original id
/// (backends that keep nothing across restarts reopen as themselves).
pub async fn dedup_window_survives_reopen(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("dedup-reopen");
    let first = publish(&*store, &s, &[Some("a"), None, Some("b")]).await;
    let store = h.reopen(store).await;
    let again = publish(&*store, &s, &[Some("b"), Some("c"), Some("a")]).await;
    assert_eq!(again.ids[0], first.ids[2]);
    assert_eq!(again.ids[2], first.ids[0]);
    assert_eq!(again.duplicates, vec![0, 2]);
    assert_eq!(length(&*store, &s).await, 4);
}
