//! Producer sessions and clock drift.
//!
//! Every event that names a `session` counts towards that session: frames,
//! rate, first and last seen, and clock drift — receive time minus the
//! producer's `ts` — in an HDR histogram (p50, p95, max). When a session's
//! p95 drift crosses the threshold a `drift_warn` ops event is recorded
//! (once per crossing; it re-arms when p95 falls back under).
//!
//! The table is bounded: past `max_sessions`, the session seen least
//! recently is forgotten.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// Session tracking limits.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// p95 drift above which `drift_warn` fires (default 5000 ms).
    pub drift_warn: Duration,
    /// Sessions kept (default 10,000).
    pub max_sessions: usize,
    /// Ops events kept (default 1,000).
    pub max_ops_events: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            drift_warn: Duration::from_millis(5000),
            max_sessions: 10_000,
            max_ops_events: 1000,
        }
    }
}

/// Drift is recorded in ms, clamped to ± one day (a producer clock more
/// than a day off is reported at the clamp).
const MAX_DRIFT_MS: u64 = 86_400_000;

#[derive(Debug)]
struct Session {
    frames: u64,
    first_seen_ms: u64,
    last_seen_ms: u64,
    /// Frames in the current and previous 1-second windows, for the rate.
    window_start_ms: u64,
    window_frames: u64,
    last_window_frames: u64,
    /// |drift| in ms; the sign of the largest is kept separately.
    drift: Histogram<u64>,
    negative_drift_frames: u64,
    warned: bool,
}

/// What `/api/ops/sessions` reports for one session.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStats {
    /// The session id.
    pub session_id: String,
    /// Events seen.
    pub frames: u64,
    /// Events per second over the last full second.
    pub rate: u64,
    /// First event (ms since the epoch).
    pub first_seen: u64,
    /// Last event (ms since the epoch).
    pub last_seen: u64,
    /// Median |receive − ts| in ms.
    pub drift_p50: u64,
    /// 95th percentile |receive − ts| in ms.
    pub drift_p95: u64,
    /// Largest |receive − ts| in ms.
    pub drift_max: u64,
    /// Frames whose `ts` was ahead of busbar's clock.
    pub ahead_frames: u64,
    /// Whether p95 is over the warning threshold.
    pub drift_warn: bool,
}

/// An operational event (`drift_warn`, ...), for the ops API.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsEvent {
    /// Kind, e.g. `drift_warn`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The session concerned.
    pub session: String,
    /// Human-readable detail.
    pub detail: String,
}

/// The session table.
#[derive(Debug)]
pub struct Sessions {
    config: SessionConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    ops: VecDeque<OpsEvent>,
}

impl Sessions {
    /// An empty table.
    pub fn new(config: SessionConfig) -> Self {
        Sessions {
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Records one event of `session` received at `now_ms` with producer
    /// time `ts` (if any).
    pub fn observe(&self, session: &str, ts: Option<i64>, now_ms: u64) {
        let mut inner = self.inner.lock();
        if !inner.sessions.contains_key(session) && inner.sessions.len() >= self.config.max_sessions
        {
            let oldest = inner
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                inner.sessions.remove(&k);
            }
        }
        let s = inner
            .sessions
            .entry(session.to_owned())
            .or_insert_with(|| Session {
                frames: 0,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                window_start_ms: now_ms,
                window_frames: 0,
                last_window_frames: 0,
                drift: Histogram::new_with_max(MAX_DRIFT_MS, 2).expect("valid histogram bounds"),
                negative_drift_frames: 0,
                warned: false,
            });
        s.frames += 1;
        s.last_seen_ms = now_ms;
        if now_ms >= s.window_start_ms + 1000 {
            s.last_window_frames = if now_ms < s.window_start_ms + 2000 {
                s.window_frames
            } else {
                0
            };
            s.window_start_ms = now_ms - (now_ms - s.window_start_ms) % 1000;
            s.window_frames = 0;
        }
        s.window_frames += 1;
        let Some(ts) = ts else { return };
        let drift = now_ms as i64 - ts;
        if drift < 0 {
            s.negative_drift_frames += 1;
        }
        let _ = s.drift.record(drift.unsigned_abs().min(MAX_DRIFT_MS));
        let p95 = s.drift.value_at_quantile(0.95);
        let limit = self.config.drift_warn.as_millis() as u64;
        let warn = p95 > limit;
        let fire = warn && !s.warned;
        s.warned = warn;
        if fire {
            let event = OpsEvent {
                kind: "drift_warn",
                at_ms: now_ms,
                session: session.to_owned(),
                detail: format!("drift p95 {p95} ms is over {limit} ms"),
            };
            tracing::warn!(
                session,
                drift_p95_ms = p95,
                threshold_ms = limit,
                "drift_warn"
            );
            self.push_ops(&mut inner, event);
        }
    }

    fn push_ops(&self, inner: &mut Inner, event: OpsEvent) {
        if inner.ops.len() >= self.config.max_ops_events {
            inner.ops.pop_front();
        }
        inner.ops.push_back(event);
    }

    /// Records an ops event about `session` (e.g. `broadcast:delay:set`).
    pub fn record(&self, kind: &'static str, session: &str, detail: String, now_ms: u64) {
        let mut inner = self.inner.lock();
        self.push_ops(
            &mut inner,
            OpsEvent {
                kind,
                at_ms: now_ms,
                session: session.to_owned(),
                detail,
            },
        );
    }

    /// Every session, most recently seen first.
    pub fn stats(&self) -> Vec<SessionStats> {
        let inner = self.inner.lock();
        let mut out: Vec<SessionStats> = inner
            .sessions
            .iter()
            .map(|(id, s)| SessionStats {
                session_id: id.clone(),
                frames: s.frames,
                rate: s.last_window_frames,
                first_seen: s.first_seen_ms,
                last_seen: s.last_seen_ms,
                drift_p50: s.drift.value_at_quantile(0.5),
                drift_p95: s.drift.value_at_quantile(0.95),
                drift_max: s.drift.max(),
                ahead_frames: s.negative_drift_frames,
                drift_warn: s.warned,
            })
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.last_seen));
        out
    }

    /// Recorded ops events, oldest first.
    pub fn ops_events(&self) -> Vec<OpsEvent> {
        self.inner.lock().ops.iter().cloned().collect()
    }

    /// Number of sessions tracked.
    pub fn len(&self) -> usize {
        self.inner.lock().sessions.len()
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_percentiles_and_warning() {
        let s = Sessions::new(SessionConfig::default());
        let now = 1_000_000;
        for i in 0..100 {
            // 95 frames 10 ms late, 5 frames 9 s late.
            let late = if i < 95 { 10 } else { 9000 };
            s.observe("sess_1", Some(now - late), now as u64);
        }
        let stats = &s.stats()[0];
        assert_eq!(stats.frames, 100);
        assert_eq!(stats.drift_p50, 10);
        assert!(stats.drift_max >= 8990, "{}", stats.drift_max);
        assert!(!stats.drift_warn);
        for _ in 0..20 {
            s.observe("sess_1", Some(now - 9000), now as u64);
        }
        assert!(s.stats()[0].drift_warn);
        let ops = s.ops_events();
        assert_eq!(ops.len(), 1);
        assert_eq!(
            (ops[0].kind, ops[0].session.as_str()),
            ("drift_warn", "sess_1")
        );
    }

    #[test]
    fn table_is_bounded() {
        let s = Sessions::new(SessionConfig {
            max_sessions: 3,
            ..SessionConfig::default()
        });
        for i in 0..10u64 {
            s.observe(&format!("s{i}"), None, 1000 + i);
        }
        let ids: Vec<String> = s.stats().into_iter().map(|x| x.session_id).collect();
        assert_eq!(ids, ["s9", "s8", "s7"]);
    }

    #[test]
    fn rate_counts_the_last_full_second() {
        let s = Sessions::new(SessionConfig::default());
        for i in 0..50 {
            s.observe("r", None, 10_000 + i * 10);
        }
        s.observe("r", None, 11_000);
        assert_eq!(s.stats()[0].rate, 50);
    }
}
