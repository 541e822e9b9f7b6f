//! One struct per section of the configuration file.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use busbar_engine::TokenSpec;
use busbar_store::Durability;
use serde::{Deserialize, Deserializer};

use crate::{ByteSize, FileMode, HumanDuration};

/// Default TCP ingest address.
pub const DEFAULT_TCP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9478);
/// Default HTTP address.
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9479);

/// Which storage engine holds the streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The segmented log on local disk.
    #[default]
    Embedded,
    /// RAM only: nothing survives a restart.
    Memory,
}

impl Backend {
    /// The backend's name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Memory => "memory",
        }
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "embedded" => Ok(Backend::Embedded),
            "memory" => Ok(Backend::Memory),
            other => Err(format!(
                "unknown backend `{other}`: expected embedded or memory"
            )),
        }
    }
}

/// What the embedded store does with a segment damaged in the middle
/// (a torn tail from a crash is always repaired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCorruption {
    /// Refuse to start, naming the file and offset, leaving the files
    /// untouched for inspection.
    #[default]
    Fail,
    /// Move the damaged segment to `<data_dir>/quarantine/<stream>/` and
    /// start without it.
    Quarantine,
}

impl FromStr for OnCorruption {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "fail" => Ok(OnCorruption::Fail),
            "quarantine" => Ok(OnCorruption::Quarantine),
            other => Err(format!(
                "unknown corruption policy `{other}`: expected fail or quarantine"
            )),
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `embedded` (default) or `memory`.
    pub backend: Backend,
    /// Where streams, sockets and run files live. Default `./data`.
    pub data_dir: PathBuf,
    /// `always` (default), `never` or `interval:<duration>`.
    #[serde(deserialize_with = "durability")]
    pub durability: Durability,
    /// Size at which the active segment of a stream is sealed.
    pub segment_size: ByteSize,
    /// Bytes of records between two entries of a segment's sparse index.
    pub index_interval: ByteSize,
    /// What to do with a segment damaged in the middle.
    pub on_corruption: OnCorruption,
    /// Appends waiting for the writer before producers wait.
    pub queue_depth: usize,
    /// Disk space the embedded store holds in `<data_dir>/RESERVE` and gives
    /// back when the disk fills up, so consumers can ack and operators trim
    /// while publishes are refused. 0 turns it off.
    pub reserve: ByteSize,
    /// How long a stream remembers an event's `idempotency_key`, so a
    /// repeat is answered with the original id and not stored again.
    /// Default 2 minutes (NATS JetStream's duplicate window); 0 turns
    /// idempotent publish off.
    pub dedup_window: HumanDuration,
    /// Idempotency keys a stream remembers at most; past it the oldest are
    /// forgotten before their window ends (`busbar_dedup_evicted_total`).
    /// Default 100,000 (about 8.5 MB per stream at the bound); 0 turns
    /// idempotent publish off.
    pub dedup_max_keys: usize,
    /// `[storage.retention]`: automatic trimming when segments are sealed.
    pub retention: RetentionConfig,
}

/// `[storage.retention]`: applied, approximately (whole segments), each
/// time a segment is sealed. Every limit is off by default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep at least this many newest events per stream.
    pub max_len: Option<u64>,
    /// Drop segments whose events are all older than this.
    pub max_age: Option<HumanDuration>,
    /// Drop the oldest segments while a stream is larger than this.
    pub max_bytes: Option<ByteSize>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: Backend::Embedded,
            data_dir: PathBuf::from("data"),
            durability: Durability::Always,
            segment_size: ByteSize::mib(64),
            index_interval: ByteSize::kib(16),
            on_corruption: OnCorruption::Fail,
            queue_depth: 4096,
            reserve: ByteSize::mib(64),
            dedup_window: HumanDuration(Duration::from_secs(120)),
            dedup_max_keys: 100_000,
            retention: RetentionConfig::default(),
        }
    }
}

fn durability<'de, D: Deserializer<'de>>(d: D) -> Result<Durability, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// `[ingest]`: NDJSON over the events Unix socket and TCP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// The events socket. Default `<data_dir>/sock/events.sock`.
    pub socket: Option<PathBuf>,
    /// Permission bits of the events socket. Default `0600`.
    pub socket_mode: FileMode,
    /// TCP listen address (port 0 picks a free port). Default
    /// `127.0.0.1:9478`.
    pub tcp_addr: SocketAddr,
    /// Longest accepted line, in bytes. Default 1 MiB.
    pub max_line_bytes: ByteSize,
    /// Open connections per transport. Default 1024.
    pub max_connections: usize,
    /// Open TCP connections per peer address (0: no limit). Default 256.
    pub max_connections_per_peer: usize,
    /// How long a new connection has to send its first complete line (its
    /// hello, or its first event or op). Default 10s.
    pub first_line_timeout: HumanDuration,
    /// How long a connection past its first line may send nothing, while
    /// no answer of its is pending, before it is closed (0: never).
    /// Default 5m.
    pub idle_timeout: HumanDuration,
    /// TCP connections that have not sent their hello yet, at once, when
    /// tokens are configured: they can never take the slots of
    /// authenticated producers. Default 64.
    pub max_unauthenticated: usize,
    /// Of those, how many one peer address may hold (0: no limit of its
    /// own). Default 16.
    pub max_unauthenticated_per_peer: usize,
    /// Bytes a TCP connection may send before its hello line ends, when
    /// tokens are configured. Default 64 KiB.
    pub unauthenticated_bytes: ByteSize,
    /// How long shutdown waits for connections to finish their appends.
    pub drain_timeout: HumanDuration,
    /// Deepest nesting of objects and arrays in an event (its own object
    /// is depth 1), on every transport (sockets, HTTP, WebSocket); also
    /// applied to ops, live protocol messages and request bodies. Default
    /// 64, at most 100 (readers wrap events in a few levels of their own
    /// and serde_json reads 127).
    pub max_depth: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            socket: None,
            socket_mode: FileMode(0o600),
            tcp_addr: DEFAULT_TCP_ADDR,
            max_line_bytes: ByteSize::mib(1),
            max_connections: 1024,
            max_connections_per_peer: 256,
            first_line_timeout: HumanDuration(Duration::from_secs(10)),
            idle_timeout: HumanDuration(Duration::from_secs(300)),
            max_unauthenticated: 64,
            max_unauthenticated_per_peer: 16,
            unauthenticated_bytes: ByteSize::kib(64),
            drain_timeout: HumanDuration(Duration::from_secs(10)),
            max_depth: busbar_event::Limits::DEFAULT_MAX_DEPTH,
        }
    }
}

/// `[groups]`: consumer-group delivery.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupsConfig {
    /// How often the sweeper moves exhausted pending entries (delivered
    /// `max_deliver` times and past their `ack_wait`) to the dead-letter
    /// stream when no consumer reads. Default 1s.
    pub sweep_interval: HumanDuration,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            sweep_interval: HumanDuration(Duration::from_secs(1)),
        }
    }
}

/// `[live]`: WebSocket fan-out at `/ws`, rooms and producer sessions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveSection {
    /// Events a stream's live feed holds for its slowest subscriber before
    /// that subscriber misses some (told with a `lagged` notice). Default 4096.
    pub feed_capacity: usize,
    /// Messages queued per connection. Default 1024.
    pub send_queue: usize,
    /// How long a message may wait to reach a client before a
    /// `slow: disconnect` subscription closes the connection. Default 10s.
    pub write_deadline: HumanDuration,
    /// How long a client may take nothing of what is written to it before
    /// its connection is closed, whatever its subscriptions (a slower
    /// client keeps its connection; its `slow: drop` subscriptions skip
    /// events and get `lagged` notices). Default 60s.
    pub stall_timeout: HumanDuration,
    /// Ping interval; a WebSocket client silent for two of them is closed
    /// (socket clients get no pings). Default 15s.
    pub heartbeat: HumanDuration,
    /// Largest message a client may send. Default 1 MiB.
    pub max_message_bytes: ByteSize,
    /// Browser origins allowed to connect; empty allows only the daemon's
    /// own host (and non-browser clients). Default empty.
    pub allowed_origins: Vec<String>,
    /// Most live connections, WebSocket and socket together. Default
    /// 10000.
    pub max_connections: usize,
    /// Most subscriptions and rooms per connection. Default 64.
    pub max_subscriptions: usize,
    /// Longest broadcast delay a director may set. Default 10m.
    pub max_delay: HumanDuration,
    /// Drift p95 above which a session gets a `drift_warn`. Default 5s.
    pub drift_warn: HumanDuration,
}

impl Default for LiveSection {
    fn default() -> Self {
        LiveSection {
            feed_capacity: 4096,
            send_queue: 1024,
            write_deadline: HumanDuration(Duration::from_secs(10)),
            stall_timeout: HumanDuration(Duration::from_secs(60)),
            heartbeat: HumanDuration(Duration::from_secs(15)),
            max_message_bytes: ByteSize::mib(1),
            allowed_origins: Vec::new(),
            max_connections: 10_000,
            max_subscriptions: 64,
            max_delay: HumanDuration(Duration::from_secs(600)),
            drift_warn: HumanDuration(Duration::from_secs(5)),
        }
    }
}

/// `[http]`: the HTTP listener (API, metrics, health), and the sizes of
/// publish requests and reads, which the HTTP API is where clients see.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address (port 0 picks a free port). Default `127.0.0.1:9479`.
    pub addr: SocketAddr,
    /// Largest request body. Default 4 MiB.
    pub max_body_bytes: ByteSize,
    /// Most events one publish request may carry (413 `batch_too_large`
    /// past it); socket ingest cuts its appends at this size, and a
    /// replay's `batchSize` may not exceed it. Default 10000.
    pub max_batch_events: usize,
    /// Most events (or entries) one read returns: range reads, group reads
    /// (HTTP and socket ops), claims, pending and DLQ listings, and ids per
    /// ack or nack request. A read asking for more gets this many (with
    /// `next` where the answer has one). Default 10000.
    pub max_read_count: usize,
    /// Open HTTP connections (WebSocket connections leave this count once
    /// upgraded; `[live] max_connections` counts them). Default 1024.
    pub max_connections: usize,
    /// Open HTTP connections per peer address (0: no limit). Default 256.
    pub max_connections_per_peer: usize,
    /// How long a connection has to send a request's headers, counted from
    /// when it opens or its previous response was written; it also closes
    /// idle keep-alive connections (0: no deadline). Default 10s.
    pub header_timeout: HumanDuration,
    /// How long a request's body may take to arrive (0: no deadline).
    /// Default 30s.
    pub body_timeout: HumanDuration,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            addr: DEFAULT_HTTP_ADDR,
            max_body_bytes: ByteSize::mib(4),
            max_batch_events: 10_000,
            max_read_count: 10_000,
            max_connections: 1024,
            max_connections_per_peer: 256,
            header_timeout: HumanDuration(Duration::from_secs(10)),
            body_timeout: HumanDuration(Duration::from_secs(30)),
        }
    }
}

/// `[listen]`: what every listener shares.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenSection {
    /// File descriptors kept out of the connection budget, for the store's
    /// segment files and everything else the process opens. Default 256.
    pub fd_reserve: usize,
    /// Connections the Unix socket, TCP, HTTP and WebSocket listeners
    /// together may hold, a quarter each (0: as many as the open-file limit
    /// allows, less `fd_reserve`). Default 0.
    pub max_connections: usize,
}

impl Default for ListenSection {
    fn default() -> Self {
        ListenSection {
            fd_reserve: 256,
            max_connections: 0,
        }
    }
}

/// `[jobs]`: background jobs (DLQ reprocessing, replays).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsSection {
    /// Jobs running at once; starting another is 429 `too_many_jobs`.
    /// Default 4.
    pub max_running: usize,
    /// Finished jobs remembered for status queries; older ones are 404
    /// `no_such_job`. Default 100.
    pub history: usize,
    /// Events per second of a job whose request names no rate. Default 1000.
    pub default_rate: u32,
    /// The highest rate a request may ask for (400 `invalid_param` past
    /// it). Default 100000.
    pub max_rate: u32,
}

impl Default for JobsSection {
    fn default() -> Self {
        JobsSection {
            max_running: 4,
            history: 100,
            default_rate: 1000,
            max_rate: 100_000,
        }
    }
}

/// `[health]`: when a stream's `/events/health` turns `degraded`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSection {
    /// Most dead letters of a healthy stream. Default 100.
    pub max_dlq: u64,
    /// Largest lag of a healthy stream's consumer groups. Default 1000.
    pub max_lag: u64,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            max_dlq: 100,
            max_lag: 1000,
        }
    }
}

/// `[auth]`
#[derive(Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `[[auth.tokens]]`: name, secret, scopes (`publish`, `consume`,
    /// `admin`, `director`, `metrics`; `admin` implies `metrics`), tenant.
    /// None: open, `/metrics` and `/events/health` included (a
    /// single-tenant deployment). A tenant-bound token reaches only its
    /// tenant's streams, groups, jobs, samples, sessions and connections
    /// (`busbar.example.toml` says how).
    pub tokens: Vec<TokenSpec>,
    /// Allow binding TCP or HTTP to a non-loopback address without tokens.
    pub allow_unauthenticated_remote: bool,
}

// Hand-written so secrets never reach a log line through `{:?}`.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("AuthConfig")
            .field("tokens", &names)
            .field(
                "allow_unauthenticated_remote",
                &self.allow_unauthenticated_remote,
            )
            .finish()
    }
}

/// `[commands]`: the operator command socket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandsConfig {
    /// The command socket. Default `<data_dir>/sock/commands.sock`.
    pub socket: Option<PathBuf>,
    /// Permission bits of the command socket. Default `0600`.
    pub socket_mode: FileMode,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        CommandsConfig {
            socket: None,
            socket_mode: FileMode(0o600),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "plain" => Ok(LogFormat::Plain),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format `{other}`: expected plain or json"
            )),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A level (`info`) or a filter (`info,busbar_ingest=debug`). Changes
    /// on reload.
    pub level: String,
    /// `plain` (default) or `json`.
    pub format: LogFormat,
    /// Write logs to this file instead of stderr, rotated by size. Default
    /// none (stderr).
    pub file: Option<PathBuf>,
    /// Size at which the log file is rotated (`busbar.log` becomes
    /// `busbar.log.1`). Default 100 MiB.
    pub max_size: ByteSize,
    /// Rotated files kept beside the live one; older ones are deleted.
    /// Default 5.
    pub keep: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Plain,
            file: None,
            max_size: ByteSize::mib(100),
            keep: 5,
        }
    }
}

/// `[ops]`: the operator surfaces over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpsSection {
    /// Serve the `/api/ops/*` routes (the runbook's `OPS_UI_ENABLED`);
    /// when false they answer 404. The command socket stays. Default true.
    pub enabled: bool,
    /// Serve the diagnostics routes: traces and support packs (the
    /// runbook's `DIAGNOSTICS_ENABLED`). Default true.
    pub diagnostics: bool,
}

impl Default for OpsSection {
    fn default() -> Self {
        OpsSection {
            enabled: true,
            diagnostics: true,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Serve `/metrics` (the runbook's `METRICS_ENABLED`); when false it
    /// answers 404. Default true.
    pub enabled: bool,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection { enabled: true }
    }
}

/// `[readiness]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadinessConfig {
    /// Below this much free space on the data directory's disk the daemon
    /// reports not ready. Default 256 MiB.
    pub min_free_disk: ByteSize,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        ReadinessConfig {
            min_free_disk: ByteSize::mib(256),
        }
    }
}

/// What the daemon does with an audit log whose hash chain is broken
/// (other than by a torn last line, which is always repaired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnAuditBroken {
    /// Refuse to start, naming the first broken record, leaving the file
    /// untouched for inspection.
    #[default]
    Fail,
    /// Keep the broken file as `<path>.broken-<ms>` and start a new chain
    /// whose first record names it.
    NewFile,
}

impl FromStr for OnAuditBroken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "fail" => Ok(OnAuditBroken::Fail),
            "new_file" => Ok(OnAuditBroken::NewFile),
            other => Err(format!(
                "unknown audit policy `{other}`: expected fail or new_file"
            )),
        }
    }
}

/// `[audit]`: the tamper-evident log of administrative actions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSection {
    /// Whether administrative actions are recorded. Default true.
    pub enabled: bool,
    /// The log file. Default `<data_dir>/audit/audit.log`.
    pub path: Option<PathBuf>,
    /// What to do with a broken chain at start-up.
    pub on_broken: OnAuditBroken,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            enabled: true,
            path: None,
            on_broken: OnAuditBroken::Fail,
        }
    }
}

/// `[journal]`: the ops journal, kept in the internal stream `_busbar:ops`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalSection {
    /// Ops events kept; the oldest are trimmed past it. Default 100000.
    pub max_events: u64,
    /// The oldest ops event kept. Default 7 days.
    pub max_age: HumanDuration,
    /// Ops events waiting to be written; past it new ones are dropped and
    /// counted. Default 4096.
    pub queue: usize,
    /// At most one `error` ops event per reason per interval (the others
    /// are counted in the next one's `suppressed`). Default 1 s.
    pub error_interval: HumanDuration,
}

impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            max_events: 100_000,
            max_age: HumanDuration(Duration::from_secs(7 * 24 * 3600)),
            queue: 4096,
            error_interval: HumanDuration(Duration::from_secs(1)),
        }
    }
}

/// `[trace]`: trace mode (`POST /api/ops/trace/start`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceSection {
    /// Traces running at once. Default 8.
    pub max_running: usize,
    /// The longest trace. Default 10 minutes.
    pub max_duration: HumanDuration,
    /// Events one trace captures; past it, it counts what it left out.
    /// Default 10000.
    pub max_events: usize,
    /// Bytes of events one trace captures. Default 8 MiB.
    pub max_bytes: ByteSize,
    /// Finished traces kept for `GET /api/ops/trace/{id}`. Default 32.
    pub keep: usize,
}

impl Default for TraceSection {
    fn default() -> Self {
        TraceSection {
            max_running: 8,
            max_duration: HumanDuration(Duration::from_secs(600)),
            max_events: 10_000,
            max_bytes: ByteSize::mib(8),
            keep: 32,
        }
    }
}
