//! `busbar bench groups`: consumer-group delivery with acks, busbar against
//! Redis Streams (`XREADGROUP` / `XACK`) and NATS JetStream (pull + ack).
//!
//! Each system gets the same work: a stream pre-filled with `events`
//! events of `payload_bytes` bytes of JSON, then `consumers` consumers in
//! one group, each on its own connection, reading batches of `batch` and
//! acking each batch pipelined with its next read. The figure is
//! delivered-and-acked events per second, from the first read to the last
//! ack answer; the latency is, per batch, from sending the read to
//! receiving its deliveries. Pre-filling is not measured.
//!
//! | busbar | Redis | NATS JetStream (if reachable) |
//! |---|---|---|
//! | `--memory` | `appendonly no` | memory storage |
//! | `--durability always` | `appendonly yes`, `appendfsync always` | file storage (fsyncs on its own interval, not per ack) |
//!
//! Redis' settings are read first and put back afterwards, also when a run
//! fails or the bench is interrupted, and the bench's keys deleted; the
//! NATS stream is deleted. Every run is bounded by `max_run`, and only
//! loopback addresses are used. A system that fails is reported as not
//! measured; the others go on.

mod busbar;
mod nats;
mod redis;
pub mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::ingest::Level;
use crate::{runtime, BenchError};
use report::{GroupsReport, Row};

/// A system the bench measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// A fresh `busbar serve` child.
    Busbar,
    /// Redis Streams.
    Redis,
    /// NATS JetStream.
    Nats,
}

impl System {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            System::Busbar => "busbar",
            System::Redis => "redis",
            System::Nats => "nats",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The `busbar` executable to start as `busbar serve`.
    pub exe: PathBuf,
    /// Durability levels, in order; NATS uses memory storage for
    /// [`Level::Memory`] and file storage otherwise.
    pub levels: Vec<Level>,
    /// Systems to measure, in the order each round runs them.
    pub systems: Vec<System>,
    /// Consumers in the group, each on its own connection.
    pub consumers: usize,
    /// Events per read.
    pub batch: usize,
    /// Events pre-filled and consumed per run.
    pub events: u64,
    /// Bytes of each event's JSON (at least 64).
    pub payload_bytes: usize,
    /// Longest consuming run.
    pub max_run: Duration,
    /// Redis, as `redis://<host>:<port>` or `<host>:<port>` (loopback only).
    pub redis_url: String,
    /// NATS with JetStream (loopback only).
    pub nats: SocketAddr,
    /// Rounds per level; the systems take turns in each round and the
    /// median round is reported.
    pub rounds: usize,
    /// Worker threads of the load client.
    pub client_threads: usize,
    /// Where the daemons' temporary data directories go.
    pub work_dir: Option<PathBuf>,
}

/// Runs `plan`, telling `progress` what it does. Stops early, with Redis'
/// settings restored, on SIGINT or SIGTERM.
///
/// # Errors
/// [`BenchError::Runtime`] or [`BenchError::Interrupted`]. A system that
/// cannot be measured (unreachable, refusing, too slow) is reported as not
/// measured in the report instead.
pub fn run(plan: &Plan, progress: &(dyn Fn(&str) + Sync)) -> Result<GroupsReport, BenchError> {
    // Consumers run on the workers; the thread that waits for them only
    // collects results.
    let runtime = runtime::multi_thread(plan.client_threads)?;
    runtime::until_interrupted(&runtime, bench(plan, progress))
}

async fn bench(plan: &Plan, progress: &(dyn Fn(&str) + Sync)) -> Result<GroupsReport, BenchError> {
    let work = Work {
        consumers: plan.consumers.max(1),
        batch: plan.batch.max(1),
        events: plan.events.max(1),
        payload_bytes: plan.payload_bytes.max(64),
        max_run: plan.max_run,
    };
    let mut rows = Vec::new();
    for &level in &plan.levels {
        let first = rows.len();
        rows.extend(plan.systems.iter().map(|&system| Row::new(level, system)));
        for round in 1..=plan.rounds.max(1) {
            for row in &mut rows[first..] {
                if row.failure.is_some() {
                    continue;
                }
                progress(&format!(
                    "round {round}: {}, durability {}",
                    row.system.name(),
                    level.name()
                ));
                let result = match row.system {
                    System::Busbar => {
                        let run = busbar::run(&plan.exe, level, plan.work_dir.as_deref(), &work);
                        bounded(&work, run).await
                    }
                    System::Redis => redis::run(&plan.redis_url, level, &work).await,
                    System::Nats => nats::run(plan.nats, level, &work).await,
                };
                match result {
                    Ok(o) => {
                        progress(&format!("{:.0} events/s", o.rate()));
                        row.rounds.push(o);
                    }
                    Err(e) => row.failure = Some(e.to_string()),
                }
            }
        }
    }
    Ok(GroupsReport::new(plan, &work, &rows))
}

/// What every system's run is given.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    pub(crate) consumers: usize,
    pub(crate) batch: usize,
    pub(crate) events: u64,
    pub(crate) payload_bytes: usize,
    pub(crate) max_run: Duration,
}

impl Work {
    /// Event `n`'s JSON: `payload_bytes` long, the same for every system.
    pub(crate) fn event(&self, n: u64) -> String {
        let head = format!("{{\"type\":\"bench.group\",\"n\":{n},\"pad\":\"");
        let pad = self.payload_bytes.saturating_sub(head.len() + 2);
        let mut s = String::with_capacity(self.payload_bytes);
        s.push_str(&head);
        s.extend(std::iter::repeat_n('x', pad));
        s.push_str("\"}");
        s
    }
}

/// One measured run.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Events delivered and acked.
    pub(crate) events: u64,
    pub(crate) elapsed: Duration,
    /// Per batch: read sent → deliveries received, µs.
    pub(crate) latency: Histogram<u64>,
}

impl Outcome {
    pub(crate) fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `f` within the bound of a whole system's run: preparing (pre-fill,
/// settings) is bounded too, so a peer that stops answering ends that run,
/// not the bench.
pub(crate) async fn bounded<T>(
    work: &Work,
    f: impl std::future::Future<Output = Result<T, BenchError>>,
) -> Result<T, BenchError> {
    let limit = work.max_run * 4 + Duration::from_secs(60);
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| {
        Err(BenchError::TimedOut {
            what: "no result".to_owned(),
            limit,
        })
    })
}

/// A consumer task; it returns its read latencies.
pub(crate) type Task = tokio::task::JoinHandle<Result<Histogram<u64>, BenchError>>;

/// One consumer of a run.
pub(crate) struct Consumer {
    /// Its number, from 0.
    pub(crate) n: usize,
    pub(crate) work: Work,
    progress: Progress,
    /// Per batch: read sent → deliveries received, µs.
    pub(crate) latency: Histogram<u64>,
}

impl Consumer {
    /// Its name in its group: `c<n>`.
    pub(crate) fn name(&self) -> String {
        format!("c{}", self.n)
    }

    /// Records a read's latency: it was sent at `sent`.
    pub(crate) fn read(&mut self, sent: Instant) {
        let us = sent.elapsed().as_micros().clamp(1, 60_000_000) as u64;
        let _ = self.latency.record(us);
    }

    /// Counts `n` more acked events.
    pub(crate) fn acked(&self, n: u64) {
        let p = &self.progress;
        if n > 0 && p.acked.fetch_add(n, Ordering::AcqRel) + n >= p.events {
            let _ = p.finished.set(Instant::now());
        }
    }

    /// Whether every event of the run is acked: a consumer that finds
    /// nothing more to read stops then.
    pub(crate) fn done(&self) -> bool {
        self.progress.acked.load(Ordering::Acquire) >= self.progress.events
    }
}

/// What every consumer of a run shares.
#[derive(Clone)]
struct Progress {
    /// Events acked so far.
    acked: Arc<AtomicU64>,
    /// When the count reached the run's events.
    finished: Arc<OnceLock<Instant>>,
    events: u64,
}

/// Runs `work.consumers` consumers as tasks made by `spawn`, waits for
/// them within `work.max_run`, and measures the run. A consumer still
/// running at the bound, or when another failed, is stopped.
pub(crate) async fn measure_consumers(
    work: &Work,
    system: &str,
    spawn: impl Fn(Consumer) -> Task,
) -> Result<Outcome, BenchError> {
    let progress = Progress {
        acked: Arc::new(AtomicU64::new(0)),
        finished: Arc::new(OnceLock::new()),
        events: work.events,
    };
    let started = Instant::now();
    let mut tasks: Vec<_> = (0..work.consumers)
        .map(|n| {
            spawn(Consumer {
                n,
                work: work.clone(),
                progress: progress.clone(),
                latency: histogram(),
            })
        })
        .collect();
    let mut latency = histogram();
    let joined = tokio::time::timeout(work.max_run, async {
        for t in &mut tasks {
            let h = t.await.map_err(|e| {
                BenchError::io("a consumer task failed", std::io::Error::other(e))
            })??;
            let _ = latency.add(&h);
        }
        Ok::<_, BenchError>(())
    })
    .await;
    for t in &tasks {
        t.abort();
    }
    let elapsed = progress
        .finished
        .get()
        .map_or_else(|| started.elapsed(), |t| *t - started);
    match joined {
        Ok(r) => r?,
        Err(_) => {
            return Err(BenchError::TimedOut {
                what: format!("{system} did not finish"),
                limit: work.max_run,
            })
        }
    }
    Ok(Outcome {
        events: progress.acked.load(Ordering::Acquire),
        elapsed,
        latency,
    })
}

/// A latency histogram in microseconds, up to a minute.
pub(crate) fn histogram() -> Histogram<u64> {
    // Constant, valid bounds: creation cannot fail.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(events: u64, payload_bytes: usize) -> Work {
        Work {
            consumers: 2,
            batch: 10,
            events,
            payload_bytes,
            max_run: Duration::from_secs(5),
        }
    }

    #[test]
    fn events_are_json_of_the_asked_size() {
        let w = work(10, 200);
        for n in [0, 7, 123_456] {
            let e = w.event(n);
            assert_eq!(e.len(), 200);
            let v: serde_json::Value = serde_json::from_str(&e).unwrap();
            assert_eq!(v["n"], n);
        }
    }

    #[tokio::test]
    async fn a_run_ends_when_every_event_is_acked() {
        let w = work(100, 64);
        let outcome = measure_consumers(&w, "test", |mut c| {
            tokio::spawn(async move {
                while !c.done() {
                    c.read(Instant::now());
                    c.acked(10);
                    tokio::task::yield_now().await;
                }
                Ok(c.latency)
            })
        })
        .await
        .unwrap();
        assert!(outcome.events >= 100);
        assert!(outcome.latency.len() >= 10);
    }

    #[tokio::test]
    async fn a_consumer_that_fails_fails_the_run() {
        let w = work(100, 64);
        let err = measure_consumers(&w, "test", |_| {
            tokio::spawn(async { Err(BenchError::redis("XACK", "ERR no")) })
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("XACK"), "{err}");
    }

    #[tokio::test]
    async fn a_run_that_does_not_finish_times_out() {
        let mut w = work(100, 64);
        w.max_run = Duration::from_millis(50);
        let err = measure_consumers(&w, "slowpoke", |_| {
            tokio::spawn(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(histogram())
            })
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("slowpoke did not finish"), "{err}");
    }
}
