//! The two-bus cutover (runbook §6.3): moving to a new capacity under load
//! loses and repeats nothing for subscribers that keep receiving.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busbar_bus::{Bus, CapacityError, CutoverError, RecvError, TryRecvError};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn seed(test: &str) -> u64 {
    let seed = std::env::var("BUSBAR_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("{test}: seed {seed} (BUSBAR_TEST_SEED={seed} to replay)");
    seed
}

#[test]
fn cutover_continues_every_subscriber_at_the_next_sequence_number() {
    let old = Bus::new(8).unwrap();
    let mut early = old.subscribe();
    let mut late = old.subscribe();
    for i in 0..5u64 {
        assert_eq!(old.publish(i), Ok(i));
    }
    assert_eq!(late.try_recv(), Ok(0));
    let new = old.cutover(3).unwrap();
    assert!(old.is_closed());
    assert!(!new.is_closed());
    assert_eq!(new.capacity(), 3);
    assert_eq!(old.publish(5), Ok(5), "old handles forward");
    assert_eq!(new.publish(6), Ok(6), "sequence numbers continue");
    for i in 0..7 {
        assert_eq!(early.try_recv(), Ok(i));
    }
    for i in 1..7 {
        assert_eq!(late.try_recv(), Ok(i));
    }
    assert_eq!(early.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(early.position(), 7);
    assert_eq!(old.stats().subscribers, 0);
    assert_eq!(new.stats().subscribers, 2);
    assert_eq!(new.stats().published_total, 7);
    // The new capacity applies from the cutover on.
    for i in 7..20u64 {
        new.publish(i).unwrap();
    }
    assert_eq!(early.try_recv(), Err(TryRecvError::Lagged(10)));
    assert_eq!(early.try_recv(), Ok(17));
    assert_eq!(new.stats().overflow_dropped_total, 10);
    assert_eq!(old.stats().overflow_dropped_total, 10, "shared");
}

#[test]
fn cutover_errors() {
    let bus = Bus::<u8>::new(4).unwrap();
    assert_eq!(
        bus.cutover(0).unwrap_err(),
        CutoverError::Capacity(CapacityError::Zero)
    );
    let new = bus.cutover(8).unwrap();
    assert_eq!(bus.cutover(8).unwrap_err(), CutoverError::Closed);
    new.close();
    assert_eq!(new.cutover(8).unwrap_err(), CutoverError::Closed);
    assert!(bus.publish(1).is_err(), "the whole chain is closed");
}

#[test]
fn subscribers_of_a_cut_over_bus_see_the_new_bus_close() {
    let old = Bus::new(4).unwrap();
    let mut sub = old.subscribe();
    let new = old.cutover(4).unwrap();
    new.publish(1).unwrap();
    drop(new);
    assert_eq!(sub.try_recv(), Ok(1));
    assert_eq!(sub.try_recv(), Err(TryRecvError::Closed));
    assert_eq!(old.subscribe().try_recv(), Err(TryRecvError::Closed));
}

/// Repeated cutovers (growing and shrinking) while a publisher runs flat
/// out and subscribers of every kind (async, blocking, batch) follow: each
/// sees a gap-free, duplicate-free sequence. The publisher stays within
/// half the smallest capacity of the slowest subscriber, so nobody lags.
#[test]
fn cutover_under_concurrent_publishing_loses_and_repeats_nothing() {
    let mut rng = StdRng::seed_from_u64(seed("cutover_under_load"));
    const EVENTS: u64 = 300_000;
    let first = Bus::new(1 << 13).unwrap();
    let current = Arc::new(std::sync::Mutex::new(first.clone()));
    let done = Arc::new(AtomicBool::new(false));

    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect());
    let mut subscribers = Vec::new();
    for kind in 0..4 {
        let mut sub = first.subscribe();
        let progress = progress.clone();
        subscribers.push(std::thread::spawn(move || {
            // Marks this subscriber done however it ends, so a failure
            // here does not leave the publisher waiting for it.
            struct Done(Arc<Vec<AtomicU64>>, usize);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0[self.1].store(u64::MAX, Ordering::Relaxed);
                }
            }
            let _done = Done(progress.clone(), kind);
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let mut expected = 0u64;
            let mut batch = Vec::new();
            loop {
                let got: Result<Vec<Arc<u64>>, RecvError> = match kind {
                    0 => sub.recv_blocking().map(|v| vec![v]),
                    1 => rt.block_on(sub.recv()).map(|v| vec![v]),
                    _ => rt
                        .block_on(sub.recv_many(&mut batch, 100))
                        .map(|_| std::mem::take(&mut batch)),
                };
                match got {
                    Ok(values) => {
                        for v in values {
                            assert_eq!(*v, expected, "subscriber {kind}: gap or repeat");
                            expected += 1;
                        }
                        progress[kind].store(expected, Ordering::Relaxed);
                    }
                    Err(RecvError::Lagged(n)) => panic!("subscriber {kind} lagged {n}"),
                    Err(RecvError::Closed) => return expected,
                }
            }
        }));
    }

    // The publisher goes through an old handle the whole time: it is
    // forwarded along the chain of cutovers.
    let publisher = first.publisher();
    let publishing = std::thread::spawn(move || {
        for i in 0..EVENTS {
            while progress
                .iter()
                .any(|p| i.saturating_sub(p.load(Ordering::Relaxed)) > 1 << 11)
            {
                std::thread::yield_now();
            }
            assert_eq!(publisher.publish(Arc::new(i)), Ok(i));
        }
    });

    let mut cutovers = 0;
    let cutting = {
        let current = current.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) && cutovers < 200 {
                std::thread::sleep(Duration::from_micros(rng.gen_range(100..3_000)));
                let mut bus = current.lock().unwrap();
                let capacity = rng.gen_range(1usize << 12..1 << 14);
                *bus = bus.cutover(capacity).unwrap();
                cutovers += 1;
            }
            cutovers
        })
    };
    publishing.join().unwrap();
    done.store(true, Ordering::Relaxed);
    let cutovers = cutting.join().unwrap();
    println!("{cutovers} cutovers");
    assert!(cutovers > 0);
    drop(first);
    drop(current);
    for subscriber in subscribers {
        assert_eq!(subscriber.join().unwrap(), EVENTS);
    }
}

#[test]
fn an_old_handle_kept_after_a_cutover_does_not_keep_events_alive() {
    let old = Bus::new(4).unwrap();
    let mut sub = old.subscribe();
    let event = Arc::new(1u64);
    old.publish(event.clone()).unwrap();
    let new = old.cutover(8).unwrap();
    assert_eq!(sub.try_recv().as_deref(), Ok(&1));
    assert_eq!(sub.try_recv(), Err(TryRecvError::Empty)); // moved to `new`
    assert_eq!(Arc::strong_count(&event), 1, "the old bus dropped its copy");
    // A late subscriber through the old handle starts on the new bus.
    let mut late = old.subscribe();
    new.publish(Arc::new(2)).unwrap();
    assert_eq!(late.try_recv().as_deref(), Ok(&2));
    assert_eq!(sub.try_recv().as_deref(), Ok(&2));
}
