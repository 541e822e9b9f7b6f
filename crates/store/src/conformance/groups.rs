//! Consumer-group cases of the conformance suite.

use std::time::Duration;

use busbar_event::{EventId, StreamName};

use super::{append, batch, name, Harness};
use crate::group::{DlqOrigin, Exhausted, GroupConfig, GroupStart, NackOptions};
use crate::{ReadQuery, StoreError, Trim};

fn fast(max_deliver: u32, ack_wait_ms: u64) -> GroupConfig {
    GroupConfig {
        max_deliver,
        ack_wait: Duration::from_millis(ack_wait_ms),
        ..GroupConfig::default()
    }
}

fn ids(d: &crate::group::ReadOutcome) -> Vec<EventId> {
    d.deliveries.iter().map(|x| x.event.id()).collect()
}

/// Groups are created at the beginning, the end or after an id; listed;
/// described; deleted. Duplicates and bad names are errors.
pub async fn group_lifecycle(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("g-life");
    let all = append(&*store, &s, batch("t", 5, 0)).await;
    let cfg = GroupConfig::default();
    let a = store
        .create_group(&s, "a", GroupStart::Beginning, cfg)
        .await
        .unwrap();
    assert_eq!(
        (a.lag, a.pending, a.last_delivered_id),
        (5, 0, EventId::ZERO)
    );
    let b = store
        .create_group(&s, "b", GroupStart::End, cfg)
        .await
        .unwrap();
    assert_eq!((b.lag, b.last_delivered_id), (0, all[4]));
    let c = store
        .create_group(&s, "c", GroupStart::After(all[1]), cfg)
        .await
        .unwrap();
    assert_eq!(c.lag, 3);
    assert!(matches!(
        store.create_group(&s, "a", GroupStart::End, cfg).await,
        Err(StoreError::GroupExists { .. })
    ));
    assert!(matches!(
        store
            .create_group(&s, "bad name", GroupStart::End, cfg)
            .await,
        Err(StoreError::InvalidName { kind: "group", .. })
    ));
    let names: Vec<String> = store
        .groups(&s)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(store.delete_group(&s, "b").await.unwrap());
    assert!(!store.delete_group(&s, "b").await.unwrap());
    assert!(matches!(
        store.group(&s, "b").await,
        Err(StoreError::NoSuchGroup { .. })
    ));
    // Creating a group creates its stream (MKSTREAM).
    let fresh = name("g-mkstream");
    store
        .create_group(&fresh, "g", GroupStart::End, cfg)
        .await
        .unwrap();
    assert_eq!(store.info(&fresh).await.unwrap().length, 0);
}

/// Consumers of one group share the stream: each event goes to one of them.
pub async fn group_delivers_each_event_once(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("g-once");
    let all = append(&*store, &s, batch("t", 10, 0)).await;
    store
        .create_group(&s, "g", GroupStart::Beginning, GroupConfig::default())
        .await
        .unwrap();
    let one = store.read_group(&s, "g", "c1", 4).await.unwrap();
    let two = store.read_group(&s, "g", "c2", 100).await.unwrap();
    assert_eq!(ids(&one), all[..4]);
    assert_eq!(ids(&two), all[4..]);
    assert!(one.deliveries.iter().all(|d| d.delivery_count == 1));
    let info = store.group(&s, "g").await.unwrap();
    assert_eq!(
        (info.pending, info.lag, info.last_delivered_id),
        (10, 0, all[9])
    );
    let per: Vec<(String, u64)> = info
        .consumers
        .iter()
        .map(|c| (c.name.clone(), c.pending))
        .collect();
    assert_eq!(per, [("c1".to_owned(), 4), ("c2".to_owned(), 6)]);
    assert!(store
        .read_group(&s, "g", "c1", 10)
        .await
        .unwrap()
        .deliveries
        .is_empty());
    // New events keep flowing to the group.
    let more = append(&*store, &s, batch("t", 2, 10)).await;
    assert_eq!(
        ids(&store.read_group(&s, "g", "c1", 10).await.unwrap()),
        more
    );
}

/// Acks remove pending entries; unknown ids and other consumers' ids are
/// reported, not acked.
pub async fn group_ack_rules(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("g-ack");
    let all = append(&*store, &s, batch("t", 4, 0)).await;
    store
        .create_group(&s, "g", GroupStart::Beginning, GroupConfig::default())
        .await
        .unwrap();
    store.read_group(&s, "g", "c1", 2).await.unwrap();
    store.read_group(&s, "g", "c2", 2).await.unwrap();
    let unknown = EventId::new(1, 1);
    let out = store
        .ack(&s, "g", Some("c1"), &[all[0], all[2], unknown])
        .await
        .unwrap();
    assert_eq!(out.acked, [all[0]]);
    assert_eq!(out.wrong_consumer, [all[2]]);
    assert_eq!(out.unknown, [unknown]);
    // Without a consumer, any holder's entry is acked.
    let out = store.ack(&s, "g", None, &[all[2], all[0]]).await.unwrap();
    assert_eq!((out.acked, out.unknown), (vec![all[2]], vec![all[0]]));
    let info = store.group(&s, "g").await.unwrap();
    assert_eq!(info.pending, 2);
    assert!(info.last_ack_ms.is_some());
    assert!(matches!(
        store.ack(&s, "nope", None, &all).await,
        Err(StoreError::NoSuchGroup { .. })
    ));
}

/// A nack redelivers (after its delay); the count goes up.
pub async fn group_nack_redelivers(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("g-nack");
    let all = append(&*store, &s, batch("t", 2, 0)).await;
    store
        .create_group(&s, "g", GroupStart::Beginning, GroupConfig::default())
        .await
        .unwrap();
    store.read_group(&s, "g", "c", 2).await.unwrap();
    let opts = NackOptions {
        error: Some("db down".into()),
        ..NackOptions::default()
    };
    let out = store.nack(&s, "g", "c", &[all[0]], opts).await.unwrap();
    assert_eq!(out.retried, [all[0]]);
    let again = store.read_group(&s, "g", "c", 10).await.unwrap();
    assert_eq!(ids(&again), [all[0]]);
    assert_eq!(again.deliveries[0].delivery_count, 2);
    assert_eq!(again.redelivered, 1);
    let pending = store
        .pending(&s, "g", None, EventId::ZERO, EventId::MAX, 10)
        .await
        .unwrap();
    assert_eq!(pending[0].last_error.as_deref(), Some("db down"));
    // A delayed nack is not redelivered before its delay.
    let delayed = NackOptions {
        delay: Some(Duration::from_millis(300)),
        ..NackOptions::default()
    };
    store.nack(&s, "g", "c", &[all[1]], delayed).await.unwrap();
    assert!(store
        .read_group(&s, "g", "c", 10)
        .await
        .unwrap()
        .deliveries
        .is_empty());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        ids(&store.read_group(&s, "g", "c", 10).await.unwrap()),
        [all[1]]
    );
}

/// An unacknowledged delivery comes back after `ack_wait`, to any consumer.
pub async fn group_ack_wait_expiry(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("g-expiry");
    let all = append(&*store, &s, batch("t", 1, 0)).await;
    store
        .create_group(&s, "g", GroupStart::Beginning, fast(5, 100))
        .await
        .unwrap();
    store.read_group(&s, "g", "c1", 1).await.unwrap();
    assert!(store
        .read_group(&s, "g", "c2", 1)
        .await
        .unwrap()
        .deliveries
        .is_empty());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let back = store.read_group(&s, "g", "c2", 1).await.unwrap();
    assert_eq!(ids(&back), all);
    assert_eq!(back.deliveries[0].delivery_count, 2);
    let pending = store
        .pending(&s, "g", Some("c2"), EventId::ZERO, EventId::MAX, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
}

/// After `max_deliver` attempts the event moves to `<stream>:dlq` once,
/// with where it came from and why.
pub async fn group_dead_letters_exactly_once(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("g-dlq");
    let all = append(&*store, &s, batch("order.created", 1, 0)).await;
    store
        .create_group(&s, "g", GroupStart::Beginning, fast(2, 60_000))
        .await
        .unwrap();
    let opts = || NackOptions {
        error: Some("handler failed".into()),
        ..NackOptions::default()
    };
    store.read_group(&s, "g", "c", 1).await.unwrap();
    let first = store.nack(&s, "g", "c", &all, opts()).await.unwrap();
    assert_eq!(first.retried, all);
    assert_eq!(
        store.read_group(&s, "g", "c", 1).await.unwrap().deliveries[0].delivery_count,
        2
    );
    let second = store.nack(&s, "g", "c", &all, opts()).await.unwrap();
    assert_eq!(second.dead_lettered, all);
    assert!(store
        .read_group(&s, "g", "c", 10)
        .await
        .unwrap()
        .deliveries
        .is_empty());
    assert_eq!(store.group(&s, "g").await.unwrap().pending, 0);
    let dlq = StreamName::new("g-dlq:dlq").unwrap();
    let dead = store.read(&dlq, &ReadQuery::all(10)).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event_type(), "order.created");
    assert_eq!(dead[0].payload(), br#"{"i":0}"#);
    let origin = DlqOrigin::of(&dead[0]).expect("dead letter meta");
    assert_eq!(
        (origin.original_id, origin.group.as_str(), origin.attempts),
        (all[0], "g", 2)
    );
    assert_eq!(origin.stream, "g-dlq");
    assert_eq!(origin.last_error.as_deref(), Some("handler failed"));
    // Nothing more happens to it: no second copy.
    assert!(store.expire(&s).await.unwrap().is_empty());
    assert_eq!(
        store.read(&dlq, &ReadQuery::all(10)).await.unwrap().len(),
        1
    );
}

/// A terminal nack dead-letters at once; a group may drop instead.
pub async fn group_terminal_nack_and_drop(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("g-term");
    let all = append(&*store, &s, batch("t", 2, 0)).await;
    store
        .create_group(&s, "g", GroupStart::Beginning, GroupConfig::default())
        .await
        .unwrap();
    store.read_group(&s, "g", "c", 2).await.unwrap();
    let term = NackOptions {
        terminal: true,
        error: Some("bad payload".into()),
        ..NackOptions::default()
    };
    let out = store.nack(&s, "g", "c", &[all[0]], term).await.unwrap();
    assert_eq!(out.dead_lettered, [all[0]]);
    let dlq = StreamName::new("g-term:dlq").unwrap();
    let dead = store.read(&dlq, &ReadQuery::all(10)).await.unwrap();
    assert_eq!(DlqOrigin::of(&dead[0]).unwrap().attempts, 1);

    let dropper = GroupConfig {
        on_exhausted: Exhausted::Drop,
        ..GroupConfig::default()
    };
    store
        .create_group(&s, "d", GroupStart::Beginning, dropper)
        .await
        .unwrap();
    store.read_group(&s, "d", "c", 2).await.unwrap();
    let term = NackOptions {
        terminal: true,
        ..NackOptions::default()
    };
    let out = store.nack(&s, "d", "c", &all, term).await.unwrap();
    assert_eq!(out.dropped, all);
    assert_eq!(
        store.read(&dlq, &ReadQuery::all(10)).await.unwrap().len(),
        1
    );
}

/// XAUTOCLAIM: idle entries move to the claimer, the count goes up.
pub async fn group_claim_idle(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("g-claim");
    let all = append(&*store, &s, batch("t", 3, 0)).await;
    store
        .create_group(&s, "g", GroupStart::Beginning, GroupConfig::default())
        .await
        .unwrap();
    store.read_group(&s, "g", "dead-worker", 3).await.unwrap();
    let none = store
        .claim(
            &s,
            "g",
            "rescuer",
            Duration::from_secs(60),
            EventId::ZERO,
            10,
        )
        .await
        .unwrap();
    assert!(none.deliveries.is_empty());
    tokio::time::sleep(Duration::from_millis(60)).await;
    let got = store
        .claim(
            &s,
            "g",
            "rescuer",
            Duration::from_millis(50),
            EventId::ZERO,
            2,
        )
        .await
        .unwrap();
    let claimed: Vec<EventId> = got.deliveries.iter().map(|d| d.event.id()).collect();
    assert_eq!(claimed, all[..2]);
    assert_eq!(got.next, Some(all[2]));
    assert!(got.deliveries.iter().all(|d| d.delivery_count == 2));
    let mine = store
        .pending(&s, "g", Some("rescuer"), EventId::ZERO, EventId::MAX, 10)
        .await
        .unwrap();
    assert_eq!(mine.len(), 2);
    // The old holder can no longer ack what was claimed.
    let out = store
        .ack(&s, "g", Some("dead-worker"), &all[..1])
        .await
        .unwrap();
    assert_eq!(out.wrong_consumer, all[..1]);
}

/// A paused group delivers nothing; publishing goes on; resuming delivers
/// everything.
pub async fn group_pause_resume(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("g-pause");
    store
        .create_group(&s, "g", GroupStart::Beginning, GroupConfig::default())
        .await
        .unwrap();
    store.set_paused(&s, "g", true).await.unwrap();
    let all = append(&*store, &s, batch("t", 5, 0)).await;
    assert!(store.group(&s, "g").await.unwrap().paused);
    assert!(store
        .read_group(&s, "g", "c", 10)
        .await
        .unwrap()
        .deliveries
        .is_empty());
    store.set_paused(&s, "g", false).await.unwrap();
    assert_eq!(ids(&store.read_group(&s, "g", "c", 10).await.unwrap()), all);
}

/// Deleting a consumer hands its pending entries to whoever reads next;
/// the per-consumer cap limits what one consumer holds.
pub async fn group_consumers_and_caps(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("g-cap");
    let all = append(&*store, &s, batch("t", 6, 0)).await;
    let cfg = GroupConfig {
        max_pending_per_consumer: 2,
        ..GroupConfig::default()
    };
    store
        .create_group(&s, "g", GroupStart::Beginning, cfg)
        .await
        .unwrap();
    assert_eq!(
        ids(&store.read_group(&s, "g", "c1", 10).await.unwrap()),
        all[..2]
    );
    assert!(store
        .read_group(&s, "g", "c1", 10)
        .await
        .unwrap()
        .deliveries
        .is_empty());
    assert_eq!(store.delete_consumer(&s, "g", "c1").await.unwrap(), 2);
    let next = store.read_group(&s, "g", "c2", 10).await.unwrap();
    assert_eq!(ids(&next), all[..2]);
    assert_eq!(next.redelivered, 2);
    let names: Vec<String> = store
        .group(&s, "g")
        .await
        .unwrap()
        .consumers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["c2"]);
}

/// The sweeper dead-letters exhausted entries nobody reads; moving the
/// cursor back redelivers history.
pub async fn group_expire_and_rewind(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("g-sweep");
    let all = append(&*store, &s, batch("t", 3, 0)).await;
    store
        .create_group(&s, "g", GroupStart::Beginning, fast(1, 50))
        .await
        .unwrap();
    store.read_group(&s, "g", "c", 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let swept = store.expire(&s).await.unwrap();
    assert_eq!(
        (swept.len(), swept[0].dead_lettered, swept[0].dropped),
        (1, 1, 0)
    );
    assert_eq!(store.group(&s, "g").await.unwrap().pending, 0);
    // The dead letter says why: nobody acknowledged it in time.
    let dlq = StreamName::new("g-sweep:dlq").unwrap();
    let dead = store.read(&dlq, &ReadQuery::all(10)).await.unwrap();
    let origin = DlqOrigin::of(&dead[0]).expect("dead letter meta");
    assert_eq!(
        origin.last_error.as_deref(),
        Some("ack_wait expired after 1 deliveries")
    );
    store.set_cursor(&s, "g", EventId::ZERO).await.unwrap();
    assert_eq!(store.group(&s, "g").await.unwrap().lag, 3);
    assert_eq!(ids(&store.read_group(&s, "g", "c", 10).await.unwrap()), all);
}

/// Cursors, pending entries and delivery counts survive a reopen, also
/// after the segments they were recorded in are trimmed away.
pub async fn group_state_survives_reopen(mut h: impl Harness) {
    let store = h.open().await;
    let s = name("g-durable");
    let mut all = append(&*store, &s, batch("t", 30, 0)).await;
    store
        .create_group(&s, "g", GroupStart::Beginning, GroupConfig::default())
        .await
        .unwrap();
    store.read_group(&s, "g", "c", 10).await.unwrap();
    store.ack(&s, "g", Some("c"), &all[..5]).await.unwrap();
    store
        .nack(&s, "g", "c", &all[5..6], NackOptions::default())
        .await
        .unwrap();
    // Many more events roll segments; trimming drops the old ones.
    for round in 0..10 {
        all.extend(append(&*store, &s, batch("t", 30, 100 + round * 30)).await);
    }
    store
        .trim(
            &s,
            Trim::MinId {
                id: all[5],
                approx: true,
            },
        )
        .await
        .unwrap();
    let before = store.group(&s, "g").await.unwrap();
    let store = h.reopen(store).await;
    let after = store.group(&s, "g").await.unwrap();
    assert_eq!(
        (after.pending, after.last_delivered_id, after.lag),
        (before.pending, before.last_delivered_id, before.lag)
    );
    assert_eq!(after.pending, 5);
    let again = store.read_group(&s, "g", "c", 1).await.unwrap();
    assert_eq!(ids(&again), [all[5]]);
    assert_eq!(again.deliveries[0].delivery_count, 2);
}
