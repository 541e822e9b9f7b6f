//! The Prometheus text format (version 0.0.4), written in one place: every
//! label value goes through [`Encoder::sample`]'s escaping.

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

/// Writes metrics in the Prometheus text format.
#[derive(Debug)]
pub struct Encoder<'a> {
    out: &'a mut String,
}

impl<'a> Encoder<'a> {
    /// An encoder appending to `out`.
    pub fn new(out: &'a mut String) -> Self {
        Encoder { out }
    }

    /// `# HELP` and `# TYPE` lines. Help text is written as given: keep it
    /// on one line.
    pub fn header(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\n', " "));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
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
