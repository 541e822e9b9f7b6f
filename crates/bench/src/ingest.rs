//! `busbar bench ingest`: busbar's socket ingest against Redis `XADD`.

use std::path::PathBuf;
use std::time::Duration;

use crate::daemon::Daemon;
use crate::load::{self, Load, Target};
use crate::redis::{self, Control, Session};
use crate::report::{self, Latency, LevelReport, RedisStatus, Report, RunReport};
use crate::runtime;
use crate::wire::{event_json, Wire};
use crate::BenchError;

/// A durability level, with its busbar flags and Redis settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// busbar `--durability always` ↔ Redis `appendfsync always`.
    Always,
    /// busbar `--durability interval:1s` ↔ Redis `appendfsync everysec`.
    Interval,
    /// busbar `--memory` ↔ Redis `appendonly no`.
    Memory,
}

impl Level {
    /// Every level, strongest first.
    pub const ALL: [Level; 3] = [Level::Always, Level::Interval, Level::Memory];

    /// Its name in reports and flags.
    pub fn name(self) -> &'static str {
        match self {
            Level::Always => "always",
            Level::Interval => "interval",
            Level::Memory => "memory",
        }
    }

    pub(crate) fn busbar_flags(self) -> &'static [&'static str] {
        match self {
            Level::Always => &["--durability", "always"],
            Level::Interval => &["--durability", "interval:1s"],
            Level::Memory => &["--memory"],
        }
    }

    /// Redis' `appendfsync`, or `None` for no AOF at all.
    pub(crate) fn appendfsync(self) -> Option<&'static str> {
        match self {
            Level::Always => Some("always"),
            Level::Interval => Some("everysec"),
            Level::Memory => None,
        }
    }

    fn redis_config(self) -> String {
        match self.appendfsync() {
            Some(p) => format!("appendonly yes, appendfsync {p}"),
            None => "appendonly no".to_owned(),
        }
    }
}

/// A busbar ingest transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP NDJSON.
    Tcp,
    /// The events Unix socket.
    Unix,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Unix => "unix",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The `busbar` executable to start as `busbar serve`.
    pub exe: PathBuf,
    /// Durability levels to measure.
    pub levels: Vec<Level>,
    /// busbar transports to measure (Redis is measured over TCP).
    pub transports: Vec<Transport>,
    /// Producer connections.
    pub producers: usize,
    /// Un-acknowledged events each producer keeps in flight.
    pub pipeline: usize,
    /// Events per run.
    pub events: u64,
    /// Bytes of each event's JSON.
    pub payload_bytes: usize,
    /// A run stops sending after this long.
    pub max_run: Duration,
    /// Events of the lone unpipelined producer under `always` (0: skip).
    pub lone_events: u64,
    /// Redis to compare with; `None` runs busbar alone.
    pub redis_url: Option<String>,
    /// Where the daemons' temporary data directories go (default: the
    /// system's temporary directory).
    pub work_dir: Option<PathBuf>,
    /// Threads of the load client (1: one thread drives every connection).
    pub client_threads: usize,
    /// Runs of each system per level, alternated; the median is reported.
    pub rounds: usize,
}

/// Runs `plan`, telling `progress` what it does. Stops early, with Redis'
/// settings restored, on SIGINT or SIGTERM.
///
/// # Errors
/// A [`BenchError`] when the daemon cannot start, a system refuses events
/// or closes connections, or Redis cannot be set up or restored. Redis being
/// unreachable is not an error: busbar is measured alone.
pub fn run(plan: &Plan, progress: &(dyn Fn(&str) + Sync)) -> Result<Report, BenchError> {
    let runtime = runtime::runtime(plan.client_threads)?;
    runtime::until_interrupted(&runtime, bench(plan, progress))
}

async fn bench(plan: &Plan, progress: &(dyn Fn(&str) + Sync)) -> Result<Report, BenchError> {
    let mut status = RedisStatus {
        url: plan.redis_url.clone(),
        reachable: false,
        version: None,
        original_settings: None,
        note: None,
    };
    let mut session = None;
    if let Some(url) = &plan.redis_url {
        let addr = redis::parse_url(url)?;
        match Control::connect(addr).and_then(|mut c| c.version()) {
            Ok(version) => {
                let s = Session::begin(addr)?;
                status.reachable = true;
                status.version = Some(version);
                status.original_settings = Some(s.original());
                session = Some((s, addr));
            }
            Err(e) => {
                let note = format!("Redis at {url} is unreachable ({e}); measuring busbar alone");
                progress(&note);
                status.note = Some(note);
            }
        }
    } else {
        status.note = Some("skipped (--no-redis)".to_owned());
    }

    let json = event_json(plan.payload_bytes, BENCH_STREAM);
    let main = Load {
        producers: plan.producers,
        pipeline: plan.pipeline,
        events: plan.events,
        max_duration: plan.max_run,
    };
    let mut scenarios = Vec::new();
    for &level in &plan.levels {
        let redis = session.as_mut().map(|(s, a)| (s, *a));
        scenarios.push(scenario(plan, level, level.name(), &main, &json, redis, progress).await?);
    }
    if plan.lone_events > 0 && plan.levels.contains(&Level::Always) {
        let lone = Load {
            producers: 1,
            pipeline: 1,
            events: plan.lone_events,
            max_duration: plan.max_run,
        };
        let redis = session.as_mut().map(|(s, a)| (s, *a));
        scenarios.push(
            scenario(
                plan,
                Level::Always,
                "always-lone",
                &lone,
                &json,
                redis,
                progress,
            )
            .await?,
        );
    }
    if let Some((mut s, _)) = session {
        s.restore()?;
        progress("Redis settings restored");
    }
    Ok(Report {
        date: report::today(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        producers: plan.producers,
        pipeline: plan.pipeline,
        events: plan.events,
        payload_bytes: json.len(),
        client_threads: plan.client_threads.max(1),
        rounds: plan.rounds.max(1),
        redis: status,
        busbar_idle_rss_kib: scenarios.iter().filter_map(|s| s.busbar_idle_rss_kib).max(),
        scenarios,
    })
}

/// The busbar stream the events go to.
const BENCH_STREAM: &str = "bench";

/// How long a fresh daemon settles before its idle memory is read.
const SETTLE: Duration = Duration::from_millis(500);

async fn scenario(
    plan: &Plan,
    level: Level,
    name: &str,
    load: &Load,
    json: &[u8],
    redis: Option<(&mut Session, std::net::SocketAddr)>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<LevelReport, BenchError> {
    let mut report = LevelReport {
        name: name.to_owned(),
        busbar_flags: level.busbar_flags().join(" "),
        redis_config: level.redis_config(),
        producers: load.producers,
        pipeline: load.pipeline,
        events: load.events,
        busbar_idle_rss_kib: None,
        busbar_rss_after_kib: None,
        busbar_peak_rss_kib: None,
        runs: Vec::new(),
        ratios: Vec::new(),
    };
    let daemon = Daemon::start(&plan.exe, level.busbar_flags(), plan.work_dir.as_deref()).await?;
    tokio::time::sleep(SETTLE).await;
    report.busbar_idle_rss_kib = daemon.memory_kib().map(|(rss, _)| rss);
    let busbar_frame = Wire::Busbar.frame(json, "");
    let key = format!("busbar-bench:{}:{name}", std::process::id());
    let redis_frame = Wire::Redis.frame(json, &key);
    let mut redis = redis;
    if let Some((session, _)) = redis.as_mut() {
        session.prepare(level.appendfsync(), &key)?;
    }
    // Rounds alternate the systems, so a load that comes and goes on the
    // machine weighs on both alike.
    let rounds = plan.rounds.max(1);
    let mut busbar_runs: Vec<Vec<RunReport>> = vec![Vec::new(); plan.transports.len()];
    let mut redis_runs = Vec::new();
    for round in 1..=rounds {
        for (i, &transport) in plan.transports.iter().enumerate() {
            progress(&format!(
                "{name}: busbar over {} (round {round} of {rounds})",
                transport.name()
            ));
            let target = match transport {
                Transport::Tcp => Target::Tcp(daemon.tcp),
                Transport::Unix => Target::Unix(daemon.unix.clone()),
            };
            let cpu_before = daemon.cpu_time();
            let measured = load::run(&target, &Wire::Busbar, &busbar_frame, load).await?;
            let mut run = run_report("busbar", transport.name(), &measured);
            if let (Some(before), Some(after)) = (cpu_before, daemon.cpu_time()) {
                let events = measured.acknowledged.max(1) as f64;
                run.server_cpu_us_per_event = Some((after - before).as_secs_f64() * 1e6 / events);
            }
            busbar_runs[i].push(run);
            if let Some((rss, peak)) = daemon.memory_kib() {
                report.busbar_rss_after_kib = Some(rss);
                report.busbar_peak_rss_kib = Some(peak);
            }
            // With `--memory` every round's events would stay in RAM: start
            // the next round from an empty stream. On disk the stream is
            // kept; an append's cost does not depend on the log's length.
            if level == Level::Memory {
                daemon.delete_stream(BENCH_STREAM)?;
            }
        }
        if let Some((session, addr)) = redis.as_mut() {
            progress(&format!(
                "{name}: Redis XADD, {} (round {round} of {rounds})",
                level.redis_config()
            ));
            let measured = load::run(&Target::Tcp(*addr), &Wire::Redis, &redis_frame, load).await;
            session.delete(&key)?;
            redis_runs.push(run_report("redis", "tcp", &measured?));
        }
    }
    daemon.stop().await?;
    report.runs = busbar_runs.into_iter().filter_map(median).collect();
    report.runs.extend(median(redis_runs));
    report.add_ratios();
    Ok(report)
}

/// The round with the median throughput (the upper one of an even count),
/// carrying every round's throughput.
fn median(mut runs: Vec<RunReport>) -> Option<RunReport> {
    let all: Vec<f64> = runs.iter().map(|r| r.events_per_sec).collect();
    runs.sort_by(|a, b| a.events_per_sec.total_cmp(&b.events_per_sec));
    let mut mid = runs.into_iter().nth(all.len() / 2)?;
    mid.round_events_per_sec = all;
    Some(mid)
}

fn run_report(system: &str, transport: &str, m: &load::Measured) -> RunReport {
    let seconds = m.elapsed.as_secs_f64();
    let us = |ns: u64| ns as f64 / 1000.0;
    RunReport {
        system: system.to_owned(),
        transport: transport.to_owned(),
        events: m.acknowledged,
        seconds,
        events_per_sec: if seconds > 0.0 {
            m.acknowledged as f64 / seconds
        } else {
            0.0
        },
        latency_us: Latency {
            p50: us(m.latency.value_at_quantile(0.50)),
            p99: us(m.latency.value_at_quantile(0.99)),
            p999: us(m.latency.value_at_quantile(0.999)),
            max: us(m.latency.max()),
            mean: m.latency.mean() / 1000.0,
        },
        server_cpu_us_per_event: None,
        round_events_per_sec: Vec::new(),
    }
}
