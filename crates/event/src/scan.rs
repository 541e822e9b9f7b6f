//! Walking the top-level members of a producer's JSON object.
//!
//! [`Checked`] validates as it walks, in one pass, and accepts exactly what
//! a strict reader can read back: what `serde_json` reads into a `Value`
//! (RFC 8259: no comments, no trailing commas, strict numbers, no control
//! characters in strings, valid UTF-8, `\u` escapes that are whole
//! characters, numbers a 64-bit float holds), within busbar's own limits:
//! nesting at most `max_depth` deep (the object itself is depth 1) and
//! numbers of at most 40 digits before the exponent and 4 in it (see
//! `number`). It says why it stopped ([`Rejected`]);
//! only for a syntax error does the caller ask `serde_json` (which skips
//! values without recursion) for its words. Nothing deeper than the limit
//! is followed, by this pass or any other: the scan stops at the first
//! container past it.
//!
//! `members` walks input this pass accepted again, trusting it.

use std::ops::Range;

use crate::number::{number_rules, MAX_EXPONENT_DIGITS, MAX_NUMBER_DIGITS};

/// One top-level member: spans of its quoted key and of its value.
pub(crate) struct Member {
    pub(crate) key: Range<usize>,
    pub(crate) value: Range<usize>,
}

/// Why the one-pass scan did not accept the input. (Kept one byte wide:
/// every step of the scan returns it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Not JSON (`serde_json` says why).
    Syntax,
    /// One JSON value, valid within the limits, that is not an object.
    NotAnObject,
    /// A container opened past the depth limit.
    TooDeep,
    /// A number that breaks the number rules ([`Checked::problem`] says
    /// where and which).
    Number,
    /// A `\u` escape that is half of a surrogate pair
    /// ([`Checked::problem`] says where).
    LoneSurrogate,
}

/// The deepest nesting [`Nesting`] can hold.
const NESTING_BITS: usize = 128;

/// The members of a JSON object, validated in the same pass.
///
/// Yields every member, then `Some(Err(_))` if anything up to the end of
/// the input is not accepted, or `None` once all of it is.
pub(crate) struct Checked<'a> {
    s: &'a [u8],
    pos: usize,
    state: State,
    /// Deepest nesting accepted (the object itself is depth 1).
    max_depth: usize,
    /// Where a refused number or escape starts, and what is wrong.
    problem: (usize, &'static str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    AfterMember,
    Rejected,
    Done,
}

impl<'a> Checked<'a> {
    /// The members of `input`, nested at most `max_depth` deep (at least
    /// 1, at most [`NESTING_BITS`]).
    ///
    /// Iterating also validates a value that is not an object: it ends
    /// with `Err(Rejected::NotAnObject)` if that is all that is wrong.
    pub(crate) fn new(input: &'a [u8], max_depth: usize) -> Self {
        let state = if std::str::from_utf8(input).is_ok() {
            State::Start
        } else {
            State::Rejected
        };
        Checked {
            s: input,
            pos: 0,
            state,
            max_depth: max_depth.clamp(1, NESTING_BITS),
            problem: (0, ""),
        }
    }

    /// After [`Rejected::Number`] or [`Rejected::LoneSurrogate`]: the
    /// offset where the number or escape starts, and (for a number) which
    /// rule it breaks.
    pub(crate) fn problem(&self) -> (usize, &'static str) {
        self.problem
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), Rejected> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Rejected::Syntax)
        }
    }

    /// A member at `pos` (whitespace skipped): `"key" : value`.
    fn member(&mut self) -> Result<Member, Rejected> {
        let key_start = self.pos;
        self.string()?;
        let key = key_start..self.pos;
        self.ws();
        self.expect(b':')?;
        self.ws();
        let value_start = self.pos;
        self.value(1)?;
        Ok(Member {
            key,
            value: value_start..self.pos,
        })
    }

    /// The end of the object: only whitespace may follow it.
    fn end(&mut self) -> Result<(), Rejected> {
        self.ws();
        if self.pos == self.s.len() {
            Ok(())
        } else {
            Err(Rejected::Syntax)
        }
    }

    fn step(&mut self) -> Result<Option<Member>, Rejected> {
        match self.state {
            State::Rejected => Err(Rejected::Syntax),
            State::Done => Ok(None),
            State::Start => {
                self.ws();
                if self.peek() != Some(b'{') {
                    // Not an object, if it is JSON at all: validated whole
                    // (within the limits) to tell which.
                    self.value(0)?;
                    self.end()?;
                    return Err(Rejected::NotAnObject);
                }
                self.pos += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    self.end()?;
                    return Ok(None);
                }
                self.member().map(Some)
            }
            State::AfterMember => {
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.ws();
                        self.member().map(Some)
                    }
                    Some(b'}') => {
                        self.pos += 1;
                        self.end()?;
                        Ok(None)
                    }
                    _ => Err(Rejected::Syntax),
                }
            }
        }
    }

    /// A string starting at `"`.
    fn string(&mut self) -> Result<(), Rejected> {
        self.expect(b'"')?;
        loop {
            let i = string_stop(&self.s[self.pos..]).ok_or(Rejected::Syntax)?;
            let stop = self.s[self.pos + i];
            self.pos += i + 1;
            match stop {
                b'"' => return Ok(()),
                b'\\' => {}
                _ => return Err(Rejected::Syntax), // A control character.
            }
            match self.peek() {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
                Some(b'u') => self.unicode_escape()?,
                _ => return Err(Rejected::Syntax),
            }
        }
    }

    /// The four hex digits at `at`, as a UTF-16 code unit.
    fn hex4(&self, at: usize) -> Option<u16> {
        self.s.get(at..at + 4)?.iter().try_fold(0u16, |n, &b| {
            let digit = char::from(b).to_digit(16)?;
            Some(n << 4 | digit as u16)
        })
    }

    /// A `\u` escape, `pos` at its `u`: a character of its own, or a high
    /// surrogate followed by `\u` and a low one. Half a pair is valid
    /// RFC 8259 text but no character, and a strict reader (serde_json
    /// into a `String`) refuses it.
    fn unicode_escape(&mut self) -> Result<(), Rejected> {
        let at = self.pos - 1;
        let unit = self.hex4(self.pos + 1).ok_or(Rejected::Syntax)?;
        self.pos += 5;
        match unit {
            0xD800..=0xDBFF => {
                if self.s.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return self.lone_surrogate(at);
                }
                let low = self.hex4(self.pos + 2).ok_or(Rejected::Syntax)?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return self.lone_surrogate(at);
                }
                self.pos += 6;
                Ok(())
            }
            0xDC00..=0xDFFF => self.lone_surrogate(at),
            _ => Ok(()),
        }
    }

    #[cold]
    fn lone_surrogate(&mut self, at: usize) -> Result<(), Rejected> {
        self.problem = (at, "");
        Err(Rejected::LoneSurrogate)
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, within the
    /// number rules (`number`).
    fn number(&mut self) -> Result<(), Rejected> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let mut digits = match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(Rejected::Syntax);
                }
                1
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Rejected::Syntax),
        };
        if self.peek() == Some(b'.') {
            self.pos += 1;
            match self.digits() {
                0 => return Err(Rejected::Syntax),
                n => digits += n,
            }
        }
        let mut risky = digits > MAX_NUMBER_DIGITS;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            let negative = match self.peek() {
                Some(b'-') => {
                    self.pos += 1;
                    true
                }
                Some(b'+') => {
                    self.pos += 1;
                    false
                }
                _ => false,
            };
            let exponent = self.digits();
            if exponent == 0 {
                return Err(Rejected::Syntax);
            }
            // Below 10^40 times at most 10^99 stays far from 10^308: only
            // a longer exponent needs a closer look.
            risky |= exponent > 2 && (!negative || exponent > MAX_EXPONENT_DIGITS);
        }
        if risky {
            if let Err(reason) = number_rules(&self.s[start..self.pos]) {
                self.problem = (start, reason);
                return Err(Rejected::Number);
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Rejected> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Rejected::Syntax)
        }
    }

    /// Any value starting at `pos`, inside `depth` open containers.
    fn value(&mut self, depth: usize) -> Result<(), Rejected> {
        match self.peek() {
            Some(b'{' | b'[') => self.nested(depth),
            _ => self.scalar(),
        }
    }

    /// A string, number or literal.
    fn scalar(&mut self) -> Result<(), Rejected> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Rejected::Syntax),
        }
    }

    /// An object or array inside `depth` open containers, followed with an
    /// explicit stack (no recursion), up to the depth limit.
    fn nested(&mut self, depth: usize) -> Result<(), Rejected> {
        let mut open = Nesting {
            bits: [0; NESTING_BITS / 64],
            depth,
            base: depth,
            max: self.max_depth,
        };
        loop {
            // A value is expected here.
            self.ws();
            match self.peek() {
                Some(b'{') => {
                    open.room()?;
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        open.push(true);
                        self.key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    open.room()?;
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        open.push(false);
                        continue;
                    }
                }
                _ => self.scalar()?,
            }
            // A value is complete: close what it completes, up to the next
            // element or member.
            loop {
                let Some(object) = open.top() else {
                    return Ok(());
                };
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if object {
                            self.ws();
                            self.key()?;
                        }
                        break;
                    }
                    Some(b'}') if object => {
                        self.pos += 1;
                        open.pop();
                    }
                    Some(b']') if !object => {
                        self.pos += 1;
                        open.pop();
                    }
                    _ => return Err(Rejected::Syntax),
                }
            }
        }
    }

    /// `"key" :` inside a nested object.
    fn key(&mut self) -> Result<(), Rejected> {
        self.string()?;
        self.ws();
        self.expect(b':')
    }
}

impl Iterator for Checked<'_> {
    type Item = Result<Member, Rejected>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(m)) => {
                self.state = State::AfterMember;
                Some(Ok(m))
            }
            Ok(None) => {
                self.state = State::Done;
                None
            }
            Err(e) => {
                self.state = State::Done;
                Some(Err(e))
            }
        }
    }
}

/// The index of the first `"`, `\\` or control character (below 0x20) in
/// `s`, eight bytes at a time: for each byte, `b - k` borrows into the high
/// bit exactly when `b < k` (for `b < 0x80`), and `b ^ c` is zero exactly
/// when `b == c`. A borrow can only flag bytes after a real match, so the
/// lowest flagged byte is exact.
fn string_stop(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = ONES << 7;
    let below = |x: u64, k: u8| x.wrapping_sub(ONES * u64::from(k)) & !x;
    let mut at = 0;
    while let Some(bytes) = s.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        let x = u64::from_le_bytes(word);
        let found = (below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1)
            | below(x, 0x20))
            & HIGHS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    s[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

/// Which containers are open, innermost last: one bit each (1: object).
struct Nesting {
    bits: [u64; NESTING_BITS / 64],
    /// Containers open, those outside the scanned value included.
    depth: usize,
    /// Containers open outside the scanned value.
    base: usize,
    /// The most that may be open.
    max: usize,
}

impl Nesting {
    /// Whether one more container may open (empty ones count too: a
    /// reader's nesting limit does not care what they hold).
    fn room(&self) -> Result<(), Rejected> {
        if self.depth >= self.max {
            return Err(Rejected::TooDeep);
        }
        Ok(())
    }

    fn push(&mut self, object: bool) {
        let (word, bit) = (self.depth / 64, self.depth % 64);
        if object {
            self.bits[word] |= 1 << bit;
        } else {
            self.bits[word] &= !(1 << bit);
        }
        self.depth += 1;
    }

    /// Whether the innermost container of the scanned value is an object;
    /// `None` once the value is closed.
    fn top(&self) -> Option<bool> {
        if self.depth == self.base {
            return None;
        }
        let d = self.depth - 1;
        Some(self.bits[d / 64] & (1 << (d % 64)) != 0)
    }

    fn pop(&mut self) {
        self.depth -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::members::Members;
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    type Spans = Vec<(Range<usize>, Range<usize>)>;

    /// What the one-pass scan says: every member's spans, or why not.
    fn checked(input: &[u8], max_depth: usize) -> Result<Spans, Rejected> {
        scan(input, max_depth).0
    }

    /// As [`checked`], with the offset of a refused number or escape.
    fn scan(input: &[u8], max_depth: usize) -> (Result<Spans, Rejected>, usize) {
        let mut scan = Checked::new(input, max_depth);
        let got = scan.by_ref().map(|m| m.map(|m| (m.key, m.value))).collect();
        (got, scan.problem().0)
    }

    /// The deepest nesting of brackets outside strings, counted without
    /// the scan (stops making sense past a syntax error, where it is not
    /// used).
    fn bracket_depth(input: &[u8]) -> usize {
        let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
        for &b in input {
            match (in_string, escaped, b) {
                (true, true, _) => escaped = false,
                (true, false, b'\\') => escaped = true,
                (true, false, b'"') => in_string = false,
                (true, ..) => {}
                (false, _, b'"') => in_string = true,
                (false, _, b'[' | b'{') => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        deepest
    }

    /// The number literals of valid JSON text, with their offsets, found
    /// without the scan.
    fn numbers(input: &[u8]) -> Vec<(usize, &str)> {
        let text = std::str::from_utf8(input).unwrap();
        let (mut out, mut in_string, mut escaped, mut start) = (Vec::new(), false, false, None);
        for (i, c) in text.char_indices() {
            let in_number = !in_string && (c.is_ascii_digit() || "+-.eE".contains(c));
            match (start, in_number) {
                (None, true) => start = Some(i),
                (Some(s), false) => {
                    out.push((s, &text[s..i]));
                    start = None;
                }
                _ => {}
            }
            match (in_string, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (true, false, '"') => in_string = false,
                (false, _, '"') => in_string = true,
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push((s, &text[s..]));
        }
        out
    }

    /// Whether a number literal keeps the digit rules, counted without
    /// the scan.
    fn digits_ok(n: &str) -> bool {
        let n = n.trim_start_matches('-');
        let (mantissa, exponent) = n.split_once(['e', 'E']).unwrap_or((n, ""));
        let exponent = exponent.trim_start_matches(['+', '-']);
        mantissa.chars().filter(char::is_ascii_digit).count() <= 40 && exponent.len() <= 4
    }

    /// Asserts what the scan says against serde_json (the strict reader)
    /// and the limits: it accepts exactly the objects a strict reader
    /// reads whose nesting and numbers are within the limits; its syntax
    /// errors are serde_json's; every other refusal is for a reason the
    /// input really has. On accepted input the members are those the
    /// trusted walk finds.
    fn agrees(input: &[u8], max_depth: usize) -> Result<(), TestCaseError> {
        let shown = String::from_utf8_lossy(input);
        let (got, at) = scan(input, max_depth);
        let syntax_ok = serde_json::from_slice::<&RawValue>(input).is_ok();
        let value = serde_json::from_slice::<serde_json::Value>(input).ok();
        let within = |input: &[u8]| {
            bracket_depth(input) <= max_depth && numbers(input).iter().all(|(_, n)| digits_ok(n))
        };
        match &got {
            Ok(spans) => {
                prop_assert!(
                    value.as_ref().is_some_and(serde_json::Value::is_object),
                    "accepted what a reader cannot read: {shown:?}"
                );
                prop_assert!(within(input), "accepted past the limits: {shown:?}");
                let trusted: Spans = Members::new(input)
                    .unwrap()
                    .map(|m| (m.key, m.value))
                    .collect();
                prop_assert_eq!(spans, &trusted);
            }
            Err(Rejected::Syntax) => prop_assert!(!syntax_ok, "syntax error in JSON: {shown:?}"),
            Err(Rejected::NotAnObject) => prop_assert!(
                value.as_ref().is_some_and(|v| !v.is_object()) && within(input),
                "{shown:?}"
            ),
            Err(Rejected::TooDeep) => {
                prop_assert!(bracket_depth(input) > max_depth, "{shown:?}")
            }
            Err(Rejected::Number) => {
                let number = numbers(input).into_iter().find(|&(s, _)| s == at);
                prop_assert!(
                    number.is_some_and(|(_, n)| !digits_ok(n)
                        || serde_json::from_str::<serde_json::Value>(n).is_err()),
                    "{shown:?} at {at}"
                );
            }
            Err(Rejected::LoneSurrogate) => {
                prop_assert!(value.is_none(), "{shown:?}");
                prop_assert_eq!(&input[at..at + 2], b"\\u");
            }
        }
        // Readable, within the limits, an object: accepted.
        if value.as_ref().is_some_and(serde_json::Value::is_object) && within(input) {
            prop_assert!(got.is_ok(), "refused {shown:?}: {got:?}");
        }
        Ok(())
    }

    #[test]
    fn edge_cases_agree_with_serde_json() {
        for input in [
            "{}",
            " { } ",
            "{} x",
            "{",
            "",
            "[]",
            "1",
            r#"{"a":1}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"{"a":01}"#,
            r#"{"a":-0.5e+7}"#,
            r#"{"a":-}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":tru}"#,
            r#"{"a":truex}"#,
            r#"{"a":[1,[2,{"b":null}],"x"]}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":{"b":1,}}"#,
            r#"{"a":"\u00e9\ud83d\ude00\n\"\\\/"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\ud800\n"}"#,
            r#"{"a":"\udc00\ud800"}"#,
            r#"{"a":"\ud800\x"}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12g4"}"#,
            r#"{"a":1e999999}"#,
            r#"{"a":-1e309,"b":}"#,
            r#"{"a":1e-999999}"#,
            r#"{"a":0e99999}"#,
            r#"{"a":1.7976931348623157e308}"#,
            r#"{"a":1.7976931348623158e308}"#,
            r#"{"a":12345678901234567890123456789012345678901}"#,
            r#"[1e999]"#,
            r#""\udc00""#,
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"\u{7f}é\"}",
            "{\"a\":1}\n",
            "{\"a\"\n:\r1\t}",
        ] {
            agrees(input.as_bytes(), 64).unwrap();
        }
        agrees(b"{\"a\":\"\xff\"}", 64).unwrap();
    }

    proptest! {
        #[test]
        fn string_stop_finds_the_first_stop_byte(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let want = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(string_stop(&bytes), want);
        }
    }

    #[test]
    fn nesting_stops_at_the_limit_counting_the_object() {
        let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        for limit in [1, 2, 64, 127] {
            assert!(
                checked(deep(limit - 1).as_bytes(), limit).is_ok(),
                "{limit}"
            );
            assert_eq!(
                checked(deep(limit).as_bytes(), limit),
                Err(Rejected::TooDeep),
                "{limit}"
            );
        }
        // Objects count as arrays do; a value that is not an object too.
        assert!(checked(br#"{"a":{"b":{"c":1}}}"#, 3).is_ok());
        assert_eq!(
            checked(br#"{"a":{"b":{"c":{}}}}"#, 3),
            Err(Rejected::TooDeep)
        );
        assert_eq!(checked(br#"{"a":{"b":[]}}"#, 2), Err(Rejected::TooDeep));
        assert_eq!(checked(br#"{"a":[{}]}"#, 2), Err(Rejected::TooDeep));
        assert_eq!(checked(b"[[1]]", 2), Err(Rejected::NotAnObject));
        assert_eq!(checked(b"[[[1]]]", 2), Err(Rejected::TooDeep));
    }

    #[test]
    fn nothing_past_the_limit_is_read() {
        // Unclosed, then not even JSON: refused for its depth where the
        // limit is passed, so a 100,000-deep input costs the limit's worth.
        let mut input = format!("{{\"a\":{}", "[".repeat(100_000)).into_bytes();
        input.extend_from_slice(b"\xff");
        assert_eq!(
            checked(&input[..input.len() - 1], 64),
            Err(Rejected::TooDeep)
        );
        // (Invalid UTF-8 is found before the walk.)
        assert_eq!(checked(&input, 64), Err(Rejected::Syntax));
        let array = "[".repeat(100_000);
        assert_eq!(checked(array.as_bytes(), 64), Err(Rejected::TooDeep));
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "[a-z\"\\\\/\u{1}-\u{1f}é\u{10000}]{0,6}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z\"]{0,4}", inner, 0..5)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A byte likely to turn valid JSON into something else.
    fn mutation_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(b'{'),
            Just(b'}'),
            Just(b'['),
            Just(b']'),
            Just(b','),
            Just(b':'),
            Just(b'"'),
            Just(b'\\'),
            Just(b' '),
            Just(b'0'),
            Just(b'9'),
            Just(b'-'),
            Just(b'.'),
            Just(b'e'),
            Just(b'u'),
            Just(b'n'),
            Just(0x01),
            Just(0xc3),
            any::<u8>(),
        ]
    }

    /// A number literal near the rules' edges: up to 45 digits before the
    /// exponent, exponents of up to 6 digits, around 10^308 and 10^-324.
    fn hostile_number() -> impl Strategy<Value = String> {
        let int = prop_oneof![
            Just("0".to_owned()),
            "[1-9][0-9]{0,44}",
            Just("17976931348623157".to_owned())
        ];
        let fraction = proptest::option::of("[0-9]{1,45}");
        let exponent = proptest::option::of((
            prop_oneof![Just(""), Just("+"), Just("-")],
            prop_oneof!["[0-9]{1,6}", (290u32..330).prop_map(|e| e.to_string())],
        ));
        (any::<bool>(), int, fraction, exponent).prop_map(|(negative, int, fraction, exponent)| {
            let mut n = String::new();
            if negative {
                n.push('-');
            }
            n.push_str(&int);
            if let Some(f) = fraction {
                n.push('.');
                n.push_str(&f);
            }
            if let Some((sign, e)) = exponent {
                n.push('e');
                n.push_str(sign);
                n.push_str(&e);
            }
            n
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Valid objects, compact or pretty, and one-byte mutations of them,
        /// under a depth limit around their own depth.
        #[test]
        fn agrees_with_serde_json_on_mutated_objects(
            members in proptest::collection::btree_map("[a-z]{0,3}", json(), 0..5),
            pretty in any::<bool>(),
            edit in 0u8..4,
            at in any::<prop::sample::Index>(),
            byte in mutation_byte(),
            max_depth in 1usize..8,
        ) {
            let value = serde_json::Value::Object(members.into_iter().collect());
            let mut text = if pretty {
                serde_json::to_vec_pretty(&value).unwrap()
            } else {
                serde_json::to_vec(&value).unwrap()
            };
            let i = at.index(text.len());
            match edit {
                0 => {}
                1 => { text.remove(i); }
                2 => text.insert(i, byte),
                _ => text[i] = byte,
            }
            agrees(&text, max_depth)?;
        }

        /// Short soups of JSON tokens, mostly invalid.
        #[test]
        fn agrees_with_serde_json_on_token_soup(
            tokens in proptest::collection::vec(prop_oneof![
                Just("{"), Just("}"), Just("["), Just("]"), Just(","), Just(":"),
                Just("\""), Just("\"k\":"), Just("\\"), Just("\\u00e9"), Just("\\q"),
                Just("\\ud800"), Just("\\udfff"), Just("\\ud83d\\ude00"),
                Just(" "), Just("\n"), Just("0"), Just("12"), Just("-"), Just("."),
                Just("e"), Just("+"), Just("309"), Just("1e999"), Just("true"), Just("nul"), Just("null"),
                Just("a"), Just("é"), Just("\u{1}"),
            ], 0..24),
            max_depth in 1usize..5,
        ) {
            let text = tokens.concat();
            agrees(text.as_bytes(), max_depth)?;
            agrees(format!("{{{text}").as_bytes(), max_depth)?;
            agrees(format!("{{\"k\":{text}}}").as_bytes(), max_depth)?;
            agrees(format!("{{\"k\":\"{text}\"}}").as_bytes(), max_depth)?;
        }

        /// Numbers around every edge of the rules, alone and in arrays.
        #[test]
        fn agrees_with_serde_json_on_hostile_numbers(
            numbers in proptest::collection::vec(hostile_number(), 1..4),
        ) {
            let list = numbers.join(",");
            agrees(format!("{{\"n\":{}}}", numbers[0]).as_bytes(), 64)?;
            agrees(format!("{{\"n\":[{list}]}}").as_bytes(), 64)?;
        }

        /// Strings of `\u` escapes, half pairs among them.
        #[test]
        fn agrees_with_serde_json_on_unicode_escapes(
            units in proptest::collection::vec(prop_oneof![
                0xd800u16..0xdc00, 0xdc00u16..0xe000, Just(0x41), Just(0xe9), Just(0xfffe),
            ], 0..5),
            tail in prop_oneof![Just(""), Just("x"), Just("\\n"), Just("\\u")],
        ) {
            let escapes: String = units.iter().map(|u| format!("\\u{u:04x}")).collect();
            agrees(format!("{{\"s\":\"{escapes}{tail}\"}}").as_bytes(), 64)?;
            agrees(format!("{{\"{escapes}{tail}\":1}}").as_bytes(), 64)?;
        }
    }
}
