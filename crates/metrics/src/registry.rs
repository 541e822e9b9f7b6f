//! The registry: everything `/metrics` shows, collected at scrape time.

use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::RwLock;

use crate::encode::StreamFilter;
use crate::{names, Encoder, Kind};

/// Something whose metrics appear on `/metrics`. Called at scrape time, on
/// the scraping task: render what the instruments hold, do no I/O.
pub trait Collector: Send + Sync {
    /// Writes this collector's metrics (headers and samples).
    fn collect(&self, out: &mut Encoder<'_>);
}

enum Entry {
    Strong(Arc<dyn Collector>),
    /// A collector whose owner may go away first (a hub that must not be
    /// kept alive by its metrics); skipped once it has.
    Weak(Weak<dyn Collector>),
}

/// Every collector of the process, rendered in registration order.
pub struct Registry {
    collectors: RwLock<Vec<Entry>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("collectors", &self.collectors.read().len())
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry {
            collectors: RwLock::new(Vec::new()),
        }
    }

    /// Adds a collector.
    pub fn register(&self, collector: Arc<dyn Collector>) {
        self.collectors.write().push(Entry::Strong(collector));
    }

    /// Adds a collector the registry does not keep alive.
    pub fn register_weak(&self, collector: Weak<dyn Collector>) {
        self.collectors.write().push(Entry::Weak(collector));
    }

    /// Every registered collector's metrics, in the text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_into(&mut out);
        out
    }

    /// [`Registry::render`], appending to `out`.
    pub fn render_into(&self, out: &mut String) {
        self.render_with(Encoder::new(out));
    }

    /// [`Registry::render`] without the samples whose `stream` label
    /// `keep` refuses (see [`Encoder::with_stream_filter`]).
    pub fn render_streams(&self, keep: StreamFilter<'_>) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_with(Encoder::with_stream_filter(&mut out, keep));
        out
    }

    fn render_with(&self, mut enc: Encoder<'_>) {
        let collectors: Vec<Arc<dyn Collector>> = self
            .collectors
            .read()
            .iter()
            .filter_map(|e| match e {
                Entry::Strong(c) => Some(c.clone()),
                Entry::Weak(w) => w.upgrade(),
            })
            .collect();
        for c in collectors {
            c.collect(&mut enc);
        }
    }
}

/// The process's own gauges: resident memory and uptime.
#[derive(Debug)]
pub struct ProcessMetrics {
    started: Instant,
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        ProcessMetrics {
            started: Instant::now(),
        }
    }
}

impl ProcessMetrics {
    /// Time since this was created (the daemon's uptime).
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }
}

impl Collector for ProcessMetrics {
    fn collect(&self, out: &mut Encoder<'_>) {
        out.header(
            names::RESIDENT_MEMORY,
            Kind::Gauge,
            "Resident memory of the process in bytes.",
        );
        out.sample(names::RESIDENT_MEMORY, &[], resident_bytes());
        out.header(
            names::UPTIME,
            Kind::Gauge,
            "Seconds since the daemon started.",
        );
        out.sample(names::UPTIME, &[], self.uptime().as_secs_f64());
    }
}

/// Resident set size from `/proc/self/statm` (0 where unavailable).
pub fn resident_bytes() -> u64 {
    let page = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str);

    impl Collector for Fixed {
        fn collect(&self, out: &mut Encoder<'_>) {
            out.sample(self.0, &[], 1u64);
        }
    }

    #[test]
    fn renders_in_order_and_skips_collectors_that_are_gone() {
        let r = Registry::new();
        r.register(Arc::new(Fixed("a")));
        let b: Arc<dyn Collector> = Arc::new(Fixed("b"));
        r.register_weak(Arc::downgrade(&b));
        r.register(Arc::new(Fixed("c")));
        assert_eq!(r.render(), "a 1\nb 1\nc 1\n");
        drop(b);
        assert_eq!(r.render(), "a 1\nc 1\n");
    }
}
