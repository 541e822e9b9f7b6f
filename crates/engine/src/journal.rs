//! The ops journal: what happened to the system, as events.
//!
//! Side services and the engine record an [`OpsEvent`] for each thing an
//! operator may later ask about (a socket connected or joined a room, a
//! producer's clock drifted, a segment was rotated, the config was
//! reloaded, a request was refused and why). The journal keeps them in the
//! internal stream [`OPS_STREAM`] (`_busbar:ops`), so they survive restarts
//! and every tool that reads a stream reads them (`busbar range
//! _busbar:ops`), and `GET /api/ops/events` filters them.
//!
//! Each ops event is stored as an event whose `type` is the ops event's
//! type (`socket:connect`, `drift_warn`, `error`), whose `tenant` is the
//! tenant it concerns (so a tenant-bound reader can be given only its own),
//! and whose payload is a JSON object: `category` (the family a `type=`
//! filter also matches: `socket`, `session`, `relay`, `broadcast`,
//! `storage`, `config`, `error`) and the event's own fields. Never a
//! payload, never a secret.
//!
//! Bounds:
//!
//! | what | default | config | when it is reached |
//! |---|---|---|---|
//! | events waiting to be written | 4,096 | `[journal] queue` | the event is dropped and counted in `busbar_ops_events_dropped_total` |
//! | events kept | 100,000 | `[journal] max_events` | the oldest are trimmed with each write |
//! | age kept | 7 days | `[journal] max_age` | older events are trimmed once a minute |
//! | errors recorded per reason | 1 a second | `[journal] error_interval` | later ones are counted into the next recorded one's `suppressed` |
//!
//! Recording never blocks and never fails the caller: the journal is told
//! what happened, and a writer task ([`Journal::run`], started by the
//! daemon) appends what it is told in batches.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use busbar_event::{EventBatch, NewEvent, StreamName};
use busbar_metrics::{names, Collector, Counter, Encoder, Family, Kind};
use busbar_store::{AppendOptions, Store, Trim};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

/// The internal stream the journal writes.
pub const OPS_STREAM: &str = "_busbar:ops";

/// The prefix of streams busbar keeps for itself. Clients may read them
/// (an untenanted token) but not publish to them; no tenant may be named
/// after it.
pub const INTERNAL_PREFIX: &str = "_busbar:";

/// Whether `stream` is one of busbar's own ([`INTERNAL_PREFIX`]).
pub fn is_internal(stream: &str) -> bool {
    stream.starts_with(INTERNAL_PREFIX)
}

/// The journal's bounds (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Events waiting to be written before new ones are dropped.
    pub queue: usize,
    /// Events kept in [`OPS_STREAM`].
    pub max_events: u64,
    /// The oldest event kept.
    pub max_age: Duration,
    /// At most one `error` event per reason per interval.
    pub error_interval: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            queue: 4096,
            max_events: 100_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
            error_interval: Duration::from_secs(1),
        }
    }
}

/// One thing that happened to the system.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpsEvent {
    /// What happened: `socket:connect`, `drift_warn`, `storage:rotate`...
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The family a `type=` filter also matches (`socket`, `relay`...).
    pub category: &'static str,
    /// The tenant it concerns (`None`: the operator's, or every tenant's).
    pub tenant: Option<String>,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// What else is known: ids, rooms, reasons. Never payloads or secrets.
    pub fields: Map<String, Value>,
}

impl OpsEvent {
    /// An event of `kind` in `category`, now, about no tenant.
    pub fn new(kind: &'static str, category: &'static str) -> Self {
        OpsEvent {
            kind,
            category,
            tenant: None,
            at_ms: now_ms(),
            fields: Map::new(),
        }
    }

    /// About `tenant`.
    #[must_use]
    pub fn tenant(mut self, tenant: Option<&str>) -> Self {
        self.tenant = tenant.map(str::to_owned);
        self
    }

    /// With the field `name`.
    #[must_use]
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }

    /// The stored payload: `category` and the fields.
    fn payload(&self) -> Vec<u8> {
        let mut object = Map::with_capacity(self.fields.len() + 1);
        object.insert("category".into(), Value::from(self.category));
        for (k, v) in &self.fields {
            object.insert(k.clone(), v.clone());
        }
        serde_json::to_vec(&Value::Object(object)).unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// Whether an ops event of `kind` in `category` matches a `type=` filter:
/// the type itself, a prefix ending at a `:` (`relay` matches
/// `relay:connected`, `socket:join` matches `socket:join`), or the
/// category (`relay` matches `drift_warn`, a relay's clock).
pub fn type_matches(filter: &str, kind: &str, category: &str) -> bool {
    filter.is_empty()
        || kind == filter
        || category == filter
        || kind
            .strip_prefix(filter)
            .is_some_and(|rest| rest.starts_with(':'))
        || (filter.ends_with(':') && kind.starts_with(filter))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where ops events go. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    config: JournalConfig,
    tx: mpsc::Sender<OpsEvent>,
    rx: Mutex<Option<mpsc::Receiver<OpsEvent>>>,
    /// Per error reason: when the last one was recorded, and how many were
    /// left out since.
    errors: Mutex<HashMap<&'static str, (u64, u64)>>,
    recorded: Family<Counter, 1>,
    dropped: Counter,
    write_errors: Counter,
    /// Recorded and not written yet (or being written).
    unwritten: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// A journal with these bounds; nothing is written until [`Journal::run`]
    /// runs (until then, and past the queue's bound, events are dropped and
    /// counted).
    pub fn new(config: JournalConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        Journal {
            inner: Arc::new(Inner {
                config,
                tx,
                rx: Mutex::new(Some(rx)),
                errors: Mutex::new(HashMap::new()),
                recorded: Family::new(["type"]),
                dropped: Counter::default(),
                write_errors: Counter::default(),
                unwritten: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// The bounds.
    pub fn config(&self) -> &JournalConfig {
        &self.inner.config
    }

    /// Records `event`. Never blocks: a full queue drops it (counted).
    pub fn record(&self, event: OpsEvent) {
        let kind = event.kind;
        self.inner.unwritten.fetch_add(1, Ordering::AcqRel);
        match self.inner.tx.try_send(event) {
            Ok(()) => self.inner.recorded.get([kind]).inc(),
            Err(_) => {
                self.inner.unwritten.fetch_sub(1, Ordering::AcqRel);
                self.inner.dropped.inc();
            }
        }
    }

    /// Whether everything recorded so far is written (or was dropped).
    pub fn is_idle(&self) -> bool {
        self.inner.unwritten.load(Ordering::Acquire) == 0
    }

    /// Records a refused request or event (`reason` is the engine's reason,
    /// `transport` where it came in), at most once per reason per
    /// `error_interval`, and logs it under the same bound (never the
    /// input); the ones left out are counted into the next recorded one's
    /// `suppressed`.
    pub fn record_error(&self, reason: &'static str, transport: &'static str) {
        let now = now_ms();
        let interval = self.inner.config.error_interval.as_millis() as u64;
        let suppressed = {
            let mut errors = self.inner.errors.lock();
            let entry = errors.entry(reason).or_insert((0, 0));
            if entry.0 != 0 && now < entry.0 + interval {
                entry.1 += 1;
                return;
            }
            let suppressed = entry.1;
            *entry = (now, 0);
            suppressed
        };
        // Logged under the same bound: a flood of bad input is one line a
        // second per reason, never with the input.
        tracing::info!(
            reason,
            transport,
            suppressed_since_last = suppressed,
            "request or event refused"
        );
        let mut event = OpsEvent::new("error", "error")
            .field("reason", reason)
            .field("transport", transport);
        if suppressed > 0 {
            event = event.field("suppressed", suppressed);
        }
        self.record(event);
    }

    /// Ops events recorded, by type.
    pub fn recorded(&self) -> &Family<Counter, 1> {
        &self.inner.recorded
    }

    /// Ops events dropped because the queue was full (or nothing writes).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.get()
    }

    /// Failed writes to [`OPS_STREAM`].
    pub fn write_errors(&self) -> u64 {
        self.inner.write_errors.get()
    }

    /// Writes what is recorded to [`OPS_STREAM`] in `store` until every
    /// handle to the journal is gone, trimming by count with every write
    /// and by age once a minute. Runs once: a second call returns at once.
    pub async fn run(&self, store: Arc<dyn Store>) {
        let Some(mut rx) = self.inner.rx.lock().take() else {
            return;
        };
        let Ok(stream) = StreamName::new(OPS_STREAM) else {
            return;
        };
        let mut pending = Vec::with_capacity(256);
        let mut last_age_trim = std::time::Instant::now();
        loop {
            // Wait for one, then take whatever else is queued.
            tokio::select! {
                n = rx.recv_many(&mut pending, 256) => {
                    if n == 0 {
                        return;
                    }
                }
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
            if !pending.is_empty() {
                self.write(&*store, &stream, &pending).await;
                self.inner
                    .unwritten
                    .fetch_sub(pending.len() as u64, Ordering::AcqRel);
                pending.clear();
            }
            if last_age_trim.elapsed() >= Duration::from_secs(60) {
                last_age_trim = std::time::Instant::now();
                let trim = Trim::MaxAge {
                    age: self.inner.config.max_age,
                    approx: true,
                };
                if let Err(e) = store.trim(&stream, trim).await {
                    if !matches!(e, busbar_store::StoreError::NoSuchStream { .. }) {
                        tracing::warn!(error = %e, "ops journal: age trim failed");
                    }
                }
            }
        }
    }

    async fn write(&self, store: &dyn Store, stream: &StreamName, events: &[OpsEvent]) {
        let mut batch = EventBatch::new();
        for e in events {
            let payload = e.payload();
            let mut event = NewEvent::new(e.kind, &payload);
            if let Some(t) = &e.tenant {
                event = event.with_tenant(t);
            }
            if batch.push(&event).is_err() {
                self.inner.write_errors.inc();
            }
        }
        if batch.is_empty() {
            return;
        }
        let opts = AppendOptions {
            trim: Some(Trim::MaxLen {
                max: self.inner.config.max_events,
                approx: true,
            }),
            ..AppendOptions::default()
        };
        if let Err(e) = store.append(stream, batch, opts).await {
            self.inner.write_errors.inc();
            tracing::warn!(error = %e, events = events.len(), "ops journal: write failed");
        }
    }
}

impl Collector for Journal {
    fn collect(&self, out: &mut Encoder<'_>) {
        out.counters(
            names::OPS_EVENTS,
            "Ops events recorded in the journal, by type.",
            &self.inner.recorded,
        );
        out.header(
            names::OPS_EVENTS_DROPPED,
            Kind::Counter,
            "Ops events dropped because the journal's queue was full.",
        );
        out.sample(names::OPS_EVENTS_DROPPED, &[], self.dropped());
        out.header(
            names::OPS_EVENTS_WRITE_ERRORS,
            Kind::Counter,
            "Failed writes of ops events to the journal's stream.",
        );
        out.sample(names::OPS_EVENTS_WRITE_ERRORS, &[], self.write_errors());
    }
}

impl Default for Journal {
    fn default() -> Self {
        Journal::new(JournalConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use busbar_store::memory::MemoryStore;
    use busbar_store::ReadQuery;

    #[test]
    fn type_filters_match_the_type_its_prefixes_and_its_category() {
        assert!(type_matches("relay", "relay:connected", "relay"));
        assert!(type_matches("relay", "drift_warn", "relay"));
        assert!(type_matches("socket", "socket:join", "socket"));
        assert!(type_matches("socket:join", "socket:join", "socket"));
        assert!(!type_matches("socket:join", "socket:leave", "socket"));
        assert!(!type_matches("sock", "socket:join", "socket"));
        assert!(type_matches(
            "broadcast:delay",
            "broadcast:delay:set",
            "broadcast"
        ));
        assert!(type_matches("error", "error", "error"));
        assert!(type_matches("", "anything", "x"));
    }

    #[test]
    fn errors_are_recorded_once_per_interval_and_count_the_rest() {
        let journal = Journal::new(JournalConfig {
            error_interval: Duration::from_secs(3600),
            ..JournalConfig::default()
        });
        for _ in 0..5 {
            journal.record_error("malformed_json", "tcp");
        }
        journal.record_error("too_deep", "tcp");
        let mut rx = journal.inner.rx.lock().take().unwrap();
        let first = rx.try_recv().unwrap();
        assert_eq!(first.fields["reason"], "malformed_json");
        assert!(!first.fields.contains_key("suppressed"));
        let second = rx.try_recv().unwrap();
        assert_eq!(second.fields["reason"], "too_deep");
        assert!(rx.try_recv().is_err());
        // The window passes: the next one carries the four left out.
        journal
            .inner
            .errors
            .lock()
            .get_mut("malformed_json")
            .unwrap()
            .0 = 1;
        journal.record_error("malformed_json", "tcp");
        assert_eq!(rx.try_recv().unwrap().fields["suppressed"], 4);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let journal = Journal::new(JournalConfig {
            queue: 2,
            ..JournalConfig::default()
        });
        for _ in 0..5 {
            journal.record(OpsEvent::new("socket:connect", "socket"));
        }
        assert_eq!(journal.dropped(), 3);
        assert_eq!(journal.recorded().get(["socket:connect"]).get(), 2);
    }

    #[tokio::test]
    async fn the_writer_keeps_events_in_the_internal_stream_bounded_by_count() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let journal = Journal::new(JournalConfig {
            max_events: 10,
            ..JournalConfig::default()
        });
        let writer = {
            let (j, s) = (journal.clone(), store.clone());
            tokio::spawn(async move { j.run(s).await })
        };
        for i in 0..25 {
            journal.record(
                OpsEvent::new("socket:join", "socket")
                    .tenant(Some("acme"))
                    .field("socket", i)
                    .field("room", "session:1"),
            );
            tokio::task::yield_now().await;
        }
        let stream = StreamName::new(OPS_STREAM).unwrap();
        let mut events = Vec::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            events = store
                .read(&stream, &ReadQuery::all(100))
                .await
                .unwrap_or_default();
            let last = events
                .last()
                .and_then(|e| serde_json::from_slice::<Value>(e.payload()).ok());
            if last.is_some_and(|v| v["socket"] == 24) {
                break;
            }
        }
        assert_eq!(events.len(), 10, "trimmed to the bound");
        let last: Value = serde_json::from_slice(events[9].payload()).unwrap();
        assert_eq!(last["socket"], 24);
        assert_eq!(last["category"], "socket");
        assert_eq!(last["room"], "session:1");
        assert_eq!(events[9].event_type(), "socket:join");
        assert_eq!(events[9].tenant(), Some("acme"));
        writer.abort();
    }
}
