//! busbar-bus against `tokio::sync::broadcast`, in the same run.
//!
//! `fanout`: one publisher task and N subscriber tasks on a two-worker
//! multi-thread runtime; `Arc<u64>` events, a fresh `Arc` per event. The
//! publisher is paced by the harness, identically for both channels: it
//! stays within half the capacity of the slowest subscriber, yielding while
//! it waits, so nothing lags and the figure is events delivered per second
//! to each subscriber (criterion's elements/s). `busbar-batch` drains with
//! `recv_many`, which tokio's broadcast has no counterpart for.
//!
//! `unpaced`: the publisher publishes in a loop that never yields. The time
//! is until every subscriber has seen the close; the share of events the
//! subscribers received (the rest were reported lagged) is printed, since
//! a channel whose publisher starves its subscribers "wins" on time.
//!
//! `cargo bench -p busbar-bus --bench bus`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_bus::{Bus, RecvError};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use tokio::runtime::Runtime;
use tokio::sync::broadcast;

const EVENTS: u64 = 100_000;

#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

/// How far each subscriber has got, for pacing the publisher.
struct Progress(Vec<Padded>);

impl Progress {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self((0..n).map(|_| Padded::default()).collect()))
    }
    fn set(&self, k: usize, at: u64) {
        self.0[k].0.store(at, Ordering::Relaxed);
    }
    fn min(&self) -> u64 {
        self.0
            .iter()
            .map(|p| p.0.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }
}

/// Waits (yielding) until publishing event `i` keeps the publisher within
/// `window` of the slowest subscriber.
async fn pace(progress: &Progress, floor: &mut u64, i: u64, window: u64) {
    while i >= *floor + window {
        *floor = progress.min();
        if i >= *floor + window {
            tokio::task::yield_now().await;
        }
    }
}

/// Totals across a benchmark: events received and reported lagged.
#[derive(Default)]
struct Tally {
    received: AtomicU64,
    lagged: AtomicU64,
}

impl Tally {
    fn add(&self, received: u64, lagged: u64) {
        self.received.fetch_add(received, Ordering::Relaxed);
        self.lagged.fetch_add(lagged, Ordering::Relaxed);
    }
    fn report(&self, name: &str) {
        let received = self.received.swap(0, Ordering::Relaxed);
        let lagged = self.lagged.swap(0, Ordering::Relaxed);
        if received + lagged == 0 {
            return; // filtered out
        }
        let total = (received + lagged).max(1);
        eprintln!(
            "  {name}: subscribers received {:.1}% of events ({received} received, {lagged} lagged)",
            100.0 * received as f64 / total as f64
        );
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Paced,
    Unpaced,
}

fn run_busbar(
    rt: &Runtime,
    subs: usize,
    cap: usize,
    mode: Mode,
    batch: bool,
    tally: &Arc<Tally>,
) -> Duration {
    rt.block_on(async {
        let bus = Bus::<Arc<u64>>::new(cap).unwrap();
        let progress = Progress::new(subs);
        let mut tasks = Vec::new();
        for k in 0..subs {
            let mut sub = bus.subscribe();
            let (progress, tally) = (progress.clone(), tally.clone());
            tasks.push(tokio::spawn(async move {
                let (mut got, mut lagged) = (0u64, 0u64);
                let mut out = Vec::with_capacity(256);
                loop {
                    let r = if batch {
                        sub.recv_many(&mut out, 256).await.map(|n| {
                            for v in out.drain(..) {
                                black_box(*v);
                            }
                            n as u64
                        })
                    } else {
                        sub.recv().await.map(|v| {
                            black_box(*v);
                            1
                        })
                    };
                    match r {
                        Ok(n) => {
                            got += n;
                            if got % 16 < n {
                                progress.set(k, got + lagged);
                            }
                        }
                        Err(RecvError::Lagged(n)) => lagged += n,
                        Err(RecvError::Closed) => break,
                    }
                }
                progress.set(k, u64::MAX);
                tally.add(got, lagged);
            }));
        }
        let start = Instant::now();
        let publisher = tokio::spawn(async move {
            let (window, mut floor) = (cap as u64 / 2, 0);
            for i in 0..EVENTS {
                if mode == Mode::Paced {
                    pace(&progress, &mut floor, i, window).await;
                }
                let _ = bus.publish(Arc::new(i));
            }
        });
        publisher.await.unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        start.elapsed()
    })
}

fn run_tokio(rt: &Runtime, subs: usize, cap: usize, mode: Mode, tally: &Arc<Tally>) -> Duration {
    rt.block_on(async {
        let (tx, _) = broadcast::channel::<Arc<u64>>(cap);
        let progress = Progress::new(subs);
        let mut tasks = Vec::new();
        for k in 0..subs {
            let mut rx = tx.subscribe();
            let (progress, tally) = (progress.clone(), tally.clone());
            tasks.push(tokio::spawn(async move {
                let (mut got, mut lagged) = (0u64, 0u64);
                loop {
                    match rx.recv().await {
                        Ok(v) => {
                            black_box(*v);
                            got += 1;
                            if got % 16 == 0 {
                                progress.set(k, got + lagged);
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => lagged += n,
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
                progress.set(k, u64::MAX);
                tally.add(got, lagged);
            }));
        }
        let start = Instant::now();
        let publisher = tokio::spawn(async move {
            let (window, mut floor) = (cap as u64 / 2, 0);
            for i in 0..EVENTS {
                if mode == Mode::Paced {
                    pace(&progress, &mut floor, i, window).await;
                }
                let _ = tx.send(Arc::new(i));
            }
        });
        publisher.await.unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        start.elapsed()
    })
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

fn bench_mode(c: &mut Criterion, group_name: &str, mode: Mode, caps: &[usize]) {
    let rt = runtime();
    let tally = Arc::new(Tally::default());
    let mut group = c.benchmark_group(group_name);
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(EVENTS));
    for &cap in caps {
        for subs in [1usize, 4, 32] {
            let param = format!("{subs}sub/cap{cap}");
            group.bench_with_input(BenchmarkId::new("tokio", &param), &(), |b, _| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| run_tokio(&rt, subs, cap, mode, &tally))
                        .sum()
                })
            });
            tally.report(&format!("{group_name}/tokio/{param}"));
            group.bench_with_input(BenchmarkId::new("busbar", &param), &(), |b, _| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| run_busbar(&rt, subs, cap, mode, false, &tally))
                        .sum()
                })
            });
            tally.report(&format!("{group_name}/busbar/{param}"));
            if mode == Mode::Paced {
                group.bench_with_input(BenchmarkId::new("busbar-batch", &param), &(), |b, _| {
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| run_busbar(&rt, subs, cap, mode, true, &tally))
                            .sum()
                    })
                });
                tally.report(&format!("{group_name}/busbar-batch/{param}"));
            }
        }
    }
    group.finish();
}

fn fanout(c: &mut Criterion) {
    bench_mode(c, "fanout", Mode::Paced, &[256, 4096]);
}

fn unpaced(c: &mut Criterion) {
    bench_mode(c, "unpaced", Mode::Unpaced, &[4096]);
}

criterion_group!(benches, fanout, unpaced);
criterion_main!(benches);
