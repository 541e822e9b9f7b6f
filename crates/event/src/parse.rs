//! Producer JSON → [`ParsedEvent`].
//!
//! The whole input is validated by `serde_json` first; a small scanner then
//! walks the top-level members of the (now known valid) object, decodes the
//! reserved ones and keeps the byte span of every other member, so the payload
//! is the producer's text, not a re-serialisation of it.

use std::borrow::Cow;
use std::ops::Range;

use serde_json::value::RawValue;

use crate::{EventError, EventId, StreamName, StreamNames};

/// Size limits applied while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted event, in bytes of JSON.
    pub max_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 1024 * 1024,
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
/// An [`EventError`] naming the reason: oversize input, malformed JSON, not
/// an object, missing `type`, or a reserved field of the wrong type or size.
pub fn parse_event<'a>(input: &'a [u8], limits: &Limits) -> Result<ParsedEvent<'a>, EventError> {
    parse(input, limits, None)
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
    parse(input, limits, Some(names))
}

fn parse<'a>(
    input: &'a [u8],
    limits: &Limits,
    mut names: Option<&mut StreamNames>,
) -> Result<ParsedEvent<'a>, EventError> {
    if input.len() > limits.max_event_bytes {
        return Err(EventError::TooLarge {
            len: input.len(),
            limit: limits.max_event_bytes,
        });
    }
    if let Err(e) = serde_json::from_slice::<&RawValue>(input) {
        return Err(EventError::MalformedJson {
            reason: e.to_string(),
        });
    }
    let members = Members::new(input).ok_or(EventError::NotAnObject)?;

    let mut event = ParsedEvent {
        event_type: Cow::Borrowed(""),
        stream: None,
        tenant: None,
        key: None,
        ts: None,
        session: None,
        idempotency_key: None,
        id: None,
        payload: Payload::Borrowed(&[]),
    };
    let mut seen_type = false;
    let mut seen = 0u8;
    // The payload members are usually one run of the input; only when a
    // reserved member sits between two of them are they collected (in a
    // second pass) and joined.
    let mut run: Option<Range<usize>> = None;
    let mut interleaved = false;

    for m in members {
        let Some(bit) = reserved(&input[m.key.clone()]) else {
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
            return Err(EventError::DuplicateField {
                field: FIELD_NAMES[bit as usize],
            });
        }
        seen |= 1 << bit;
        match bit {
            0 => {
                event.event_type =
                    string_field(value, "type", MAX_TYPE_LEN)?.ok_or(EventError::InvalidField {
                        field: "type",
                        reason: "must be a non-empty string",
                    })?;
                seen_type = true;
            }
            1 => {
                if let Some(name) = string_field(value, "stream", usize::MAX)? {
                    event.stream = Some(match names.as_deref_mut() {
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
                event.idempotency_key =
                    string_field(value, "idempotency_key", MAX_IDEMPOTENCY_KEY_LEN)?
            }
        }
    }
    if !seen_type {
        return Err(EventError::MissingType);
    }
    event.payload = match run {
        None => Payload::Borrowed(&[]),
        Some(r) if !interleaved => Payload::Borrowed(&input[r]),
        Some(r) => {
            let mut joined = Vec::with_capacity(r.len());
            let all = Members::new(input).ok_or(EventError::NotAnObject)?;
            for m in all.filter(|m| reserved(&input[m.key.clone()]).is_none()) {
                if !joined.is_empty() {
                    joined.push(b',');
                }
                joined.extend_from_slice(&input[m.key.start..m.value.end]);
            }
            Payload::Owned(joined)
        }
    };
    Ok(event)
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

/// One top-level member: spans of its quoted key and of its value.
struct Member {
    key: Range<usize>,
    value: Range<usize>,
}

/// The top-level members of a JSON object already validated by serde_json.
struct Members<'a> {
    scan: Scanner<'a>,
}

impl<'a> Members<'a> {
    /// `None` when the input is not an object.
    fn new(input: &'a [u8]) -> Option<Self> {
        let mut scan = Scanner { s: input, pos: 0 };
        scan.skip_ws();
        if scan.peek() != Some(b'{') {
            return None;
        }
        scan.pos += 1;
        Some(Members { scan })
    }
}

impl Iterator for Members<'_> {
    type Item = Member;

    fn next(&mut self) -> Option<Member> {
        let scan = &mut self.scan;
        loop {
            scan.skip_ws();
            match scan.peek() {
                Some(b',') => scan.pos += 1,
                None | Some(b'}') => return None,
                _ => break,
            }
        }
        let key = scan.string();
        scan.skip_ws();
        scan.pos += 1; // ':'
        scan.skip_ws();
        let value_start = scan.pos;
        scan.value();
        Some(Member {
            key,
            value: value_start..scan.pos,
        })
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

/// Walks JSON already validated by serde_json.
struct Scanner<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Skips a string starting at `"`; returns its span including quotes.
    fn string(&mut self) -> Range<usize> {
        let start = self.pos;
        self.pos += 1;
        // Jump from quote or backslash to the next: payload strings are
        // most of an event's bytes.
        while let Some(i) = memchr::memchr2(b'"', b'\\', &self.s[self.pos..]) {
            self.pos += i + 1;
            if self.s[self.pos - 1] == b'"' {
                return start..self.pos;
            }
            self.pos += 1;
        }
        self.pos = self.s.len();
        start..self.pos
    }

    fn value(&mut self) {
        match self.peek() {
            Some(b'"') => {
                self.string();
            }
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                while let Some(b) = self.peek() {
                    match b {
                        b'"' => {
                            self.string();
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                return;
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
            }
            _ => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.pos += 1;
                }
            }
        }
    }
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
                    max_event_bytes: 50
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
    fn escaped_reserved_key_is_recognised() {
        let e = parse(r#"{"\u0074ype":"t"}"#).unwrap();
        assert_eq!(e.event_type, "t");
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
