//! Producer sessions and clock drift.
//!
//! Every event that names a `session` counts towards that session: frames,
//! rate, first and last seen, and clock drift — receive time minus the
//! producer's `ts` — in an HDR histogram (p50, p95, max). When a session's
//! p95 drift crosses the threshold a `drift_warn` ops event is recorded
//! (once per crossing; it re-arms when p95 falls back under).
//!
//! ## Tenants
//! A session id belongs to the tenant that used it first (a producer's
//! `hello`, a published event naming it, a director's `set_delay`); the
//! publisher's tenant is its token's, and "no tenant" (an untenanted token,
//! a trusted socket, a daemon without tokens) is an owner like any other.
//! [`Sessions::claim`] refuses the id to any other tenant: another tenant's
//! `hello` with it is refused, and so is its director's `set_delay`.
//! Events are data of the tenant that published them, so they are never
//! refused for their `session`: statistics are kept per (tenant, id), and
//! another tenant's events naming an id count in that tenant's own entry
//! for it, never towards the owner's. Every statistic and ops event carries
//! its tenant, so an answer can be filtered by the caller's.
//!
//! The table is bounded: past `max_sessions` ids, the id used least
//! recently is forgotten, with its statistics and its owner.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use busbar_engine::{Journal, OpsEvent};
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

impl Session {
    fn new(now_ms: u64) -> Self {
        Session {
            frames: 0,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            window_start_ms: now_ms,
            window_frames: 0,
            last_window_frames: 0,
            drift: Histogram::new_with_max(MAX_DRIFT_MS, 2).expect("valid histogram bounds"),
            negative_drift_frames: 0,
            warned: false,
        }
    }
}

/// What `/api/ops/sessions` reports for one session.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStats {
    /// The session id.
    pub session_id: String,
    /// The tenant whose events these are (`None`: no tenant).
    pub tenant: Option<String>,
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
pub struct SessionEvent {
    /// Kind, e.g. `drift_warn`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The session concerned.
    pub session: String,
    /// The tenant it concerns (`None`: no tenant).
    pub tenant: Option<String>,
    /// Human-readable detail.
    pub detail: String,
}

/// A session id another tenant owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken;

/// Everything known of one session id.
#[derive(Debug)]
struct Entry {
    /// The tenant that used it first.
    owner: Option<String>,
    /// When anyone last used it, for eviction.
    last_used_ms: u64,
    /// Its events' statistics, by publishing tenant.
    stats: Vec<(Option<String>, Session)>,
}

/// The session table.
#[derive(Debug)]
pub struct Sessions {
    config: SessionConfig,
    /// [`SessionConfig::drift_warn`] in force; changed by a config reload
    /// ([`Sessions::set_drift_warn`]).
    drift_warn_ms: AtomicU64,
    inner: Mutex<Inner>,
    /// Where session starts, drift warnings and delay changes are also
    /// journaled.
    journal: Option<Journal>,
}

#[derive(Debug, Default)]
struct Inner {
    ids: HashMap<String, Entry>,
    ops: VecDeque<SessionEvent>,
}

impl Inner {
    /// The entry of `session`, made (owned by `tenant`) when it is new;
    /// the id used least recently is forgotten first past `max`.
    fn entry(
        &mut self,
        session: &str,
        tenant: Option<&str>,
        now_ms: u64,
        max: usize,
    ) -> &mut Entry {
        if !self.ids.contains_key(session) && self.ids.len() >= max.max(1) {
            let oldest = self
                .ids
                .iter()
                .min_by_key(|(_, e)| e.last_used_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.ids.remove(&k);
            }
        }
        let entry = self.ids.entry(session.to_owned()).or_insert_with(|| Entry {
            owner: tenant.map(str::to_owned),
            last_used_ms: now_ms,
            stats: Vec::new(),
        });
        entry.last_used_ms = entry.last_used_ms.max(now_ms);
        entry
    }
}

impl Sessions {
    /// An empty table.
    pub fn new(config: SessionConfig) -> Self {
        Sessions {
            drift_warn_ms: AtomicU64::new(
                u64::try_from(config.drift_warn.as_millis()).unwrap_or(u64::MAX),
            ),
            config,
            inner: Mutex::new(Inner::default()),
            journal: None,
        }
    }

    /// The same table, journaling session starts, drift warnings and
    /// delay changes in `journal` as well.
    #[must_use]
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    fn journal(&self, event: OpsEvent) {
        if let Some(journal) = &self.journal {
            journal.record(event);
        }
    }

    /// Changes the p95 drift above which a session gets a `drift_warn`,
    /// from its next event on.
    pub fn set_drift_warn(&self, drift_warn: Duration) {
        let ms = u64::try_from(drift_warn.as_millis()).unwrap_or(u64::MAX);
        self.drift_warn_ms.store(ms, Ordering::Relaxed);
    }

    /// Claims `session` for `tenant` (a producer's `hello`, a director's
    /// `set_delay`): an id nobody used yet becomes `tenant`'s; one of
    /// `tenant`'s own is fine.
    ///
    /// # Errors
    /// [`Taken`] when another tenant (or "no tenant", for a tenant-bound
    /// caller) owns it.
    pub fn claim(&self, tenant: Option<&str>, session: &str, now_ms: u64) -> Result<(), Taken> {
        let mut inner = self.inner.lock();
        let entry = inner.entry(session, tenant, now_ms, self.config.max_sessions);
        if entry.owner.as_deref() == tenant {
            Ok(())
        } else {
            Err(Taken)
        }
    }

    /// The tenant that owns `session` (`None` when nobody used it;
    /// `Some(None)` when it is "no tenant"'s).
    pub fn owner(&self, session: &str) -> Option<Option<String>> {
        self.inner.lock().ids.get(session).map(|e| e.owner.clone())
    }

    /// Records one event of `session`, published by `tenant`, received at
    /// `now_ms` with producer time `ts` (if any). It counts in `tenant`'s
    /// statistics of the id (see the module docs).
    pub fn observe(&self, tenant: Option<&str>, session: &str, ts: Option<i64>, now_ms: u64) {
        let mut inner = self.inner.lock();
        let entry = inner.entry(session, tenant, now_ms, self.config.max_sessions);
        let at = match entry.stats.iter().position(|(t, _)| t.as_deref() == tenant) {
            Some(at) => at,
            None => {
                entry
                    .stats
                    .push((tenant.map(str::to_owned), Session::new(now_ms)));
                let mut event = OpsEvent::new("session:start", "session")
                    .tenant(tenant)
                    .field("session", session);
                event.at_ms = now_ms;
                self.journal(event);
                entry.stats.len() - 1
            }
        };
        let s = &mut entry.stats[at].1;
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
        let limit = self.drift_warn_ms.load(Ordering::Relaxed);
        let warn = p95 > limit;
        let fire = warn && !s.warned;
        s.warned = warn;
        if fire {
            let event = SessionEvent {
                kind: "drift_warn",
                at_ms: now_ms,
                session: session.to_owned(),
                tenant: tenant.map(str::to_owned),
                detail: format!("drift p95 {p95} ms is over {limit} ms"),
            };
            tracing::warn!(
                session,
                tenant,
                drift_p95_ms = p95,
                threshold_ms = limit,
                "drift_warn"
            );
            // A producer's clock is its relay's: the runbook looks for
            // drift warnings among the relay's events (`type=relay`).
            let mut journaled = OpsEvent::new("drift_warn", "relay")
                .tenant(tenant)
                .field("session", session)
                .field("driftP95Ms", p95)
                .field("thresholdMs", limit);
            journaled.at_ms = now_ms;
            self.journal(journaled);
            self.push_ops(&mut inner, event);
        }
    }

    fn push_ops(&self, inner: &mut Inner, event: SessionEvent) {
        if inner.ops.len() >= self.config.max_ops_events {
            inner.ops.pop_front();
        }
        inner.ops.push_back(event);
    }

    /// Records an ops event about `tenant`'s `session` (e.g.
    /// `broadcast:delay:set`).
    pub fn record(
        &self,
        kind: &'static str,
        tenant: Option<&str>,
        session: &str,
        detail: String,
        now_ms: u64,
    ) {
        let mut journaled = OpsEvent::new(kind, "broadcast")
            .tenant(tenant)
            .field("session", session)
            .field("detail", detail.as_str());
        journaled.at_ms = now_ms;
        self.journal(journaled);
        let mut inner = self.inner.lock();
        self.push_ops(
            &mut inner,
            SessionEvent {
                kind,
                at_ms: now_ms,
                session: session.to_owned(),
                tenant: tenant.map(str::to_owned),
                detail,
            },
        );
    }

    /// Every session's statistics (one per tenant that published events
    /// naming it), most recently seen first.
    pub fn stats(&self) -> Vec<SessionStats> {
        let inner = self.inner.lock();
        let mut out: Vec<SessionStats> = inner
            .ids
            .iter()
            .flat_map(|(id, e)| e.stats.iter().map(move |(tenant, s)| (id, tenant, s)))
            .map(|(id, tenant, s)| SessionStats {
                session_id: id.clone(),
                tenant: tenant.clone(),
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
    pub fn ops_events(&self) -> Vec<SessionEvent> {
        self.inner.lock().ops.iter().cloned().collect()
    }

    /// Number of sessions with statistics (an id counts once per tenant
    /// whose events named it).
    pub fn len(&self) -> usize {
        self.inner.lock().ids.values().map(|e| e.stats.len()).sum()
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
            s.observe(None, "sess_1", Some(now - late), now as u64);
        }
        let stats = &s.stats()[0];
        assert_eq!(stats.frames, 100);
        assert_eq!(stats.drift_p50, 10);
        assert!(stats.drift_max >= 8990, "{}", stats.drift_max);
        assert!(!stats.drift_warn);
        for _ in 0..20 {
            s.observe(None, "sess_1", Some(now - 9000), now as u64);
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
            s.observe(None, &format!("s{i}"), None, 1000 + i);
        }
        let ids: Vec<String> = s.stats().into_iter().map(|x| x.session_id).collect();
        assert_eq!(ids, ["s9", "s8", "s7"]);
    }

    #[test]
    fn rate_counts_the_last_full_second() {
        let s = Sessions::new(SessionConfig::default());
        for i in 0..50 {
            s.observe(None, "r", None, 10_000 + i * 10);
        }
        s.observe(None, "r", None, 11_000);
        assert_eq!(s.stats()[0].rate, 50);
    }

    #[test]
    fn an_id_belongs_to_its_first_tenant_and_others_events_count_apart() {
        let s = Sessions::new(SessionConfig::default());
        let now = 1_000_000u64;
        s.observe(Some("a"), "car7", Some(now as i64 - 10), now);
        assert_eq!(s.owner("car7"), Some(Some("a".to_owned())));
        assert_eq!(s.claim(Some("a"), "car7", now), Ok(()));
        assert_eq!(s.claim(Some("b"), "car7", now), Err(Taken));
        assert_eq!(s.claim(None, "car7", now), Err(Taken));
        // Tenant b's events naming a's id: b's own entry, a's untouched.
        for _ in 0..50 {
            s.observe(Some("b"), "car7", Some(now as i64 - 80_000_000), now);
        }
        let stats = s.stats();
        let of = |t: &str| {
            stats
                .iter()
                .find(|x| x.tenant.as_deref() == Some(t))
                .unwrap()
        };
        assert_eq!(
            (of("a").frames, of("a").drift_max, of("a").drift_warn),
            (1, 10, false)
        );
        assert_eq!(of("b").frames, 50);
        assert!(of("b").drift_warn);
        assert_eq!(s.len(), 2);
        let warned: Vec<_> = s.ops_events().into_iter().map(|e| e.tenant).collect();
        assert_eq!(warned, [Some("b".to_owned())]);
        // Nobody owned it: the claim makes it the claimer's, "no tenant" too.
        assert_eq!(s.owner("free"), None);
        assert_eq!(s.claim(None, "free", now), Ok(()));
        assert_eq!(s.claim(Some("a"), "free", now), Err(Taken));
    }

    #[test]
    fn a_forgotten_id_forgets_its_owner() {
        let s = Sessions::new(SessionConfig {
            max_sessions: 1,
            ..SessionConfig::default()
        });
        s.claim(Some("a"), "x", 1).unwrap();
        s.claim(Some("b"), "y", 2).unwrap();
        assert_eq!(s.owner("x"), None);
        assert_eq!(s.claim(Some("b"), "x", 3), Ok(()));
    }
}
