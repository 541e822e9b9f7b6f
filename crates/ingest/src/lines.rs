//! Splitting a byte stream into lines with a length limit (ingest
//! connections, and the live hub's socket connections after a hand-over).

use bytes::{Buf, BytesMut};

/// One line taken from the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line within the limit, without its `\n`.
    Text(&'a [u8]),
    /// A line over the limit; its bytes were dropped.
    TooLong {
        /// The line's length, without the `\n`.
        len: usize,
    },
}

/// Splits `\n`-terminated lines out of a read buffer.
///
/// A line that grows past the limit before its newline arrives is not kept:
/// its bytes are dropped as they come and one [`Line::TooLong`] is reported
/// when it ends, so a producer cannot make busbar buffer an unbounded line.
#[derive(Debug)]
pub struct LineSplitter {
    max_line: usize,
    /// Bytes of an over-limit line dropped so far.
    discarding: Option<usize>,
}

impl LineSplitter {
    /// A splitter for lines of at most `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        LineSplitter {
            max_line,
            discarding: None,
        }
    }

    /// Changes the longest line taken from now on.
    pub fn set_limit(&mut self, max_line: usize) {
        self.max_line = max_line;
    }

    /// Calls `f` with every complete line of `buf` and removes them from it.
    /// At `eof` the unterminated rest counts as a last line.
    ///
    /// When `f` returns `false` splitting stops after that line: what
    /// follows it stays in `buf` as it was read (a connection that switches
    /// protocols hands those bytes on).
    pub fn split(&mut self, buf: &mut BytesMut, eof: bool, mut f: impl FnMut(Line<'_>) -> bool) {
        let mut start = 0;
        while let Some(i) = memchr::memchr(b'\n', &buf[start..]) {
            let line = &buf[start..start + i];
            let go_on = if let Some(dropped) = self.discarding.take() {
                f(Line::TooLong { len: dropped + i })
            } else if line.len() > self.max_line {
                f(Line::TooLong { len: line.len() })
            } else {
                f(Line::Text(line))
            };
            start += i + 1;
            if !go_on {
                buf.advance(start);
                return;
            }
        }
        let rest = buf.len() - start;
        if let Some(dropped) = &mut self.discarding {
            *dropped += rest;
            start = buf.len();
        } else if rest > self.max_line {
            self.discarding = Some(rest);
            start = buf.len();
        }
        if eof {
            if let Some(dropped) = self.discarding.take() {
                f(Line::TooLong { len: dropped });
            } else if start < buf.len() {
                f(Line::Text(&buf[start..]));
            }
            start = buf.len();
        }
        buf.advance(start);
    }

    /// Whether an over-limit line is being dropped.
    #[cfg(test)]
    pub(crate) fn is_discarding(&self) -> bool {
        self.discarding.is_some()
    }
}

/// Whether a line holds nothing but whitespace.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(splitter: &mut LineSplitter, buf: &mut BytesMut, eof: bool) -> Vec<String> {
        let mut out = Vec::new();
        splitter.split(buf, eof, |l| {
            out.push(match l {
                Line::Text(t) => String::from_utf8_lossy(t).into_owned(),
                Line::TooLong { len } => format!("<too long: {len}>"),
            });
            true
        });
        out
    }

    #[test]
    fn splits_complete_lines_and_keeps_the_rest() {
        let mut s = LineSplitter::new(100);
        let mut buf = BytesMut::from(&b"a\nbb\ncc"[..]);
        assert_eq!(run(&mut s, &mut buf, false), ["a", "bb"]);
        assert_eq!(&buf[..], b"cc");
        buf.extend_from_slice(b"c\n");
        assert_eq!(run(&mut s, &mut buf, false), ["ccc"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn stopping_leaves_what_follows_the_line_in_the_buffer() {
        let mut s = LineSplitter::new(4);
        let mut buf = BytesMut::from(&b"a\nstop\nb\n0123456789"[..]);
        let mut seen = Vec::new();
        s.split(&mut buf, false, |l| {
            let Line::Text(t) = l else { panic!("{l:?}") };
            seen.push(String::from_utf8_lossy(t).into_owned());
            t != b"stop"
        });
        assert_eq!(seen, ["a", "stop"]);
        assert_eq!(&buf[..], b"b\n0123456789", "an over-limit tail is kept too");
        assert!(!s.is_discarding());
    }

    #[test]
    fn last_line_without_newline_counts_at_eof() {
        let mut s = LineSplitter::new(100);
        let mut buf = BytesMut::from(&b"a\nlast"[..]);
        assert_eq!(run(&mut s, &mut buf, true), ["a", "last"]);
    }

    #[test]
    fn oversize_line_is_dropped_and_reported_once_across_reads() {
        let mut s = LineSplitter::new(4);
        let mut buf = BytesMut::from(&b"ok\n0123456"[..]);
        assert_eq!(run(&mut s, &mut buf, false), ["ok"]);
        assert!(s.is_discarding());
        assert!(buf.is_empty(), "dropped bytes are not buffered");
        buf.extend_from_slice(b"789");
        assert_eq!(run(&mut s, &mut buf, false), Vec::<String>::new());
        buf.extend_from_slice(b"ab\nnext\n");
        assert_eq!(run(&mut s, &mut buf, false), ["<too long: 12>", "next"]);
        assert!(!s.is_discarding());
    }

    #[test]
    fn oversize_complete_line_and_limit_edge() {
        let mut s = LineSplitter::new(4);
        let mut buf = BytesMut::from(&b"12345\n1234\n"[..]);
        assert_eq!(run(&mut s, &mut buf, false), ["<too long: 5>", "1234"]);
    }

    #[test]
    fn oversize_line_at_eof() {
        let mut s = LineSplitter::new(2);
        let mut buf = BytesMut::from(&b"12345"[..]);
        assert_eq!(run(&mut s, &mut buf, true), ["<too long: 5>"]);
    }
}
