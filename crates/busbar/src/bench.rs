//! `busbar bench`: load scenarios (see the `busbar-bench` crate).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use busbar_bench::fanout::{self, PublishVia, Shape};
use busbar_bench::groups::{self, System};
use busbar_bench::ingest::{Level, Plan, Transport};
use clap::{Args, Subcommand, ValueEnum};

/// `busbar bench <scenario>`.
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Socket ingest with acks against Redis XADD, at each durability level.
    ///
    /// Starts its own `busbar serve` on a temporary data directory and
    /// ephemeral loopback ports. Redis' persistence settings are changed for
    /// each level and put back afterwards, and the bench's keys deleted.
    Ingest(IngestArgs),
    /// Live fan-out over WebSocket against NATS core pub/sub, at several
    /// subscriber counts.
    ///
    /// For each count, starts its own `busbar serve --memory`, subscribes
    /// that many WebSocket clients live to one stream and publishes the
    /// events from one producer; then the same against NATS (subscribers
    /// on one subject, the same event bytes).
    Fanout(FanoutArgs),
    /// Consumer-group delivery with acks against Redis XREADGROUP/XACK and
    /// NATS JetStream pull consumers, at each durability level.
    ///
    /// Starts its own `busbar serve` on a temporary data directory and
    /// ephemeral loopback ports. Redis' persistence settings are changed for
    /// each level and put back afterwards, and the bench's keys deleted.
    Groups(GroupsArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    Always,
    Interval,
    Memory,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Tcp,
    Unix,
    Both,
}

#[derive(Args)]
struct IngestArgs {
    /// Durability level(s): always (Redis appendfsync always), interval
    /// (interval:1s; Redis everysec), memory (--memory; Redis appendonly
    /// no), or all.
    #[arg(long, value_enum, default_value = "all")]
    durability: DurabilityArg,
    /// Producer connections.
    #[arg(long, default_value_t = 50)]
    producers: usize,
    /// Un-acknowledged events each producer keeps in flight.
    #[arg(long, default_value_t = 64)]
    pipeline: usize,
    /// Events per run.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Bytes of each event's JSON (the same bytes for both systems).
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// busbar transport(s); Redis is measured over TCP.
    #[arg(long, value_enum, default_value = "both")]
    transport: TransportArg,
    /// Longest run, in seconds: producers then stop sending.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// Events of one unpipelined producer under `always` (0 skips it).
    #[arg(long, default_value_t = 20_000)]
    lone_events: u64,
    /// Redis to compare with (loopback only).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Measure busbar alone.
    #[arg(long)]
    no_redis: bool,
    /// Threads of the load client.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Runs of each system per level, alternating busbar and Redis; the
    /// median round is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Directory for the daemons' temporary data (default: the system's
    /// temporary directory); pick one on the disk to measure.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct FanoutArgs {
    /// Subscriber counts, one run (shape) each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,1000")]
    clients: Vec<usize>,
    /// Events published per shape: one count for every shape, or one per
    /// `--clients` entry.
    #[arg(long, value_delimiter = ',', default_value = "500000,200000,20000")]
    events: Vec<u64>,
    /// Bytes of each event's JSON (the same bytes for both systems).
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Events per second (default: as fast as the connection takes them).
    #[arg(long)]
    rate: Option<u64>,
    /// busbar's publishing transport (NATS is published to over TCP).
    #[arg(long, value_enum, default_value = "tcp")]
    publish_via: PublishArg,
    /// Longest publishing time per run, in seconds.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// A subscriber silent this long (ms) after publishing ended is done.
    #[arg(long, default_value_t = 1000)]
    quiet_ms: u64,
    /// NATS to compare with (loopback only).
    #[arg(long, default_value = "127.0.0.1:4222")]
    nats_addr: std::net::SocketAddr,
    /// Measure busbar alone.
    #[arg(long)]
    no_nats: bool,
    /// Threads of the subscribers' client (the publisher has its own).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Runs of each system per shape, alternating busbar and NATS; the
    /// median run is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// A config file for the daemons (`busbar serve --config`), e.g. a
    /// `[live]` section with other limits than the defaults.
    #[arg(long)]
    busbar_config: Option<PathBuf>,
    /// Directory for the daemons' temporary data (default: the system's
    /// temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum PublishArg {
    Tcp,
    Unix,
}

/// `busbar bench groups` flags.
#[derive(Args)]
struct GroupsArgs {
    /// Durability level(s): memory (--memory; Redis appendonly no; NATS
    /// memory storage), always (Redis appendfsync always; NATS file
    /// storage), or both.
    #[arg(long, value_enum, default_value = "both")]
    durability: GroupsDurabilityArg,
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
    nats_addr: std::net::SocketAddr,
    /// Systems to measure, comma-separated: busbar, redis, nats.
    #[arg(long, value_delimiter = ',', default_value = "busbar,redis,nats")]
    systems: Vec<SystemArg>,
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
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum GroupsDurabilityArg {
    Memory,
    Always,
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
enum SystemArg {
    Busbar,
    Redis,
    Nats,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.scenario {
        Scenario::Ingest(a) => ingest(a),
        Scenario::Groups(a) => groups_bench(a),
        Scenario::Fanout(a) => fanout_bench(a),
    }
}

fn groups_bench(a: GroupsArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.consumers > 0 && a.batch > 0 && a.events > 0,
        "--consumers, --batch and --events must be at least 1"
    );
    let plan = groups::Plan {
        exe: std::env::current_exe().context("cannot find the busbar executable")?,
        levels: match a.durability {
            GroupsDurabilityArg::Memory => vec![Level::Memory],
            GroupsDurabilityArg::Always => vec![Level::Always],
            GroupsDurabilityArg::Both => vec![Level::Memory, Level::Always],
        },
        systems: a
            .systems
            .iter()
            .map(|s| match s {
                SystemArg::Busbar => System::Busbar,
                SystemArg::Redis => System::Redis,
                SystemArg::Nats => System::Nats,
            })
            .collect(),
        consumers: a.consumers,
        batch: a.batch,
        events: a.events,
        payload_bytes: a.payload_bytes,
        max_run: Duration::from_secs(a.max_seconds.max(1)),
        redis_url: a.redis_addr,
        nats: a.nats_addr,
        rounds: a.rounds.max(1),
        client_threads: a.client_threads.max(1),
        work_dir: a.work_dir,
    };
    let progress = |line: &str| eprintln!("busbar bench groups: {line}");
    let report = groups::run(&plan, &progress).context("bench groups failed")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

fn fanout_bench(a: FanoutArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !a.clients.is_empty() && a.clients.iter().all(|&c| c > 0),
        "--clients takes subscriber counts of at least 1"
    );
    anyhow::ensure!(
        a.events.len() == 1 || a.events.len() == a.clients.len(),
        "--events takes one count, or one per --clients entry ({})",
        a.clients.len()
    );
    let shapes = a
        .clients
        .iter()
        .zip(a.events.iter().cycle())
        .map(|(&subscribers, &events)| Shape {
            subscribers,
            events,
        })
        .collect();
    let plan = fanout::Plan {
        exe: std::env::current_exe().context("cannot find the busbar executable")?,
        shapes,
        payload_bytes: a.payload_bytes,
        rate: a.rate.filter(|&r| r > 0),
        publish_via: match a.publish_via {
            PublishArg::Tcp => PublishVia::Tcp,
            PublishArg::Unix => PublishVia::Unix,
        },
        max_run: Duration::from_secs(a.max_seconds.max(1)),
        quiet: Duration::from_millis(a.quiet_ms.max(1)),
        nats: (!a.no_nats).then_some(a.nats_addr),
        work_dir: a.work_dir,
        client_threads: a.client_threads.max(1),
        rounds: a.rounds.max(1),
        busbar_config: a.busbar_config,
    };
    let progress = |line: &str| eprintln!("busbar bench: {line}");
    let report = fanout::run(&plan, &progress).context("bench fanout failed")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

fn ingest(a: IngestArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.producers > 0 && a.pipeline > 0,
        "--producers and --pipeline must be at least 1"
    );
    let plan = Plan {
        exe: std::env::current_exe().context("cannot find the busbar executable")?,
        levels: match a.durability {
            DurabilityArg::Always => vec![Level::Always],
            DurabilityArg::Interval => vec![Level::Interval],
            DurabilityArg::Memory => vec![Level::Memory],
            DurabilityArg::All => Level::ALL.to_vec(),
        },
        transports: match a.transport {
            TransportArg::Tcp => vec![Transport::Tcp],
            TransportArg::Unix => vec![Transport::Unix],
            TransportArg::Both => vec![Transport::Tcp, Transport::Unix],
        },
        producers: a.producers,
        pipeline: a.pipeline,
        events: a.events,
        payload_bytes: a.payload_bytes,
        max_run: Duration::from_secs(a.max_seconds.max(1)),
        lone_events: a.lone_events,
        redis_url: (!a.no_redis).then_some(a.redis_url),
        work_dir: a.work_dir,
        client_threads: a.client_threads.max(1),
        rounds: a.rounds.max(1),
    };
    let progress = |line: &str| eprintln!("busbar bench: {line}");
    let report = busbar_bench::ingest::run(&plan, &progress).context("bench ingest failed")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}
