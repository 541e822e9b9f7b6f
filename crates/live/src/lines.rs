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
//! The send queue holds WebSocket [`Message`]s on both transports: a line
//! is a text message's bytes; pings are WebSocket-only; a `Close` message
//! ends a line connection once everything queued before it is written.

use std::io;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use busbar_ingest::lines::{self, is_blank, LineSplitter};
use busbar_ingest::live::{LiveReader, LiveWriter};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

/// Bytes asked of a socket per read.
const READ_SIZE: usize = 8 * 1024;
/// Output buffered by a line connection before it is written: one write
/// for a batch of small messages, large ones go straight through.
const WRITE_BUFFER: usize = 64 * 1024;

/// What a client sent.
pub(crate) enum Incoming {
    /// A text message: one op.
    Text(Utf8Bytes),
    /// Something that is not an op; answered with this error, and the
    /// connection goes on.
    Refused {
        reason: &'static str,
        message: String,
    },
    /// A sign of life without content (WebSocket ping or pong).
    Heard,
    /// The client sent a WebSocket close frame: it is answered with one.
    CloseFrame,
    /// The connection failed.
    Closed,
    /// The client's input ended (a socket's end of file): answers already
    /// due are written before the connection closes.
    End,
}

/// The receiving side of a connection.
pub(crate) enum Source {
    WebSocket(SplitStream<WebSocket>),
    Lines(LineReader),
}

impl Source {
    /// The next thing the client sent.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is lost when cancelled.
    pub(crate) async fn next(&mut self) -> Incoming {
        match self {
            Source::WebSocket(stream) => match stream.next().await {
                Some(Ok(Message::Text(text))) => Incoming::Text(text),
                Some(Ok(Message::Binary(_))) => Incoming::Refused {
                    reason: "unsupported",
                    message: "send JSON text messages".to_owned(),
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Heard,
                Some(Ok(Message::Close(_))) => Incoming::CloseFrame,
                Some(Err(_)) | None => Incoming::Closed,
            },
            Source::Lines(lines) => loop {
                match lines.next().await {
                    Ok(Some(Line::Text(line))) if is_blank(&line) => {}
                    Ok(Some(Line::Text(line))) => {
                        return match Utf8Bytes::try_from(line) {
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
            },
        }
    }

    /// Whether the transport has heartbeats (WebSocket pings, which clients
    /// answer without knowing). A line client answers nothing by itself,
    /// so a quiet subscriber would look dead: sockets rely on the kernel
    /// (a closed peer ends the input; TCP keepalive finds a vanished host)
    /// and on the write deadline instead.
    pub(crate) fn has_heartbeats(&self) -> bool {
        matches!(self, Source::WebSocket(_))
    }
}

/// The sending side of a connection.
pub(crate) enum Sink {
    WebSocket(SplitSink<WebSocket, Message>),
    Lines(BufWriter<LiveWriter>),
}

/// Whether the writer goes on after a batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    More,
    /// A `Close` message was written: stop.
    Done,
}

impl Sink {
    /// A line sink over a socket's writing half.
    pub(crate) fn lines(writer: LiveWriter) -> Sink {
        Sink::Lines(BufWriter::with_capacity(WRITE_BUFFER, writer))
    }

    /// Writes `batch` (draining it) and flushes once.
    pub(crate) async fn write(&mut self, batch: &mut Vec<Message>) -> io::Result<Flow> {
        match self {
            Sink::WebSocket(sink) => {
                let mut flow = Flow::More;
                for msg in batch.drain(..) {
                    if matches!(msg, Message::Close(_)) {
                        flow = Flow::Done;
                    }
                    sink.feed(msg).await.map_err(io::Error::other)?;
                    if flow == Flow::Done {
                        break;
                    }
                }
                sink.flush().await.map_err(io::Error::other)?;
                Ok(flow)
            }
            Sink::Lines(writer) => {
                let mut flow = Flow::More;
                for msg in batch.drain(..) {
                    match msg {
                        Message::Text(text) => write_line(writer, text.as_bytes()).await?,
                        Message::Close(_) => {
                            flow = Flow::Done;
                            break;
                        }
                        // Heartbeats are WebSocket-only.
                        Message::Ping(_) | Message::Pong(_) | Message::Binary(_) => {}
                    }
                }
                writer.flush().await?;
                Ok(flow)
            }
        }
    }

    /// Ends the connection's output (a close frame, or the socket's end of
    /// file).
    pub(crate) async fn close(&mut self) {
        match self {
            Sink::WebSocket(sink) => {
                let _ = sink.close().await;
            }
            Sink::Lines(writer) => {
                let _ = writer.shutdown().await;
            }
        }
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
        let mut sink = Sink::lines(Box::new(server));
        let mut batch = vec![
            Message::Text("{\"data\":{\n\"n\": 1\r\n}}".into()),
            Message::Ping(Bytes::new()),
            Message::Text("{}".into()),
            Message::Close(None),
            Message::Text("never".into()),
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
