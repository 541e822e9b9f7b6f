//! What a bench found: a serialisable report and its human table.

use std::fmt::Write as _;

use serde::Serialize;

/// A whole `busbar bench ingest` run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    /// CPUs available to the bench.
    pub cores: usize,
    /// Producer connections of the main scenarios.
    pub producers: usize,
    /// Un-acknowledged events each producer keeps in flight.
    pub pipeline: usize,
    /// Events per run of the main scenarios.
    pub events: u64,
    /// Bytes of each event's JSON.
    pub payload_bytes: usize,
    /// Threads of the load client.
    pub client_threads: usize,
    /// Runs of each system per level; each figure is the median round's.
    pub rounds: usize,
    /// Redis, if it took part.
    pub redis: RedisStatus,
    /// The largest idle resident memory of the daemons started, KiB.
    pub busbar_idle_rss_kib: Option<u64>,
    /// One entry per durability level (and the lone-producer scenario).
    pub scenarios: Vec<LevelReport>,
}

/// Whether Redis was measured.
#[derive(Debug, Clone, Serialize)]
pub struct RedisStatus {
    /// The URL asked for.
    pub url: Option<String>,
    /// Whether it answered.
    pub reachable: bool,
    /// Its version.
    pub version: Option<String>,
    /// Its persistence settings before the bench (put back after it).
    pub original_settings: Option<String>,
    /// Why it was skipped.
    pub note: Option<String>,
}

/// One durability level: busbar over each transport, Redis over TCP.
#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    /// `always`, `interval`, `memory` or `always-lone`.
    pub name: String,
    /// The `busbar serve` flags.
    pub busbar_flags: String,
    /// The matching Redis settings.
    pub redis_config: String,
    /// Producer connections.
    pub producers: usize,
    /// Un-acknowledged events per producer.
    pub pipeline: usize,
    /// Events per run.
    pub events: u64,
    /// The daemon's resident memory once listening, before any load, KiB.
    pub busbar_idle_rss_kib: Option<u64>,
    /// Its resident memory after the load, KiB.
    pub busbar_rss_after_kib: Option<u64>,
    /// Its peak resident memory, KiB.
    pub busbar_peak_rss_kib: Option<u64>,
    /// Every run of this level.
    pub runs: Vec<RunReport>,
    /// busbar ÷ Redis, per busbar transport.
    pub ratios: Vec<Ratio>,
}

/// One system over one transport.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// `busbar` or `redis`.
    pub system: String,
    /// `tcp` or `unix`.
    pub transport: String,
    /// Events acknowledged.
    pub events: u64,
    /// First send to last acknowledgement.
    pub seconds: f64,
    /// `events / seconds`.
    pub events_per_sec: f64,
    /// Publish → acknowledgement latency, µs.
    pub latency_us: Latency,
    /// CPU time the busbar daemon spent per event (user + system, all
    /// threads), µs; not measured for Redis.
    pub server_cpu_us_per_event: Option<f64>,
    /// events/s of every round, in the order they ran (this report is the
    /// median one).
    pub round_events_per_sec: Vec<f64>,
}

/// Latency percentiles, µs.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// busbar's figures over Redis' at the same level (throughput: higher is
/// better for busbar; latency: lower is).
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// The busbar transport (Redis is always over TCP).
    pub transport: String,
    /// busbar events/s ÷ Redis events/s.
    pub throughput: f64,
    /// busbar p50 ÷ Redis p50.
    pub p50: f64,
    /// busbar p99 ÷ Redis p99.
    pub p99: f64,
}

impl LevelReport {
    pub(crate) fn add_ratios(&mut self) {
        let Some(redis) = self.runs.iter().find(|r| r.system == "redis").cloned() else {
            return;
        };
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        self.ratios = self
            .runs
            .iter()
            .filter(|r| r.system == "busbar")
            .map(|b| Ratio {
                transport: b.transport.clone(),
                throughput: div(b.events_per_sec, redis.events_per_sec),
                p50: div(b.latency_us.p50, redis.latency_us.p50),
                p99: div(b.latency_us.p99, redis.latency_us.p99),
            })
            .collect();
    }
}

impl Report {
    /// The report as a table for people.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "busbar bench ingest, {}, {} cores, {} client thread(s); {}-byte events; \
             median of {} round(s)",
            self.date, self.cores, self.client_threads, self.payload_bytes, self.rounds
        );
        match (&self.redis.reachable, &self.redis.version) {
            (true, Some(v)) => {
                let _ = writeln!(
                    out,
                    "Redis {v} at {} over TCP; its settings before and after: {}",
                    self.redis.url.as_deref().unwrap_or_default(),
                    self.redis.original_settings.as_deref().unwrap_or_default()
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "Redis not measured: {}",
                    self.redis.note.as_deref().unwrap_or("skipped")
                );
            }
        }
        for s in &self.scenarios {
            let _ = writeln!(
                out,
                "\n{}: {} producer(s) x pipeline {}, {} events per run; busbar {} | Redis {}",
                s.name, s.producers, s.pipeline, s.events, s.busbar_flags, s.redis_config
            );
            let _ = writeln!(
                out,
                "  {:<7} {:<5} {:>12} {:>9} {:>9} {:>9} {:>9}  {:>10}  {:>9}",
                "system",
                "via",
                "events/s",
                "p50 us",
                "p99 us",
                "p99.9 us",
                "max us",
                "vs Redis",
                "cpu us/ev"
            );
            for r in &s.runs {
                let ratio = s
                    .ratios
                    .iter()
                    .find(|x| r.system == "busbar" && x.transport == r.transport)
                    .map(|x| format!("{:.2}x", x.throughput))
                    .unwrap_or_default();
                let cpu = r
                    .server_cpu_us_per_event
                    .map(|c| format!("{c:.2}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {:<7} {:<5} {:>12.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}  {:>10}  {:>9}",
                    r.system,
                    r.transport,
                    r.events_per_sec,
                    r.latency_us.p50,
                    r.latency_us.p99,
                    r.latency_us.p999,
                    r.latency_us.max,
                    ratio,
                    cpu
                );
            }
            for r in s.runs.iter().filter(|r| r.round_events_per_sec.len() > 1) {
                let rounds: Vec<String> = r
                    .round_events_per_sec
                    .iter()
                    .map(|v| format!("{v:.0}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "  {} {} rounds, events/s: {}",
                    r.system,
                    r.transport,
                    rounds.join(", ")
                );
            }
            let kib = |v: Option<u64>| {
                v.map_or("?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
            };
            let _ = writeln!(
                out,
                "  busbar RSS: idle {}, after the load {}, peak {}",
                kib(s.busbar_idle_rss_kib),
                kib(s.busbar_rss_after_kib),
                kib(s.busbar_peak_rss_kib)
            );
        }
        out
    }
}

/// Today's UTC date as `YYYY-MM-DD`.
pub(crate) fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
