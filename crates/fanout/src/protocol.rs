//! The live protocol: JSON text messages, over WebSocket at `/ws` or, one
//! message per line, on the events Unix socket and TCP ingest port.
//!
//! Client → busbar (`op`):
//! ```text
//! {"op":"hello","role":"producer|dashboard|overlay|consumer","session":"s1"}
//! {"op":"subscribe","id":"a","stream":"events","types":["order.*"],"tenant":"t","key":"k",
//!  "from":"live" | "<ms>-<seq>" | {"time":<ms>} | "after":"<ms>-<seq>",
//!  "slow":"drop" | "disconnect"}
//! {"op":"unsubscribe","id":"a"}
//! {"op":"join","room":"session:s1" | "broadcast:session:s1","stream":"events"}
//! {"op":"leave","room":"session:s1"}
//! {"op":"publish","ref":7,"events":[{...},{...}]}          (or "event":{...})
//! {"op":"set_delay","session":"s1","delay_ms":5000}        (director capability)
//! {"op":"ping"}
//! ```
//! busbar → client (`type`):
//! ```text
//! {"type":"event","sub":"a","event":{...rendered event...}}
//! {"type":"lagged","sub":"a","missed":12}      lossy subscription fell behind
//!                                              (or retention trimmed events
//!                                              before the feed read them)
//! {"type":"subscribed","sub":"a"} {"type":"joined","room":..} {"type":"left","room":..}
//! {"type":"ack","ref":7,"ids":["<ms>-<seq>",...]}  "duplicates":n when n events
//!                                              repeated an idempotency_key
//!                                              (their ids are the originals')
//! {"type":"delay","session":"s1","delay_ms":5000}
//! {"type":"error","error":"<reason>","message":"...","ref":..}
//! {"type":"pong"}
//! ```
//! A subscription `from` an id (inclusive), `after` an id (exclusive) or a
//! time is resumable: it catches up from the log, then goes live with no
//! gap and no duplicate. A client that reconnects resumes with the id of
//! the last event it handled as `after`, so that event is not repeated;
//! `from: "live"` is
//! lossy and bounded (a slow client is told how many events it missed).
//! `subscribed` is sent once the subscription is on the stream's feed: every
//! event appended after the client reads it is delivered (or counted in a
//! `lagged` notice).
//! Room `session:<id>` delivers the session's events live (lossy);
//! `broadcast:session:<id>` delivers them after the session's broadcast
//! delay, from the log. A connection whose `hello` says `role: "overlay"`
//! may join `broadcast:session:*` rooms only (an overlay on the live room
//! would show what the director delayed): another join is answered
//! `{"type":"error","error":"role_forbids_room",...}`.
//!
//! # Tenants
//! A tenant-bound token subscribes to, joins rooms on and publishes to its
//! tenant's streams only, and its subscriptions and rooms carry only events
//! of its tenant (whatever `tenant` a `subscribe` asks for). A session id
//! belongs to the tenant that used it first (a `hello`, an event naming
//! it, a `set_delay`; "no tenant" is an owner too): a `hello` or a
//! `set_delay` naming another tenant's session is answered
//! `{"type":"error","error":"session_taken",...}` and changes nothing.
//! `set_delay` needs the `director` scope and the session's tenant (an
//! untenanted director may set any session's delay), and a delay applies to
//! the rooms of that tenant only. Events another tenant publishes naming
//! the id are its own data: they count in its own statistics of the id,
//! never the owner's (see [`crate::sessions`]).
//!
//! # Over the Unix socket and TCP
//!
//! An ingest connection (`data/sock/events.sock`, TCP port 9478) switches
//! to this protocol at its first line holding one of the ops above; the
//! lines before it are published and answered first, in order (see
//! `busbar-ingest`). From then on each message is one line in each
//! direction, exactly the messages above:
//!
//! ```text
//! → {"hello":{"token":"<secret>"}}      (TCP with tokens; the ingest hello)
//! → {"op":"subscribe","id":"a","stream":"orders","from":"1700000000000-0"}
//! ← {"type":"subscribed","sub":"a"}
//! ← {"type":"event","sub":"a","event":{"id":"1700000000000-0","stream":"orders",...}}
//! → {"op":"join","room":"session:car7","stream":"telemetry"}
//! ← {"type":"joined","room":"session:car7"}
//! → {"op":"nope"}
//! ← {"type":"error","error":"bad_message","message":"unknown op `nope`: ...","ref":null}
//! ```
//!
//! What differs from WebSocket:
//! - The caller is who the connection's ingest hello said (the Unix socket
//!   is trusted); there is no Origin check.
//! - No heartbeat pings, and no silence timeout: a subscriber may stay
//!   quiet. A peer that goes away closes the socket (TCP keepalive finds a
//!   host that vanished), and the write deadline closes a peer that stops
//!   reading.
//! - The end of the client's input (it closes, or shuts down its sending
//!   side) ends the connection: the answers to what it sent are written,
//!   then busbar closes.
//! - A line over `max_message_bytes` is answered with `too_large` and the
//!   connection goes on; blank lines are skipped.
//!
//! # Input limits
//!
//! Every message is checked by busbar's own pass before serde_json reads
//! it ([`check_message`]): a published event may nest `max_depth` deep (64
//! by default, as on every transport), so a message two levels more (the
//! message and its `events` array); numbers and `\u` escapes follow the
//! event rules. A message past them is answered with `too_deep` or
//! `invalid_number` (without a `ref`: the message was not read), counted
//! in `busbar_ingest_errors_total`, and the connection goes on, as for an
//! event refused in a publish. (A message that is not JSON is a
//! `bad_message`, in serde_json's words, as before.)
//! - An event's `data` written by its producer over several lines arrives
//!   on one (newlines between JSON tokens become spaces).

use busbar_event::{
    json_string, json_string_len, render_event, rendered_len, Event, EventError, StreamName,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::sockets::Role;

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum From {
    /// New events only, lossy.
    Live,
    /// From this id (inclusive), resumable.
    Id(busbar_event::EventId),
    /// From this time (ms since the epoch), resumable.
    Time(u64),
}

/// What to do with a subscriber that cannot keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowPolicy {
    /// Lossy subscriptions skip events and send a `lagged` notice;
    /// resumable ones fall back to the log.
    #[default]
    Drop,
    /// Close the connection when a message cannot be queued within the
    /// write deadline.
    Disconnect,
}

/// A client message.
#[derive(Debug)]
pub(crate) enum ClientOp<'a> {
    Hello {
        role: Role,
        session: Option<String>,
    },
    Subscribe {
        id: String,
        stream: Option<String>,
        types: Option<Vec<String>>,
        tenant: Option<String>,
        key: Option<String>,
        /// Where it starts, from `from` or `after` (a bad one is told
        /// when the subscription is made, naming it).
        from: Result<From, &'static str>,
        slow: SlowPolicy,
    },
    Unsubscribe {
        id: String,
    },
    Join {
        room: String,
        stream: Option<String>,
    },
    Leave {
        room: String,
    },
    Publish {
        reference: Option<u64>,
        events: Option<Vec<&'a RawValue>>,
        event: Option<&'a RawValue>,
    },
    SetDelay {
        session: String,
        delay_ms: u64,
    },
    Ping,
}

/// Every field any op may carry. Parsed as a struct, not a tagged enum,
/// so event bodies stay borrowed raw JSON (byte-for-byte).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields<'a> {
    op: String,
    role: Option<Role>,
    session: Option<String>,
    id: Option<String>,
    stream: Option<String>,
    types: Option<Vec<String>>,
    tenant: Option<String>,
    key: Option<String>,
    #[serde(borrow)]
    from: Option<&'a RawValue>,
    after: Option<String>,
    slow: Option<SlowPolicy>,
    room: Option<String>,
    #[serde(rename = "ref")]
    reference: Option<u64>,
    #[serde(borrow)]
    events: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    delay_ms: Option<u64>,
}

fn need<T>(v: Option<T>, field: &str, op: &str) -> Result<T, String> {
    v.ok_or_else(|| format!("`{op}` needs `{field}`"))
}

impl<'a> ClientOp<'a> {
    /// Parses one client message.
    pub(crate) fn parse(text: &'a str) -> Result<ClientOp<'a>, String> {
        let f: Fields<'a> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let op = f.op.as_str();
        Ok(match op {
            "hello" => ClientOp::Hello {
                role: need(f.role, "role", op)?,
                session: f.session,
            },
            "subscribe" => ClientOp::Subscribe {
                id: need(f.id, "id", op)?,
                stream: f.stream,
                types: f.types,
                tenant: f.tenant,
                key: f.key,
                from: match (f.from, f.after) {
                    (Some(_), Some(_)) => Err("give `from` or `after`, not both"),
                    (None, Some(after)) => parse_after(&after),
                    (from, None) => parse_from(from),
                },
                slow: f.slow.unwrap_or_default(),
            },
            "unsubscribe" => ClientOp::Unsubscribe { id: need(f.id, "id", op)? },
            "join" => ClientOp::Join {
                room: need(f.room, "room", op)?,
                stream: f.stream,
            },
            "leave" => ClientOp::Leave { room: need(f.room, "room", op)? },
            "publish" => {
                if f.events.is_none() && f.event.is_none() {
                    return Err("`publish` needs `events` or `event`".to_owned());
                }
                ClientOp::Publish {
                    reference: f.reference,
                    events: f.events,
                    event: f.event,
                }
            }
            "set_delay" => ClientOp::SetDelay {
                session: need(f.session, "session", op)?,
                delay_ms: need(f.delay_ms, "delay_ms", op)?,
            },
            "ping" => ClientOp::Ping,
            other => {
                return Err(format!(
                    "unknown op `{other}`: hello, subscribe, unsubscribe, join, leave, publish, set_delay, ping"
                ))
            }
        })
    }
}

/// Checks a client message against the input limits before serde_json
/// reads it: nested at most `max_depth + 2` deep, so that the events of a
/// publish (inside the message and its `events` array) may nest
/// `max_depth` deep; a refusal for depth is told in an event's terms.
pub(crate) fn check_message(text: &str, max_depth: usize) -> Result<(), EventError> {
    busbar_event::check_json(text.as_bytes(), max_depth + 2).map_err(|e| match e {
        EventError::TooDeep { .. } => EventError::TooDeep {
            depth: max_depth + 1,
            limit: max_depth,
        },
        other => other,
    })
}

/// Parses `from`.
pub(crate) fn parse_from(raw: Option<&RawValue>) -> Result<From, &'static str> {
    const BAD: &str = "`from` is \"live\", an id \"<ms>-<seq>\" or {\"time\": <ms>}";
    let Some(raw) = raw else {
        return Ok(From::Live);
    };
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum F {
        Text(String),
        Time { time: u64 },
    }
    match serde_json::from_str::<F>(raw.get()).map_err(|_| BAD)? {
        F::Text(t) if t == "live" => Ok(From::Live),
        F::Text(t) => t.parse().map(From::Id).map_err(|_| BAD),
        F::Time { time } => Ok(From::Time(time)),
    }
}

/// Parses `after`: the id after which a subscription starts.
pub(crate) fn parse_after(after: &str) -> Result<From, &'static str> {
    let id: busbar_event::EventId = after
        .parse()
        .map_err(|_| "`after` is an id \"<ms>-<seq>\"")?;
    id.successor()
        .map(From::Id)
        .ok_or("`after` is the largest id: nothing comes after it")
}

/// Writes a JSON string (escaped) into `out`.
pub(crate) fn push_str(out: &mut String, s: &str) {
    // Subscription ids rarely need escaping: copy those as they are.
    if json_string_len(s) == s.len() + 2 {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned()));
    }
}

/// `{"type":"event","sub":<sub>,"event":<event rendered>}`, rendered
/// straight into the one buffer that becomes the message.
pub(crate) fn event_frame(stream: &StreamName, sub: &str, event: &Event) -> String {
    const HEAD: &[u8] = b"{\"type\":\"event\",\"sub\":";
    const MIDDLE: &[u8] = b",\"event\":";
    // Allocated to the exact size: the message becomes a shared buffer
    // without another allocation when its length is its capacity.
    let len = HEAD.len() + json_string_len(sub) + MIDDLE.len() + rendered_len(stream, event) + 1;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(HEAD);
    json_string(&mut out, sub);
    out.extend_from_slice(MIDDLE);
    render_event(&mut out, stream, event);
    out.push(b'}');
    // Every piece is UTF-8 (stored events were validated as JSON text).
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// An error message, with the request's `ref` when it had one.
pub fn error_frame(reason: &str, message: &str, reference: Option<u64>) -> String {
    serde_json::json!({"type": "error", "error": reason, "message": message, "ref": reference})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_checked_in_an_events_terms() {
        let publish = |depth: usize| {
            let n = depth - 1;
            format!(
                r#"{{"op":"publish","events":[{{"type":"t","d":{}1{}}}]}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert_eq!(check_message(&publish(64), 64), Ok(()));
        assert_eq!(
            check_message(&publish(65), 64),
            Err(EventError::TooDeep {
                depth: 65,
                limit: 64
            })
        );
        let deep_from = format!(
            r#"{{"op":"subscribe","id":"a","from":{}"#,
            "[".repeat(100_000)
        );
        assert!(matches!(
            check_message(&deep_from, 64),
            Err(EventError::TooDeep { .. })
        ));
        assert!(matches!(
            check_message(r#"{"op":"publish","ref":1e999,"event":{"type":"t"}}"#, 64),
            Err(EventError::InvalidNumber { .. })
        ));
        assert!(matches!(
            check_message(r#"{"op":"subscribe","id":"\ud800"}"#, 64),
            Err(EventError::MalformedJson { .. })
        ));
    }

    #[test]
    fn parses_ops_and_from() {
        let op = ClientOp::parse(r#"{"op":"subscribe","id":"a","from":{"time":5}}"#).unwrap();
        let ClientOp::Subscribe { from, .. } = op else {
            panic!()
        };
        assert_eq!(from, Ok(From::Time(5)));
        let op = ClientOp::parse(r#"{"op":"subscribe","id":"a","from":"3-1"}"#).unwrap();
        let ClientOp::Subscribe { from, .. } = op else {
            panic!()
        };
        assert_eq!(from, Ok(From::Id(busbar_event::EventId::new(3, 1))));
        // `after` is exclusive: it starts at the next id.
        let start = |text: &str| match ClientOp::parse(text).unwrap() {
            ClientOp::Subscribe { from, .. } => from,
            _ => panic!(),
        };
        assert_eq!(
            start(r#"{"op":"subscribe","id":"a","after":"3-1"}"#),
            Ok(From::Id(busbar_event::EventId::new(3, 2)))
        );
        assert!(
            start(r#"{"op":"subscribe","id":"a","after":"3-1","from":"3-1"}"#)
                .unwrap_err()
                .contains("not both")
        );
        assert!(start(r#"{"op":"subscribe","id":"a","after":"soon"}"#).is_err());
        assert!(start(&format!(
            r#"{{"op":"subscribe","id":"a","after":"{}-{}"}}"#,
            u64::MAX,
            u64::MAX
        ))
        .unwrap_err()
        .contains("largest"));
        assert!(ClientOp::parse(r#"{"op":"nope"}"#).is_err());
        assert!(ClientOp::parse(r#"{"op":"join"}"#)
            .unwrap_err()
            .contains("room"));
        let op = ClientOp::parse(r#"{"op":"publish","events":[{"type":"a","n":1.50}]}"#).unwrap();
        let ClientOp::Publish {
            events: Some(e), ..
        } = op
        else {
            panic!()
        };
        assert_eq!(e[0].get(), r#"{"type":"a","n":1.50}"#);
    }

    #[test]
    fn event_frames_embed_the_rendered_event_and_escape_the_id() {
        let mut batch = busbar_event::EventBatch::new();
        batch
            .push(&busbar_event::NewEvent::new("t", br#"{"n": 1}"#))
            .unwrap();
        batch.assign(1000, |_| busbar_event::EventId::new(1000, 0));
        let event = busbar_event::BatchIter::new(batch.seal()).next().unwrap();
        let stream = StreamName::new("s").unwrap();
        let rendered =
            r#"{"id":"1000-0","stream":"s","type":"t","received_at":1000,"data":{"n": 1}}"#;
        let plain = event_frame(&stream, "dash-1", &event);
        assert_eq!(
            plain,
            format!(r#"{{"type":"event","sub":"dash-1","event":{rendered}}}"#)
        );
        assert_eq!(plain.capacity(), plain.len(), "sized exactly");
        let escaped = event_frame(&stream, "a\"b\t\u{1}", &event);
        assert_eq!(
            escaped,
            format!(r#"{{"type":"event","sub":"a\"b\t\u0001","event":{rendered}}}"#)
        );
        assert_eq!(escaped.capacity(), escaped.len(), "sized exactly");
    }
}
