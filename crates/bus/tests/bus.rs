//! Behaviour of the bus through its public interface: lag accounting,
//! closing, slow subscribers, churn, blocking receives and fairness.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_bus::{
    Bus, BusObserver, CapacityError, RecvError, SendError, TryRecvError, MAX_CAPACITY,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// A seeded generator; the seed is printed so a failure can be replayed
/// with `BUSBAR_TEST_SEED=<seed>`.
fn rng(test: &str) -> StdRng {
    let seed = std::env::var("BUSBAR_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("{test}: seed {seed} (BUSBAR_TEST_SEED={seed} to replay)");
    StdRng::seed_from_u64(seed)
}

#[test]
fn handles_cross_threads_with_shareable_events() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Bus<Arc<String>>>();
    send_sync::<busbar_bus::Publisher<bytes::Bytes>>();
    send_sync::<busbar_bus::Subscriber<bytes::Bytes>>();
}

#[test]
fn capacity_zero_and_too_large_are_errors() {
    assert_eq!(Bus::<u8>::new(0).unwrap_err(), CapacityError::Zero);
    assert_eq!(
        Bus::<u8>::new(MAX_CAPACITY + 1).unwrap_err(),
        CapacityError::TooLarge {
            requested: MAX_CAPACITY + 1,
            max: MAX_CAPACITY
        }
    );
    for capacity in [1, 3, 100, 256, 1000] {
        assert_eq!(Bus::<u8>::new(capacity).unwrap().capacity(), capacity);
    }
}

#[test]
fn lag_is_reported_exactly_then_the_oldest_retained_event_follows() {
    let mut rng = rng("lag_exact");
    for _ in 0..200 {
        let capacity = rng.gen_range(1..300usize);
        let bus = Bus::new(capacity).unwrap();
        let mut sub = bus.subscribe();
        // Read a few first, so lag is also checked past the read-ahead.
        let before = rng.gen_range(0..100u64);
        for i in 0..before {
            bus.publish(i).unwrap();
            assert_eq!(sub.try_recv(), Ok(i));
        }
        let missed = rng.gen_range(1..500u64);
        let total = before + capacity as u64 + missed;
        for i in before..total {
            bus.publish(i).unwrap();
        }
        assert_eq!(
            sub.try_recv(),
            Err(TryRecvError::Lagged(missed)),
            "cap {capacity}"
        );
        for i in before + missed..total {
            assert_eq!(sub.try_recv(), Ok(i), "cap {capacity}");
        }
        assert_eq!(sub.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(bus.stats().overflow_dropped_total, missed);
    }
}

#[test]
fn a_subscriber_exactly_capacity_behind_loses_nothing() {
    for capacity in [1, 2, 7, 64, 100, 4096] {
        let bus = Bus::new(capacity).unwrap();
        let mut sub = bus.subscribe();
        for i in 0..capacity as u64 {
            bus.publish(i).unwrap();
        }
        assert_eq!(bus.stats().queue_depth, capacity as u64);
        for i in 0..capacity as u64 {
            assert_eq!(sub.try_recv(), Ok(i));
        }
        assert_eq!(bus.stats().queue_depth, 0);
    }
}

#[test]
fn events_already_read_ahead_survive_a_lag() {
    let bus = Bus::new(8).unwrap();
    let mut sub = bus.subscribe();
    for i in 0..8u64 {
        bus.publish(i).unwrap();
    }
    assert_eq!(sub.try_recv(), Ok(0)); // copies 0..8 into the read-ahead
    for i in 8..30u64 {
        bus.publish(i).unwrap();
    }
    for i in 1..8 {
        assert_eq!(sub.try_recv(), Ok(i));
    }
    assert_eq!(sub.try_recv(), Err(TryRecvError::Lagged(14))); // 8..22
    assert_eq!(sub.try_recv(), Ok(22));
}

#[test]
fn resubscribe_starts_at_the_tail_and_backlog_counts_what_is_ready() {
    let bus = Bus::new(8).unwrap();
    let mut sub = bus.subscribe();
    for i in 0..5u64 {
        bus.publish(i).unwrap();
    }
    assert_eq!(sub.backlog(), 5);
    assert_eq!(sub.try_recv(), Ok(0));
    assert_eq!((sub.position(), sub.backlog()), (1, 4));
    let mut other = sub.resubscribe();
    assert_eq!((other.position(), other.backlog()), (5, 0));
    for i in 5..20u64 {
        bus.publish(i).unwrap();
    }
    // `sub` holds 1..5 in its read-ahead; 12..20 are still retained.
    assert_eq!(sub.backlog(), 4 + 8);
    assert_eq!(other.try_recv(), Err(TryRecvError::Lagged(7)));
    assert_eq!(other.try_recv(), Ok(12));
    assert_eq!(bus.stats().subscribers, 2);
}

#[test]
fn events_are_released_with_the_bus() {
    let bus = Bus::new(16).unwrap();
    let mut sub = bus.subscribe();
    let events: Vec<_> = (0..40u64).map(Arc::new).collect();
    for event in &events {
        bus.publish(event.clone()).unwrap();
    }
    assert!(sub.try_recv().is_err()); // lagged
    let _some = sub.try_recv().unwrap();
    drop((bus, sub, _some));
    assert!(events.iter().all(|e| Arc::strong_count(e) == 1));
}

#[test]
fn publishing_without_subscribers_succeeds_and_is_counted() {
    let bus = Bus::new(4).unwrap();
    for i in 0..10 {
        assert_eq!(bus.publish(i), Ok(i));
    }
    let stats = bus.stats();
    assert_eq!(stats.published_total, 10);
    assert_eq!(stats.subscribers, 0);
    assert_eq!(stats.queue_depth, 0);
    // A late subscriber starts at the tail.
    let mut sub = bus.subscribe();
    assert_eq!(sub.try_recv(), Err(TryRecvError::Empty));
    bus.publish(10).unwrap();
    assert_eq!(sub.try_recv(), Ok(10));
}

#[test]
fn closing_drains_then_reports_closed_and_hands_events_back() {
    let bus = Bus::new(4).unwrap();
    let publisher = bus.publisher();
    let mut sub = bus.subscribe();
    for i in 0..6 {
        publisher.publish(i).unwrap();
    }
    drop(bus);
    assert!(!publisher.is_closed(), "a publisher keeps the bus open");
    publisher.publish(6).unwrap();
    drop(publisher);
    assert_eq!(sub.try_recv(), Err(TryRecvError::Lagged(3)));
    for i in 3..7 {
        assert_eq!(sub.try_recv(), Ok(i));
    }
    assert_eq!(sub.try_recv(), Err(TryRecvError::Closed));
    assert_eq!(sub.try_recv(), Err(TryRecvError::Closed));

    let bus = Bus::new(4).unwrap();
    let other = bus.clone();
    bus.close();
    assert!(other.is_closed());
    assert_eq!(other.publish("kept"), Err(SendError("kept")));
    assert_eq!(bus.subscribe().recv_blocking(), Err(RecvError::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_subscribers_wake_on_publish_and_on_close() {
    let bus = Bus::new(16).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut sub = bus.subscribe();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                match sub.recv().await {
                    Ok(v) => seen.push(v),
                    Err(RecvError::Closed) => return seen,
                    Err(RecvError::Lagged(n)) => panic!("lagged {n}"),
                }
            }
        }));
    }
    for i in 0..5u32 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        bus.publish(i).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    drop(bus);
    for task in tasks {
        assert_eq!(task.await.unwrap(), [0, 1, 2, 3, 4]);
    }
}

#[test]
fn a_slow_subscriber_never_blocks_the_publisher() {
    let bus = Bus::new(64).unwrap();
    let mut slow = bus.subscribe();
    let mut fast = bus.subscribe();
    assert_eq!(slow.try_recv(), Err(TryRecvError::Empty));
    // `slow` never reads again; a million publishes must not wait for it.
    let consumer = std::thread::spawn(move || {
        let (mut got, mut lagged) = (0u64, 0u64);
        loop {
            match fast.recv_blocking() {
                Ok(_) => got += 1,
                Err(RecvError::Lagged(n)) => lagged += n,
                Err(RecvError::Closed) => return got + lagged,
            }
        }
    });
    let n = 1_000_000u64;
    for i in 0..n {
        bus.publish(Arc::new(i)).unwrap();
    }
    let stats = bus.stats();
    assert_eq!(stats.published_total, n);
    assert_eq!(
        stats.queue_depth, 64,
        "the slow subscriber is a full ring behind"
    );
    drop(bus);
    assert_eq!(consumer.join().unwrap(), n);
    assert_eq!(slow.try_recv(), Err(TryRecvError::Lagged(n - 64)));
}

#[test]
fn recv_blocking_from_std_threads_sees_every_event_in_order() {
    let bus = Bus::new(1024).unwrap();
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let mut sub = bus.subscribe();
            std::thread::spawn(move || {
                let mut next = 0u64;
                loop {
                    match sub.recv_blocking() {
                        Ok(v) => {
                            assert_eq!(v, next);
                            next += 1;
                        }
                        Err(RecvError::Lagged(n)) => next += n,
                        Err(RecvError::Closed) => return next,
                    }
                }
            })
        })
        .collect();
    for i in 0..200_000u64 {
        bus.publish(i).unwrap();
        if i % 1000 == 0 {
            std::thread::yield_now();
        }
    }
    drop(bus);
    for consumer in consumers {
        assert_eq!(consumer.join().unwrap(), 200_000);
    }
}

#[test]
fn recv_many_and_try_recv_many_drain_in_batches() {
    let bus = Bus::new(256).unwrap();
    let mut sub = bus.subscribe();
    let mut out = Vec::new();
    assert_eq!(sub.try_recv_many(&mut out, 10), Err(TryRecvError::Empty));
    for i in 0..100u32 {
        bus.publish(i).unwrap();
    }
    assert_eq!(sub.try_recv(), Ok(0));
    assert_eq!(sub.try_recv_many(&mut out, 0), Ok(0));
    let mut total = 0;
    while total < 99 {
        total += sub.try_recv_many(&mut out, 30).unwrap();
    }
    assert_eq!(out, (1..100).collect::<Vec<_>>());
    drop(bus);
    let mut out = Vec::new();
    let got = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(sub.recv_many(&mut out, 8));
    assert_eq!(got, Err(RecvError::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_receives_lose_nothing_and_leave_no_registration() {
    let bus = Bus::new(64).unwrap();
    let mut sub = bus.subscribe();
    for _ in 0..100 {
        let timed_out = tokio::time::timeout(Duration::from_micros(50), sub.recv()).await;
        assert!(timed_out.is_err());
    }
    bus.publish(1).unwrap();
    assert_eq!(sub.recv().await, Ok(1));
}

#[derive(Default)]
struct Counting {
    lagged: AtomicU64,
    subscribers: AtomicUsize,
    changes: AtomicUsize,
    closed: AtomicUsize,
}

impl BusObserver for Counting {
    fn lagged(&self, skipped: u64) {
        self.lagged.fetch_add(skipped, Ordering::Relaxed);
    }
    fn subscribers_changed(&self, subscribers: usize) {
        self.subscribers.store(subscribers, Ordering::Relaxed);
        self.changes.fetch_add(1, Ordering::Relaxed);
    }
    fn closed(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn subscriber_churn_while_publishing_returns_to_baseline() {
    let mut rng = rng("churn");
    let observer = Arc::new(Counting::default());
    let bus = Bus::builder(128)
        .observer(observer.clone())
        .build()
        .unwrap();
    let publisher = bus.publisher();
    let stop = Arc::new(AtomicUsize::new(0));
    let publishing = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while stop.load(Ordering::Relaxed) == 0 {
                publisher.publish(Arc::new(i)).unwrap();
                i += 1;
            }
            i
        })
    };
    let churners: Vec<_> = (0..2)
        .map(|_| {
            let bus = bus.clone();
            let seed: u64 = rng.gen();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut held = Vec::new();
                let mut subscribed = 0;
                for _ in 0..5_000 {
                    if held.len() < 16 && rng.gen_bool(0.6) {
                        held.push(bus.subscribe());
                        subscribed += 1;
                    } else if !held.is_empty() {
                        let i = rng.gen_range(0..held.len());
                        let mut sub = held.swap_remove(i);
                        // Read a little so positions and lag move too.
                        for _ in 0..rng.gen_range(0..200) {
                            let _ = sub.try_recv();
                        }
                    }
                }
                subscribed
            })
        })
        .collect();
    let subscribed: usize = churners.into_iter().map(|c| c.join().unwrap()).sum();
    stop.store(1, Ordering::Relaxed);
    let published = publishing.join().unwrap();
    let stats = bus.stats();
    assert_eq!(stats.subscribers, 0);
    assert_eq!(stats.queue_depth, 0);
    assert_eq!(stats.published_total, published);
    assert_eq!(observer.subscribers.load(Ordering::Relaxed), 0);
    assert_eq!(observer.changes.load(Ordering::Relaxed), 2 * subscribed);
    assert_eq!(
        observer.lagged.load(Ordering::Relaxed),
        stats.overflow_dropped_total
    );
    drop(bus);
    assert_eq!(observer.closed.load(Ordering::Relaxed), 1);
}

/// A publisher that never yields, on the same runtime as its subscribers,
/// must not starve them: they keep receiving while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_never_yields_does_not_starve_subscribers() {
    let bus = Bus::new(4096).unwrap();
    let received: Arc<Vec<AtomicU64>> = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for i in 0..4 {
        let mut sub = bus.subscribe();
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(_) => {
                        received[i].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        }));
    }
    let progress = received.clone();
    let publisher = tokio::spawn(async move {
        // No await in this loop: it never yields.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut i = 0u64;
        while progress.iter().any(|r| r.load(Ordering::Relaxed) < 10_000) {
            assert!(Instant::now() < deadline, "subscribers starved");
            bus.publish(Arc::new(i)).unwrap();
            i += 1;
        }
        i
    });
    let published = publisher.await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    for r in received.iter() {
        assert!(r.load(Ordering::Relaxed) >= 10_000, "published {published}");
    }
}
