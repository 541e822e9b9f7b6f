//! Every metric name busbar exports. Names live here and nowhere else: a
//! crate that records a metric names it with one of these constants.

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
/// Connections refused at a limit, by transport and reason.
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
/// Publishes, reads and connections an admission hook refused, by kind
/// (`publish`, `read`, `connect`) and reason.
pub const ADMISSION_REFUSED: &str = "busbar_admission_refused_total";
/// Live feeds that failed to read their stream, by reason.
pub const LIVE_FEED_ERRORS: &str = "busbar_live_feed_errors_total";
/// Writes and fdatasyncs the disk failed, by kind (`full`, `io`).
pub const STORAGE_WRITE_ERRORS: &str = "busbar_storage_write_errors_total";
/// 0 when the store takes writes, 1 while its disk is full, 2 while its
/// writes fail for another reason.
pub const STORAGE_WRITE_STATE: &str = "busbar_storage_write_state";
/// Bytes the store's space reserve holds (0 while it is given back to a
/// full disk, or off).
pub const STORAGE_RESERVE_BYTES: &str = "busbar_storage_reserve_bytes";
/// Published events answered with the id of the event they repeat (same
/// `idempotency_key` within the duplicate window), by stream.
pub const DEDUP_HITS: &str = "busbar_dedup_hits_total";
/// Idempotency keys forgotten before their window ended because a stream
/// remembered as many as it may, by stream.
pub const DEDUP_EVICTED: &str = "busbar_dedup_evicted_total";
/// Failed accepts, by transport and reason (`out_of_descriptors`, `other`).
pub const ACCEPT_ERRORS: &str = "busbar_accept_errors_total";
/// Connections closed by a deadline, by transport and which
/// (`first_line`, `idle`, `header`, `body`).
pub const CONNECTION_TIMEOUTS: &str = "busbar_connection_timeouts_total";
/// Connections that have not authenticated yet, by transport.
pub const UNAUTHENTICATED: &str = "busbar_unauthenticated_connections";
/// Live connections busbar closed, by reason.
pub const LIVE_CLOSES: &str = "busbar_live_closes_total";
/// Ops events recorded in the journal, by type.
pub const OPS_EVENTS: &str = "busbar_ops_events_total";
/// Ops events dropped: the journal's queue was full.
pub const OPS_EVENTS_DROPPED: &str = "busbar_ops_events_dropped_total";
/// Failed writes of ops events to the journal's stream.
pub const OPS_EVENTS_WRITE_ERRORS: &str = "busbar_ops_events_write_errors_total";
/// Audit records written (fsynced).
pub const AUDIT_RECORDS: &str = "busbar_audit_records_total";
/// Audit records that could not be written, by reason (`queue_full`,
/// `closed`, `io`).
pub const AUDIT_WRITE_ERRORS: &str = "busbar_audit_write_errors_total";
/// The audit chain's head: one sample whose value is the newest record's
/// `seq` and whose `hash` label is the first 16 hex digits of its hash
/// (one series at a time; it changes only with an administrative action).
pub const AUDIT_HEAD: &str = "busbar_audit_head";
