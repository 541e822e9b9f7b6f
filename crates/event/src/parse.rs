//! Producer JSON → [`ParsedEvent`].
//!
//! One pass over the input validates it and walks the top-level members of
//! the object; the reserved ones are decoded and the byte span of every
//! other member is kept, so the payload is the producer's text, not a
//! re-serialisation of it.
//!
//! What the pass accepts is what every reader busbar ships can read back:
//! JSON a strict parser (serde_json into a `Value`) reads, nested at most
//! [`Limits::max_depth`] deep, with numbers of at most 40 digits (4 in the
//! exponent) that a 64-bit float holds, and strings whose `\u` escapes are
//! whole characters (see `scan`). A syntax error's words come from
//! `serde_json`; every other refusal is the pass's own, and input past the
//! depth limit is never followed, by the pass or by `serde_json`.

use std::borrow::Cow;
use std::ops::Range;

use serde_json::value::RawValue;

use crate::members::Members;
use crate::scan::{Checked, Member, Rejected};
use crate::{EventError, EventId, StreamName, StreamNames};

/// Limits applied while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted event, in bytes of JSON.
    pub max_event_bytes: usize,
    /// Deepest accepted nesting of objects and arrays. The event's own
    /// object is depth 1, so `{"type":"t","a":[1]}` is 2 deep. Values
    /// from 1 to [`Limits::DEPTH_CEILING`]; a larger one acts as the
    /// ceiling.
    pub max_depth: usize,
}

impl Limits {
    /// The default [`Limits::max_depth`].
    pub const DEFAULT_MAX_DEPTH: usize = 64;

    /// The deepest [`Limits::max_depth`] honoured. Readers wrap a stored
    /// event in up to four levels of their own (a group delivery over
    /// HTTP: `{"deliveries":[{"event":{…,"data":{…}}}]}`), and serde_json,
    /// which every busbar reader uses, reads at most 127.
    pub const DEPTH_CEILING: usize = 100;

    /// The depth limit in force.
    fn depth(&self) -> usize {
        self.max_depth.clamp(1, Self::DEPTH_CEILING)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 1024 * 1024,
            max_depth: Self::DEFAULT_MAX_DEPTH,
        }
    }
}

const MAX_TYPE_LEN: usize = 256;
const MAX_TENANT_LEN: usize = 128;
const MAX_KEY_LEN: usize = 1024;
const MAX_SESSION_LEN: usize = 256;
const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// A producer's event, validated, borrowing from the input where it can.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEvent<'a> {
    /// `type`: required, 1 to 256 bytes.
    pub event_type: Cow<'a, str>,
    /// `stream`, if given.
    pub stream: Option<StreamName>,
    /// `tenant`, if given.
    pub tenant: Option<Cow<'a, str>>,
    /// `key`: the ordering / partition key, if given.
    pub key: Option<Cow<'a, str>>,
    /// `ts`: producer time in ms since the epoch, if given.
    pub ts: Option<i64>,
    /// `session`, if given.
    pub session: Option<Cow<'a, str>>,
    /// `idempotency_key`, if given.
    pub idempotency_key: Option<Cow<'a, str>>,
    /// An explicit id the caller asks for (not read from JSON; set by the
    /// transport, e.g. an HTTP `?id=` parameter).
    pub id: Option<EventId>,
    pub(crate) payload: Payload<'a>,
}

/// The payload members, without the surrounding braces.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Payload<'a> {
    /// The non-reserved members are one run of the input.
    Borrowed(&'a [u8]),
    /// They are interleaved with reserved members and were joined with `,`.
    Owned(Vec<u8>),
}

impl ParsedEvent<'_> {
    fn empty() -> Self {
        ParsedEvent {
            event_type: Cow::Borrowed(""),
            stream: None,
            tenant: None,
            key: None,
            ts: None,
            session: None,
            idempotency_key: None,
            id: None,
            payload: Payload::Borrowed(&[]),
        }
    }

    /// The members of the payload object without the braces.
    pub(crate) fn payload_members(&self) -> &[u8] {
        match &self.payload {
            Payload::Borrowed(b) => b,
            Payload::Owned(v) => v,
        }
    }

    /// The payload as a JSON object: every non-reserved member, byte-for-byte.
    pub fn payload_json(&self) -> Vec<u8> {
        let members = self.payload_members();
        let mut out = Vec::with_capacity(members.len() + 2);
        out.push(b'{');
        out.extend_from_slice(members);
        out.push(b'}');
        out
    }
}

/// Parses and validates one producer event.
///
/// # Errors
/// An [`EventError`] naming the reason: oversize input, malformed JSON,
/// nesting too deep, a number readers cannot take, not an object, missing
/// `type`, or a reserved field of the wrong type or size.
pub fn parse_event<'a>(input: &'a [u8], limits: &Limits) -> Result<ParsedEvent<'a>, EventError> {
    parse(input, limits, None, &mut Shape::default())
}

/// As [`parse_event`], reusing the [`StreamName`]s held by `names`: an
/// event whose `stream` is one `names` already holds gets a clone of it
/// (no allocation, no validation); a new name is validated and remembered.
///
/// A transport that parses many events of a few streams avoids one
/// allocation per event this way.
///
/// ```
/// use busbar_event::{parse_event_with, Limits, StreamNames};
///
/// let mut names = StreamNames::new(8);
/// let a = parse_event_with(br#"{"type":"t","stream":"orders"}"#, &Limits::default(), &mut names).unwrap();
/// let b = parse_event_with(br#"{"type":"t","stream":"orders"}"#, &Limits::default(), &mut names).unwrap();
/// assert_eq!(a.stream, b.stream);
/// assert_eq!(names.len(), 1);
/// ```
///
/// # Errors
/// As [`parse_event`].
pub fn parse_event_with<'a>(
    input: &'a [u8],
    limits: &Limits,
    names: &mut StreamNames,
) -> Result<ParsedEvent<'a>, EventError> {
    parse(input, limits, Some(names), &mut Shape::default())
}

/// What one line of the socket protocol holds: an event, an op (a
/// top-level `op` member and no `type` member: every event has a `type`,
/// so an event whose payload carries an `op` stays an event), or neither.
/// Decided in the one pass that parses an event.
#[derive(Debug, Clone, PartialEq)]
pub enum LineKind<'a> {
    /// An event, parsed.
    Event(ParsedEvent<'a>),
    /// An op line: its `op` member's text when it is a string (the op
    /// itself is for the caller to decode).
    Op(Option<Cow<'a, str>>),
    /// Not an event and not an op: why it is not an event.
    Invalid(EventError),
}

/// Parses one line of the socket protocol (see [`LineKind`]), reusing the
/// stream names of `names` like [`parse_event_with`].
///
/// ```
/// use busbar_event::{parse_line_with, Limits, LineKind, StreamNames};
///
/// let mut names = StreamNames::new(8);
/// let limits = Limits::default();
/// let op = parse_line_with(br#"{"op":"read","group":"g"}"#, &limits, &mut names);
/// assert!(matches!(op, LineKind::Op(Some(name)) if name == "read"));
/// let event = parse_line_with(br#"{"type":"t","op":"read"}"#, &limits, &mut names);
/// assert!(matches!(event, LineKind::Event(_)));
/// assert!(matches!(parse_line_with(b"{", &limits, &mut names), LineKind::Invalid(_)));
/// ```
pub fn parse_line_with<'a>(
    input: &'a [u8],
    limits: &Limits,
    names: &mut StreamNames,
) -> LineKind<'a> {
    let mut shape = Shape::default();
    match parse(input, limits, Some(names), &mut shape) {
        Ok(event) => LineKind::Event(event),
        // A line that is not acceptable JSON is neither, whatever it holds.
        Err(e)
            if shape.is_op()
                && !matches!(
                    e,
                    EventError::MalformedJson { .. }
                        | EventError::TooLarge { .. }
                        | EventError::TooDeep { .. }
                        | EventError::InvalidNumber { .. }
                ) =>
        {
            LineKind::Op(shape.op.map(|span| decode_key(&input[span])))
        }
        Err(e) => LineKind::Invalid(e),
    }
}

/// Which top-level members decide what a line is.
#[derive(Debug, Default)]
struct Shape {
    /// An `op` member: the span of its value when it is a string.
    has_op: bool,
    op: Option<Range<usize>>,
    /// A `type` member, valid or not.
    has_type: bool,
}

impl Shape {
    fn is_op(&self) -> bool {
        self.has_op && !self.has_type
    }
}

fn parse<'a>(
    input: &'a [u8],
    limits: &Limits,
    names: Option<&mut StreamNames>,
    shape: &mut Shape,
) -> Result<ParsedEvent<'a>, EventError> {
    if input.len() > limits.max_event_bytes {
        return Err(EventError::TooLarge {
            len: input.len(),
            limit: limits.max_event_bytes,
        });
    }
    // One pass validates the JSON and walks its members.
    let mut event = ParsedEvent::empty();
    let limit = limits.depth();
    let mut members = Checked::new(input, limit);
    match fields(input, &mut members, names, &mut event, shape) {
        Ok(done) => done.map(|()| event),
        Err(rejected) => Err(refusal(input, rejected, &members, limit)),
    }
}

/// Checks that `input` is one JSON value, of any kind, that the event
/// parser would accept as a member's value: JSON a strict parser reads,
/// nested at most `max_depth` deep (at most 127, the deepest serde_json
/// reads), numbers and `\u` escapes as for events. Sizes are the caller's:
/// every transport bounds what it reads.
///
/// A transport runs it on client JSON that is not an event (a live
/// protocol message, a request body) before serde_json decodes it, so no
/// client text deeper than the limits reaches serde_json, and the refusal
/// has the same reasons as an event's.
///
/// ```
/// use busbar_event::{check_json, EventError};
///
/// assert!(check_json(br#"{"op":"ack","ids":["1-0"]}"#, 4).is_ok());
/// assert!(check_json(b"[[1]]", 2).is_ok());
/// assert!(matches!(check_json(b"[[[1]]]", 2), Err(EventError::TooDeep { depth: 3, limit: 2 })));
/// assert!(matches!(check_json(b"[1e999]", 8), Err(EventError::InvalidNumber { at: 1, .. })));
/// assert!(matches!(check_json(b"[1,]", 8), Err(EventError::MalformedJson { .. })));
/// ```
///
/// # Errors
/// [`EventError::MalformedJson`], [`EventError::TooDeep`] or
/// [`EventError::InvalidNumber`].
pub fn check_json(input: &[u8], max_depth: usize) -> Result<(), EventError> {
    let limit = max_depth.clamp(1, MAX_NESTING);
    let mut members = Checked::new(input, limit);
    while let Some(member) = members.next() {
        match member {
            Ok(_) | Err(Rejected::NotAnObject) => {}
            Err(rejected) => return Err(refusal(input, rejected, &members, limit)),
        }
    }
    Ok(())
}

/// The deepest nesting serde_json reads (its recursion limit is 128).
const MAX_NESTING: usize = 127;

/// The error for input the one pass (`scan`) refused.
fn refusal(input: &[u8], rejected: Rejected, scan: &Checked, limit: usize) -> EventError {
    let (at, reason) = scan.problem();
    match rejected {
        Rejected::Syntax => EventError::MalformedJson {
            reason: syntax_error(input),
        },
        Rejected::NotAnObject => EventError::NotAnObject,
        Rejected::TooDeep => EventError::TooDeep {
            depth: limit + 1,
            limit,
        },
        Rejected::Number => EventError::InvalidNumber { at, reason },
        Rejected::LoneSurrogate => EventError::MalformedJson {
            reason: format!("lone surrogate in a \\u escape at byte {at}"),
        },
    }
}

/// What serde_json says is wrong with `input`, which the one pass found
/// not to be JSON. serde_json stops at the first error and skips values
/// without recursion, so it reads no further than that pass did.
#[cold]
fn syntax_error(input: &[u8]) -> String {
    match serde_json::from_slice::<&RawValue>(input) {
        Err(e) => e.to_string(),
        // The pass and serde_json agree on syntax (property-tested).
        Ok(_) => "not valid JSON".to_owned(),
    }
}

/// Fills `event` (as [`ParsedEvent::empty`] leaves it) from the members of
/// `input`. `Err(Rejected)` when `members` does not accept the input: that
/// is reported even after a member was found wrong, as when the JSON is
/// validated first.
fn fields<'a>(
    input: &'a [u8],
    members: impl Iterator<Item = Result<Member, Rejected>>,
    mut names: Option<&mut StreamNames>,
    event: &mut ParsedEvent<'a>,
    shape: &mut Shape,
) -> Result<Result<(), EventError>, Rejected> {
    let mut seen_type = false;
    let mut seen = 0u8;
    // The payload members are usually one run of the input; only when a
    // reserved member sits between two of them are they collected (in a
    // second pass) and joined.
    let mut run: Option<Range<usize>> = None;
    let mut interleaved = false;
    let mut wrong: Option<EventError> = None;

    for m in members {
        let m = m?;
        let bit = reserved(&input[m.key.clone()]);
        // What the line is, whatever else is wrong with it.
        match bit {
            Some(0) => shape.has_type = true,
            None if is_op_key(&input[m.key.clone()]) => {
                shape.has_op = true;
                shape.op = (input.get(m.value.start) == Some(&b'"')).then(|| m.value.clone());
            }
            _ => {}
        }
        if wrong.is_some() {
            continue; // Only validating the rest.
        }
        let Some(bit) = bit else {
            let span = m.key.start..m.value.end;
            run = Some(match run {
                None => span,
                Some(r) => {
                    if interleaved_since(&r, &span, input) {
                        interleaved = true;
                    }
                    r.start..span.end
                }
            });
            continue;
        };
        let value = &input[m.value];
        if seen & (1 << bit) != 0 {
            wrong = Some(EventError::DuplicateField {
                field: FIELD_NAMES[bit as usize],
            });
            continue;
        }
        seen |= 1 << bit;
        if let Err(e) = reserved_field(event, bit, value, names.as_deref_mut()) {
            wrong = Some(e);
            continue;
        }
        seen_type |= bit == 0;
    }
    if let Some(e) = wrong {
        return Ok(Err(e));
    }
    if !seen_type {
        return Ok(Err(EventError::MissingType));
    }
    event.payload = match run {
        None => Payload::Borrowed(&[]),
        Some(r) if !interleaved => Payload::Borrowed(&input[r]),
        Some(r) => {
            let mut joined = Vec::with_capacity(r.len());
            // The input is known valid by now.
            let all = Members::new(input).ok_or(Rejected::Syntax)?;
            for m in all.filter(|m| reserved(&input[m.key.clone()]).is_none()) {
                if !joined.is_empty() {
                    joined.push(b',');
                }
                joined.extend_from_slice(&input[m.key.start..m.value.end]);
            }
            Payload::Owned(joined)
        }
    };
    Ok(Ok(()))
}

/// Decodes reserved field `bit` into `event`.
fn reserved_field<'a>(
    event: &mut ParsedEvent<'a>,
    bit: u8,
    value: &'a [u8],
    names: Option<&mut StreamNames>,
) -> Result<(), EventError> {
    match bit {
        0 => {
            event.event_type =
                string_field(value, "type", MAX_TYPE_LEN)?.ok_or(EventError::InvalidField {
                    field: "type",
                    reason: "must be a non-empty string",
                })?;
        }
        1 => {
            if let Some(name) = string_field(value, "stream", usize::MAX)? {
                event.stream = Some(match names {
                    Some(names) => names.get(&name)?,
                    None => StreamName::new(&name)?,
                });
            }
        }
        2 => event.tenant = string_field(value, "tenant", MAX_TENANT_LEN)?,
        3 => event.key = string_field(value, "key", MAX_KEY_LEN)?,
        4 => event.ts = ts_field(value)?,
        5 => event.session = string_field(value, "session", MAX_SESSION_LEN)?,
        _ => {
            event.idempotency_key = string_field(value, "idempotency_key", MAX_IDEMPOTENCY_KEY_LEN)?
        }
    }
    Ok(())
}

/// The bit of a reserved key (`"type"` is 0 ... `"idempotency_key"` is 6),
/// from its quoted JSON text.
fn reserved(quoted: &[u8]) -> Option<u8> {
    let inner = &quoted[1..quoted.len() - 1];
    if inner.contains(&b'\\') {
        // Escaped spelling of a key (`"\u0074ype"`): decode it first.
        return reserved_name(decode_key(quoted).as_bytes());
    }
    reserved_name(inner)
}

/// Whether a quoted key is `"op"` (however it is spelled).
fn is_op_key(quoted: &[u8]) -> bool {
    let inner = &quoted[1..quoted.len() - 1];
    if inner.contains(&b'\\') {
        return decode_key(quoted) == "op";
    }
    inner == b"op"
}

fn reserved_name(name: &[u8]) -> Option<u8> {
    match name {
        b"type" => Some(0),
        b"stream" => Some(1),
        b"tenant" => Some(2),
        b"key" => Some(3),
        b"ts" => Some(4),
        b"session" => Some(5),
        b"idempotency_key" => Some(6),
        _ => None,
    }
}

const FIELD_NAMES: [&str; 7] = [
    "type",
    "stream",
    "tenant",
    "key",
    "ts",
    "session",
    "idempotency_key",
];

/// Whether anything but `,` and whitespace lies between the run and `next`:
/// a reserved member in between makes the payload members non-contiguous.
fn interleaved_since(run: &Range<usize>, next: &Range<usize>, input: &[u8]) -> bool {
    input[run.end..next.start]
        .iter()
        .any(|b| !matches!(b, b',' | b' ' | b'\t' | b'\n' | b'\r'))
}

fn decode_key(quoted: &[u8]) -> Cow<'_, str> {
    let inner = &quoted[1..quoted.len() - 1];
    if !inner.contains(&b'\\') {
        // Valid JSON, so valid UTF-8.
        if let Ok(s) = std::str::from_utf8(inner) {
            return Cow::Borrowed(s);
        }
    }
    Cow::Owned(serde_json::from_slice::<String>(quoted).unwrap_or_default())
}

fn string_field<'a>(
    value: &'a [u8],
    field: &'static str,
    max: usize,
) -> Result<Option<Cow<'a, str>>, EventError> {
    if value == b"null" {
        return Ok(None);
    }
    if value.first() != Some(&b'"') {
        return Err(EventError::InvalidField {
            field,
            reason: "must be a string",
        });
    }
    let text = decode_key(value);
    if text.is_empty() {
        return Err(EventError::InvalidField {
            field,
            reason: "must not be empty",
        });
    }
    if text.len() > max {
        return Err(EventError::InvalidField {
            field,
            reason: "is too long",
        });
    }
    Ok(Some(text))
}

fn ts_field(value: &[u8]) -> Result<Option<i64>, EventError> {
    if value == b"null" {
        return Ok(None);
    }
    let invalid = EventError::InvalidField {
        field: "ts",
        reason: "must be an integer number of milliseconds",
    };
    let text = std::str::from_utf8(value).map_err(|_| invalid.clone())?;
    text.parse::<i64>().map(Some).map_err(|_| invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ParsedEvent<'_>, EventError> {
        parse_event(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn extracts_reserved_fields_and_keeps_the_rest_verbatim() {
        let e = parse(
            r#" {"a" : [1, {"b":"}"}], "type":"t", "tenant":"acme","key":"k1","ts":1700000000000,
               "session":"s","idempotency_key":"i","z":"\u0041" } "#,
        )
        .unwrap();
        assert_eq!(e.event_type, "t");
        assert_eq!(e.tenant.as_deref(), Some("acme"));
        assert_eq!(e.key.as_deref(), Some("k1"));
        assert_eq!(e.ts, Some(1_700_000_000_000));
        assert_eq!(e.session.as_deref(), Some("s"));
        assert_eq!(e.idempotency_key.as_deref(), Some("i"));
        assert_eq!(
            String::from_utf8(e.payload_json()).unwrap(),
            r#"{"a" : [1, {"b":"}"}],"z":"\u0041"}"#
        );
    }

    #[test]
    fn lines_are_events_ops_or_neither_in_one_pass() {
        let mut names = StreamNames::new(4);
        let kind = |s: &str, names: &mut StreamNames| match parse_line_with(
            s.as_bytes(),
            &Limits::default(),
            names,
        ) {
            LineKind::Event(e) => format!("event {}", e.event_type),
            LineKind::Op(name) => format!("op {name:?}"),
            LineKind::Invalid(e) => format!("invalid {e}"),
        };
        assert_eq!(
            kind(r#"{"op":"read","group":"g"}"#, &mut names),
            r#"op Some("read")"#
        );
        assert_eq!(
            kind(r#"{"group":"g","op":"ack"}"#, &mut names),
            r#"op Some("ack")"#
        );
        assert_eq!(
            kind(r#"{"\u006fp":"ack"}"#, &mut names),
            r#"op Some("ack")"#
        );
        assert_eq!(kind(r#"{"op":5}"#, &mut names), "op None");
        // A wrong reserved member before `op` does not hide it.
        assert_eq!(
            kind(r#"{"stream":"no spaces","op":"read"}"#, &mut names),
            r#"op Some("read")"#
        );
        assert_eq!(kind(r#"{"type":"t","op":"read"}"#, &mut names), "event t");
        assert!(kind(r#"{"op":"read","type":5}"#, &mut names).starts_with("invalid"));
        assert!(kind(r#"{"a":1}"#, &mut names).starts_with("invalid"));
        assert!(kind(r#"{"op":"read""#, &mut names).starts_with("invalid malformed"));
        assert!(kind(r#"[{"op":"read"}]"#, &mut names).starts_with("invalid"));
    }

    #[test]
    fn contiguous_payload_is_borrowed() {
        let e = parse(r#"{"type":"t","a":1, "b":{"c":[true,null]}}"#).unwrap();
        assert!(matches!(e.payload, Payload::Borrowed(_)));
        assert_eq!(e.payload_json(), br#"{"a":1, "b":{"c":[true,null]}}"#);
    }

    #[test]
    fn empty_payload() {
        let e = parse(r#"{"type":"t"}"#).unwrap();
        assert_eq!(e.payload_json(), b"{}");
        assert_eq!(e.stream, None);
    }

    #[test]
    fn reports_each_bad_input() {
        assert!(matches!(parse("{"), Err(EventError::MalformedJson { .. })));
        assert!(matches!(parse("[1]"), Err(EventError::NotAnObject)));
        assert!(matches!(parse(r#""x""#), Err(EventError::NotAnObject)));
        assert!(matches!(parse(r#"{"a":1}"#), Err(EventError::MissingType)));
        assert!(matches!(
            parse(r#"{"type":1}"#),
            Err(EventError::InvalidField { field: "type", .. })
        ));
        assert!(matches!(
            parse(r#"{"type":""}"#),
            Err(EventError::InvalidField { field: "type", .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"t","ts":1.5}"#),
            Err(EventError::InvalidField { field: "ts", .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"t","stream":"a/b"}"#),
            Err(EventError::InvalidStreamName { .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"t","type":"u"}"#),
            Err(EventError::DuplicateField { field: "type" })
        ));
        let big = format!(r#"{{"type":"t","p":"{}"}}"#, "x".repeat(100));
        assert!(matches!(
            parse_event(
                big.as_bytes(),
                &Limits {
                    max_event_bytes: 50,
                    ..Limits::default()
                }
            ),
            Err(EventError::TooLarge { limit: 50, .. })
        ));
    }

    #[test]
    fn parsing_with_held_stream_names_gives_the_same_events() {
        let mut names = StreamNames::new(2);
        for input in [
            r#"{"type":"t","stream":"a","x":1}"#,
            r#"{"x":1,"stream":"b","type":"t","y":[2]}"#,
            r#"{"type":"t","stream":"a"}"#,
            r#"{"type":"t","stream":"c/d"}"#,
            r#"{"type":"t","x":{"stream":"e"}}"#,
        ] {
            let plain = parse(input);
            let held = parse_event_with(input.as_bytes(), &Limits::default(), &mut names);
            assert_eq!(format!("{plain:?}"), format!("{held:?}"), "{input}");
        }
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn escaped_quotes_and_backslashes_stay_inside_strings() {
        let e = parse(r#"{"q":"a\"b\\","type":"t\"\\","r":["\\\"",{"s":"}"}]}"#).unwrap();
        assert_eq!(e.event_type, "t\"\\");
        assert_eq!(
            e.payload_json(),
            br#"{"q":"a\"b\\","r":["\\\"",{"s":"}"}]}"#
        );
    }

    #[test]
    fn malformed_json_wins_over_a_wrong_field_before_it() {
        assert!(matches!(
            parse(r#"{"type":1,"a":}"#),
            Err(EventError::MalformedJson { .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"t","type":"u","a":[}"#),
            Err(EventError::MalformedJson { .. })
        ));
        let e = parse(r#"{"type":1,"a":}"#).unwrap_err().to_string();
        let serde = serde_json::from_str::<&RawValue>(r#"{"type":1,"a":}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&serde), "{e}");
    }

    #[test]
    fn nesting_past_the_limit_is_refused_naming_the_depth() {
        let nested = |depth: usize| {
            let n = depth - 1;
            format!(
                r#"{{"type":"t","data":{}1{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(parse(&nested(64)).is_ok());
        let e = parse(&nested(65)).unwrap_err();
        assert_eq!(
            e,
            EventError::TooDeep {
                depth: 65,
                limit: 64
            }
        );
        assert_eq!(e.to_string(), "nesting depth 65 is over the limit of 64");
        let tight = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        assert!(parse_event(nested(3).as_bytes(), &tight).is_ok());
        assert!(matches!(
            parse_event(nested(4).as_bytes(), &tight),
            Err(EventError::TooDeep { depth: 4, limit: 3 })
        ));
        // Past the ceiling a limit acts as the ceiling.
        let loose = Limits {
            max_depth: 10_000,
            ..Limits::default()
        };
        assert!(parse_event(nested(Limits::DEPTH_CEILING).as_bytes(), &loose).is_ok());
        assert!(matches!(
            parse_event(nested(Limits::DEPTH_CEILING + 1).as_bytes(), &loose),
            Err(EventError::TooDeep {
                limit: Limits::DEPTH_CEILING,
                ..
            })
        ));
        // Before any field is judged, and whatever the value is.
        assert!(matches!(
            parse(&format!(
                r#"{{"type":{}"t"{}}}"#,
                "[".repeat(64),
                "]".repeat(64)
            )),
            Err(EventError::TooDeep { .. })
        ));
        assert!(matches!(
            parse(&format!("{}{}", "[".repeat(65), "]".repeat(65))),
            Err(EventError::TooDeep { .. })
        ));
        assert!(matches!(
            parse(&format!("{}{}", "[".repeat(64), "]".repeat(64))),
            Err(EventError::NotAnObject)
        ));
    }

    /// A 100,000-deep event is refused where it passes the limit: nothing
    /// after that is read (the unclosed rest would be a syntax error), and
    /// on a thread with a small stack (no recursion anywhere).
    #[test]
    fn a_hundred_thousand_deep_event_is_refused_at_the_limit() {
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| {
                let unclosed = format!(r#"{{"type":"t","data":{}"#, "[".repeat(100_000));
                assert!(matches!(
                    parse(&unclosed),
                    Err(EventError::TooDeep {
                        depth: 65,
                        limit: 64
                    })
                ));
                let closed = format!(
                    r#"{{"type":"t","data":{}{}}}"#,
                    "{\"a\":".repeat(100_000),
                    "}".repeat(100_000)
                );
                assert!(matches!(parse(&closed), Err(EventError::TooDeep { .. })));
                let mut names = StreamNames::new(1);
                assert!(matches!(
                    parse_line_with(unclosed.as_bytes(), &Limits::default(), &mut names),
                    LineKind::Invalid(EventError::TooDeep { .. })
                ));
                assert!(matches!(
                    check_json(closed.as_bytes(), 127),
                    Err(EventError::TooDeep {
                        depth: 128,
                        limit: 127
                    })
                ));
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn numbers_readers_cannot_take_are_refused() {
        for (input, at) in [
            (r#"{"type":"t","n":1e999999}"#, 16),
            (r#"{"type":"t","n":[1,-1e309]}"#, 19),
            (r#"{"n":1.7976931348623159e308,"type":"t"}"#, 5),
            (
                r#"{"type":"t","n":12345678901234567890123456789012345678901}"#,
                16,
            ),
            (r#"{"type":"t","n":{"m":1e-00001}}"#, 21),
        ] {
            match parse(input) {
                Err(EventError::InvalidNumber { at: got, .. }) => assert_eq!(got, at, "{input}"),
                other => panic!("{input}: {other:?}"),
            }
        }
        let e = parse(r#"{"type":"t","n":1e999999}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "number at byte 16 has an exponent of more than 4 digits"
        );
        // A reserved field's number too, before its own checks.
        assert!(matches!(
            parse(r#"{"type":"t","ts":1e400}"#),
            Err(EventError::InvalidNumber { .. })
        ));
        for input in [
            r#"{"type":"t","n":1.7976931348623157e308,"m":-5e-324,"z":0e9999}"#,
            r#"{"type":"t","n":1234567890123456789012345678901234567890}"#,
            r#"{"type":"t","n":1e-400}"#,
        ] {
            let e = parse(input).unwrap();
            serde_json::from_slice::<serde_json::Value>(&e.payload_json()).unwrap();
        }
    }

    #[test]
    fn half_a_surrogate_pair_is_malformed() {
        for input in [
            r#"{"type":"t","s":"\ud800"}"#,
            r#"{"type":"t","s":"\udc00\ud800"}"#,
            r#"{"type":"t","\ud800x":1}"#,
            r#"{"type":"\udfff"}"#,
        ] {
            let e = parse(input).unwrap_err();
            assert!(
                e.to_string()
                    .contains("lone surrogate in a \\u escape at byte"),
                "{input}: {e}"
            );
        }
        let e = parse(r#"{"type":"t","s":"\ud83d\ude00"}"#).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&e.payload_json()).unwrap()["s"],
            "😀"
        );
    }

    #[test]
    fn json_that_is_not_acceptable_is_never_an_op() {
        let mut names = StreamNames::new(1);
        let deep = format!(r#"{{"op":"ack","x":{}{}}}"#, "[".repeat(70), "]".repeat(70));
        for (line, reason) in [
            (deep.as_str(), "too_deep"),
            (r#"{"op":"ack","count":1e999}"#, "invalid_number"),
            (r#"{"op":"ack","group":"\udc00"}"#, "malformed"),
        ] {
            let kind = parse_line_with(line.as_bytes(), &Limits::default(), &mut names);
            let ok = matches!(
                (&kind, reason),
                (LineKind::Invalid(EventError::TooDeep { .. }), "too_deep")
                    | (
                        LineKind::Invalid(EventError::InvalidNumber { .. }),
                        "invalid_number"
                    )
                    | (
                        LineKind::Invalid(EventError::MalformedJson { .. }),
                        "malformed"
                    )
            );
            assert!(ok, "{line}: {kind:?}");
        }
    }

    #[test]
    fn escaped_reserved_key_is_recognised() {
        let e = parse(r#"{"\u0074ype":"t"}"#).unwrap();
        assert_eq!(e.event_type, "t");
    }

    /// The one-pass scan and the trusted walk behind serde_json decode
    /// valid input alike.
    fn both_paths(input: &str) -> (String, String) {
        let (mut a, mut b) = (ParsedEvent::empty(), ParsedEvent::empty());
        let bytes = input.as_bytes();
        let fast = fields(
            bytes,
            Checked::new(bytes, Limits::DEFAULT_MAX_DEPTH),
            None,
            &mut a,
            &mut Shape::default(),
        );
        let slow = fields(
            bytes,
            Members::new(bytes).unwrap().map(Ok),
            None,
            &mut b,
            &mut Shape::default(),
        );
        (format!("{fast:?} {a:?}"), format!("{slow:?} {b:?}"))
    }

    proptest::proptest! {
        /// Any JSON object with a type parses, and the payload re-parses to
        /// the same members as the input minus the reserved ones.
        #[test]
        fn payload_matches_input_members(
            members in proptest::collection::btree_map("[a-z]{1,6}", proptest::prelude::any::<i32>(), 0..6),
            type_pos in 0usize..6,
        ) {
            let mut parts: Vec<String> = members.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
            let pos = type_pos.min(parts.len());
            parts.insert(pos, "\"type\":\"t\"".to_owned());
            let input = format!("{{{}}}", parts.join(" , "));
            let (fast, slow) = both_paths(&input);
            proptest::prop_assert_eq!(fast, slow);
            let e = parse(&input).unwrap();
            let got: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&e.payload_json()).unwrap();
            let want: serde_json::Map<String, serde_json::Value> = members
                .iter()
                .filter(|(k, _)| !FIELD_NAMES.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
                .collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
