//! busbar's event model.
//!
//! A producer sends one JSON object per event. A few top-level fields are
//! *reserved* and extracted: `type` (required), `stream` (default `events`),
//! `tenant`, `key`, `ts` (producer time in ms), `session` and
//! `idempotency_key`. Every other member is the payload, kept byte-for-byte in
//! the order it was sent.
//!
//! ```
//! use busbar_event::{parse_event, Limits};
//!
//! let line = br#"{"type":"order.created","stream":"orders","amount": 12.50}"#;
//! let parsed = parse_event(line, &Limits::default()).unwrap();
//! assert_eq!(parsed.event_type, "order.created");
//! assert_eq!(parsed.stream.as_ref().unwrap().as_str(), "orders");
//! assert_eq!(parsed.payload_json(), br#"{"amount": 12.50}"#);
//! ```
//!
//! What the parser accepts, every reader busbar ships can read back: JSON
//! that a strict parser (serde_json into a `Value`) reads, nested at most
//! [`Limits::max_depth`] deep (default 64), with numbers of at most 40
//! digits (4 in the exponent) that a 64-bit float holds. Anything else is
//! refused with a reason ([`EventError`]): `TooDeep`, `InvalidNumber`,
//! `MalformedJson` (a `\u` escape that is half a surrogate pair among
//! them). [`check_json`] applies the same rules to client JSON that is not
//! an event.
//!
//! Parsed events are encoded into an [`EventBatch`]: one buffer holding the
//! binary records a store writes as they are, so appending a batch costs one
//! allocation however many events it holds. A stored event is an [`Event`], a
//! cheap view over its record bytes.

#![warn(missing_docs)]

mod batch;
mod error;
mod id;
mod members;
mod number;
mod parse;
mod record;
mod render;
mod scan;
mod stream;

pub use batch::{BatchIter, EventBatch, FRAME_HEADER_LEN};
pub use error::EventError;
pub use id::{now_ms, EventId, IdClock, IdNotGreater};
pub use parse::{
    check_json, parse_event, parse_event_with, parse_line_with, Limits, LineKind, ParsedEvent,
};
pub use record::{Event, NewEvent, RECORD_HEADER_LEN};
pub use render::{json_string, json_string_len, render_event, rendered_len, write_id, write_u64};
pub use stream::{StreamName, StreamNames};

/// The stream an event goes to when it names none.
pub const DEFAULT_STREAM: &str = "events";
