//! Trace mode: what one producer session, stream or connection did for a
//! while.
//!
//! `POST /api/ops/trace/start` with exactly one of `sessionId`, `stream` or
//! `connection` (a live connection's id from `/api/ops/sockets`) and
//! `durationSec` starts a trace and answers its `traceId`;
//! `GET /api/ops/trace/{id}` answers it while it runs and after;
//! `GET /api/ops/trace` lists the caller's traces. A trace holds:
//!
//! - `events`: the matching events published during the window (id,
//!   stream, type, session, `ts`, receive time, size, and the payload when
//!   the caller's token may consume events), in id order per stream;
//! - `counters`: per second, events and bytes (for a connection: also the
//!   messages sent to it and the events it missed);
//! - `anomalies`: what busbar can tell is off: a gap or a step back in a
//!   producer's `seq` field, a clock drift spike (`|receive − ts|` over
//!   [`DRIFT_SPIKE_MS`]), a connection missing events (lag notices,
//!   slow-client drops), and the ops journal's errors and warnings about
//!   the target during the window;
//! - `truncated`: what it left out past its bounds.
//!
//! Bounds (`[trace]`): traces running at once (`max_running`; more are
//! refused, 429 `too_many_traces`), the longest window (`max_duration`),
//! events and bytes kept per trace (`max_events`, `max_bytes`), finished
//! traces kept (`keep`, oldest forgotten first). Anomalies are kept up to
//! [`MAX_ANOMALIES`].
//!
//! Events are found by following the streams where the target publishes:
//! a stream trace follows its stream; a session trace follows every stream
//! an event naming the session is published to (seen by a hook, one atomic
//! load per published batch while no trace runs); a connection trace
//! follows its session, if it declared one, and samples its counters.
//! Reads go through the engine like any reader's, so retention may remove
//! an event before the trace reads it (then it is not captured).
//!
//! A trace belongs to its caller's tenant: a tenant-bound caller traces
//! only its own streams, sessions and connections, captures events only
//! from streams it may read, and sees only its tenant's traces (another
//! tenant's id is answered as unknown).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{Engine, EngineError, Hook, Principal, Scope};
use busbar_event::{Event, EventBatch, EventId, StreamName};
use busbar_store::ReadQuery;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};

/// `|receive − ts|` above which an event is a drift spike.
pub const DRIFT_SPIKE_MS: u64 = 5_000;
/// Anomalies kept per trace (more are counted).
pub const MAX_ANOMALIES: usize = 200;
/// How often a running trace reads what its streams got.
const POLL: Duration = Duration::from_millis(200);
const READ_CHUNK: usize = 1000;

/// The id just before the first one received at `ms`.
fn before(ms: u64) -> EventId {
    EventId::new(ms, 0).predecessor().unwrap_or(EventId::ZERO)
}

/// Trace mode's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    /// Traces running at once.
    pub max_running: usize,
    /// The longest window.
    pub max_duration: Duration,
    /// Events kept per trace.
    pub max_events: usize,
    /// Bytes of events kept per trace.
    pub max_bytes: u64,
    /// Finished traces kept.
    pub keep: usize,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            max_running: 8,
            max_duration: Duration::from_secs(600),
            max_events: 10_000,
            max_bytes: 8 << 20,
            keep: 32,
        }
    }
}

/// The body of `POST /api/ops/trace/start`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceRequest {
    /// A producer session to trace.
    pub session_id: Option<String>,
    /// A stream to trace.
    pub stream: Option<String>,
    /// A live connection to trace (its id in `/api/ops/sockets`).
    pub connection: Option<u64>,
    /// How long, in seconds.
    pub duration_sec: Option<u64>,
}

/// What a connection trace samples: the connection's tenant, its declared
/// session, messages sent to it and events it missed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionState {
    /// Its caller's tenant.
    pub tenant: Option<String>,
    /// The session it declared, if any.
    pub session: Option<String>,
    /// Messages sent to it.
    pub sent: u64,
    /// Events it missed.
    pub dropped: u64,
}

/// Looks a live connection up by id (the fan-out registers one).
pub type ConnectionProbe = Arc<dyn Fn(u64) -> Option<ConnectionState> + Send + Sync>;

#[derive(Debug, Clone)]
enum Target {
    Session(String),
    Stream(StreamName),
    Connection(u64),
}

impl Target {
    fn describe(&self) -> Value {
        match self {
            Target::Session(s) => json!({"sessionId": s}),
            Target::Stream(s) => json!({"stream": s}),
            Target::Connection(c) => json!({"connection": c}),
        }
    }
}

#[derive(Debug, Default)]
struct Second {
    events: u64,
    bytes: u64,
    sent: Option<u64>,
    dropped: Option<u64>,
}

#[derive(Debug)]
struct Trace {
    id: String,
    tenant: Option<String>,
    payloads: bool,
    target: Target,
    started_ms: u64,
    ends_ms: u64,
    finished: bool,
    /// Streams followed, with the last id read.
    streams: BTreeMap<StreamName, EventId>,
    /// The session whose events are kept (session and connection traces).
    session: Option<String>,
    events: Vec<Value>,
    bytes: u64,
    left_out_events: u64,
    left_out_bytes: u64,
    counters: BTreeMap<u64, Second>,
    anomalies: Vec<Value>,
    left_out_anomalies: u64,
    /// Last `seq` seen per (stream, session).
    seqs: HashMap<(String, String), i64>,
    last_connection: Option<(u64, u64)>,
}

impl Trace {
    fn anomaly(&mut self, a: Value) {
        if self.anomalies.len() < MAX_ANOMALIES {
            self.anomalies.push(a);
        } else {
            self.left_out_anomalies += 1;
        }
    }

    fn capture(&mut self, stream: &StreamName, e: &Event, max_events: usize, max_bytes: u64) {
        if let Some(session) = &self.session {
            if e.session() != Some(session.as_str()) {
                return;
            }
        }
        let size = e.payload().len() as u64;
        let second = self.counters.entry(e.id().ms / 1000 * 1000).or_default();
        second.events += 1;
        second.bytes += size;
        let payload: Option<Value> = serde_json::from_slice(e.payload()).ok();
        if let Some(ts) = e.ts() {
            let drift = (e.received_ms() as i64).saturating_sub(ts).unsigned_abs();
            if drift > DRIFT_SPIKE_MS {
                self.anomaly(json!({
                    "kind": "drift_spike", "id": e.id().to_string(), "stream": stream,
                    "driftMs": drift, "thresholdMs": DRIFT_SPIKE_MS,
                }));
            }
        }
        if let Some(seq) = payload
            .as_ref()
            .and_then(|p| p.get("seq"))
            .and_then(Value::as_i64)
        {
            let key = (
                stream.as_str().to_owned(),
                e.session().unwrap_or("").to_owned(),
            );
            if let Some(&prev) = self.seqs.get(&key) {
                if seq != prev + 1 {
                    let kind = if seq <= prev { "seq_repeat" } else { "seq_gap" };
                    self.anomaly(json!({
                        "kind": kind, "id": e.id().to_string(), "stream": stream,
                        "session": e.session(), "expected": prev + 1, "got": seq,
                    }));
                }
            }
            self.seqs.insert(key, seq);
        }
        if self.events.len() >= max_events || self.bytes + size > max_bytes {
            self.left_out_events += 1;
            self.left_out_bytes += size;
            return;
        }
        let mut row = json!({
            "id": e.id().to_string(),
            "stream": stream,
            "type": e.event_type(),
            "session": e.session(),
            "ts": e.ts(),
            "receivedAt": e.received_ms(),
            "bytes": size,
        });
        if self.payloads {
            row["data"] = payload.unwrap_or(Value::Null);
        }
        self.bytes += size;
        self.events.push(row);
    }

    fn render(&self, journal: Vec<Value>) -> Value {
        let mut anomalies = self.anomalies.clone();
        anomalies.extend(journal);
        json!({
            "traceId": self.id,
            "state": if self.finished { "finished" } else { "running" },
            "target": self.target.describe(),
            "startedAt": self.started_ms,
            "endsAt": self.ends_ms,
            "payloads": self.payloads,
            "streams": self.streams.keys().collect::<Vec<_>>(),
            "events": self.events,
            "counters": self.counters.iter().map(|(at, s)| {
                let mut c = json!({"second": at, "events": s.events, "bytes": s.bytes});
                if let Some(sent) = s.sent { c["sent"] = json!(sent); }
                if let Some(dropped) = s.dropped { c["dropped"] = json!(dropped); }
                c
            }).collect::<Vec<_>>(),
            "anomalies": anomalies,
            "truncated": {
                "events": self.left_out_events,
                "bytes": self.left_out_bytes,
                "anomalies": self.left_out_anomalies,
            },
        })
    }
}

/// Every trace, running and finished. Its hook notices the streams a
/// traced session publishes to.
pub struct Traces {
    config: TraceConfig,
    running: AtomicUsize,
    traces: Mutex<VecDeque<Arc<Mutex<Trace>>>>,
    /// Sessions traced now → the traces that want them.
    sessions: Mutex<HashMap<String, Vec<Arc<Mutex<Trace>>>>>,
    connections: Mutex<Option<ConnectionProbe>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces")
            .field("config", &self.config)
            .field("running", &self.running.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn not_found(id: &str) -> String {
    format!(
        "no trace `{}` (unknown, forgotten, or another tenant's)",
        id.chars().take(64).collect::<String>()
    )
}

/// Why a trace could not start or be found.
#[derive(Debug)]
pub enum TraceError {
    /// Bad input (400) or the engine's refusal.
    Engine(EngineError),
    /// No such trace (404).
    NotFound(String),
    /// Too many running (429).
    TooMany(usize),
}

impl TraceError {
    /// HTTP status, reason and message.
    pub fn parts(&self) -> (u16, &'static str, String) {
        match self {
            TraceError::Engine(e) => (e.http_status(), e.reason(), e.to_string()),
            TraceError::NotFound(id) => (404, "no_such_trace", not_found(id)),
            TraceError::TooMany(n) => (
                429,
                "too_many_traces",
                format!("{n} traces are running, the most [trace] max_running allows"),
            ),
        }
    }
}

impl From<EngineError> for TraceError {
    fn from(e: EngineError) -> Self {
        TraceError::Engine(e)
    }
}

impl Traces {
    /// No traces yet.
    pub fn new(config: TraceConfig) -> Arc<Traces> {
        Arc::new(Traces {
            config,
            running: AtomicUsize::new(0),
            traces: Mutex::new(VecDeque::new()),
            sessions: Mutex::new(HashMap::new()),
            connections: Mutex::new(None),
            next: AtomicUsize::new(1),
        })
    }

    /// Sets how connection traces find a connection.
    pub fn set_connection_probe(&self, probe: ConnectionProbe) {
        *self.connections.lock() = Some(probe);
    }

    fn probe(&self, id: u64) -> Option<ConnectionState> {
        let probe = self.connections.lock().clone()?;
        probe(id)
    }

    /// Starts a trace for `principal`.
    ///
    /// # Errors
    /// [`TraceError`]: bad input, a target the caller may not see, too
    /// many traces.
    pub fn start(
        self: &Arc<Self>,
        engine: &Arc<Engine>,
        principal: &Principal,
        request: &TraceRequest,
    ) -> Result<Value, TraceError> {
        let invalid = |name: &'static str, reason: String| {
            TraceError::Engine(EngineError::InvalidParam { name, reason })
        };
        let max = self.config.max_duration.as_secs();
        let duration = match request.duration_sec {
            None => return Err(invalid("durationSec", "is required".into())),
            Some(0) => return Err(invalid("durationSec", "must be at least 1".into())),
            Some(d) if d > max => {
                return Err(invalid(
                    "durationSec",
                    format!("{d} is over the longest trace, {max} s ([trace] max_duration)"),
                ))
            }
            Some(d) => d,
        };
        let target = match (&request.session_id, &request.stream, request.connection) {
            (Some(s), None, None) if !s.is_empty() && s.len() <= 256 => Target::Session(s.clone()),
            (None, Some(s), None) => {
                let stream = StreamName::new(s).map_err(EngineError::Event)?;
                principal.check_stream(&stream)?;
                Target::Stream(stream)
            }
            (None, None, Some(c)) => match self.probe(c) {
                Some(state) if principal.sees_tenant(state.tenant.as_deref()) => {
                    Target::Connection(c)
                }
                _ => {
                    return Err(invalid(
                        "connection",
                        format!("no live connection {c} (see /api/ops/sockets)"),
                    ))
                }
            },
            _ => {
                return Err(invalid(
                    "target",
                    "give exactly one of sessionId (1 to 256 bytes), stream or connection".into(),
                ))
            }
        };
        // Counted before the trace exists, so racing starts cannot pass the
        // bound together.
        let running = self.running.fetch_add(1, Ordering::AcqRel);
        if running >= self.config.max_running {
            self.running.fetch_sub(1, Ordering::AcqRel);
            return Err(TraceError::TooMany(running));
        }
        let now = busbar_event::now_ms();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("tr_{now:x}{n:04x}{:04x}", rand::random::<u16>());
        let mut streams = BTreeMap::new();
        let mut session = None;
        match &target {
            Target::Stream(s) => {
                streams.insert(s.clone(), before(now));
            }
            Target::Session(s) => session = Some(s.clone()),
            Target::Connection(c) => session = self.probe(*c).and_then(|s| s.session),
        }
        let trace = Arc::new(Mutex::new(Trace {
            id: id.clone(),
            tenant: principal.tenant().map(str::to_owned),
            payloads: principal.has(Scope::Consume),
            target,
            started_ms: now,
            ends_ms: now + duration * 1000,
            finished: false,
            streams,
            session: session.clone(),
            events: Vec::new(),
            bytes: 0,
            left_out_events: 0,
            left_out_bytes: 0,
            counters: BTreeMap::new(),
            anomalies: Vec::new(),
            left_out_anomalies: 0,
            seqs: HashMap::new(),
            last_connection: None,
        }));
        if let Some(s) = &session {
            self.sessions
                .lock()
                .entry(s.clone())
                .or_default()
                .push(trace.clone());
        }
        {
            let mut traces = self.traces.lock();
            traces.push_back(trace.clone());
            // Forget the oldest finished ones past `keep`.
            while traces.iter().filter(|t| t.lock().finished).count() > self.config.keep {
                if let Some(at) = traces.iter().position(|t| t.lock().finished) {
                    traces.remove(at);
                }
            }
        }
        let answer = json!({
            "traceId": id,
            "startedAt": now,
            "endsAt": now + duration * 1000,
            "durationSec": duration,
        });
        let (traces, engine, principal) = (self.clone(), engine.clone(), principal.clone());
        tokio::spawn(async move { traces.follow(engine, principal, trace).await });
        Ok(answer)
    }

    async fn follow(
        self: Arc<Self>,
        engine: Arc<Engine>,
        principal: Principal,
        trace: Arc<Mutex<Trace>>,
    ) {
        loop {
            let ends = trace.lock().ends_ms;
            let last = busbar_event::now_ms() >= ends;
            self.read_once(&engine, &principal, &trace).await;
            if last {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let session = {
            let mut t = trace.lock();
            t.finished = true;
            t.session.clone()
        };
        if let Some(s) = session {
            let mut sessions = self.sessions.lock();
            if let Some(list) = sessions.get_mut(&s) {
                list.retain(|t| !Arc::ptr_eq(t, &trace));
                if list.is_empty() {
                    sessions.remove(&s);
                }
            }
        }
        self.running.fetch_sub(1, Ordering::AcqRel);
    }

    async fn read_once(&self, engine: &Engine, principal: &Principal, trace: &Arc<Mutex<Trace>>) {
        let (streams, ends, target) = {
            let t = trace.lock();
            (t.streams.clone(), t.ends_ms, t.target.clone())
        };
        if let Target::Connection(c) = target {
            if let Some(state) = self.probe(c) {
                let now = busbar_event::now_ms() / 1000 * 1000;
                let mut t = trace.lock();
                if let Some((sent0, dropped0)) = t.last_connection {
                    let missed = state.dropped.saturating_sub(dropped0);
                    let second = t.counters.entry(now).or_default();
                    second.sent = Some(second.sent.unwrap_or(0) + state.sent.saturating_sub(sent0));
                    second.dropped = Some(second.dropped.unwrap_or(0) + missed);
                    if missed > 0 {
                        t.anomaly(json!({"kind": "missed_events", "at": now, "connection": c, "events": missed}));
                    }
                }
                t.last_connection = Some((state.sent, state.dropped));
                let declared = (t.session.is_none() && state.session.is_some())
                    .then(|| state.session.clone())
                    .flatten();
                if let Some(s) = &declared {
                    t.session = Some(s.clone());
                }
                // The trace's lock is let go first: the hook takes the
                // sessions' lock, then a trace's.
                drop(t);
                if let Some(s) = declared {
                    self.sessions
                        .lock()
                        .entry(s)
                        .or_default()
                        .push(trace.clone());
                }
            }
        }
        for (stream, mut after) in streams {
            // The trace's own caller reads: a tenant reads only its streams.
            if !principal.can_access(&stream) {
                continue;
            }
            while let Some(start) = after.successor() {
                let query = ReadQuery::range(start, EventId::new(ends, u64::MAX), READ_CHUNK);
                let Ok(events) = engine.read(&Principal::Trusted, &stream, query).await else {
                    break;
                };
                let Some(last) = events.last().map(Event::id) else {
                    break;
                };
                {
                    let mut t = trace.lock();
                    for e in &events {
                        t.capture(&stream, e, self.config.max_events, self.config.max_bytes);
                    }
                    t.streams.insert(stream.clone(), last);
                }
                after = last;
                if events.len() < READ_CHUNK {
                    break;
                }
            }
        }
    }

    /// One trace as `principal` may see it, with the journal's events about
    /// its target during its window.
    ///
    /// # Errors
    /// [`TraceError::NotFound`] for an unknown id or another tenant's.
    pub async fn show(
        &self,
        engine: &Engine,
        principal: &Principal,
        id: &str,
    ) -> Result<Value, TraceError> {
        let trace = self
            .traces
            .lock()
            .iter()
            .find(|t| t.lock().id == id)
            .cloned()
            .ok_or_else(|| TraceError::NotFound(id.to_owned()))?;
        let (tenant, started, ends, target, session) = {
            let t = trace.lock();
            (
                t.tenant.clone(),
                t.started_ms,
                t.ends_ms,
                t.target.clone(),
                t.session.clone(),
            )
        };
        if principal.tenant().is_some() && principal.tenant() != tenant.as_deref() {
            return Err(TraceError::NotFound(id.to_owned()));
        }
        let journal = self
            .journal_about(
                engine,
                principal,
                started,
                ends,
                &target,
                session.as_deref(),
            )
            .await;
        let rendered = trace.lock().render(journal);
        Ok(rendered)
    }

    async fn journal_about(
        &self,
        engine: &Engine,
        principal: &Principal,
        started: u64,
        ends: u64,
        target: &Target,
        session: Option<&str>,
    ) -> Vec<Value> {
        let query = crate::events::EventsQuery {
            kind: None,
            since: Some(started.to_string()),
            limit: Some(crate::events::MAX_LIMIT),
        };
        let Ok(events) = crate::events::recent(engine, principal, &query).await else {
            return Vec::new();
        };
        let mut out: Vec<Value> = events
            .into_iter()
            .filter(|e| e["at"].as_u64().is_some_and(|at| at <= ends + 1000))
            .filter(|e| {
                let matches_session = session.is_some_and(|s| e["session"] == s);
                let relevant = match target {
                    Target::Stream(s) => e["stream"] == s.as_str(),
                    Target::Connection(c) => e["socket"] == *c,
                    Target::Session(_) => false,
                };
                let error = e["type"] == "error" && principal.tenant().is_none();
                matches_session || relevant || error
            })
            .map(|mut e| {
                let kind = e["type"].clone();
                e["kind"] = json!("ops_event");
                e["opsType"] = kind;
                e
            })
            .collect();
        out.reverse();
        out
    }

    /// The traces `principal` may see, newest first (without their events).
    pub fn list(&self, principal: &Principal) -> Vec<Value> {
        let traces = self.traces.lock();
        traces
            .iter()
            .rev()
            .filter_map(|t| {
                let t = t.lock();
                (principal.tenant().is_none() || principal.tenant() == t.tenant.as_deref()).then(
                    || {
                        json!({
                            "traceId": t.id,
                            "state": if t.finished { "finished" } else { "running" },
                            "target": t.target.describe(),
                            "startedAt": t.started_ms,
                            "endsAt": t.ends_ms,
                            "events": t.events.len() as u64 + t.left_out_events,
                            "anomalies": t.anomalies.len() as u64 + t.left_out_anomalies,
                        })
                    },
                )
            })
            .collect()
    }

    /// Traces running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }
}

/// The hook that tells session traces where their session publishes.
pub(crate) struct TraceHook(pub(crate) Arc<Traces>);

impl Hook for TraceHook {
    fn name(&self) -> &'static str {
        "ops-trace"
    }

    fn publishing(&self, _principal: &Principal, stream: &StreamName, batch: &EventBatch) {
        if self.0.running.load(Ordering::Relaxed) == 0 {
            return;
        }
        let sessions = self.0.sessions.lock();
        if sessions.is_empty() {
            return;
        }
        let mut seen = HashSet::new();
        for (session, _) in batch.sessions() {
            if !seen.insert(session) {
                continue;
            }
            for trace in sessions.get(session).into_iter().flatten() {
                let mut t = trace.lock();
                let start = before(t.started_ms);
                t.streams.entry(stream.clone()).or_insert(start);
            }
        }
    }
}
