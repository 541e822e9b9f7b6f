//! The engine's metrics: what publishing, reading, groups, jobs and the
//! transports record, and the streams' gauges refreshed at scrape time.
//!
//! The instruments and every metric name come from `busbar-metrics`; this
//! module only says which the engine keeps and how they render. Labels
//! carry bounded values only (stream names, transports, reasons, command
//! names), never event ids or payload data.

pub use busbar_metrics::names;
use busbar_metrics::{Collector, Counter, Encoder, Family, Gauge, Histogram, Kind};

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// [`names::EVENTS_INGESTED`]
    pub events_ingested: Family<Counter, 2>,
    /// [`names::INGEST_ERRORS`]
    pub ingest_errors: Family<Counter, 2>,
    /// [`names::APPEND_SECONDS`]
    pub append_seconds: Histogram,
    /// [`names::CONNECTIONS`]
    pub connections: Family<Gauge, 1>,
    /// [`names::CONNECTIONS_REJECTED`]
    pub connections_rejected: Family<Counter, 2>,
    /// [`names::ACCEPT_ERRORS`] by transport and reason.
    pub accept_errors: Family<Counter, 2>,
    /// [`names::CONNECTION_TIMEOUTS`] by transport and deadline.
    pub connection_timeouts: Family<Counter, 2>,
    /// [`names::UNAUTHENTICATED`] by transport.
    pub unauthenticated: Family<Gauge, 1>,
    /// [`names::COMMAND_SECONDS`]
    pub command_seconds: Family<Histogram, 1>,
    /// [`names::HTTP_REQUESTS`]
    pub http_requests: Family<Counter, 2>,
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
    /// [`names::ADMISSION_REFUSED`] by what was refused and why.
    pub admission_refused: Family<Counter, 2>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            events_ingested: Family::new(["stream", "transport"]),
            ingest_errors: Family::new(["transport", "reason"]),
            append_seconds: Histogram::default(),
            connections: Family::new(["transport"]),
            connections_rejected: Family::new(["transport", "reason"]),
            accept_errors: Family::new(["transport", "reason"]),
            connection_timeouts: Family::new(["transport", "deadline"]),
            unauthenticated: Family::new(["transport"]),
            command_seconds: Family::new(["command"]),
            http_requests: Family::new(["route", "status"]),
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
            admission_refused: Family::new(["kind", "reason"]),
        }
    }
}

impl Collector for Metrics {
    fn collect(&self, out: &mut Encoder<'_>) {
        out.counters(
            names::EVENTS_INGESTED,
            "Events appended, by stream and transport.",
            &self.events_ingested,
        );
        out.counters(
            names::INGEST_ERRORS,
            "Rejected events and requests, by transport and reason.",
            &self.ingest_errors,
        );
        out.header(
            names::APPEND_SECONDS,
            Kind::Histogram,
            "Append call to durable acknowledgement.",
        );
        out.histogram(names::APPEND_SECONDS, &[], &self.append_seconds);
        out.gauges(
            names::CONNECTIONS,
            "Open connections, by transport.",
            &self.connections,
        );
        out.counters(
            names::CONNECTIONS_REJECTED,
            "Connections refused at a limit, by transport and reason (too_many_connections, too_many_from_peer, out_of_descriptors, too_many_unauthenticated).",
            &self.connections_rejected,
        );
        out.counters(
            names::CONNECTION_TIMEOUTS,
            "Connections closed by a deadline, by transport and deadline (first_line, idle, header, body).",
            &self.connection_timeouts,
        );
        out.gauges(
            names::UNAUTHENTICATED,
            "Connections that have not authenticated yet, by transport.",
            &self.unauthenticated,
        );
        out.counters(
            names::ACCEPT_ERRORS,
            "Failed accepts, by transport and reason (out_of_descriptors, other).",
            &self.accept_errors,
        );
        out.histograms(
            names::COMMAND_SECONDS,
            "Command-socket command latency, by command.",
            &self.command_seconds,
        );
        out.counters(
            names::HTTP_REQUESTS,
            "HTTP requests, by route and status.",
            &self.http_requests,
        );
        out.counters(
            names::GROUP_DELIVERIES,
            "Events delivered to consumer groups, redeliveries included.",
            &self.group_deliveries,
        );
        out.counters(
            names::GROUP_REDELIVERIES,
            "Redeliveries after a nack, an ack_wait expiry or a claim.",
            &self.group_redeliveries,
        );
        out.counters(names::GROUP_ACKS, "Acknowledged events.", &self.group_acks);
        out.counters(
            names::GROUP_NACKS,
            "Negatively acknowledged events.",
            &self.group_nacks,
        );
        out.counters(
            names::GROUP_DEAD_LETTERED,
            "Events moved to the dead-letter stream.",
            &self.group_dead_lettered,
        );
        out.histograms(
            names::GROUP_PROCESSING_SECONDS,
            "Time from delivery to ack, by stream and group.",
            &self.group_processing,
        );
        out.counters(
            names::DLQ_REPROCESSED,
            "Dead-letter entries moved back onto their stream.",
            &self.dlq_reprocessed,
        );
        out.counters(
            names::DLQ_DELETED,
            "Dead-letter entries deleted or purged.",
            &self.dlq_deleted,
        );
        out.counters(
            names::REPLAYED,
            "Events replay jobs republished or had redelivered, by source stream.",
            &self.replayed,
        );
        out.counters(
            names::JOBS_FINISHED,
            "Background jobs that stopped, by kind and final state.",
            &self.jobs_finished,
        );
        out.counters(
            names::JOBS_REJECTED,
            "Job starts refused at a limit (jobs.max_running, jobs.max_rate), by kind and limit.",
            &self.jobs_rejected,
        );
        out.header(
            names::JOBS_FORGOTTEN,
            Kind::Counter,
            "Finished jobs forgotten past the jobs.history limit.",
        );
        out.sample(names::JOBS_FORGOTTEN, &[], self.jobs_forgotten.get());
        out.counters(
            names::READS_CLAMPED,
            "Reads that asked for more than max_read_count events and got that many, by operation.",
            &self.reads_clamped,
        );
        out.counters(
            names::ADMISSION_REFUSED,
            "Publishes, reads and connections an admission hook refused, by kind and reason.",
            &self.admission_refused,
        );
    }
}
