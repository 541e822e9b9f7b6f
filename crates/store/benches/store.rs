//! Store benchmarks: batch appends of ~200-byte events under each
//! durability policy (one appender, and many sharing group commits), range
//! reads, and reopening a large stream.
//!
//! `cargo bench -p busbar-store --bench store`; `BUSBAR_BENCH_REOPEN_EVENTS`
//! sets the size of the reopen stream (default 10,000,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_event::{EventBatch, EventId, NewEvent, StreamName};
use busbar_store::embedded::{EmbeddedConfig, EmbeddedStore};
use busbar_store::memory::MemoryStore;
use busbar_store::{AppendOptions, Durability, ReadQuery, Store};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// A 200-byte JSON payload (the event's `data`).
fn payload() -> String {
    let base = r#"{"order_id":"ord_0000000001","customer":"cus_00000042","amount_cents":129900,"currency":"EUR","items":3,"note":""#;
    let mut p = base.to_owned();
    while p.len() < 198 {
        p.push('x');
    }
    p.push_str("\"}");
    p
}

fn batch(n: usize, payload: &str) -> EventBatch {
    let mut b = EventBatch::with_capacity(n * 270);
    for _ in 0..n {
        b.push(&NewEvent::new("order.created", payload.as_bytes()))
            .unwrap();
    }
    b
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn open(dir: &std::path::Path, durability: Durability) -> Arc<dyn Store> {
    let mut c = EmbeddedConfig::new(dir);
    c.durability = durability;
    Arc::new(EmbeddedStore::open(c).unwrap())
}

/// Runs `appenders` tasks, each appending batches of `batch_size` until
/// `total` events are in; returns the elapsed time.
async fn append_concurrently(
    store: &Arc<dyn Store>,
    appenders: usize,
    batch_size: usize,
    total: u64,
    payload: &str,
    bounded: bool,
) -> Duration {
    let stream = StreamName::new("bench").unwrap();
    let per_task = (total as usize / appenders / batch_size).max(1);
    let template = batch(batch_size, payload);
    // Bounded like a real deployment (XADD MAXLEN ~): RAM for the memory
    // engine, disk for the others.
    let opts = AppendOptions {
        trim: bounded.then_some(busbar_store::Trim::MaxLen {
            max: 2_000_000,
            approx: true,
        }),
        ..AppendOptions::default()
    };
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(appenders);
    for _ in 0..appenders {
        let store = store.clone();
        let stream = stream.clone();
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_task {
                store.append(&stream, template.clone(), opts).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// Flushes dirty pages left by the previous case, so its background
/// write-back does not compete with the next case's fsyncs.
fn settle_disk() {
    let _ = std::process::Command::new("sync").status();
}

fn policies() -> Vec<(&'static str, Option<Durability>)> {
    vec![
        ("memory", None),
        ("never", Some(Durability::Never)),
        (
            "interval-1s",
            Some(Durability::Interval(Duration::from_secs(1))),
        ),
        ("always", Some(Durability::Always)),
    ]
}

fn bench_append(c: &mut Criterion) {
    let rt = runtime();
    let payload = payload();
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    // (appenders, batch size): one appender with batches of 100; 16 appenders
    // with batches of 64 sharing group commits.
    settle_disk();
    for (appenders, batch_size) in [(1usize, 100usize), (16, 64)] {
        for (name, durability) in policies() {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn Store> = match durability {
                None => Arc::new(MemoryStore::new()),
                Some(d) => open(dir.path(), d),
            };
            let per_iter = (appenders * batch_size * 8) as u64;
            group.throughput(Throughput::Elements(per_iter));
            group.bench_function(
                BenchmarkId::new(format!("{appenders}x{batch_size}"), name),
                |b| {
                    b.to_async(&rt).iter_custom(|iters| {
                        let store = store.clone();
                        let payload = payload.clone();
                        async move {
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                total += append_concurrently(
                                    &store, appenders, batch_size, per_iter, &payload, true,
                                )
                                .await;
                            }
                            total
                        }
                    })
                },
            );
            rt.block_on(store.close()).unwrap();
            drop(dir);
            settle_disk();
        }
    }
    // A lone appender of single events under `always`: one fsync each.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Always);
    group.throughput(Throughput::Elements(1));
    group.bench_function("lone-single-event/always", |b| {
        let stream = StreamName::new("lone").unwrap();
        let one = batch(1, &payload);
        b.to_async(&rt).iter(|| {
            let store = store.clone();
            let stream = stream.clone();
            let one = one.clone();
            async move {
                store
                    .append(&stream, one, AppendOptions::default())
                    .await
                    .unwrap()
            }
        })
    });
    group.finish();
}

fn bench_read(c: &mut Criterion) {
    let rt = runtime();
    let payload = payload();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Never);
    let stream = StreamName::new("bench").unwrap();
    let n = 1_000_000u64;
    let ids: Vec<EventId> = rt.block_on(async {
        let mut ids = Vec::with_capacity(n as usize);
        for _ in 0..n / 1000 {
            ids.extend(
                store
                    .append(&stream, batch(1000, &payload), AppendOptions::default())
                    .await
                    .unwrap(),
            );
        }
        ids
    });
    let mut group = c.benchmark_group("read");
    group.sample_size(20);
    group.throughput(Throughput::Elements(100));
    for (name, reverse) in [("forward-100", false), ("backward-100", true)] {
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                // Walk start points across the whole stream.
                i = (i + 7919) % (ids.len() - 200);
                let mut q = ReadQuery::range(ids[i], EventId::MAX, 100);
                if reverse {
                    q = ReadQuery::range(EventId::ZERO, ids[i + 100], 100).reversed();
                }
                let got = rt.block_on(store.read(&stream, &q)).unwrap();
                assert_eq!(got.len(), 100);
                got
            })
        });
    }
    group.finish();
}

fn bench_reopen(c: &mut Criterion) {
    let events: u64 = std::env::var("BUSBAR_BENCH_REOPEN_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let rt = runtime();
    let payload = payload();
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), Durability::Never);
        rt.block_on(async {
            append_concurrently(&store, 4, 1000, events, &payload, false).await;
            store.close().await.unwrap();
        });
    }
    let mut group = c.benchmark_group("reopen");
    group.sample_size(10);
    group.bench_function(format!("{events}-events"), |b| {
        b.iter(|| {
            let store = open(dir.path(), Durability::Never);
            let info = rt
                .block_on(store.info(&StreamName::new("bench").unwrap()))
                .unwrap();
            assert!(info.length >= events / 2);
            rt.block_on(store.close()).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, bench_append, bench_read, bench_reopen);
criterion_main!(benches);
