//! Model checking of the concurrent core with loom: every interleaving of
//! the threads below (up to loom's preemption bound) is explored, and loom
//! fails the test on a data race on a slot, a deadlock, a lost wake-up (a
//! `block_on` that can never finish) or a leaked `Arc`.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p busbar-bus --release --test loom --target-dir target/loom
//! ```
//!
//! Capacity 1 gives a ring of two one-slot blocks, so a handful of
//! publishes already recycles blocks under a reading subscriber.
#![cfg(loom)]

use busbar_bus::{Bus, RecvError, TryRecvError};
use loom::thread;

/// Explores `f` with at most `preemptions` forced thread switches per
/// execution: bounds that keep each model well under a minute in release.
fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(f);
}

/// Receives until the bus closes, checking order; returns the next
/// sequence number expected (received plus reported lagged).
fn drain_blocking(sub: &mut busbar_bus::Subscriber<u64>, mut next: u64) -> u64 {
    loop {
        match sub.recv_blocking() {
            Ok(v) => {
                assert_eq!(v, next, "out of order or repeated");
                next += 1;
            }
            Err(RecvError::Lagged(n)) => next += n,
            Err(RecvError::Closed) => return next,
        }
    }
}

/// A publisher recycling blocks while a subscriber copies out of them: no
/// slot is read while written, and what the subscriber sees is in order
/// with every gap reported exactly.
#[test]
fn recycling_blocks_under_a_reader_is_race_free_and_lag_is_exact() {
    model(3, || {
        let bus = Bus::new(1).unwrap();
        let mut sub = bus.subscribe();
        let publisher = thread::spawn(move || {
            for i in 0..4u64 {
                assert_eq!(bus.publish(i), Ok(i));
            }
        });
        let mut next = 0;
        for _ in 0..2 {
            match sub.try_recv() {
                Ok(v) => {
                    assert_eq!(v, next);
                    next += 1;
                }
                Err(TryRecvError::Lagged(n)) => next += n,
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Closed) => unreachable!("the bus is open"),
            }
        }
        publisher.join().unwrap();
        assert_eq!(drain_blocking(&mut sub, next), 4);
    });
}

/// A parked subscriber is woken by a publish and by the close: no lost
/// wake-up whichever order parking, publishing and closing happen in.
#[test]
fn parking_never_misses_a_publish_or_the_close() {
    model(3, || {
        let bus = Bus::new(4).unwrap();
        let mut sub = bus.subscribe();
        let publisher = thread::spawn(move || {
            bus.publish(7u64).unwrap();
            drop(bus);
        });
        let got = loom::future::block_on(async {
            let mut got = Vec::new();
            loop {
                match sub.recv().await {
                    Ok(v) => got.push(v),
                    Err(RecvError::Closed) => return got,
                    Err(RecvError::Lagged(n)) => panic!("lagged {n}"),
                }
            }
        });
        assert_eq!(got, [7]);
        publisher.join().unwrap();
    });
}

/// Two publishers share the writer lock: each one's events arrive in its
/// order, none twice, none lost.
#[test]
fn concurrent_publishers_interleave_without_loss() {
    model(3, || {
        let bus = Bus::new(4).unwrap();
        let mut sub = bus.subscribe();
        let other = bus.publisher();
        let a = thread::spawn(move || {
            other.publish(10u64).unwrap();
            other.publish(11).unwrap();
        });
        bus.publish(20).unwrap();
        drop(bus);
        a.join().unwrap();
        let mut seen = Vec::new();
        while let Ok(v) = sub.try_recv() {
            seen.push(v);
        }
        assert_eq!(seen.len(), 3);
        let tens: Vec<_> = seen.iter().filter(|v| **v < 20).collect();
        assert_eq!(tens, [&10, &11]);
    });
}

/// A cutover racing a subscriber that is reading and parking: the
/// subscriber sees every event once, in order, across both buses.
#[test]
fn cutover_loses_and_repeats_nothing() {
    model(2, || {
        let old = Bus::new(2).unwrap();
        let mut sub = old.subscribe();
        let switcher = thread::spawn(move || {
            old.publish(0u64).unwrap();
            let _new = old.cutover(3).unwrap();
            old.publish(1).unwrap(); // forwarded to the new bus
        });
        assert_eq!(drain_blocking(&mut sub, 0), 2);
        switcher.join().unwrap();
    });
}

/// Subscribers coming and going while a publisher runs leave the counts
/// at their baseline.
#[test]
fn subscriber_churn_returns_counts_to_baseline() {
    model(3, || {
        let bus = Bus::new(1).unwrap();
        let publisher = bus.publisher();
        let t = thread::spawn(move || {
            publisher.publish(1u64).unwrap();
            publisher.publish(2).unwrap();
        });
        let mut sub = bus.subscribe();
        let _ = sub.try_recv();
        drop(sub);
        t.join().unwrap();
        let stats = bus.stats();
        assert_eq!(stats.subscribers, 0);
        assert_eq!(stats.queue_depth, 0);
        assert_eq!(stats.published_total, 2);
    });
}
