//! How a connection's messages travel: WebSocket frames, or lines on a
//! Unix or TCP socket handed over by `busbar-ingest`.
//!
//! Both carry the same JSON messages. On a socket each message is one line:
//! busbar writes the message and `\n`; a client writes one op per line
//! (blank lines are skipped, a line over `max_message_bytes` is answered
//! with `too_large` and dropped). Messages are compact JSON, except that an
//! event's `data` is kept as its producer wrote it, which may include
//! newlines between tokens (never inside a string, where JSON escapes
//! them): the line writer turns those into spaces, which leaves the JSON
//! value unchanged.
//!
//! A line is a text message's bytes; pings are WebSocket-only; a `Close`
//! message ends a line connection once everything queued before it is
//! written.

use std::io;

use busbar_fanout::connection::{Flow, Inbound, Incoming, Outbound};
use busbar_fanout::{Outgoing, Text};
use busbar_ingest::lines::{self, is_blank, LineSplitter};
use busbar_ingest::live::{LiveReader, LiveWriter};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

/// Bytes asked of a socket per read.
const READ_SIZE: usize = 8 * 1024;
/// Output buffered by a line connection before it is written: one write
/// for a batch of small messages, large ones go straight through.
const WRITE_BUFFER: usize = 64 * 1024;

/// A line connection's receiving half: one op per line.
pub struct LineInbound(LineReader);

impl LineInbound {
    /// Lines from `buffered` (read already), then from `reader`, each at
    /// most `limit` bytes.
    pub fn new(reader: LiveReader, buffered: BytesMut, limit: usize) -> Self {
        LineInbound(LineReader::new(reader, buffered, limit))
    }
}

impl Inbound for LineInbound {
    async fn next(&mut self) -> Incoming {
        loop {
            match self.0.next().await {
                Ok(Some(Line::Text(line))) if is_blank(&line) => {}
                Ok(Some(Line::Text(line))) => {
                    return match Text::from_utf8(line) {
                        Ok(text) => Incoming::Text(text),
                        Err(_) => Incoming::Refused {
                            reason: "bad_message",
                            message: "a line must be UTF-8 JSON text".to_owned(),
                        },
                    }
                }
                Ok(Some(Line::TooLong { len, limit })) => {
                    return Incoming::Refused {
                        reason: "too_large",
                        message: format!(
                            "a message of {len} bytes is over the limit of {limit} bytes"
                        ),
                    }
                }
                Ok(None) => return Incoming::End,
                Err(e) => {
                    tracing::debug!(error = %e, "live socket read failed");
                    return Incoming::Closed;
                }
            }
        }
    }

    /// A line client answers nothing by itself, so a quiet subscriber
    /// would look dead: sockets rely on the kernel (a closed peer ends the
    /// input; TCP keepalive finds a vanished host) and on the write
    /// deadline instead.
    fn has_heartbeats(&self) -> bool {
        false
    }
}

/// A line connection's sending half: one message per line.
pub struct LineOutbound(BufWriter<LiveWriter>);

impl LineOutbound {
    /// Lines written to `writer`.
    pub fn new(writer: LiveWriter) -> Self {
        LineOutbound(BufWriter::with_capacity(WRITE_BUFFER, writer))
    }
}

impl Outbound for LineOutbound {
    async fn write(&mut self, batch: &mut Vec<Outgoing>) -> io::Result<Flow> {
        let mut flow = Flow::More;
        for msg in batch.drain(..) {
            match msg {
                Outgoing::Text(text) => write_line(&mut self.0, text.as_bytes()).await?,
                Outgoing::Close(_) => {
                    flow = Flow::Done;
                    break;
                }
                // Heartbeats are WebSocket-only.
                Outgoing::Ping => {}
            }
        }
        self.0.flush().await?;
        Ok(flow)
    }

    async fn close(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

/// Writes `text` and `\n`, newlines inside `text` turned into spaces (see
/// the module docs).
async fn write_line(writer: &mut BufWriter<LiveWriter>, text: &[u8]) -> io::Result<()> {
    let mut rest = text;
    while let Some(at) = memchr::memchr(b'\n', rest) {
        writer.write_all(&rest[..at]).await?;
        writer.write_all(b" ").await?;
        rest = &rest[at + 1..];
    }
    writer.write_all(rest).await?;
    writer.write_all(b"\n").await
}

/// One line read from a socket.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line within the limit, without its `\n`.
    Text(Bytes),
    /// A line over the limit; its bytes were dropped as they came.
    TooLong { len: usize, limit: usize },
}

/// Splits a socket's input into lines of at most `limit` bytes, without
/// ever buffering more than that of one line (the ingest connection's
/// [`LineSplitter`], one line at a time).
pub(crate) struct LineReader {
    reader: LiveReader,
    buf: BytesMut,
    limit: usize,
    splitter: LineSplitter,
    eof: bool,
}

impl LineReader {
    /// Lines from `buffered` (read already), then from `reader`.
    pub(crate) fn new(reader: LiveReader, buffered: BytesMut, limit: usize) -> LineReader {
        let limit = limit.max(1);
        LineReader {
            reader,
            buf: buffered,
            limit,
            splitter: LineSplitter::new(limit),
            eof: false,
        }
    }

    /// The next line; `None` at the end of the input (a last line without
    /// `\n` counts).
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled call loses no input.
    pub(crate) async fn next(&mut self) -> io::Result<Option<Line>> {
        loop {
            let mut next = None;
            let limit = self.limit;
            self.splitter.split(&mut self.buf, self.eof, |line| {
                next = Some(match line {
                    lines::Line::Text(text) => Line::Text(Bytes::copy_from_slice(text)),
                    lines::Line::TooLong { len } => Line::TooLong { len, limit },
                });
                false
            });
            if next.is_some() || self.eof {
                return Ok(next);
            }
            self.buf.reserve(READ_SIZE);
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                self.eof = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(input: &'static [u8], buffered: &[u8], limit: usize) -> LineReader {
        LineReader::new(Box::new(input), BytesMut::from(buffered), limit)
    }

    async fn all(mut r: LineReader) -> Vec<Line> {
        let mut out = Vec::new();
        while let Some(line) = r.next().await.unwrap() {
            out.push(line);
        }
        out
    }

    fn text(s: &'static str) -> Line {
        Line::Text(Bytes::from_static(s.as_bytes()))
    }

    #[tokio::test]
    async fn buffered_bytes_come_first_and_a_last_line_needs_no_newline() {
        let got = all(reader(b"c\nd", b"a\nb", 16)).await;
        assert_eq!(got, [text("a"), text("bc"), text("d")]);
    }

    #[tokio::test]
    async fn over_limit_lines_are_reported_once_and_not_kept() {
        let got = all(reader(b"789\nok\n0123456789", b"0123456", 4)).await;
        assert_eq!(
            got,
            [
                Line::TooLong { len: 10, limit: 4 },
                text("ok"),
                Line::TooLong { len: 10, limit: 4 },
            ]
        );
    }

    #[tokio::test]
    async fn newlines_inside_a_message_become_spaces() {
        let (client, server) = tokio::io::duplex(1024);
        let mut sink = LineOutbound::new(Box::new(server));
        let mut batch = vec![
            Outgoing::Text(Text::from_static("{\"data\":{\n\"n\": 1\r\n}}")),
            Outgoing::Ping,
            Outgoing::Text(Text::from_static("{}")),
            Outgoing::Close(None),
            Outgoing::Text(Text::from_static("never")),
        ];
        assert_eq!(sink.write(&mut batch).await.unwrap(), Flow::Done);
        sink.close().await;
        let mut out = String::new();
        let mut client = client;
        client.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "{\"data\":{ \"n\": 1\r }}\n{}\n");
        let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(v["data"]["n"], 1);
    }
}
