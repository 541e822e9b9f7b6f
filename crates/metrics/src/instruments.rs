//! Counters, gauges, histograms and labelled families of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

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

/// A histogram of durations over [`LATENCY_BUCKETS`].
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

    /// Sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Cumulative counts per bucket bound, `+Inf` last.
    pub fn cumulative(&self) -> [(f64, u64); LATENCY_BUCKETS.len() + 1] {
        let mut out = [(f64::INFINITY, 0); LATENCY_BUCKETS.len() + 1];
        let mut total = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            total += self.buckets[i].load(Ordering::Relaxed);
            out[i] = (*bound, total);
        }
        out[LATENCY_BUCKETS.len()] = (f64::INFINITY, self.count());
        out
    }
}

/// A metric family: one member per combination of `N` label values.
#[derive(Debug)]
pub struct Family<M, const N: usize> {
    labels: [&'static str; N],
    members: RwLock<BTreeMap<[String; N], Arc<M>>>,
}

impl<M: Default, const N: usize> Family<M, N> {
    /// An empty family with these label names.
    pub fn new(labels: [&'static str; N]) -> Self {
        Family {
            labels,
            members: RwLock::new(BTreeMap::new()),
        }
    }

    /// The label names.
    pub fn labels(&self) -> &[&'static str; N] {
        &self.labels
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

    /// Calls `f` with every member and its label values, in label order.
    pub fn for_each(&self, mut f: impl FnMut(&[String; N], &M)) {
        for (values, m) in self.members.read().iter() {
            f(values, m);
        }
    }

    /// Drops every member (for gauges rebuilt at scrape time).
    pub fn clear(&self) {
        self.members.write().clear();
    }

    /// Drops the members `keep` says no to (a deleted stream's gauges).
    pub fn retain(&self, mut keep: impl FnMut(&[String; N]) -> bool) {
        self.members.write().retain(|values, _| keep(values));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let c = h.cumulative();
        assert_eq!(c[0], (0.000_05, 1));
        assert_eq!(c[6], (0.005, 2));
        assert_eq!(c[LATENCY_BUCKETS.len() - 1].1, 2);
        assert_eq!(c[LATENCY_BUCKETS.len()], (f64::INFINITY, 3));
        assert!((h.sum_seconds() - 100.003_01).abs() < 1e-6);
    }

    #[test]
    fn family_members_are_shared_and_retained() {
        let f: Family<Counter, 2> = Family::new(["a", "b"]);
        f.get(["x", "y"]).add(2);
        f.get(["x", "y"]).inc();
        f.get(["z", "y"]).inc();
        let mut seen = Vec::new();
        f.for_each(|v, c| seen.push((v.clone(), c.get())));
        assert_eq!(
            seen,
            [
                (["x".to_owned(), "y".to_owned()], 3),
                (["z".to_owned(), "y".to_owned()], 1)
            ]
        );
        f.retain(|v| v[0] == "z");
        let mut left = 0;
        f.for_each(|_, _| left += 1);
        assert_eq!(left, 1);
    }
}
