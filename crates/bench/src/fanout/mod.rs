//! `busbar bench fanout`: live fan-out over WebSocket against NATS core
//! pub/sub, at several subscriber counts.
//!
//! For each shape (a number of subscribers and of events) the bench starts
//! a `busbar serve --memory` child on ephemeral loopback ports, opens that
//! many WebSocket connections each subscribed live (lossy) to one stream,
//! and publishes the events from one producer over TCP NDJSON (or the
//! events Unix socket), fire-and-forget. Then the same against NATS: as
//! many subscriber connections on one subject, the same event bytes from
//! one `PUB`lishing connection.
//!
//! Each event carries its send time; every subscriber records publish →
//! receive latency in one HDR histogram per run. Delivered events/s is
//! every event received over every subscriber, divided by the time from
//! the first publish to the last event received. busbar's lossy
//! subscriptions may skip events for a subscriber that falls behind and
//! say how many (`lagged` notices): those are counted, not delivered.
//!
//! Both clients are minimal protocol clients of the same weight (no
//! allocation per message); the subscribers run in this process, on
//! `client_threads` threads, the publisher on a thread of its own.
//! Everything is bounded: a fixed event count, a time limit per run,
//! loopback addresses only.

mod nats;
mod publish;
mod receive;
pub mod report;
mod stamp;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::report::Latency;
use crate::{procfs, runtime, BenchError};
use publish::{Publish, Published};
use receive::{Ctx, Deliveries, Subscribed};
use report::{FanoutReport, FanoutRun, NatsStatus, ShapeReport};
use stamp::Tally;

/// How busbar's publisher sends its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishVia {
    /// TCP NDJSON.
    Tcp,
    /// The events Unix socket.
    Unix,
}

/// One shape: this many subscribers, this many events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Subscriber connections.
    pub subscribers: usize,
    /// Events published.
    pub events: u64,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The `busbar` executable to start as `busbar serve`.
    pub exe: PathBuf,
    /// The shapes, in order.
    pub shapes: Vec<Shape>,
    /// Bytes of each event's JSON.
    pub payload_bytes: usize,
    /// Events per second; `None`: as fast as the connection takes them.
    pub rate: Option<u64>,
    /// busbar's publishing transport.
    pub publish_via: PublishVia,
    /// Publishing stops after this long, and subscribers stop reading
    /// shortly after.
    pub max_run: Duration,
    /// A subscriber silent this long after publishing ended is done.
    pub quiet: Duration,
    /// NATS to compare with (loopback only); `None` runs busbar alone.
    pub nats: Option<SocketAddr>,
    /// Where the daemons' temporary data directories go.
    pub work_dir: Option<PathBuf>,
    /// Threads of the subscribers' client.
    pub client_threads: usize,
    /// Runs of each system per shape, alternating busbar and NATS; the
    /// median run (by delivered events/s) is reported.
    pub rounds: usize,
    /// A config file for the daemon (`busbar serve --config`), to measure
    /// other `[live]` limits than the defaults.
    pub busbar_config: Option<PathBuf>,
}

/// Runs `plan`, telling `progress` what it does. Stops early on SIGINT or
/// SIGTERM.
///
/// # Errors
/// A [`BenchError`] when the daemon cannot start, a subscription is refused,
/// publishing fails, or file descriptors run short. NATS being unreachable
/// is not an error: busbar is measured alone.
pub fn run(plan: &Plan, progress: &(dyn Fn(&str) + Sync)) -> Result<FanoutReport, BenchError> {
    if let Some(addr) = plan.nats {
        crate::nats::loopback(addr)?;
    }
    let most = plan.shapes.iter().map(|s| s.subscribers).max().unwrap_or(0);
    // Both ends of every connection are in this process or its child
    // (which inherits the limit); a few hundred more for everything else.
    raise_fd_limit(most as u64 + 256)?;
    let threads = plan.client_threads.max(1);
    let runtime = runtime::runtime(threads)?;
    runtime::until_interrupted(&runtime, bench(plan, threads, progress))
}

async fn bench(
    plan: &Plan,
    threads: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<FanoutReport, BenchError> {
    let load_average_start = load_average();
    let mut nats = NatsStatus {
        addr: plan.nats.map(|a| a.to_string()),
        reachable: false,
        version: None,
        note: None,
    };
    match plan.nats {
        Some(addr) => match crate::nats::version(addr) {
            Ok(v) => {
                nats.reachable = true;
                nats.version = Some(v);
            }
            Err(e) => {
                let note = format!("NATS at {addr} is unreachable ({e}); measuring busbar alone");
                progress(&note);
                nats.note = Some(note);
            }
        },
        None => nats.note = Some("skipped (--no-nats)".to_owned()),
    }
    let mut shapes = Vec::new();
    for &shape in &plan.shapes {
        let mut report = ShapeReport {
            subscribers: shape.subscribers,
            events: shape.events,
            runs: Vec::new(),
            ratio: None,
        };
        let rounds = plan.rounds.max(1);
        let nats_addr = plan.nats.filter(|_| nats.reachable);
        let nats_pid = nats_addr.and_then(|a| procfs::listener_pid(a.port()));
        let (mut busbar_runs, mut nats_runs) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let what = |system: &str| {
                format!(
                    "{} subscriber(s), {} events: {system} (round {round} of {rounds})",
                    shape.subscribers, shape.events
                )
            };
            progress(&what("busbar"));
            busbar_runs.push(busbar_run(plan, shape).await?);
            if let Some(addr) = nats_addr {
                progress(&what("NATS"));
                nats_runs.push(nats_run(plan, shape, addr, nats_pid).await?);
            }
        }
        report.runs.extend(median(busbar_runs));
        report.runs.extend(median(nats_runs));
        report.add_ratio();
        shapes.push(report);
    }
    Ok(FanoutReport {
        date: crate::report::today(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        payload_bytes: stamp::event_json(plan.payload_bytes, "fanout").0.len(),
        rate: plan.rate,
        publish_via: match plan.publish_via {
            PublishVia::Tcp => "tcp",
            PublishVia::Unix => "unix",
        }
        .to_owned(),
        client_threads: threads,
        rounds: plan.rounds.max(1),
        busbar_config: plan.busbar_config.as_ref().map(|p| p.display().to_string()),
        load_average_start,
        load_average_end: load_average(),
        nats,
        shapes,
    })
}

async fn busbar_run(plan: &Plan, shape: Shape) -> Result<FanoutRun, BenchError> {
    let mut args = vec!["--memory".to_owned()];
    if let Some(config) = &plan.busbar_config {
        args.push("--config".to_owned());
        args.push(config.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&plan.exe, &args, plan.work_dir.as_deref()).await?;
    let stream = format!("fanout-{}", shape.subscribers);
    let mut subs = Vec::with_capacity(shape.subscribers);
    for _ in 0..shape.subscribers {
        subs.push(ws::subscribe(daemon.http, &stream, "a").await?);
    }
    let (mut frame, stamp_at) = stamp::event_json(plan.payload_bytes, &stream);
    frame.push(b'\n');
    let (tcp, unix, via) = (daemon.tcp, daemon.unix.clone(), plan.publish_via);
    let server = procfs::listener_pid(tcp.port());
    let measured = measure(
        plan,
        shape,
        subs,
        (frame, stamp_at),
        server,
        move |p| match via {
            PublishVia::Tcp => {
                let mut s = std::net::TcpStream::connect(tcp)
                    .map_err(|e| BenchError::io(format!("cannot connect to {tcp}"), e))?;
                s.set_nodelay(true)
                    .map_err(|e| BenchError::io("cannot set TCP_NODELAY", e))?;
                publish::publish(&mut s, p)
            }
            PublishVia::Unix => {
                let mut s = std::os::unix::net::UnixStream::connect(&unix).map_err(|e| {
                    BenchError::io(format!("cannot connect to {}", unix.display()), e)
                })?;
                publish::publish(&mut s, p)
            }
        },
    )
    .await?;
    daemon.stop().await?;
    Ok(run_report("busbar", shape, &measured))
}

async fn nats_run(
    plan: &Plan,
    shape: Shape,
    addr: SocketAddr,
    server: Option<u32>,
) -> Result<FanoutRun, BenchError> {
    let subject = format!(
        "busbar-bench.fanout.{}.{}",
        std::process::id(),
        shape.subscribers
    );
    let mut subs = Vec::with_capacity(shape.subscribers);
    for _ in 0..shape.subscribers {
        subs.push(nats::subscribe(addr, &subject).await?);
    }
    let (json, stamp_at) = stamp::event_json(plan.payload_bytes, "fanout");
    let (frame, json_at) = nats::pub_frame(&subject, &json);
    let framed = (frame, json_at + stamp_at);
    let measured = measure(plan, shape, subs, framed, server, move |p| {
        let mut s = crate::nats::publisher(addr)?;
        let published = publish::publish(&mut s, p)?;
        crate::nats::finish_publishing(s)?;
        Ok(published)
    })
    .await?;
    Ok(run_report("nats", shape, &measured))
}

/// What one run measured.
struct Measured {
    tallies: Vec<Tally>,
    published: Published,
    latency: Latency,
    /// CPU time of the server under test, if it could be read.
    server_cpu: Option<Duration>,
    /// CPU time of this process (publisher and subscribers).
    client_cpu: Option<Duration>,
}

/// Starts every subscriber's task, publishes on a thread of its own, and
/// waits for the subscribers to finish. `server` is the process whose CPU
/// time is measured.
async fn measure<P: Deliveries>(
    plan: &Plan,
    shape: Shape,
    subs: Vec<Subscribed<P>>,
    (frame, stamp_at): (Vec<u8>, usize),
    server: Option<u32>,
    publisher: impl FnOnce(&Publish) -> Result<Published, BenchError> + Send + 'static,
) -> Result<Measured, BenchError> {
    let cpu_before = (server.and_then(procfs::cpu_time), procfs::own_cpu_time());
    let base = Instant::now();
    let ctx = Arc::new(Ctx {
        base,
        events: shape.events,
        deadline: base + plan.max_run + plan.quiet,
        quiet: plan.quiet,
        published: AtomicBool::new(false),
        latency: Arc::new(Mutex::new(stamp::histogram())),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for sub in subs {
        let ctx = ctx.clone();
        tasks.spawn(async move { receive::receive(sub, &ctx).await });
    }
    let job = Publish {
        frame,
        stamp_at,
        events: shape.events,
        rate: plan.rate,
        base,
        deadline: base + plan.max_run,
    };
    let thread = std::thread::Builder::new()
        .name("bench-publisher".to_owned())
        .spawn(move || publisher(&job))
        .map_err(|e| BenchError::io("cannot start the publisher thread", e))?;
    // Wait for the publisher without blocking the subscribers' runtime.
    let published = loop {
        if thread.is_finished() {
            break thread.join().map_err(|_| {
                BenchError::io("the publisher panicked", std::io::Error::other("panic"))
            })??;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    ctx.published.store(true, Ordering::Release);
    let mut tallies = Vec::with_capacity(shape.subscribers);
    while let Some(joined) = tasks.join_next().await {
        let tally = joined
            .map_err(|e| BenchError::io("a subscriber task failed", std::io::Error::other(e)))?;
        tallies.push(tally);
    }
    let used = |before: Option<Duration>, after: Option<Duration>| Some(after? - before?);
    let server_cpu = used(cpu_before.0, server.and_then(procfs::cpu_time));
    let client_cpu = used(cpu_before.1, procfs::own_cpu_time());
    let h = ctx.latency.lock().unwrap_or_else(|p| p.into_inner());
    let us = |ns: u64| ns as f64 / 1000.0;
    let latency = Latency {
        p50: us(h.value_at_quantile(0.50)),
        p99: us(h.value_at_quantile(0.99)),
        p999: us(h.value_at_quantile(0.999)),
        max: us(h.max()),
        mean: h.mean() / 1000.0,
    };
    Ok(Measured {
        tallies,
        published,
        latency,
        server_cpu,
        client_cpu,
    })
}

fn run_report(system: &str, shape: Shape, m: &Measured) -> FanoutRun {
    let (tallies, published) = (&m.tallies, m.published);
    let delivered: u64 = tallies.iter().map(|t| t.delivered).sum();
    let last = tallies.iter().filter_map(|t| t.last).max();
    let seconds = last.map_or(0.0, |l| {
        l.saturating_duration_since(published.started).as_secs_f64()
    });
    let rate = if seconds > 0.0 {
        delivered as f64 / seconds
    } else {
        0.0
    };
    let errors: Vec<&String> = tallies.iter().filter_map(|t| t.error.as_ref()).collect();
    FanoutRun {
        system: system.to_owned(),
        subscribers: shape.subscribers,
        published: published.sent,
        publish_seconds: (published.finished - published.started).as_secs_f64(),
        expected: published.sent * shape.subscribers as u64,
        delivered,
        seconds,
        events_per_sec: rate,
        per_subscriber_events_per_sec: rate / shape.subscribers.max(1) as f64,
        min_delivered: tallies.iter().map(|t| t.delivered).min().unwrap_or(0),
        max_delivered: tallies.iter().map(|t| t.delivered).max().unwrap_or(0),
        lag_notices: tallies.iter().map(|t| t.lag_notices).sum(),
        missed: tallies.iter().map(|t| t.missed).sum(),
        latency_us: m.latency.clone(),
        server_cpu_us_per_delivery: m.server_cpu.map(|c| per_delivery(c, delivered)),
        client_cpu_us_per_delivery: m.client_cpu.map(|c| per_delivery(c, delivered)),
        subscriber_errors: errors.len() as u64,
        first_error: errors.first().map(|e| (*e).clone()),
        load_average_after: load_average().map(|l| l[0]),
        rounds_events_per_sec: Vec::new(),
    }
}

/// The run with the median delivered events/s, carrying every run's rate.
fn median(mut runs: Vec<FanoutRun>) -> Option<FanoutRun> {
    runs.sort_by(|a, b| a.events_per_sec.total_cmp(&b.events_per_sec));
    let rates: Vec<f64> = runs.iter().map(|r| r.events_per_sec).collect();
    let mut run = runs.swap_remove(runs.len().checked_sub(1)? / 2);
    run.rounds_events_per_sec = rates;
    Some(run)
}

fn per_delivery(cpu: Duration, delivered: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64
}

/// `/proc/loadavg`'s three averages.
fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Raises this process's open-file limit to at least `need` (children
/// inherit it), up to the hard limit.
fn raise_fd_limit(need: u64) -> Result<(), BenchError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(BenchError::io(
            "cannot read the open-file limit",
            std::io::Error::last_os_error(),
        ));
    }
    if lim.rlim_cur >= need {
        return Ok(());
    }
    if lim.rlim_max < need {
        return Err(BenchError::FileLimit {
            need,
            hard: lim.rlim_max,
        });
    }
    lim.rlim_cur = need.max(lim.rlim_cur);
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(BenchError::io(
            "cannot raise the open-file limit",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
