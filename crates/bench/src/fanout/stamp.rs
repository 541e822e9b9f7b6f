//! The event both systems carry, stamped with its send time, and what each
//! subscriber counts on receipt.
//!
//! The publisher and every subscriber run in the bench process, so one
//! monotonic clock serves both ends: the send time is nanoseconds since the
//! run's base [`Instant`], written as a fixed-width string so stamping
//! never changes the event's length.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;

/// Digits of the send-time stamp.
const STAMP_DIGITS: usize = 16;
/// What precedes the stamp in the event JSON.
const STAMP_KEY: &[u8] = b"\"sent\":\"";

/// Latencies above an hour are recorded as an hour.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// The event JSON, padded to `bytes` (when that is at least its
/// skeleton's length), with a zeroed stamp; and the stamp's offset in it.
pub(crate) fn event_json(bytes: usize, stream: &str) -> (Vec<u8>, usize) {
    let head = format!(r#"{{"type":"bench.fanout","stream":"{stream}","#);
    let stamp_at = head.len() + STAMP_KEY.len();
    let mut out = head.into_bytes();
    out.extend_from_slice(STAMP_KEY);
    out.extend(std::iter::repeat_n(b'0', STAMP_DIGITS));
    out.extend_from_slice(b"\",\"data\":\"");
    let tail = b"\"}";
    let pad = bytes.saturating_sub(out.len() + tail.len());
    out.extend(std::iter::repeat_n(b'x', pad));
    out.extend_from_slice(tail);
    (out, stamp_at)
}

/// Writes `ns` into the stamp at `at`.
pub(crate) fn stamp(frame: &mut [u8], at: usize, mut ns: u64) {
    for b in frame[at..at + STAMP_DIGITS].iter_mut().rev() {
        *b = b'0' + (ns % 10) as u8;
        ns /= 10;
    }
}

/// The stamp in a received message, if it has one.
pub(crate) fn read_stamp(msg: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(msg, STAMP_KEY)? + STAMP_KEY.len();
    let digits = msg.get(at..at + STAMP_DIGITS)?;
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// Nanoseconds from `base` to `now`.
pub(crate) fn since(base: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn histogram() -> Histogram<u64> {
    // Constant, valid bounds: creation cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// Publish → receive latencies of every subscriber of a run, nanoseconds.
/// Each subscriber records what one read brought in one lock.
pub(crate) type SharedLatency = Arc<Mutex<Histogram<u64>>>;

/// What one subscriber saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Events received.
    pub(crate) delivered: u64,
    /// Lag notices received (busbar only).
    pub(crate) lag_notices: u64,
    /// Events the notices said were missed.
    pub(crate) missed: u64,
    /// When the last event arrived.
    pub(crate) last: Option<Instant>,
    /// Latencies of the current read, not yet in the shared histogram.
    pending: Vec<u64>,
    /// A protocol error that ended the subscriber.
    pub(crate) error: Option<String>,
}

impl Tally {
    /// Counts an event received at `now`.
    pub(crate) fn event(&mut self, msg: &[u8], base: Instant, now: Instant) {
        self.delivered += 1;
        self.last = Some(now);
        if let Some(sent) = read_stamp(msg) {
            let ns = since(base, now).saturating_sub(sent);
            self.pending.push(ns.clamp(1, MAX_LATENCY_NS));
        }
    }

    /// Moves this read's latencies into `shared`.
    pub(crate) fn flush(&mut self, shared: &SharedLatency) {
        if self.pending.is_empty() {
            return;
        }
        // A poisoned lock only means another subscriber panicked mid-record.
        let mut h = shared.lock().unwrap_or_else(|p| p.into_inner());
        for &ns in &self.pending {
            let _ = h.record(ns);
        }
        self.pending.clear();
    }

    /// Whether every published event is accounted for.
    pub(crate) fn complete(&self, events: u64) -> bool {
        self.delivered + self.missed >= events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_padded_json_and_stamps_round_trip() {
        for n in [10, 200, 1000] {
            let (mut e, at) = event_json(n, "s");
            stamp(&mut e, at, 1_234_567_890);
            let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
            assert_eq!(v["sent"], "0000001234567890");
            assert_eq!(read_stamp(&e), Some(1_234_567_890));
            if n >= 100 {
                assert_eq!(e.len(), n);
            }
        }
        assert_eq!(read_stamp(br#"{"sent":"12"}"#), None);
    }
}
