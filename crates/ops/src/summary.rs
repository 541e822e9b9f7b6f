//! `GET /api/ops/summary` and `busbar ops summary`: the system in one
//! answer.
//!
//! | field | what |
//! |---|---|
//! | `version`, `uptimeSec`, `backend` | the daemon |
//! | `ready`, `notReady` | what `/readyz` says |
//! | `ingest` | events/s over the last minute (`rate1m`) and five (`rate5m`), and totals since start, in all and by transport, stream, event type and producer (token name); the busiest first |
//! | `errors` | refused events and requests by reason and transport, with rates |
//! | `storage` | streams, events, bytes, segments, free space, the write state |
//! | `groups`, `dlq` | every group's lag and pending; every dead-letter stream's length |
//! | sections | what side services register ([`Ops::add_section`](crate::Ops::add_section)): `live` (sockets, sessions, subscriptions, rooms); relays and overload control add theirs |
//!
//! Totals by transport and stream count stored events; by type and
//! producer count what producers sent (a repeated idempotency key
//! included), since they are counted before the append.
//!
//! Rates come from samples of the counters taken every
//! [`SAMPLE_EVERY`] by [`Ops::spawn_sampler`](crate::Ops::spawn_sampler);
//! until a window has passed since start, a rate covers the time since
//! start. Counting by type and producer happens once per published batch
//! (a hook), with at most [`MAX_KEYS`] types and producers each; later
//! ones count under `(other)`.
//!
//! A tenant-bound caller sees its own streams, types, producers, groups
//! and dead letters, and no process-wide figures (errors, disk).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use busbar_engine::{Engine, Hook, Principal};
use busbar_event::{EventBatch, StreamName};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use serde_json::{json, Map, Value};

/// How often the counters are sampled for rates.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Distinct (stream, type) pairs and producers counted each; more count
/// under `(other)`.
pub const MAX_KEYS: usize = 1024;
/// Rows shown in each "busiest" list.
const TOP: usize = 20;
const OTHER: &str = "(other)";
const WINDOWS: [(&str, Duration); 2] = [
    ("rate1m", Duration::from_secs(60)),
    ("rate5m", Duration::from_secs(300)),
];

/// Events published by (stream, type) and by producer, counted per batch.
#[derive(Debug, Default)]
pub(crate) struct Counting {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default, Clone)]
struct Counts {
    /// stream → type → events.
    types: FxHashMap<String, FxHashMap<String, u64>>,
    type_keys: usize,
    /// producer (a token's name, unique) → its tenant and events.
    producers: FxHashMap<String, (Option<String>, u64)>,
}

impl Counts {
    fn add_type(&mut self, stream: &str, kind: &str, n: u64) {
        if let Some(c) = self.types.get_mut(stream).and_then(|t| t.get_mut(kind)) {
            *c += n;
            return;
        }
        let kind = if self.type_keys < MAX_KEYS {
            self.type_keys += 1;
            kind
        } else {
            OTHER
        };
        *self
            .types
            .entry(stream.to_owned())
            .or_default()
            .entry(kind.to_owned())
            .or_default() += n;
    }
}

impl Hook for Counting {
    fn name(&self) -> &'static str {
        "ops-summary"
    }

    fn publishing(&self, principal: &Principal, stream: &StreamName, batch: &EventBatch) {
        let mut counts = self.counts.lock();
        // Runs of one type are counted once.
        for (kind, n) in batch.type_runs() {
            counts.add_type(stream.as_str(), kind, n);
        }
        let n = batch.len() as u64;
        let producers = counts.producers.len();
        match counts.producers.get_mut(principal.name()) {
            Some((_, c)) => *c += n,
            None if producers < MAX_KEYS => {
                let tenant = principal.tenant().map(str::to_owned);
                counts
                    .producers
                    .insert(principal.name().to_owned(), (tenant, n));
            }
            None => counts.producers.entry(OTHER.into()).or_default().1 += n,
        }
    }
}

/// One reading of every counter the rates come from.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    /// (stream, transport) → events.
    ingested: BTreeMap<(String, String), u64>,
    /// (transport, reason) → errors.
    errors: BTreeMap<(String, String), u64>,
    counts: Counts,
}

/// Samples kept for the rates.
#[derive(Debug)]
pub(crate) struct Sampler {
    samples: Mutex<VecDeque<Sample>>,
    pub(crate) counting: std::sync::Arc<Counting>,
}

const KEEP: usize = (300 / 5) + 2;

impl Sampler {
    pub(crate) fn new(engine: &Engine) -> Sampler {
        let counting = std::sync::Arc::new(Counting::default());
        let sampler = Sampler {
            samples: Mutex::new(VecDeque::with_capacity(KEEP)),
            counting,
        };
        sampler.sample(engine);
        sampler
    }

    fn read(&self, engine: &Engine) -> Sample {
        let metrics = engine.metrics();
        let mut ingested = BTreeMap::new();
        metrics.events_ingested.for_each(|[stream, transport], c| {
            ingested.insert((stream.clone(), transport.clone()), c.get());
        });
        let mut errors = BTreeMap::new();
        metrics.ingest_errors.for_each(|[transport, reason], c| {
            errors.insert((transport.clone(), reason.clone()), c.get());
        });
        Sample {
            at: Instant::now(),
            ingested,
            errors,
            counts: self.counting.counts.lock().clone(),
        }
    }

    /// Takes a sample (every [`SAMPLE_EVERY`]).
    pub(crate) fn sample(&self, engine: &Engine) {
        let sample = self.read(engine);
        let mut samples = self.samples.lock();
        if samples.len() >= KEEP {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The sample to measure a window of `window` from: the newest one at
    /// least `window` old, or the oldest.
    fn base(&self, now: Instant, window: Duration) -> Option<Sample> {
        let samples = self.samples.lock();
        samples
            .iter()
            .rev()
            .find(|s| now.duration_since(s.at) >= window)
            .or_else(|| samples.front())
            .cloned()
    }
}

/// A counter's total and its rates over each window.
fn figures(now: u64, bases: &[(Option<u64>, f64)]) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("total".into(), json!(now));
    for ((name, _), (base, secs)) in WINDOWS.iter().zip(bases) {
        let rate = if *secs > 0.0 {
            now.saturating_sub(base.unwrap_or(0)) as f64 / secs
        } else {
            0.0
        };
        out.insert((*name).into(), json!((rate * 100.0).round() / 100.0));
    }
    out
}

/// Sums `pick` over keys, now and at each base.
struct Series<'a, K: Ord> {
    now: BTreeMap<K, u64>,
    bases: Vec<(BTreeMap<K, u64>, f64)>,
    _life: std::marker::PhantomData<&'a ()>,
}

impl<K: Ord + Clone> Series<'_, K> {
    fn rows(
        &self,
        mut make: impl FnMut(&K, Map<String, Value>) -> Value,
    ) -> Vec<(f64, u64, Value)> {
        self.now
            .iter()
            .map(|(k, &n)| {
                let bases: Vec<(Option<u64>, f64)> = self
                    .bases
                    .iter()
                    .map(|(b, secs)| (Some(b.get(k).copied().unwrap_or(0)), *secs))
                    .collect();
                let f = figures(n, &bases);
                let rate = f.get("rate5m").and_then(Value::as_f64).unwrap_or(0.0);
                (rate, n, make(k, f))
            })
            .collect()
    }
}

fn busiest(mut rows: Vec<(f64, u64, Value)>, top: usize) -> Vec<Value> {
    rows.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    rows.into_iter().take(top).map(|(_, _, v)| v).collect()
}

fn group_by<K: Ord + Clone>(
    samples: (&Sample, &[(Sample, f64)]),
    pick: impl Fn(&Sample) -> Vec<(K, u64)>,
) -> Series<'static, K> {
    let sum = |s: &Sample| {
        let mut out = BTreeMap::new();
        for (k, n) in pick(s) {
            *out.entry(k).or_insert(0) += n;
        }
        out
    };
    Series {
        now: sum(samples.0),
        bases: samples.1.iter().map(|(b, secs)| (sum(b), *secs)).collect(),
        _life: std::marker::PhantomData,
    }
}

/// The summary `principal` may see.
pub(crate) async fn summary(
    engine: &Engine,
    sampler: &Sampler,
    sections: &[(&'static str, crate::Section)],
    principal: &Principal,
) -> Value {
    let now = sampler.read(engine);
    let bases: Vec<(Sample, f64)> = WINDOWS
        .iter()
        .map(|(_, w)| {
            let base = sampler.base(now.at, *w).unwrap_or_else(|| now.clone());
            let secs = now.at.duration_since(base.at).as_secs_f64();
            (base, secs)
        })
        .collect();
    let pair = (&now, bases.as_slice());
    let sees = |stream: &str| principal.can_access_name(stream);
    let untenanted = principal.tenant().is_none();

    let total = group_by(pair, |s| {
        s.ingested
            .iter()
            .filter(|((stream, _), _)| sees(stream))
            .map(|(_, n)| ((), *n))
            .collect()
    });
    let by_transport = group_by(pair, |s| {
        s.ingested
            .iter()
            .filter(|((stream, _), _)| sees(stream))
            .map(|((_, t), n)| (t.clone(), *n))
            .collect()
    });
    let by_stream = group_by(pair, |s| {
        s.ingested
            .iter()
            .filter(|((stream, _), _)| sees(stream))
            .map(|((stream, _), n)| (stream.clone(), *n))
            .collect()
    });
    let by_type = group_by(pair, |s| {
        s.counts
            .types
            .iter()
            .filter(|(stream, _)| sees(stream))
            .flat_map(|(stream, types)| {
                types
                    .iter()
                    .map(move |(t, n)| ((stream.clone(), t.clone()), *n))
            })
            .collect()
    });
    let producers = group_by(pair, |s| {
        s.counts
            .producers
            .iter()
            .filter(|(_, (tenant, _))| principal.sees_tenant(tenant.as_deref()))
            .map(|(name, (tenant, n))| ((tenant.clone(), name.clone()), *n))
            .collect()
    });
    let mut ingest = total.rows(|(), f| Value::Object(f)).pop().map_or_else(
        || json!({"total": 0, "rate1m": 0.0, "rate5m": 0.0}),
        |r| r.2,
    );
    ingest["byTransport"] = json!(busiest(
        by_transport.rows(|t, mut f| {
            f.insert("transport".into(), json!(t));
            Value::Object(f)
        }),
        TOP
    ));
    ingest["byStream"] = json!(busiest(
        by_stream.rows(|s, mut f| {
            f.insert("stream".into(), json!(s));
            Value::Object(f)
        }),
        TOP
    ));
    ingest["byType"] = json!(busiest(
        by_type.rows(|(s, t), mut f| {
            f.insert("stream".into(), json!(s));
            f.insert("type".into(), json!(t));
            Value::Object(f)
        }),
        TOP
    ));
    ingest["topProducers"] = json!(busiest(
        producers.rows(|(tenant, name), mut f| {
            f.insert("producer".into(), json!(name));
            f.insert("tenant".into(), json!(tenant));
            Value::Object(f)
        }),
        TOP
    ));

    let mut out = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSec": engine.uptime().as_secs(),
        "backend": engine.backend(),
        "ingest": ingest,
    });
    let not_ready = engine.not_ready();
    out["ready"] = json!(not_ready.is_empty());
    out["notReady"] = json!(not_ready);
    if untenanted {
        let errors = group_by(pair, |s| {
            s.errors
                .iter()
                .map(|((t, r), n)| ((r.clone(), t.clone()), *n))
                .collect()
        });
        let all = group_by(pair, |s| s.errors.values().map(|n| ((), *n)).collect());
        let mut e = all.rows(|(), f| Value::Object(f)).pop().map_or_else(
            || json!({"total": 0, "rate1m": 0.0, "rate5m": 0.0}),
            |r| r.2,
        );
        let mut rows = errors.rows(|(reason, transport), mut f| {
            f.insert("reason".into(), json!(reason));
            f.insert("transport".into(), json!(transport));
            Value::Object(f)
        });
        rows.retain(|r| r.1 > 0);
        e["byReason"] = json!(busiest(rows, usize::MAX));
        out["errors"] = e;
    }

    let stats = engine.store().stats().await.unwrap_or_default();
    let mut storage = json!({"streams": 0, "events": 0, "bytes": 0, "segments": 0});
    let mut groups = Vec::new();
    let mut dlq = Vec::new();
    let (mut streams, mut events, mut bytes, mut segments) = (0u64, 0u64, 0u64, 0u64);
    for s in stats.iter().filter(|s| principal.can_access(&s.info.name)) {
        streams += 1;
        events += s.info.length;
        bytes += s.info.bytes;
        segments += s.info.segments;
        for g in &s.groups {
            groups.push(json!({
                "stream": s.info.name, "group": g.name, "lag": g.lag, "pending": g.pending,
            }));
        }
        if let Some(source) = s.info.name.as_str().strip_suffix(":dlq") {
            dlq.push(json!({"stream": s.info.name, "source": source, "length": s.info.length}));
        }
    }
    storage["streams"] = json!(streams);
    storage["events"] = json!(events);
    storage["bytes"] = json!(bytes);
    storage["segments"] = json!(segments);
    if untenanted {
        storage["freeBytes"] = json!(engine.readiness().free_space());
        storage["writeState"] = json!(match engine.write_health() {
            busbar_store::WriteHealth::Ok => "ok",
            busbar_store::WriteHealth::Full { .. } => "full",
            _ => "failed",
        });
    }
    out["storage"] = storage;
    out["groups"] = json!(groups);
    out["dlq"] = json!(dlq);
    for (name, section) in sections {
        out[*name] = section(principal);
    }
    out
}
