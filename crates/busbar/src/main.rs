//! The `busbar` binary: glue over the library crates.
//!
//! - `busbar serve`: the daemon (storage, engine, socket ingest, command
//!   socket, HTTP API);
//! - `busbar cmd <name> [json]`: a command on the command socket;
//! - `busbar doctor`: the smoke test of a running daemon;
//! - `busbar publish | tail | range | streams | groups | dlq | replay | jobs`:
//!   a CLI over the HTTP API;
//! - `busbar audit verify | show`: the audit log, read from its file;
//! - `busbar bench ingest | fanout | groups`: busbar's ingest against Redis
//!   `XADD`, its live fan-out against NATS, its consumer groups against
//!   Redis Streams and NATS JetStream (the `busbar-bench` crate).

mod audit;
mod bench;
mod client;
mod cmd;
mod decode;
mod dlq;
mod doctor;
mod groups;
mod jobs;
mod logging;
mod ops;
mod publish;
mod read;
mod reload;
mod replay;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// jemalloc, with a background thread that hands pages freed by a
/// connection storm back to the system within a second or two; glibc's
/// allocator keeps them in its arenas until the process exits (measured in
/// BENCHMARKS.md, "Memory after a connection storm").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at start-up: purge dirty and muzzy pages
/// one second after they are freed, from jemalloc's own background thread,
/// so an idle daemon returns memory too.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0";

#[derive(Parser)]
#[command(name = "busbar", version, about = "An event bus in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Run an operator command on the command socket (health, stats,
    /// rotate, flush, streams, reload, log-level).
    Cmd(cmd::CmdArgs),
    /// Smoke-test a running daemon: publish and read back a probe over
    /// every transport, check readiness, the command socket, relay sinks
    /// and disk headroom.
    Doctor(doctor::DoctorArgs),
    /// Publish events given as arguments, or NDJSON read from stdin.
    Publish(publish::PublishArgs),
    /// Follow a stream: print new events as they arrive.
    Tail(read::TailArgs),
    /// Print the events of a range of ids.
    Range(read::RangeArgs),
    /// List streams.
    Streams(read::StreamsArgs),
    /// Run a load scenario against a fresh daemon (and Redis or NATS).
    Bench(bench::BenchArgs),
    /// Consumer groups: list, info, create, delete, pending, pause, resume,
    /// consume.
    Groups(groups::GroupsArgs),
    /// Dead-lettered events: list, show, reprocess, delete, purge.
    Dlq(dlq::DlqArgs),
    /// Replay a range of a stream: republish it, or redeliver it through a
    /// group.
    Replay(replay::ReplayArgs),
    /// Background jobs (replays, DLQ reprocessing): list, show, wait,
    /// cancel.
    Jobs(jobs::JobsArgs),
    /// The ops API: summary, recent ops events.
    Ops(ops::OpsArgs),
    /// Trace one session, stream or connection for a while: start, show,
    /// list.
    Trace(ops::TraceArgs),
    /// Write a redacted diagnostics archive (summary, ops events, sessions,
    /// metrics, log tail, optionally config and a trace).
    SupportPack(ops::SupportPackArgs),
    /// The tamper-evident audit log: verify its hash chain, show records.
    Audit(audit::AuditArgs),
}

/// `busbar serve` flags; they override the config file and `BUSBAR_*`.
#[derive(Args)]
struct ServeArgs {
    /// A TOML config file (see busbar.example.toml).
    #[arg(long, short, env = "BUSBAR_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (streams, sockets, run files).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TCP ingest address; port 0 picks a free port.
    #[arg(long)]
    tcp_addr: Option<SocketAddr>,
    /// HTTP address; port 0 picks a free port.
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// Keep streams in memory only (nothing survives a restart).
    #[arg(long)]
    memory: bool,
    /// Durability: always, never or interval:<duration>.
    #[arg(long)]
    durability: Option<busbar_store::Durability>,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<busbar_config::Config> {
        let mut config = busbar_config::Config::load(self.config.as_deref())?;
        if let Some(dir) = &self.data_dir {
            config.storage.data_dir = dir.clone();
        }
        if let Some(addr) = self.tcp_addr {
            config.ingest.tcp_addr = addr;
        }
        if let Some(addr) = self.http_addr {
            config.http.addr = addr;
        }
        if self.memory {
            config.storage.backend = busbar_config::Backend::Memory;
        }
        if let Some(d) = self.durability {
            config.storage.durability = d;
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args.config().and_then(|config| {
            let path = args.config.clone();
            serve::run(config, Box::new(move || args.config()), path)
        }),
        Command::Cmd(args) => cmd::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Publish(args) => publish::run(args),
        Command::Tail(args) => read::tail(args),
        Command::Range(args) => read::range(args),
        Command::Streams(args) => read::streams(args),
        Command::Bench(args) => bench::run(args),
        Command::Groups(args) => groups::run(args),
        Command::Dlq(args) => dlq::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Ops(args) => ops::run(args),
        Command::Trace(args) => ops::trace(args),
        Command::SupportPack(args) => ops::support_pack(args),
        Command::Jobs(args) => jobs::run(args),
        Command::Audit(args) => audit::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("busbar: {e:#}");
            ExitCode::FAILURE
        }
    }
}
