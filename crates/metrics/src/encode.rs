//! The Prometheus text format (version 0.0.4), written in one place: every
//! label value goes through [`Encoder::sample`]'s escaping, and every
//! sample through the one check of its `stream` label that lets a scrape
//! be limited to some streams ([`Encoder::with_stream_filter`]).

use std::fmt::Write;

use crate::{Counter, Family, Gauge, Histogram};

/// A metric's type, for its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, a sum and a count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A count.
    U64(u64),
    /// A signed value.
    I64(i64),
    /// A float (seconds, ratios).
    F64(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::U64(v)
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::U64(v as u64)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::I64(v)
    }
}

impl From<u8> for Value {
    fn from(v: u8) -> Self {
        Value::U64(u64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::F64(v)
    }
}

/// Which streams a scrape may show, by name.
pub type StreamFilter<'f> = &'f dyn Fn(&str) -> bool;

/// Writes metrics in the Prometheus text format.
pub struct Encoder<'a> {
    out: &'a mut String,
    streams: Option<StreamFilter<'a>>,
}

impl std::fmt::Debug for Encoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("filtered", &self.streams.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> Encoder<'a> {
    /// An encoder appending to `out`.
    pub fn new(out: &'a mut String) -> Self {
        Encoder { out, streams: None }
    }

    /// An encoder that leaves out every sample whose `stream` label
    /// `keep` refuses (a tenant's scrape sees only its streams). Samples
    /// without a `stream` label are written as usual; headers are always
    /// written.
    ///
    /// ```
    /// use busbar_metrics::Encoder;
    /// let mut out = String::new();
    /// let keep = |stream: &str| stream.starts_with("a:");
    /// let mut e = Encoder::with_stream_filter(&mut out, &keep);
    /// e.sample("len", &[("stream", "a:orders")], 1u64);
    /// e.sample("len", &[("stream", "b:orders")], 2u64);
    /// e.sample("up", &[], 1u64);
    /// assert_eq!(out, "len{stream=\"a:orders\"} 1\nup 1\n");
    /// ```
    pub fn with_stream_filter(out: &'a mut String, keep: StreamFilter<'a>) -> Self {
        Encoder {
            out,
            streams: Some(keep),
        }
    }

    /// Whether a sample with `labels` may be written.
    fn shows(&self, labels: &[(&str, &str)]) -> bool {
        let Some(keep) = self.streams else {
            return true;
        };
        labels
            .iter()
            .all(|(key, value)| *key != "stream" || keep(value))
    }

    /// `# HELP` and `# TYPE` lines. Help text is written as given: keep it
    /// on one line.
    pub fn header(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\n', " "));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        if !self.shows(labels) {
            return;
        }
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        match value.into() {
            Value::U64(v) => {
                let _ = write!(self.out, "{v}");
            }
            Value::I64(v) => {
                let _ = write!(self.out, "{v}");
            }
            Value::F64(v) => write_float(self.out, v),
        }
        self.out.push('\n');
    }

    /// A histogram's `_bucket`, `_sum` and `_count` samples.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        if !self.shows(labels) {
            return;
        }
        let mut bound = String::new();
        for (le, count) in h.cumulative() {
            bound.clear();
            if le.is_infinite() {
                bound.push_str("+Inf");
            } else {
                write_float(&mut bound, le);
            }
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&bound));
            let _ = writeln!(self.out, " {count}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        self.out.push(' ');
        write_float(self.out, h.sum_seconds());
        self.out.push('\n');
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", h.count());
    }

    /// A header, then one sample per member of a counter family.
    pub fn counters<const N: usize>(&mut self, name: &str, help: &str, f: &Family<Counter, N>) {
        self.header(name, Kind::Counter, help);
        let keys = *f.labels();
        f.for_each(|values, c| self.sample(name, &pairs(&keys, values), c.get()));
    }

    /// A header, then one sample per member of a gauge family.
    pub fn gauges<const N: usize>(&mut self, name: &str, help: &str, f: &Family<Gauge, N>) {
        self.header(name, Kind::Gauge, help);
        let keys = *f.labels();
        f.for_each(|values, g| self.sample(name, &pairs(&keys, values), g.get()));
    }

    /// A header, then every member of a histogram family.
    pub fn histograms<const N: usize>(&mut self, name: &str, help: &str, f: &Family<Histogram, N>) {
        self.header(name, Kind::Histogram, help);
        let keys = *f.labels();
        f.for_each(|values, h| self.histogram(name, &pairs(&keys, values), h));
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_into(self.out, v);
            self.out.push('"');
        }
        self.out.push('}');
    }
}

fn pairs<'k, 'v, const N: usize>(
    keys: &[&'k str; N],
    values: &'v [String; N],
) -> [(&'k str, &'v str); N] {
    std::array::from_fn(|i| (keys[i], values[i].as_str()))
}

/// Escapes a label value: backslash, double quote and line feed, the three
/// characters the text format gives a meaning.
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_once_and_everywhere() {
        let mut out = String::new();
        let mut e = Encoder::new(&mut out);
        e.sample("m", &[("stream", "a\\b\"c\nd")], 1u64);
        assert_eq!(out, "m{stream=\"a\\\\b\\\"c\\nd\"} 1\n");
        let mut out = String::new();
        let h = Histogram::default();
        h.observe(std::time::Duration::from_millis(1));
        Encoder::new(&mut out).histogram("h", &[("g", "x\ny")], &h);
        assert!(
            out.contains("h_bucket{g=\"x\\ny\",le=\"0.001\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("h_bucket{g=\"x\\ny\",le=\"+Inf\"} 1\n"));
        assert!(out.contains("h_count{g=\"x\\ny\"} 1\n"));
        assert!(!out.contains("x\ny"));
    }

    #[test]
    fn a_stream_filter_leaves_out_other_streams_samples_of_every_kind() {
        let keep = |s: &str| s == "a:x";
        let mut out = String::new();
        let mut e = Encoder::with_stream_filter(&mut out, &keep);
        let h = Histogram::default();
        h.observe(std::time::Duration::from_millis(1));
        e.header("m", Kind::Gauge, "M.");
        e.sample("m", &[("stream", "a:x"), ("group", "g")], 1u64);
        e.sample("m", &[("group", "g"), ("stream", "b:x")], 2u64);
        e.sample("m", &[("transport", "tcp")], 3u64);
        e.histogram("h", &[("stream", "b:x")], &h);
        e.histogram("h", &[("stream", "a:x")], &h);
        assert!(out.contains("m{stream=\"a:x\",group=\"g\"} 1\n"), "{out}");
        assert!(out.contains("m{transport=\"tcp\"} 3\n"), "{out}");
        assert!(out.contains("h_count{stream=\"a:x\"} 1\n"), "{out}");
        assert!(out.contains("# TYPE m gauge\n"), "{out}");
        assert!(!out.contains("b:x"), "{out}");
    }

    #[test]
    fn samples_without_labels_have_no_braces_and_floats_read_back() {
        let mut out = String::new();
        let mut e = Encoder::new(&mut out);
        e.header("up", Kind::Gauge, "Up.\nReally.");
        e.sample("up", &[], 1.5f64);
        e.sample("n", &[], -3i64);
        assert_eq!(
            out,
            "# HELP up Up. Really.\n# TYPE up gauge\nup 1.5\nn -3\n"
        );
    }
}
