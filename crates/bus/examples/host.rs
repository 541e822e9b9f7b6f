//! A host embedding the bus: one publisher, three subscriber tasks (one of
//! them too slow, so it lags and says by how much), an observer feeding the
//! host's counters, a cutover to a larger capacity halfway through, and the
//! stats a host would export as metrics.
//!
//! `cargo run -p busbar-bus --example host`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busbar_bus::{Bus, BusObserver, BusStats, RecvError, Subscriber};

/// An event as a host would publish it, behind an `Arc`: cheap to clone.
#[derive(Debug)]
struct Event {
    seq: u64,
}

/// The host's own counters, fed by the bus (a real host would update its
/// metrics registry here).
#[derive(Default)]
struct Metrics {
    lag_reports: AtomicU64,
    skipped: AtomicU64,
    subscribers: AtomicU64,
}

impl BusObserver for Metrics {
    fn lagged(&self, skipped: u64) {
        self.lag_reports.fetch_add(1, Ordering::Relaxed);
        self.skipped.fetch_add(skipped, Ordering::Relaxed);
    }

    fn subscribers_changed(&self, subscribers: usize) {
        self.subscribers
            .store(subscribers as u64, Ordering::Relaxed);
    }
}

/// One subscriber task: counts what it gets, reports lag (a real host
/// would rate-limit that warning and rely on the counters), and sleeps
/// `per_event` per event to play a handler of that cost.
async fn consume(
    name: &'static str,
    mut sub: Subscriber<Arc<Event>>,
    per_event: Duration,
) -> String {
    let (mut received, mut skipped, mut last) = (0u64, 0u64, None);
    loop {
        match sub.recv().await {
            Ok(event) => {
                received += 1;
                last = Some(event.seq);
                if !per_event.is_zero() {
                    tokio::time::sleep(per_event).await;
                }
            }
            Err(RecvError::Lagged(n)) => {
                println!("{name}: lagged, missed {n} events");
                skipped += n;
            }
            Err(RecvError::Closed) => {
                return format!("{name}: received {received}, missed {skipped}, last seq {last:?}");
            }
        }
    }
}

fn print_stats(when: &str, stats: BusStats) {
    println!(
        "{when}: published_total={} overflow_dropped_total={} queue_depth={} subscribers={} capacity={}",
        stats.published_total,
        stats.overflow_dropped_total,
        stats.queue_depth,
        stats.subscribers,
        stats.capacity
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let metrics = Arc::new(Metrics::default());
    let bus = Bus::<Arc<Event>>::builder(256)
        .observer(metrics.clone())
        .build()?;

    // One subscriber per task, each made by `subscribe`.
    let tasks = vec![
        tokio::spawn(consume("fast-1", bus.subscribe(), Duration::ZERO)),
        tokio::spawn(consume("fast-2", bus.subscribe(), Duration::ZERO)),
        tokio::spawn(consume("slow", bus.subscribe(), Duration::from_millis(1))),
    ];

    let publisher = bus.publisher();
    let producer = tokio::spawn(async move {
        for seq in 0..20_000u64 {
            // Never waits for a subscriber, slow or not.
            publisher.publish(Arc::new(Event { seq }))?;
            // Bursts of 128, under the capacity: the fast subscribers keep
            // up, the slow one cannot.
            if seq % 128 == 127 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok::<_, busbar_bus::SendError<Arc<Event>>>(publisher)
    });

    tokio::time::sleep(Duration::from_millis(20)).await;
    print_stats("while publishing", bus.stats());

    // Reload with a larger capacity: subscribers follow by themselves.
    let bigger = bus.cutover(1024)?;
    print_stats("old bus after cutover", bus.stats());

    let publisher = producer.await??; // kept publishing through the old handle
    print_stats("new bus when done", bigger.stats());
    drop((publisher, bus, bigger)); // the last handles: the bus closes

    for task in tasks {
        println!("{}", task.await?);
    }
    println!(
        "observer: {} lag reports, {} events skipped, {} subscribers left",
        metrics.lag_reports.load(Ordering::Relaxed),
        metrics.skipped.load(Ordering::Relaxed),
        metrics.subscribers.load(Ordering::Relaxed)
    );
    Ok(())
}
