//! Walking the top-level members of an object already validated.

use std::ops::Range;

use crate::scan::Member;

/// The top-level members of a JSON object the one-pass scan accepted.
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

/// Walks JSON already validated.
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
