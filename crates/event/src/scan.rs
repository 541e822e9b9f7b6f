//! Walking the top-level members of a producer's JSON object.
//!
//! [`Checked`] validates as it walks, in one pass: it accepts exactly what
//! `serde_json` accepts as one value (RFC 8259: no comments, no trailing
//! commas, strict numbers, no control characters in strings, valid UTF-8;
//! like `serde_json`, `\u` escapes are not checked for surrogate pairs).
//! It gives up ([`Rejected`]) on anything else, on a value that is not an
//! object, and on nesting deeper than [`MAX_DEPTH`]: the caller then asks
//! `serde_json` why, and walks a valid input again with [`Members`], which
//! trusts its input.

use std::ops::Range;

/// One top-level member: spans of its quoted key and of its value.
pub(crate) struct Member {
    pub(crate) key: Range<usize>,
    pub(crate) value: Range<usize>,
}

/// The one-pass scan did not accept the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejected;

/// Nesting [`Checked`] follows; deeper input takes the slow path.
pub(crate) const MAX_DEPTH: usize = 1024;

/// The members of a JSON object, validated in the same pass.
///
/// Yields every member, then `Some(Err(Rejected))` if anything up to the
/// end of the input is not valid JSON, or `None` once all of it is.
pub(crate) struct Checked<'a> {
    s: &'a [u8],
    pos: usize,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    AfterMember,
    Rejected,
    Done,
}

impl<'a> Checked<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        let state = if std::str::from_utf8(input).is_ok() {
            State::Start
        } else {
            State::Rejected
        };
        Checked {
            s: input,
            pos: 0,
            state,
        }
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
            Err(Rejected)
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
        self.value()?;
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
            Err(Rejected)
        }
    }

    fn step(&mut self) -> Result<Option<Member>, Rejected> {
        match self.state {
            State::Rejected => Err(Rejected),
            State::Done => Ok(None),
            State::Start => {
                self.ws();
                self.expect(b'{')?;
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
                    _ => Err(Rejected),
                }
            }
        }
    }

    /// A string starting at `"`.
    fn string(&mut self) -> Result<(), Rejected> {
        self.expect(b'"')?;
        loop {
            let i = string_stop(&self.s[self.pos..]).ok_or(Rejected)?;
            let stop = self.s[self.pos + i];
            self.pos += i + 1;
            match stop {
                b'"' => return Ok(()),
                b'\\' => {}
                _ => return Err(Rejected), // A control character.
            }
            match self.peek() {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
                Some(b'u') => {
                    let hex = self.s.get(self.pos + 1..self.pos + 5).ok_or(Rejected)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return Err(Rejected);
                    }
                    self.pos += 5;
                }
                _ => return Err(Rejected),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), Rejected> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(Rejected);
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Rejected),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Rejected);
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Rejected);
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Rejected> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Rejected)
        }
    }

    /// Any value starting at `pos`.
    fn value(&mut self) -> Result<(), Rejected> {
        match self.peek() {
            Some(b'{' | b'[') => self.nested(),
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
            _ => Err(Rejected),
        }
    }

    /// An object or array, followed with an explicit stack (no recursion).
    fn nested(&mut self) -> Result<(), Rejected> {
        let mut open = Nesting::default();
        loop {
            // A value is expected here.
            self.ws();
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        open.push(true)?;
                        self.key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        open.push(false)?;
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
                    _ => return Err(Rejected),
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
#[derive(Default)]
struct Nesting {
    bits: [u64; MAX_DEPTH / 64],
    depth: usize,
}

impl Nesting {
    fn push(&mut self, object: bool) -> Result<(), Rejected> {
        if self.depth == MAX_DEPTH {
            return Err(Rejected);
        }
        let (word, bit) = (self.depth / 64, self.depth % 64);
        if object {
            self.bits[word] |= 1 << bit;
        } else {
            self.bits[word] &= !(1 << bit);
        }
        self.depth += 1;
        Ok(())
    }

    fn top(&self) -> Option<bool> {
        let d = self.depth.checked_sub(1)?;
        Some(self.bits[d / 64] & (1 << (d % 64)) != 0)
    }

    fn pop(&mut self) {
        self.depth -= 1;
    }
}

/// The top-level members of a JSON object already validated by serde_json.
pub(crate) struct Members<'a> {
    scan: Scanner<'a>,
}

impl<'a> Members<'a> {
    /// `None` when the input is not an object.
    pub(crate) fn new(input: &'a [u8]) -> Option<Self> {
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
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    /// What the one-pass scan says: accepted, with every member's spans.
    fn checked(input: &[u8]) -> Option<Vec<(Range<usize>, Range<usize>)>> {
        Checked::new(input)
            .map(|m| m.map(|m| (m.key, m.value)))
            .collect::<Result<_, _>>()
            .ok()
    }

    fn serde_accepts_object(input: &[u8]) -> bool {
        serde_json::from_slice::<&RawValue>(input).is_ok()
            && input.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    }

    /// Asserts the scan agrees with serde_json, and with [`Members`] on
    /// accepted input.
    fn agrees(input: &[u8]) -> Result<(), TestCaseError> {
        let got = checked(input);
        prop_assert_eq!(
            got.is_some(),
            serde_accepts_object(input),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        if let Some(spans) = got {
            let trusted: Vec<_> = Members::new(input)
                .unwrap()
                .map(|m| (m.key, m.value))
                .collect();
            prop_assert_eq!(spans, trusted);
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
            r#"{"a":"\u00e9\ud800\n\"\\\/"}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12g4"}"#,
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"\u{7f}é\"}",
            "{\"a\":1}\n",
            "{\"a\"\n:\r1\t}",
        ] {
            agrees(input.as_bytes()).unwrap();
        }
        agrees(b"{\"a\":\"\xff\"}").unwrap();
    }

    proptest! {
        #[test]
        fn string_stop_finds_the_first_stop_byte(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let want = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            prop_assert_eq!(string_stop(&bytes), want);
        }
    }

    #[test]
    fn nesting_deeper_than_followed_is_left_to_serde_json() {
        let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert!(checked(deep(MAX_DEPTH).as_bytes()).is_some());
        assert!(checked(deep(MAX_DEPTH + 1).as_bytes()).is_none());
        assert!(serde_accepts_object(deep(MAX_DEPTH + 1).as_bytes()));
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Valid objects, compact or pretty, and one-byte mutations of them:
        /// the scan accepts exactly what serde_json accepts.
        #[test]
        fn agrees_with_serde_json_on_mutated_objects(
            members in proptest::collection::btree_map("[a-z]{0,3}", json(), 0..5),
            pretty in any::<bool>(),
            edit in 0u8..4,
            at in any::<prop::sample::Index>(),
            byte in mutation_byte(),
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
            agrees(&text)?;
        }

        /// Short soups of JSON tokens, mostly invalid.
        #[test]
        fn agrees_with_serde_json_on_token_soup(
            tokens in proptest::collection::vec(prop_oneof![
                Just("{"), Just("}"), Just("["), Just("]"), Just(","), Just(":"),
                Just("\""), Just("\"k\":"), Just("\\"), Just("\\u00e9"), Just("\\q"),
                Just(" "), Just("\n"), Just("0"), Just("12"), Just("-"), Just("."),
                Just("e"), Just("+"), Just("true"), Just("nul"), Just("null"),
                Just("a"), Just("é"), Just("\u{1}"),
            ], 0..24),
        ) {
            let text = tokens.concat();
            agrees(text.as_bytes())?;
            agrees(format!("{{{text}").as_bytes())?;
            agrees(format!("{{\"k\":{text}}}").as_bytes())?;
        }
    }
}
