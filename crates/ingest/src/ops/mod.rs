//! Consumer-group operations on an ingest connection: telling an op line
//! from an event line, and decoding it into an [`Op`].
//!
//! A line is an op when its top-level object has an `op` member and no
//! `type` member (every event has a `type`, so no event is mistaken for an
//! op, and an event whose payload happens to carry an `op` field stays an
//! event). The protocol is described in the crate docs.
//!
//! The ops of the live protocol (`subscribe`, `join`...) are op lines too:
//! they decode to [`Op::Live`], which switches the connection to that
//! protocol when a live hub is installed.

mod run;

use std::time::Duration;

use busbar_event::{EventId, StreamName};
use busbar_store::group::{Exhausted, GroupConfig, GroupStart, NackOptions};
use serde::Deserialize;

use crate::answer::ErrorLine;

pub(crate) use run::{run, run_now};

/// Most ids one ack or nack may carry.
pub(crate) const MAX_IDS: usize = 10_000;

/// Default `count` of `read`, `claim` and `pending`.
const DEFAULT_COUNT: usize = 1;

/// A decoded op.
#[derive(Debug)]
pub(crate) enum Op {
    /// An op of the live protocol (one of [`LIVE_OPS`]): not run here; the
    /// connection is handed to the live hub, or, without one, answered
    /// with `unsupported`.
    Live {
        name: &'static str,
    },
    CreateGroup {
        stream: StreamName,
        group: String,
        start: GroupStart,
        config: GroupConfig,
    },
    Group {
        stream: StreamName,
        group: String,
    },
    Read {
        stream: StreamName,
        group: String,
        consumer: String,
        count: usize,
        block: Duration,
    },
    Ack {
        stream: StreamName,
        group: String,
        consumer: Option<String>,
        ids: Vec<EventId>,
    },
    Nack {
        stream: StreamName,
        group: String,
        consumer: String,
        ids: Vec<EventId>,
        opts: NackOptions,
    },
    Claim {
        stream: StreamName,
        group: String,
        consumer: String,
        min_idle: Duration,
        start: EventId,
        count: usize,
    },
    Pending {
        stream: StreamName,
        group: String,
        consumer: Option<String>,
        start: EventId,
        end: EventId,
        count: usize,
    },
}

impl Op {
    /// Whether running the op may wait (a `read` with `block_ms`): answers
    /// already due are written first so they are not held up.
    pub(crate) fn may_block(&self) -> bool {
        matches!(self, Op::Read { block, .. } if !block.is_zero())
    }

    /// Whether the op hands events to the caller (pointless, and harmful,
    /// once the caller cannot be answered: they would sit pending until
    /// `ack_wait`).
    pub(crate) fn delivers(&self) -> bool {
        matches!(self, Op::Read { .. } | Op::Claim { .. })
    }
}

/// Every member an op line may have.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    op: String,
    stream: Option<String>,
    group: Option<String>,
    consumer: Option<String>,
    count: Option<usize>,
    block_ms: Option<u64>,
    ids: Option<Vec<EventId>>,
    delay_ms: Option<u64>,
    terminal: Option<bool>,
    error: Option<String>,
    min_idle_ms: Option<u64>,
    start: Option<String>,
    end: Option<String>,
    max_deliver: Option<u32>,
    ack_wait_ms: Option<u64>,
    max_pending_per_consumer: Option<u32>,
    on_exhausted: Option<Exhausted>,
}

/// The op names, for error messages.
const OPS: &str = "create_group, group, read, ack, nack, claim, pending";

/// The ops of the live protocol (the same as on `/ws`). Any of them
/// switches a connection to that protocol.
pub(crate) const LIVE_OPS: [&str; 8] = [
    "hello",
    "subscribe",
    "unsubscribe",
    "join",
    "leave",
    "publish",
    "set_delay",
    "ping",
];

/// The live op named `name`, if it is one.
fn live_op(name: &str) -> Option<Op> {
    LIVE_OPS
        .iter()
        .find(|op| **op == name)
        .map(|name| Op::Live { name })
}

/// Decodes an op line (one [`busbar_event::parse_line_with`] called an op;
/// `name` is its `op` member when that is a string). A live op is known
/// by its name alone; a group op is decoded in one pass.
pub(crate) fn decode(
    line: &[u8],
    name: Option<&str>,
    default_stream: &StreamName,
) -> Result<Op, ErrorLine> {
    if let Some(op) = name.and_then(live_op) {
        return Ok(op);
    }
    match serde_json::from_slice::<Fields>(line) {
        Ok(f) => f.into_op(default_stream),
        Err(e) => {
            let message = e.to_string();
            let reason = if message.starts_with("missing field") {
                "missing_field"
            } else {
                "invalid_op"
            };
            Err(ErrorLine::new(reason, message))
        }
    }
}

impl Fields {
    fn into_op(self, default_stream: &StreamName) -> Result<Op, ErrorLine> {
        let f = self;
        f.check_members()?;
        let stream = match &f.stream {
            Some(s) => {
                StreamName::new(s).map_err(|e| ErrorLine::new("invalid_stream", e.to_string()))?
            }
            None => default_stream.clone(),
        };
        let op = match f.op.as_str() {
            "create_group" => Op::CreateGroup {
                group: f.need("group", f.group.clone())?,
                start: match f.start.as_deref() {
                    None | Some("$") => GroupStart::End,
                    Some("0" | "-") => GroupStart::Beginning,
                    Some(id) => GroupStart::After(parse_id("start", id)?),
                },
                config: f.group_config(),
                stream,
            },
            "group" => Op::Group {
                group: f.need("group", f.group.clone())?,
                stream,
            },
            "read" => Op::Read {
                group: f.need("group", f.group.clone())?,
                consumer: f.need("consumer", f.consumer.clone())?,
                count: f.count.unwrap_or(DEFAULT_COUNT),
                block: Duration::from_millis(f.block_ms.unwrap_or(0)),
                stream,
            },
            "ack" => Op::Ack {
                group: f.need("group", f.group.clone())?,
                consumer: f.consumer.clone(),
                ids: f.ids()?,
                stream,
            },
            "nack" => Op::Nack {
                group: f.need("group", f.group.clone())?,
                consumer: f.need("consumer", f.consumer.clone())?,
                ids: f.ids()?,
                opts: NackOptions {
                    delay: f.delay_ms.map(Duration::from_millis),
                    terminal: f.terminal.unwrap_or(false),
                    error: f.error.clone(),
                },
                stream,
            },
            "claim" => Op::Claim {
                group: f.need("group", f.group.clone())?,
                consumer: f.need("consumer", f.consumer.clone())?,
                min_idle: Duration::from_millis(f.need("min_idle_ms", f.min_idle_ms)?),
                start: bound("start", f.start.as_deref(), true)?,
                count: f.count.unwrap_or(DEFAULT_COUNT),
                stream,
            },
            "pending" => Op::Pending {
                group: f.need("group", f.group.clone())?,
                consumer: f.consumer.clone(),
                start: bound("start", f.start.as_deref(), true)?,
                end: bound("end", f.end.as_deref(), false)?,
                count: f.count.unwrap_or(DEFAULT_COUNT),
                stream,
            },
            other => {
                return Err(ErrorLine::new(
                    "unknown_op",
                    format!("unknown op `{}`: expected one of {OPS}", truncate(other)),
                ))
            }
        };
        Ok(op)
    }
}

impl Fields {
    fn need<T>(&self, name: &'static str, value: Option<T>) -> Result<T, ErrorLine> {
        value.ok_or_else(|| {
            ErrorLine::new(
                "missing_field",
                format!("op `{}` needs the field `{name}`", truncate(&self.op)),
            )
        })
    }

    fn ids(&self) -> Result<Vec<EventId>, ErrorLine> {
        let ids = self.need("ids", self.ids.clone())?;
        if ids.is_empty() || ids.len() > MAX_IDS {
            return Err(ErrorLine::new(
                "invalid_op",
                format!("`ids` must hold 1 to {MAX_IDS} ids, not {}", ids.len()),
            ));
        }
        Ok(ids)
    }

    fn group_config(&self) -> GroupConfig {
        let d = GroupConfig::default();
        GroupConfig {
            max_deliver: self.max_deliver.unwrap_or(d.max_deliver).max(1),
            ack_wait: self.ack_wait_ms.map_or(d.ack_wait, Duration::from_millis),
            max_pending_per_consumer: self
                .max_pending_per_consumer
                .unwrap_or(d.max_pending_per_consumer)
                .max(1),
            on_exhausted: self.on_exhausted.unwrap_or(d.on_exhausted),
        }
    }

    /// Refuses members the op does not use, so a misplaced field (a
    /// `block_ms` on a `claim`) is not silently ignored.
    fn check_members(&self) -> Result<(), ErrorLine> {
        let allowed: &[&str] = match self.op.as_str() {
            "create_group" => &[
                "start",
                "max_deliver",
                "ack_wait_ms",
                "max_pending_per_consumer",
                "on_exhausted",
            ],
            "group" => &[],
            "read" => &["consumer", "count", "block_ms"],
            "ack" => &["consumer", "ids"],
            "nack" => &["consumer", "ids", "delay_ms", "terminal", "error"],
            "claim" => &["consumer", "min_idle_ms", "start", "count"],
            "pending" => &["consumer", "start", "end", "count"],
            // Reported as an unknown op.
            _ => return Ok(()),
        };
        let present = [
            ("consumer", self.consumer.is_some()),
            ("count", self.count.is_some()),
            ("block_ms", self.block_ms.is_some()),
            ("ids", self.ids.is_some()),
            ("delay_ms", self.delay_ms.is_some()),
            ("terminal", self.terminal.is_some()),
            ("error", self.error.is_some()),
            ("min_idle_ms", self.min_idle_ms.is_some()),
            ("start", self.start.is_some()),
            ("end", self.end.is_some()),
            ("max_deliver", self.max_deliver.is_some()),
            ("ack_wait_ms", self.ack_wait_ms.is_some()),
            (
                "max_pending_per_consumer",
                self.max_pending_per_consumer.is_some(),
            ),
            ("on_exhausted", self.on_exhausted.is_some()),
        ];
        match present
            .iter()
            .find(|(name, set)| *set && !allowed.contains(name))
        {
            Some((name, _)) => Err(ErrorLine::new(
                "invalid_op",
                format!("op `{}` has no field `{name}`", self.op),
            )),
            None => Ok(()),
        }
    }
}

fn parse_id(field: &'static str, text: &str) -> Result<EventId, ErrorLine> {
    text.parse()
        .map_err(|e| ErrorLine::new("invalid_id", format!("`{field}`: {e}")))
}

/// A range bound: `-`, `+`, `<ms>` or `<ms>-<seq>`; the whole range when
/// absent.
fn bound(field: &'static str, text: Option<&str>, is_start: bool) -> Result<EventId, ErrorLine> {
    match text {
        None if is_start => Ok(EventId::ZERO),
        None => Ok(EventId::MAX),
        Some(t) => EventId::parse_bound(t, is_start)
            .map_err(|e| ErrorLine::new("invalid_id", format!("`{field}`: {e}"))),
    }
}

/// At most 64 bytes of client text in a message.
fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> StreamName {
        StreamName::new("events").unwrap()
    }

    /// What a connection does with a line: classify it in one pass, then
    /// decode it when it is an op (`None`: not an op).
    fn parse(line: &[u8], default_stream: &StreamName) -> Option<Result<Op, ErrorLine>> {
        let mut names = busbar_event::StreamNames::new(1);
        match busbar_event::parse_line_with(line, &busbar_event::Limits::default(), &mut names) {
            busbar_event::LineKind::Op(name) => Some(decode(line, name.as_deref(), default_stream)),
            _ => None,
        }
    }

    fn reason(line: &str) -> &'static str {
        match parse(line.as_bytes(), &events()) {
            Some(Err(e)) => e.reason,
            Some(Ok(op)) => panic!("{line} decoded as {op:?}"),
            None => panic!("{line} is not an op"),
        }
    }

    #[test]
    fn events_are_not_ops() {
        for line in [
            r#"{"type":"t"}"#,
            r#"{"type":"db.change","op":"insert"}"#,
            r#"{"op":"read","type":"t"}"#,
            r#"{"type":"t","data":{"op":"x"}}"#,
            r#"{"op":"read""#,
            r#"{"data":{"op":"read"}}"#,
        ] {
            assert!(parse(line.as_bytes(), &events()).is_none(), "{line}");
        }
    }

    #[test]
    fn ops_decode_with_defaults() {
        let op = parse(br#"{"op":"read","group":"g","consumer":"c"}"#, &events())
            .unwrap()
            .unwrap();
        match op {
            Op::Read {
                stream,
                count,
                block,
                ..
            } => {
                assert_eq!(stream.as_str(), "events");
                assert_eq!(count, 1);
                assert!(block.is_zero());
            }
            other => panic!("{other:?}"),
        }
        let op = parse(
            br#"{"op":"ack","stream":"s","group":"g","ids":["1-0","2-5"]}"#,
            &events(),
        )
        .unwrap()
        .unwrap();
        assert!(matches!(op, Op::Ack { consumer: None, ref ids, .. } if ids.len() == 2));
        let op = parse(
            br#"{"op":"create_group","stream":"s","group":"g","start":"0","max_deliver":2,"ack_wait_ms":50}"#,
            &events(),
        )
        .unwrap()
        .unwrap();
        match op {
            Op::CreateGroup { start, config, .. } => {
                assert_eq!(start, GroupStart::Beginning);
                assert_eq!(config.max_deliver, 2);
                assert_eq!(config.ack_wait, Duration::from_millis(50));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn live_ops_are_recognised_whatever_their_members() {
        for line in [
            r#"{"op":"subscribe","id":"a","stream":"orders","from":"0-1"}"#,
            r#"{"op":"subscribe","stream":"not a stream!"}"#,
            r#"{"id":"a","op":"subscribe"}"#,
            r#"{"op":"join","room":"session:s1"}"#,
            r#"{"op":"hello","role":"dashboard"}"#,
            r#"{"op":"ping"}"#,
            r#"{"op":"publish","events":[{"type":"t"}]}"#,
        ] {
            match parse(line.as_bytes(), &events()) {
                Some(Ok(Op::Live { name })) => assert!(line.contains(name), "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        // An event stays an event, even one naming a live op.
        assert!(parse(br#"{"type":"t","op":"subscribe"}"#, &events()).is_none());
    }

    #[test]
    fn bad_ops_name_what_is_wrong() {
        assert_eq!(reason(r#"{"op":"fetch","group":"g"}"#), "unknown_op");
        assert_eq!(reason(r#"{"op":"read","group":"g"}"#), "missing_field");
        assert_eq!(reason(r#"{"op":"ack","group":"g"}"#), "missing_field");
        assert_eq!(reason(r#"{"op":"ack","group":"g","ids":[]}"#), "invalid_op");
        assert_eq!(
            reason(r#"{"op":"ack","group":"g","ids":["x"]}"#),
            "invalid_op"
        );
        assert_eq!(
            reason(r#"{"op":"read","group":"g","consumer":"c","grop":1}"#),
            "invalid_op"
        );
        assert_eq!(
            reason(r#"{"op":"claim","group":"g","consumer":"c","min_idle_ms":1,"block_ms":5}"#),
            "invalid_op"
        );
        assert_eq!(
            reason(r#"{"op":"read","stream":"bad stream!","group":"g","consumer":"c"}"#),
            "invalid_stream"
        );
        assert_eq!(
            reason(r#"{"op":"pending","group":"g","start":"abc"}"#),
            "invalid_id"
        );
    }
}
