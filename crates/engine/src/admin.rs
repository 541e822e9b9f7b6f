//! Administrative actions: what an operator changed, told to the hooks.
//!
//! Every call that changes a stream, a group, a dead-letter stream or a
//! job on an operator's behalf ends, once it has succeeded, with
//! [`Hook::administered`](crate::Hook::administered) for every hook, in
//! registration order, with the caller's [`Principal`] and an
//! [`AdminAction`] saying what was done. Refused calls (scope, tenant,
//! unknown stream) changed nothing and are not reported; they are counted
//! in `busbar_ingest_errors_total` like every other refusal.
//!
//! Side services that perform administrative actions of their own (the
//! fan-out's broadcast delays) report them with [`Engine::administered`],
//! so an audit log sees every action through one seam.
//!
//! An action carries its parameters, never a secret or a payload: token
//! secrets never reach the engine's calls, and dead-letter and replay
//! actions name events by id.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use busbar_engine::{AdminAction, Engine, Hook, Principal};
//! use busbar_event::StreamName;
//! use busbar_store::memory::MemoryStore;
//!
//! #[derive(Default)]
//! struct Journal(Mutex<Vec<String>>);
//!
//! impl Hook for Journal {
//!     fn name(&self) -> &'static str {
//!         "journal"
//!     }
//!     fn administered(&self, _who: &Principal, action: &AdminAction<'_>) {
//!         let line = format!("{} {}", action.name(), action.target());
//!         self.0.lock().unwrap().push(line);
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let engine = Engine::builder(Arc::new(MemoryStore::new())).build();
//! let journal = Arc::new(Journal::default());
//! engine.add_hook(journal.clone());
//! engine.set_all_paused(&Principal::Trusted, true).unwrap();
//! assert_eq!(*journal.0.lock().unwrap(), ["delivery.pause *"]);
//! # });
//! ```

use busbar_event::{EventId, StreamName};
use busbar_store::group::GroupStart;
use busbar_store::{Rotated, Trim, TypeFilter};
use serde_json::{json, Map, Value};

use crate::{Engine, JobKind, Principal, ReplaySpec, ReplayTarget};

/// Most ids an action's parameters list; the count is always exact.
pub const MAX_LISTED_IDS: usize = 1000;

/// What an operator did (see the module docs).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum AdminAction<'a> {
    /// A stream was trimmed.
    Trim {
        /// The stream.
        stream: &'a StreamName,
        /// How.
        trim: Trim,
        /// Events removed.
        removed: u64,
    },
    /// Events were deleted by id.
    DeleteEvents {
        /// The stream.
        stream: &'a StreamName,
        /// The ids asked for.
        ids: &'a [EventId],
        /// Events that existed and were deleted.
        deleted: u64,
    },
    /// A whole stream was deleted.
    DeleteStream {
        /// The stream.
        stream: &'a StreamName,
        /// Whether it existed.
        existed: bool,
    },
    /// Active segments were sealed.
    Rotate {
        /// The stream asked for (`None`: every stream the caller sees).
        stream: Option<&'a StreamName>,
        /// What each stream did.
        rotated: &'a [(StreamName, Rotated)],
        /// Why (the operator's words, or `requested`).
        reason: &'a str,
    },
    /// One dead-letter entry was moved back onto its stream.
    DlqReprocess {
        /// The main stream.
        stream: &'a StreamName,
        /// The entry's id in the dead-letter stream.
        dlq_id: EventId,
        /// The copy's id in the main stream.
        id: EventId,
    },
    /// A job moving dead-letter entries back was started.
    DlqReprocessAll {
        /// The main stream.
        stream: &'a StreamName,
        /// Only entries of these types, if given.
        types: Option<&'a TypeFilter>,
        /// Events per second.
        rate: u32,
        /// At most this many entries, if given.
        limit: Option<u64>,
        /// The job's id.
        job: &'a str,
    },
    /// One dead-letter entry was deleted.
    DlqDelete {
        /// The main stream.
        stream: &'a StreamName,
        /// The entry's id in the dead-letter stream.
        id: EventId,
    },
    /// Every dead-letter entry of a stream was deleted.
    DlqPurge {
        /// The main stream.
        stream: &'a StreamName,
        /// Entries deleted.
        removed: u64,
    },
    /// A replay job was started.
    ReplayStart {
        /// What it replays, and where to.
        spec: &'a ReplaySpec,
        /// Events per second.
        rate: u32,
        /// The job's id.
        job: &'a str,
    },
    /// A running job was asked to stop.
    JobCancel {
        /// The job's id.
        job: &'a str,
        /// Its kind.
        kind: JobKind,
    },
    /// A consumer group was created.
    GroupCreate {
        /// The stream.
        stream: &'a StreamName,
        /// The group.
        group: &'a str,
        /// Where it starts.
        start: GroupStart,
    },
    /// A consumer group was deleted.
    GroupDelete {
        /// The stream.
        stream: &'a StreamName,
        /// The group.
        group: &'a str,
        /// Whether it existed.
        existed: bool,
    },
    /// A group was paused or resumed.
    GroupPause {
        /// The stream.
        stream: &'a StreamName,
        /// The group.
        group: &'a str,
        /// Paused (true) or resumed.
        paused: bool,
    },
    /// All delivery the caller sees (its tenant's, or everyone's) was
    /// paused or resumed.
    PauseAll {
        /// Paused (true) or resumed.
        paused: bool,
    },
    /// The configuration was read again and its run-time keys applied.
    ConfigReload {
        /// What asked (`command`, `SIGHUP`).
        source: &'a str,
        /// Keys applied.
        applied: &'a [&'a str],
        /// Changed keys that wait for a restart.
        restart: &'a [&'a str],
    },
    /// A group's cursor was moved.
    GroupCursor {
        /// The stream.
        stream: &'a StreamName,
        /// The group.
        group: &'a str,
        /// The new cursor.
        cursor: EventId,
    },
    /// A consumer was removed from a group.
    ConsumerDelete {
        /// The stream.
        stream: &'a StreamName,
        /// The group.
        group: &'a str,
        /// The consumer.
        consumer: &'a str,
        /// Pending entries it held.
        pending: u64,
    },
    /// A live session's broadcast delay was set (by the fan-out).
    DelaySet {
        /// The session.
        session: &'a str,
        /// The tenant the delay is kept with.
        tenant: Option<&'a str>,
        /// The delay, in ms.
        delay_ms: u64,
    },
}

impl AdminAction<'_> {
    /// The action's name, `<noun>.<verb>` (`stream.trim`, `dlq.purge`,
    /// `group.pause`, `broadcast_delay.set`): stable, for filters and
    /// metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            AdminAction::Trim { .. } => "stream.trim",
            AdminAction::DeleteEvents { .. } => "events.delete",
            AdminAction::DeleteStream { .. } => "stream.delete",
            AdminAction::Rotate { .. } => "stream.rotate",
            AdminAction::DlqReprocess { .. } => "dlq.reprocess",
            AdminAction::DlqReprocessAll { .. } => "dlq.reprocess_all",
            AdminAction::DlqDelete { .. } => "dlq.delete",
            AdminAction::DlqPurge { .. } => "dlq.purge",
            AdminAction::ReplayStart { .. } => "replay.start",
            AdminAction::JobCancel { .. } => "job.cancel",
            AdminAction::GroupCreate { .. } => "group.create",
            AdminAction::GroupDelete { .. } => "group.delete",
            AdminAction::GroupPause { paused: true, .. } => "group.pause",
            AdminAction::GroupPause { paused: false, .. } => "group.resume",
            AdminAction::PauseAll { paused: true } => "delivery.pause",
            AdminAction::PauseAll { paused: false } => "delivery.resume",
            AdminAction::ConfigReload { .. } => "config.reload",
            AdminAction::GroupCursor { .. } => "group.set_cursor",
            AdminAction::ConsumerDelete { .. } => "consumer.delete",
            AdminAction::DelaySet { .. } => "broadcast_delay.set",
        }
    }

    /// What the action applies to: a stream, `<stream>/<group>`,
    /// `<stream>/<group>/<consumer>`, a job id, `session:<id>`, or `*`
    /// (everything the caller sees).
    pub fn target(&self) -> String {
        match self {
            AdminAction::Trim { stream, .. }
            | AdminAction::DeleteEvents { stream, .. }
            | AdminAction::DeleteStream { stream, .. }
            | AdminAction::DlqReprocess { stream, .. }
            | AdminAction::DlqReprocessAll { stream, .. }
            | AdminAction::DlqDelete { stream, .. }
            | AdminAction::DlqPurge { stream, .. } => stream.to_string(),
            AdminAction::Rotate { stream, .. } => {
                stream.map_or_else(|| "*".to_owned(), ToString::to_string)
            }
            AdminAction::ReplayStart { spec, .. } => spec.stream.to_string(),
            AdminAction::JobCancel { job, .. } => (*job).to_owned(),
            AdminAction::GroupCreate { stream, group, .. }
            | AdminAction::GroupDelete { stream, group, .. }
            | AdminAction::GroupPause { stream, group, .. }
            | AdminAction::GroupCursor { stream, group, .. } => format!("{stream}/{group}"),
            AdminAction::ConsumerDelete {
                stream,
                group,
                consumer,
                ..
            } => format!("{stream}/{group}/{consumer}"),
            AdminAction::PauseAll { .. } => "*".to_owned(),
            AdminAction::ConfigReload { .. } => "config".to_owned(),
            AdminAction::DelaySet { session, .. } => format!("session:{session}"),
        }
    }

    /// The action's parameters and outcome as a JSON object (ids, counts,
    /// limits; never a payload or a secret).
    pub fn params(&self) -> Value {
        let mut p = Map::new();
        match self {
            AdminAction::Trim { trim, removed, .. } => {
                p.insert("trim".into(), trim_params(*trim));
                p.insert("removed".into(), json!(removed));
            }
            AdminAction::DeleteEvents { ids, deleted, .. } => {
                p.insert("asked".into(), json!(ids.len()));
                p.insert("deleted".into(), json!(deleted));
                p.insert("ids".into(), ids_value(ids));
                if ids.len() > MAX_LISTED_IDS {
                    p.insert("ids_truncated".into(), json!(true));
                }
            }
            AdminAction::DeleteStream { existed, .. } => {
                p.insert("existed".into(), json!(existed));
            }
            AdminAction::Rotate {
                rotated, reason, ..
            } => {
                p.insert("reason".into(), json!(reason));
                let sealed: Vec<&str> = rotated
                    .iter()
                    .filter(|(_, r)| r.sealed)
                    .map(|(s, _)| s.as_str())
                    .collect();
                p.insert("streams".into(), json!(rotated.len()));
                p.insert("sealed".into(), json!(sealed));
            }
            AdminAction::DlqReprocess { dlq_id, id, .. } => {
                p.insert("dlq_id".into(), json!(dlq_id.to_string()));
                p.insert("id".into(), json!(id.to_string()));
            }
            AdminAction::DlqReprocessAll {
                types,
                rate,
                limit,
                job,
                ..
            } => {
                if let Some(limit) = limit {
                    p.insert("limit".into(), json!(limit));
                }
                if let Some(types) = types {
                    p.insert("types".into(), json!(types.patterns()));
                }
                p.insert("rate".into(), json!(rate));
                p.insert("job".into(), json!(job));
            }
            AdminAction::DlqDelete { id, .. } => {
                p.insert("id".into(), json!(id.to_string()));
            }
            AdminAction::DlqPurge { removed, .. } => {
                p.insert("removed".into(), json!(removed));
            }
            AdminAction::ReplayStart { spec, rate, job } => {
                p.insert("job".into(), json!(job));
                p.insert("start".into(), json!(spec.start.to_string()));
                if spec.end != EventId::MAX {
                    p.insert("end".into(), json!(spec.end.to_string()));
                }
                let (kind, name) = match &spec.target {
                    ReplayTarget::Stream(s) => ("stream", s.as_str()),
                    ReplayTarget::Group(g) => ("group", g.as_str()),
                    ReplayTarget::NewGroup { name, .. } => ("new_group", name.as_str()),
                };
                p.insert("target".into(), json!({ "kind": kind, "name": name }));
                if let Some(types) = &spec.types {
                    p.insert("types".into(), json!(types.patterns()));
                }
                if let Some(limit) = spec.limit {
                    p.insert("limit".into(), json!(limit));
                }
                p.insert("rate".into(), json!(rate));
            }
            AdminAction::JobCancel { kind, .. } => {
                p.insert("kind".into(), json!(kind.as_str()));
            }
            AdminAction::GroupCreate { start, .. } => {
                let start = match start {
                    GroupStart::Beginning => "0".to_owned(),
                    GroupStart::End => "$".to_owned(),
                    GroupStart::After(id) => id.to_string(),
                };
                p.insert("start".into(), json!(start));
            }
            AdminAction::GroupDelete { existed, .. } => {
                p.insert("existed".into(), json!(existed));
            }
            AdminAction::GroupPause { .. } | AdminAction::PauseAll { .. } => {}
            AdminAction::ConfigReload {
                source,
                applied,
                restart,
            } => {
                p.insert("source".into(), json!(source));
                p.insert("applied".into(), json!(applied));
                p.insert("restart_required".into(), json!(restart));
            }
            AdminAction::GroupCursor { cursor, .. } => {
                p.insert("cursor".into(), json!(cursor.to_string()));
            }
            AdminAction::ConsumerDelete { pending, .. } => {
                p.insert("pending".into(), json!(pending));
            }
            AdminAction::DelaySet {
                tenant, delay_ms, ..
            } => {
                p.insert("delay_ms".into(), json!(delay_ms));
                if let Some(t) = tenant {
                    p.insert("session_tenant".into(), json!(t));
                }
            }
        }
        Value::Object(p)
    }
}

fn trim_params(trim: Trim) -> Value {
    match trim {
        Trim::MaxLen { max, approx } => json!({"max_len": max, "approx": approx}),
        Trim::MinId { id, approx } => json!({"min_id": id.to_string(), "approx": approx}),
        Trim::MaxAge { age, approx } => {
            json!({"max_age_ms": u64::try_from(age.as_millis()).unwrap_or(u64::MAX), "approx": approx})
        }
        Trim::MaxBytes { max } => json!({"max_bytes": max}),
    }
}

fn ids_value(ids: &[EventId]) -> Value {
    Value::Array(
        ids.iter()
            .take(MAX_LISTED_IDS)
            .map(|id| Value::String(id.to_string()))
            .collect(),
    )
}

impl Engine {
    /// Tells every hook that `principal` performed `action` (see
    /// [`crate::admin`]). The engine calls it after each administrative
    /// action of its own; a side service calls it for the ones it
    /// performs (the fan-out's broadcast delays).
    pub fn administered(&self, principal: &Principal, action: &AdminAction<'_>) {
        for hook in self.hooks.load().iter() {
            hook.administered(principal, action);
        }
    }
}
