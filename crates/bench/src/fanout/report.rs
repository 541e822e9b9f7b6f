//! What `busbar bench fanout` found: a serialisable report and its table.

use std::fmt::Write as _;

use serde::Serialize;

use crate::report::Latency;

/// A whole `busbar bench fanout` run.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    /// CPUs available to the bench.
    pub cores: usize,
    /// Bytes of each published event's JSON.
    pub payload_bytes: usize,
    /// Publishing rate, events/s; `None`: as fast as possible.
    pub rate: Option<u64>,
    /// How busbar's publisher sends: `tcp` or `unix`.
    pub publish_via: String,
    /// Threads of the subscribers' client (the publisher has its own).
    pub client_threads: usize,
    /// Runs of each system per shape; the median one is reported.
    pub rounds: usize,
    /// The config file the daemon ran with, if not its defaults.
    pub busbar_config: Option<String>,
    /// The 1, 5 and 15 minute load averages when the bench started.
    pub load_average_start: Option<[f64; 3]>,
    /// The same when it ended.
    pub load_average_end: Option<[f64; 3]>,
    /// NATS, if it took part.
    pub nats: NatsStatus,
    /// One entry per subscriber count.
    pub shapes: Vec<ShapeReport>,
}

/// Whether NATS was measured.
#[derive(Debug, Clone, Serialize)]
pub struct NatsStatus {
    /// The address asked for.
    pub addr: Option<String>,
    /// Whether it answered.
    pub reachable: bool,
    /// Its version.
    pub version: Option<String>,
    /// Why it was skipped.
    pub note: Option<String>,
}

/// One shape: `subscribers` subscribers of one stream (subject).
#[derive(Debug, Clone, Serialize)]
pub struct ShapeReport {
    /// Subscriber connections.
    pub subscribers: usize,
    /// Events published.
    pub events: u64,
    /// busbar, then NATS.
    pub runs: Vec<FanoutRun>,
    /// busbar ÷ NATS, when both ran.
    pub ratio: Option<FanoutRatio>,
}

/// One system at one shape.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutRun {
    /// `busbar` or `nats`.
    pub system: String,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Events the publisher sent.
    pub published: u64,
    /// How long publishing took.
    pub publish_seconds: f64,
    /// `published × subscribers`.
    pub expected: u64,
    /// Events received over all subscribers.
    pub delivered: u64,
    /// First publish → last event received by any subscriber.
    pub seconds: f64,
    /// `delivered / seconds`.
    pub events_per_sec: f64,
    /// `events_per_sec / subscribers`.
    pub per_subscriber_events_per_sec: f64,
    /// Fewest events one subscriber received.
    pub min_delivered: u64,
    /// Most events one subscriber received.
    pub max_delivered: u64,
    /// `lagged` notices received (busbar's lossy subscriptions).
    pub lag_notices: u64,
    /// Events those notices said were missed.
    pub missed: u64,
    /// Publish → receive latency, µs.
    pub latency_us: Latency,
    /// CPU time of the server (all threads, user + system) per delivered
    /// event, µs; `None` when its process could not be read (NATS run by
    /// another user).
    pub server_cpu_us_per_delivery: Option<f64>,
    /// CPU time of the bench process (publisher and subscribers) per
    /// delivered event, µs.
    pub client_cpu_us_per_delivery: Option<f64>,
    /// Subscribers that ended on an error (closed, refused).
    pub subscriber_errors: u64,
    /// The first such error.
    pub first_error: Option<String>,
    /// The 1-minute load average right after the run.
    pub load_average_after: Option<f64>,
    /// Delivered events/s of every round of this system at this shape,
    /// slowest first (this run is the median).
    pub rounds_events_per_sec: Vec<f64>,
}

/// busbar over NATS at one shape (throughput: higher is better for busbar;
/// latency: lower is).
#[derive(Debug, Clone, Serialize)]
pub struct FanoutRatio {
    /// busbar events/s ÷ NATS events/s.
    pub throughput: f64,
    /// busbar p50 ÷ NATS p50.
    pub p50: f64,
    /// busbar p99 ÷ NATS p99.
    pub p99: f64,
}

impl ShapeReport {
    pub(crate) fn add_ratio(&mut self) {
        let find = |s: &str| self.runs.iter().find(|r| r.system == s);
        let (Some(b), Some(n)) = (find("busbar"), find("nats")) else {
            return;
        };
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        self.ratio = Some(FanoutRatio {
            throughput: div(b.events_per_sec, n.events_per_sec),
            p50: div(b.latency_us.p50, n.latency_us.p50),
            p99: div(b.latency_us.p99, n.latency_us.p99),
        });
    }
}

fn load(l: Option<[f64; 3]>) -> String {
    l.map_or("?".to_owned(), |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"))
}

impl FanoutReport {
    /// The report as a table for people.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let rate = self.rate.map_or("as fast as possible".to_owned(), |r| {
            format!("at {r} events/s")
        });
        let _ = writeln!(
            out,
            "busbar bench fanout, {}, {} cores; {}-byte events published {rate} \
             (busbar over {}); {} subscriber client thread(s); median of {} round(s)",
            self.date,
            self.cores,
            self.payload_bytes,
            self.publish_via,
            self.client_threads,
            self.rounds
        );
        if let Some(config) = &self.busbar_config {
            let _ = writeln!(out, "busbar daemon config: {config}");
        }
        let _ = writeln!(
            out,
            "load average: {} at the start, {} at the end",
            load(self.load_average_start),
            load(self.load_average_end)
        );
        match (&self.nats.reachable, &self.nats.version) {
            (true, Some(v)) => {
                let addr = self.nats.addr.as_deref().unwrap_or_default();
                let _ = writeln!(out, "NATS {v} at {addr}, core pub/sub");
            }
            _ => {
                let note = self.nats.note.as_deref().unwrap_or("skipped");
                let _ = writeln!(out, "NATS not measured: {note}");
            }
        }
        let _ = writeln!(
            out,
            "\n{:>6} {:<7} {:>10} {:>12} {:>11} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
            "subs",
            "system",
            "events",
            "delivered/s",
            "per sub/s",
            "complete",
            "p50 us",
            "p99 us",
            "lag msgs",
            "missed",
            "srv cpu",
            "cli cpu"
        );
        for s in &self.shapes {
            for r in &s.runs {
                let complete = if r.expected > 0 {
                    format!("{:.1}%", r.delivered as f64 * 100.0 / r.expected as f64)
                } else {
                    "-".to_owned()
                };
                let cpu = |c: Option<f64>| c.map_or(String::new(), |c| format!("{c:.2}"));
                let _ = writeln!(
                    out,
                    "{:>6} {:<7} {:>10} {:>12.0} {:>11.0} {:>8} {:>9.0} {:>9.0} {:>9} {:>9} {:>8} {:>8}",
                    r.subscribers,
                    r.system,
                    r.published,
                    r.events_per_sec,
                    r.per_subscriber_events_per_sec,
                    complete,
                    r.latency_us.p50,
                    r.latency_us.p99,
                    r.lag_notices,
                    r.missed,
                    cpu(r.server_cpu_us_per_delivery),
                    cpu(r.client_cpu_us_per_delivery)
                );
                if let Some(e) = &r.first_error {
                    let _ = writeln!(
                        out,
                        "       {} subscriber(s) ended on an error; first: {e}",
                        r.subscriber_errors
                    );
                }
            }
            if let Some(x) = &s.ratio {
                let _ = writeln!(
                    out,
                    "{:>6} busbar/NATS: delivered/s {:.2}x, p50 {:.2}x, p99 {:.2}x",
                    "", x.throughput, x.p50, x.p99
                );
            }
        }
        let _ = writeln!(
            out,
            "\ncomplete: delivered / (published x subscribers); srv cpu, cli cpu: CPU time \
             (all threads) of the server and of this bench per delivered event, us"
        );
        out
    }
}
