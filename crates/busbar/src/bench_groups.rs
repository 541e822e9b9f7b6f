//! `busbar bench groups`: consumer-group delivery with acks, busbar against
//! Redis Streams (`XREADGROUP` / `XACK`) and NATS JetStream (pull + ack).
//!
//! Each system gets the same work: a stream pre-filled with `--events`
//! events of `--payload-bytes` bytes of JSON, then `--consumers` consumers
//! in one group, each on its own connection, reading batches of `--batch`
//! and acking each batch pipelined with its next read. The figure is
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
//! fails, and the bench's keys deleted; the NATS stream is deleted. Every
//! run is bounded by `--max-seconds`, and only loopback addresses are used.

#[path = "bench_groups_busbar.rs"]
mod busbar;
#[path = "bench_groups_nats.rs"]
mod nats;
#[path = "bench_groups_redis.rs"]
mod redis;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;

/// `busbar bench groups` flags.
#[derive(Args)]
pub struct GroupsArgs {
    /// Durability level(s): memory (--memory; Redis appendonly no; NATS
    /// memory storage), always (Redis appendfsync always; NATS file
    /// storage), or both.
    #[arg(long, value_enum, default_value = "both")]
    durability: Level,
    /// Consumers in the group, each on its own connection.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Events per read.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Events pre-filled and consumed per run.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Bytes of each event's JSON (the same bytes for every system).
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Longest consuming run, in seconds.
    #[arg(long, default_value_t = 120)]
    max_seconds: u64,
    /// Redis to compare with (loopback only).
    #[arg(long, default_value = "127.0.0.1:6379")]
    redis_addr: String,
    /// NATS server with JetStream to compare with (loopback only).
    #[arg(long, default_value = "127.0.0.1:4222")]
    nats_addr: String,
    /// Systems to measure, comma-separated: busbar, redis, nats.
    #[arg(long, value_delimiter = ',', default_value = "busbar,redis,nats")]
    systems: Vec<System>,
    /// Rounds per level; the systems take turns in each round (so a busy
    /// disk or CPU weighs on all of them) and the median round is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Threads of the load client.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Directory for the daemon's temporary data (default: the system's
    /// temporary directory); pick one on the disk to measure.
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum System {
    Busbar,
    Redis,
    Nats,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Level {
    Memory,
    Always,
    Both,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Memory => "memory",
            Level::Always => "always",
            Level::Both => "both",
        }
    }
}

/// What every system's run is given.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    pub consumers: usize,
    pub batch: usize,
    pub events: u64,
    pub payload_bytes: usize,
    pub max_run: Duration,
}

impl Work {
    /// Event `n`'s JSON: `payload_bytes` long, the same for every system.
    pub fn event(&self, n: u64) -> String {
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
    pub events: u64,
    pub elapsed: Duration,
    /// Per batch: read sent → deliveries received.
    pub latency: Histogram<u64>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs `f` within the bound of a whole system's run: preparing (pre-fill,
/// settings) is bounded too, so a peer that stops answering ends that run,
/// not the bench.
pub(crate) async fn bounded<T>(
    work: &Work,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let bound = work.max_run * 4 + Duration::from_secs(60);
    tokio::time::timeout(bound, f)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no result within {bound:?}")))
}

/// Runs `work.consumers` consumers made by `spawn` (its arguments: the
/// consumer's number, the shared count of acked events, and the moment that
/// count reached `work.events`), waits for them within `work.max_run`, and
/// measures the run. A consumer still running at the bound is stopped.
pub(crate) async fn measure_consumers(
    work: &Work,
    peer: &str,
    spawn: impl Fn(
        usize,
        Arc<AtomicU64>,
        Arc<OnceLock<Instant>>,
    ) -> tokio::task::JoinHandle<anyhow::Result<Histogram<u64>>>,
) -> anyhow::Result<Outcome> {
    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(OnceLock::new());
    let started = Instant::now();
    let mut tasks: Vec<_> = (0..work.consumers)
        .map(|n| spawn(n, done.clone(), finished.clone()))
        .collect();
    let mut latency = histogram();
    let joined = tokio::time::timeout(work.max_run, async {
        for t in &mut tasks {
            let h = t.await??;
            let _ = latency.add(&h);
        }
        Ok::<_, anyhow::Error>(())
    })
    .await;
    // Consumers still running (a time-out, a failed peer) stop here.
    for t in &tasks {
        t.abort();
    }
    let elapsed = finished
        .get()
        .map_or_else(|| started.elapsed(), |t| *t - started);
    match joined {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("{peer} did not finish within {:?}", work.max_run),
    }
    Ok(Outcome {
        events: done.load(Ordering::Acquire),
        elapsed,
        latency,
    })
}

/// A latency histogram in microseconds, up to a minute.
pub(crate) fn histogram() -> Histogram<u64> {
    // 3 significant digits up to 60 s cannot be refused.
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

/// Records `since` in microseconds.
pub(crate) fn record(h: &mut Histogram<u64>, since: Instant) {
    let us = since.elapsed().as_micros().clamp(1, 60_000_000) as u64;
    let _ = h.record(us);
}

/// Every round of one system at one level.
struct Row {
    system: &'static str,
    level: Level,
    rounds: Vec<Outcome>,
    failure: Option<anyhow::Error>,
}

impl Row {
    /// The round with the median rate.
    fn median(&self) -> Option<&Outcome> {
        let mut sorted: Vec<&Outcome> = self.rounds.iter().collect();
        sorted.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        sorted.get(sorted.len() / 2).copied()
    }
}

pub fn run(a: GroupsArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.consumers > 0 && a.batch > 0 && a.events > 0,
        "--consumers, --batch and --events must be at least 1"
    );
    let work = Work {
        consumers: a.consumers,
        batch: a.batch,
        events: a.events,
        payload_bytes: a.payload_bytes.max(64),
        max_run: Duration::from_secs(a.max_seconds.max(1)),
    };
    let levels = match a.durability {
        Level::Both => vec![Level::Memory, Level::Always],
        l => vec![l],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.client_threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the client runtime")?;
    let exe = std::env::current_exe().context("cannot find the busbar executable")?;
    let progress = |line: &str| eprintln!("busbar bench groups: {line}");
    let mut rows = Vec::new();
    for level in levels {
        let always = level == Level::Always;
        let first = rows.len();
        for system in &a.systems {
            let system = match system {
                System::Busbar => "busbar",
                System::Redis => "redis",
                System::Nats => "nats",
            };
            rows.push(Row {
                system,
                level,
                rounds: Vec::new(),
                failure: None,
            });
        }
        for round in 1..=a.rounds.max(1) {
            for row in &mut rows[first..] {
                if row.failure.is_some() {
                    continue;
                }
                progress(&format!(
                    "round {round}: {}, durability {}",
                    row.system,
                    level.name()
                ));
                let result = runtime.block_on(async {
                    match row.system {
                        "busbar" => {
                            let run = busbar::run(&exe, always, a.work_dir.as_deref(), &work);
                            bounded(&work, run).await
                        }
                        "redis" => redis::run(&a.redis_addr, always, &work).await,
                        _ => nats::run(&a.nats_addr, always, &work).await,
                    }
                });
                match result {
                    Ok(o) => {
                        progress(&format!("{:.0} events/s", o.rate()));
                        row.rounds.push(o);
                    }
                    Err(e) => row.failure = Some(e),
                }
            }
        }
    }
    print!("{}", table(&work, &rows));
    Ok(ExitCode::SUCCESS)
}

fn table(work: &Work, rows: &[Row]) -> String {
    let mut out = format!(
        "{} consumers, batches of {}, {} events of {} bytes\n\n\
         | durability | system | delivered+acked/s (median) | busbar ÷ system | every round (k/s) | read latency p50 | p99 |\n\
         |---|---|---|---|---|---|---|\n",
        work.consumers, work.batch, work.events, work.payload_bytes
    );
    for row in rows {
        let busbar_rate = rows
            .iter()
            .find(|r| r.system == "busbar" && r.level == row.level)
            .and_then(Row::median)
            .map(Outcome::rate);
        if let Some(e) = &row.failure {
            out.push_str(&format!(
                "| {} | {} | not measured: {e:#} | | | | |\n",
                row.level.name(),
                row.system
            ));
            continue;
        }
        let Some(o) = row.median() else { continue };
        let ratio = match busbar_rate {
            Some(b) if row.system != "busbar" => format!("{:.2}×", b / o.rate()),
            _ => "—".to_owned(),
        };
        let all: Vec<String> = row
            .rounds
            .iter()
            .map(|r| format!("{:.0}", r.rate() / 1000.0))
            .collect();
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {:.2} ms | {:.2} ms |\n",
            row.level.name(),
            row.system,
            o.rate(),
            ratio,
            all.join(" / "),
            o.ms(0.5),
            o.ms(0.99)
        ));
    }
    out
}

/// Refuses addresses that are not on this machine.
pub(crate) fn loopback(addr: &str) -> anyhow::Result<std::net::SocketAddr> {
    let parsed: std::net::SocketAddr = addr
        .parse()
        .with_context(|| format!("`{addr}` is not an ip:port address"))?;
    anyhow::ensure!(
        parsed.ip().is_loopback(),
        "{addr} is not a loopback address; benches only talk to this machine"
    );
    Ok(parsed)
}
