//! Every metric busbar exports, named in one place, and a small lock-free
//! registry rendering the Prometheus text format.
//!
//! Labels carry bounded values only (stream names, transports, reasons,
//! command names), never event ids or payload data.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

/// Metric names.
pub mod names {
    /// Events appended, by stream and transport.
    pub const EVENTS_INGESTED: &str = "busbar_events_ingested_total";
    /// Rejected events or requests, by transport and reason.
    pub const INGEST_ERRORS: &str = "busbar_ingest_errors_total";
    /// Time from append call to durable acknowledgement.
    pub const APPEND_SECONDS: &str = "busbar_append_duration_seconds";
    /// Time one fsync took.
    pub const FSYNC_SECONDS: &str = "busbar_fsync_duration_seconds";
    /// Events acknowledged by group commits.
    pub const COMMIT_BATCH: &str = "busbar_group_commit_events_total";
    /// Group commits.
    pub const COMMITS: &str = "busbar_group_commits_total";
    /// Events in each stream.
    pub const STREAM_LENGTH: &str = "busbar_stream_length";
    /// Bytes of each stream.
    pub const STREAM_BYTES: &str = "busbar_stream_bytes";
    /// Segment files of each stream.
    pub const STREAM_SEGMENTS: &str = "busbar_stream_segments";
    /// Open connections, by transport.
    pub const CONNECTIONS: &str = "busbar_connections";
    /// Connections refused at the limit, by transport.
    pub const CONNECTIONS_REJECTED: &str = "busbar_connections_rejected_total";
    /// Command-socket command latency, by command.
    pub const COMMAND_SECONDS: &str = "busbar_command_duration_seconds";
    /// Resident memory of the process.
    pub const RESIDENT_MEMORY: &str = "busbar_process_resident_memory_bytes";
    /// Seconds since the daemon started.
    pub const UPTIME: &str = "busbar_uptime_seconds";
    /// Events delivered to consumer groups (first deliveries and redeliveries).
    pub const GROUP_DELIVERIES: &str = "busbar_group_deliveries_total";
    /// Redeliveries (after nack, ack_wait expiry or claim).
    pub const GROUP_REDELIVERIES: &str = "busbar_group_redeliveries_total";
    /// Acknowledged events.
    pub const GROUP_ACKS: &str = "busbar_group_acks_total";
    /// Negatively acknowledged events.
    pub const GROUP_NACKS: &str = "busbar_group_nacks_total";
    /// Events moved to the dead-letter stream.
    pub const GROUP_DEAD_LETTERED: &str = "busbar_group_dead_lettered_total";
    /// Time from delivery to ack.
    pub const GROUP_PROCESSING_SECONDS: &str = "busbar_group_processing_seconds";
    /// Events after a group's cursor not yet delivered.
    pub const GROUP_LAG: &str = "busbar_group_lag";
    /// Delivered, unacknowledged events of a group.
    pub const GROUP_PENDING: &str = "busbar_group_pending";
    /// Events in a stream's dead-letter stream.
    pub const DLQ_LENGTH: &str = "busbar_dlq_length";
    /// Connected live clients, by transport (`ws`, or `unix`/`tcp` for
    /// ingest connections that switched to the live protocol) and role.
    pub const WS_CLIENTS: &str = "busbar_ws_clients";
    /// Open subscriptions, by kind (stream, room).
    pub const WS_SUBSCRIPTIONS: &str = "busbar_ws_subscriptions";
    /// Rooms with members.
    pub const WS_ROOMS: &str = "busbar_ws_rooms";
    /// Streams with a live feed.
    pub const LIVE_FEEDS: &str = "busbar_live_feeds";
    /// Events delivered to live clients (WebSocket or socket), by
    /// subscription kind.
    pub const WS_DELIVERED: &str = "busbar_ws_delivered_total";
    /// Events a slow live client missed, by subscription kind.
    pub const WS_DROPPED: &str = "busbar_ws_dropped_total";
    /// Refused WebSocket upgrades and socket hand-overs, by reason.
    pub const WS_REJECTED: &str = "busbar_ws_rejected_total";
    /// Producer sessions tracked.
    pub const SESSIONS: &str = "busbar_sessions";
    /// Producer sessions over the drift threshold.
    pub const SESSIONS_DRIFT_WARN: &str = "busbar_sessions_drift_warn";
    /// Largest drift p95 over sessions.
    pub const DRIFT_P95_MAX: &str = "busbar_session_drift_p95_max_seconds";
    /// HTTP requests, by route and status.
    pub const HTTP_REQUESTS: &str = "busbar_http_requests_total";
    /// Dead-letter entries moved back onto their stream, by stream.
    pub const DLQ_REPROCESSED: &str = "busbar_dlq_reprocessed_total";
    /// Dead-letter entries deleted or purged, by stream.
    pub const DLQ_DELETED: &str = "busbar_dlq_deleted_total";
    /// Events replay jobs republished or had redelivered, by source stream.
    pub const REPLAYED: &str = "busbar_replay_events_total";
    /// Background jobs that stopped, by kind and final state.
    pub const JOBS_FINISHED: &str = "busbar_jobs_finished_total";
    /// Background jobs running now, by kind (at most `jobs.max_running`).
    pub const JOBS_RUNNING: &str = "busbar_jobs_running";
    /// Job starts refused at a limit, by kind and limit (`max_running`,
    /// `max_rate`).
    pub const JOBS_REJECTED: &str = "busbar_jobs_rejected_total";
    /// Finished jobs forgotten past `jobs.history`.
    pub const JOBS_FORGOTTEN: &str = "busbar_jobs_forgotten_total";
    /// Reads that asked for more than `max_read_count` and got that many,
    /// by operation.
    pub const READS_CLAMPED: &str = "busbar_reads_clamped_total";
    /// 1 when a stream's `/events/health` says `degraded`, by stream.
    pub const STREAM_DEGRADED: &str = "busbar_stream_degraded";
}

/// Latency buckets in seconds (50 µs to a minute: fsyncs to slow handlers).
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds `n` (may be negative).
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Sets the value.
    pub fn set(&self, n: i64) {
        self.0.store(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram over [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// A metric family keyed by label values.
#[derive(Debug)]
pub struct Family<M, const N: usize> {
    labels: [&'static str; N],
    members: RwLock<BTreeMap<[String; N], Arc<M>>>,
}

impl<M: Default, const N: usize> Family<M, N> {
    fn new(labels: [&'static str; N]) -> Self {
        Family {
            labels,
            members: RwLock::new(BTreeMap::new()),
        }
    }

    /// The member for `values`, created on first use. Callers on hot paths
    /// keep the returned handle instead of looking it up per event.
    pub fn get(&self, values: [&str; N]) -> Arc<M> {
        if let Some(m) = self
            .members
            .read()
            .iter()
            .find(|(k, _)| k.iter().zip(values.iter()).all(|(a, b)| a == b))
        {
            return m.1.clone();
        }
        self.members
            .write()
            .entry(values.map(str::to_owned))
            .or_default()
            .clone()
    }

    /// Calls `f` with every member and its label values, in label order
    /// (for summaries such as the command socket's `stats`).
    pub fn for_each(&self, mut f: impl FnMut(&[String; N], &M)) {
        for (values, m) in self.members.read().iter() {
            f(values, m);
        }
    }

    /// Drops every member (for gauges rebuilt at scrape time).
    pub fn clear(&self) {
        self.members.write().clear();
    }

    fn each(&self, mut f: impl FnMut(String, &M)) {
        for (values, m) in self.members.read().iter() {
            let labels = self
                .labels
                .iter()
                .zip(values.iter())
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect::<Vec<_>>()
                .join(",");
            f(labels, m);
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// [`names::EVENTS_INGESTED`]
    pub events_ingested: Family<Counter, 2>,
    /// [`names::INGEST_ERRORS`]
    pub ingest_errors: Family<Counter, 2>,
    /// [`names::APPEND_SECONDS`]
    pub append_seconds: Histogram,
    /// [`names::FSYNC_SECONDS`]
    pub fsync_seconds: Histogram,
    /// [`names::COMMIT_BATCH`]: events covered by group commits.
    pub commit_events: Counter,
    /// Group commits.
    pub commits: Counter,
    /// [`names::CONNECTIONS`]
    pub connections: Family<Gauge, 1>,
    /// [`names::CONNECTIONS_REJECTED`]
    pub connections_rejected: Family<Counter, 1>,
    /// [`names::COMMAND_SECONDS`]
    pub command_seconds: Family<Histogram, 1>,
    /// [`names::HTTP_REQUESTS`]
    pub http_requests: Family<Counter, 2>,
    /// [`names::WS_DELIVERED`] by kind.
    pub ws_delivered: Family<Counter, 1>,
    /// [`names::WS_DROPPED`] by kind.
    pub ws_dropped: Family<Counter, 1>,
    /// [`names::WS_REJECTED`] by reason.
    pub ws_rejected: Family<Counter, 1>,
    /// [`names::GROUP_DELIVERIES`] by stream and group.
    pub group_deliveries: Family<Counter, 2>,
    /// [`names::GROUP_REDELIVERIES`] by stream and group.
    pub group_redeliveries: Family<Counter, 2>,
    /// [`names::GROUP_ACKS`] by stream and group.
    pub group_acks: Family<Counter, 2>,
    /// [`names::GROUP_NACKS`] by stream and group.
    pub group_nacks: Family<Counter, 2>,
    /// [`names::GROUP_DEAD_LETTERED`] by stream and group.
    pub group_dead_lettered: Family<Counter, 2>,
    /// [`names::GROUP_PROCESSING_SECONDS`] by stream and group.
    pub group_processing: Family<Histogram, 2>,
    /// [`names::DLQ_REPROCESSED`] by stream.
    pub dlq_reprocessed: Family<Counter, 1>,
    /// [`names::DLQ_DELETED`] by stream.
    pub dlq_deleted: Family<Counter, 1>,
    /// [`names::REPLAYED`] by source stream.
    pub replayed: Family<Counter, 1>,
    /// [`names::JOBS_FINISHED`] by kind and state.
    pub jobs_finished: Family<Counter, 2>,
    /// [`names::JOBS_REJECTED`] by kind and limit.
    pub jobs_rejected: Family<Counter, 2>,
    /// [`names::JOBS_FORGOTTEN`]
    pub jobs_forgotten: Counter,
    /// [`names::READS_CLAMPED`] by operation.
    pub reads_clamped: Family<Counter, 1>,
    started: std::time::Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            events_ingested: Family::new(["stream", "transport"]),
            ingest_errors: Family::new(["transport", "reason"]),
            append_seconds: Histogram::default(),
            fsync_seconds: Histogram::default(),
            commit_events: Counter::default(),
            commits: Counter::default(),
            connections: Family::new(["transport"]),
            connections_rejected: Family::new(["transport"]),
            command_seconds: Family::new(["command"]),
            http_requests: Family::new(["route", "status"]),
            ws_delivered: Family::new(["kind"]),
            ws_dropped: Family::new(["kind"]),
            ws_rejected: Family::new(["reason"]),
            group_deliveries: Family::new(["stream", "group"]),
            group_redeliveries: Family::new(["stream", "group"]),
            group_acks: Family::new(["stream", "group"]),
            group_nacks: Family::new(["stream", "group"]),
            group_dead_lettered: Family::new(["stream", "group"]),
            group_processing: Family::new(["stream", "group"]),
            dlq_reprocessed: Family::new(["stream"]),
            dlq_deleted: Family::new(["stream"]),
            replayed: Family::new(["stream"]),
            jobs_finished: Family::new(["kind", "state"]),
            jobs_rejected: Family::new(["kind", "limit"]),
            jobs_forgotten: Counter::default(),
            reads_clamped: Family::new(["op"]),
            started: std::time::Instant::now(),
        }
    }
}

/// Writes `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

impl Metrics {
    /// Time since the registry was created (the daemon's uptime).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Renders the registry's own metrics (the engine adds stream gauges).
    pub fn render(&self, out: &mut String) {
        header(
            out,
            names::EVENTS_INGESTED,
            "counter",
            "Events appended, by stream and transport.",
        );
        self.events_ingested.each(|l, c| {
            let _ = writeln!(out, "{}{{{l}}} {}", names::EVENTS_INGESTED, c.get());
        });
        header(
            out,
            names::INGEST_ERRORS,
            "counter",
            "Rejected events and requests, by transport and reason.",
        );
        self.ingest_errors.each(|l, c| {
            let _ = writeln!(out, "{}{{{l}}} {}", names::INGEST_ERRORS, c.get());
        });
        header(
            out,
            names::APPEND_SECONDS,
            "histogram",
            "Append call to durable acknowledgement.",
        );
        self.append_seconds.render(out, names::APPEND_SECONDS, "");
        header(
            out,
            names::FSYNC_SECONDS,
            "histogram",
            "Time spent in fdatasync per group commit.",
        );
        self.fsync_seconds.render(out, names::FSYNC_SECONDS, "");
        header(
            out,
            names::COMMIT_BATCH,
            "counter",
            "Events acknowledged by group commits.",
        );
        let _ = writeln!(out, "{} {}", names::COMMIT_BATCH, self.commit_events.get());
        header(out, names::COMMITS, "counter", "Group commits.");
        let _ = writeln!(out, "{} {}", names::COMMITS, self.commits.get());
        header(
            out,
            names::CONNECTIONS,
            "gauge",
            "Open connections, by transport.",
        );
        self.connections.each(|l, g| {
            let _ = writeln!(out, "{}{{{l}}} {}", names::CONNECTIONS, g.get());
        });
        header(
            out,
            names::CONNECTIONS_REJECTED,
            "counter",
            "Connections refused at the connection limit, by transport.",
        );
        self.connections_rejected.each(|l, c| {
            let _ = writeln!(out, "{}{{{l}}} {}", names::CONNECTIONS_REJECTED, c.get());
        });
        header(
            out,
            names::COMMAND_SECONDS,
            "histogram",
            "Command-socket command latency, by command.",
        );
        self.command_seconds
            .each(|l, h| h.render(out, names::COMMAND_SECONDS, &l));
        header(
            out,
            names::HTTP_REQUESTS,
            "counter",
            "HTTP requests, by route and status.",
        );
        self.http_requests.each(|l, c| {
            let _ = writeln!(out, "{}{{{l}}} {}", names::HTTP_REQUESTS, c.get());
        });
        for (name, help, family) in [
            (
                names::WS_DELIVERED,
                "Events delivered to live clients (WebSocket or socket), by subscription kind.",
                &self.ws_delivered,
            ),
            (
                names::WS_DROPPED,
                "Events slow live clients missed, by subscription kind.",
                &self.ws_dropped,
            ),
            (
                names::WS_REJECTED,
                "Refused WebSocket upgrades and socket hand-overs, by reason.",
                &self.ws_rejected,
            ),
        ] {
            header(out, name, "counter", help);
            family.each(|l, c| {
                let _ = writeln!(out, "{name}{{{l}}} {}", c.get());
            });
        }
        for (name, help, family) in [
            (
                names::GROUP_DELIVERIES,
                "Events delivered to consumer groups, redeliveries included.",
                &self.group_deliveries,
            ),
            (
                names::GROUP_REDELIVERIES,
                "Redeliveries after a nack, an ack_wait expiry or a claim.",
                &self.group_redeliveries,
            ),
            (names::GROUP_ACKS, "Acknowledged events.", &self.group_acks),
            (
                names::GROUP_NACKS,
                "Negatively acknowledged events.",
                &self.group_nacks,
            ),
            (
                names::GROUP_DEAD_LETTERED,
                "Events moved to the dead-letter stream.",
                &self.group_dead_lettered,
            ),
        ] {
            header(out, name, "counter", help);
            family.each(|l, c| {
                let _ = writeln!(out, "{name}{{{l}}} {}", c.get());
            });
        }
        header(
            out,
            names::GROUP_PROCESSING_SECONDS,
            "histogram",
            "Time from delivery to ack, by stream and group.",
        );
        self.group_processing
            .each(|l, h| h.render(out, names::GROUP_PROCESSING_SECONDS, &l));
        for (name, help, family) in [
            (
                names::DLQ_REPROCESSED,
                "Dead-letter entries moved back onto their stream.",
                &self.dlq_reprocessed,
            ),
            (
                names::DLQ_DELETED,
                "Dead-letter entries deleted or purged.",
                &self.dlq_deleted,
            ),
            (
                names::REPLAYED,
                "Events replay jobs republished or had redelivered, by source stream.",
                &self.replayed,
            ),
        ] {
            header(out, name, "counter", help);
            family.each(|l, c| {
                let _ = writeln!(out, "{name}{{{l}}} {}", c.get());
            });
        }
        header(
            out,
            names::JOBS_FINISHED,
            "counter",
            "Background jobs that stopped, by kind and final state.",
        );
        self.jobs_finished.each(|l, c| {
            let _ = writeln!(out, "{}{{{l}}} {}", names::JOBS_FINISHED, c.get());
        });
        header(
            out,
            names::JOBS_REJECTED,
            "counter",
            "Job starts refused at a limit (jobs.max_running, jobs.max_rate), by kind and limit.",
        );
        self.jobs_rejected.each(|l, c| {
            let _ = writeln!(out, "{}{{{l}}} {}", names::JOBS_REJECTED, c.get());
        });
        header(
            out,
            names::JOBS_FORGOTTEN,
            "counter",
            "Finished jobs forgotten past the jobs.history limit.",
        );
        let _ = writeln!(
            out,
            "{} {}",
            names::JOBS_FORGOTTEN,
            self.jobs_forgotten.get()
        );
        header(
            out,
            names::READS_CLAMPED,
            "counter",
            "Reads that asked for more than max_read_count events and got that many, by operation.",
        );
        self.reads_clamped.each(|l, c| {
            let _ = writeln!(out, "{}{{{l}}} {}", names::READS_CLAMPED, c.get());
        });
        header(
            out,
            names::RESIDENT_MEMORY,
            "gauge",
            "Resident memory of the process in bytes.",
        );
        let _ = writeln!(out, "{} {}", names::RESIDENT_MEMORY, resident_bytes());
        header(
            out,
            names::UPTIME,
            "gauge",
            "Seconds since the daemon started.",
        );
        let _ = writeln!(
            out,
            "{} {}",
            names::UPTIME,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Resident set size from `/proc/self/statm` (0 where unavailable).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

impl busbar_store::StoreObserver for Metrics {
    fn commit(&self, events: usize, fsync: Duration) {
        self.commits.inc();
        self.commit_events.add(events as u64);
        if !fsync.is_zero() {
            self.fsync_seconds.observe(fsync);
        }
    }
}
