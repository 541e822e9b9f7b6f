//! A small client of the NATS text protocol
//! (<https://docs.nats.io/reference/reference-protocols/nats-protocol>):
//! the line classifier both the fan-out subscribers (which parse messages
//! in place) and [`Conn`] use, an async connection with JetStream's
//! requests, pulls and acks (`jetstream.rs`), and a blocking publisher for
//! the fan-out scenario's publishing thread.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::net::Pipeline;
use crate::BenchError;

mod jetstream;

pub(crate) use jetstream::Storage;

/// How long connecting, and the round trip after the last publish, may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a bench connection tells the server: no `+OK` per command, no
/// copies of its own messages, headers understood (JetStream answers a pull
/// that ends short with a headers-only status message) and an immediate
/// status for a request nobody listens to.
const CONNECT: &str = "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\
     \"headers\":true,\"no_responders\":true,\"name\":\"busbar-bench\",\"lang\":\"rust\",\
     \"version\":\"0\"}\r\n";

pub(crate) fn error(message: impl Into<String>) -> BenchError {
    BenchError::Nats {
        message: message.into(),
    }
}

/// Refuses an address that is not on this machine.
pub(crate) fn loopback(addr: SocketAddr) -> Result<SocketAddr, BenchError> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(BenchError::NatsAddr { addr })
    }
}

/// One protocol line from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// `MSG` or `HMSG`: `len` bytes follow (headers included), then CRLF.
    /// A headers-only message without a reply subject is a status, such as
    /// the end of a pull.
    Msg {
        reply: Option<&'a [u8]>,
        len: usize,
        headers: bool,
    },
    Ping,
    Pong,
    Err(&'a [u8]),
    /// A `MSG` line that cannot be read.
    Bad,
    /// `INFO`, `+OK` and the like.
    Other,
}

/// What `line` (without its CRLF) is.
pub(crate) fn line(line: &[u8]) -> Line<'_> {
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let (headers, max) = match words.next() {
        Some(b"MSG") => (false, 4),
        Some(b"HMSG") => (true, 5),
        Some(b"PING") => return Line::Ping,
        Some(b"PONG") => return Line::Pong,
        Some(b"-ERR") => return Line::Err(line),
        _ => return Line::Other,
    };
    // MSG <subject> <sid> [reply] <len>; HMSG <subject> <sid> [reply]
    // <header len> <total len>.
    let rest: Vec<&[u8]> = words.collect();
    let len = rest
        .last()
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<usize>().ok());
    match (len, rest.len()) {
        (Some(len), n) if n == max => Line::Msg {
            reply: Some(rest[2]),
            len,
            headers,
        },
        (Some(len), n) if n == max - 1 => Line::Msg {
            reply: None,
            len,
            headers,
        },
        _ => Line::Bad,
    }
}

/// Appends `PUB <subject> [reply] <n>\r\n<payload>\r\n` to `out`; returns
/// where the payload starts.
pub(crate) fn push_pub(
    out: &mut Vec<u8>,
    subject: &[u8],
    reply: Option<&[u8]>,
    payload: &[u8],
) -> usize {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject);
    if let Some(r) = reply {
        out.push(b' ');
        out.extend_from_slice(r);
    }
    out.extend_from_slice(format!(" {}\r\n", payload.len()).as_bytes());
    let at = out.len();
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    at
}

/// The server's version from its `INFO`, if it answers at `addr`.
pub(crate) fn version(addr: SocketAddr) -> Result<String, BenchError> {
    let s = std::net::TcpStream::connect_timeout(&addr, SETUP_TIMEOUT)
        .map_err(|e| BenchError::io(format!("cannot connect to NATS at {addr}"), e))?;
    s.set_read_timeout(Some(SETUP_TIMEOUT))
        .map_err(|e| BenchError::io("cannot set a read timeout", e))?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| BenchError::io("cannot read NATS' INFO", e))?;
    let info = line
        .strip_prefix("INFO ")
        .ok_or_else(|| error(format!("expected INFO, got {:?}", line.trim_end())))?;
    let info: serde_json::Value =
        serde_json::from_str(info).map_err(|e| error(format!("unreadable INFO: {e}")))?;
    Ok(info["version"].as_str().unwrap_or("unknown").to_owned())
}

/// A publishing connection: blocking, on a publisher's own thread.
pub(crate) fn publisher(addr: SocketAddr) -> Result<std::net::TcpStream, BenchError> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, SETUP_TIMEOUT)
        .map_err(|e| BenchError::io(format!("cannot connect to NATS at {addr}"), e))?;
    s.set_nodelay(true)
        .map_err(|e| BenchError::io("cannot set TCP_NODELAY", e))?;
    s.write_all(CONNECT.as_bytes())
        .map_err(|e| BenchError::io("cannot send CONNECT", e))?;
    Ok(s)
}

/// After a publisher's last `PUB`: a `PING` whose `PONG` says the server
/// read everything before it. Errors the server sent meanwhile are
/// reported.
pub(crate) fn finish_publishing(s: std::net::TcpStream) -> Result<(), BenchError> {
    let mut w = &s;
    w.write_all(b"PING\r\n")
        .map_err(|e| BenchError::io("cannot send PING", e))?;
    s.set_read_timeout(Some(SETUP_TIMEOUT * 6))
        .map_err(|e| BenchError::io("cannot set a read timeout", e))?;
    let mut r = BufReader::new(&s);
    let mut text = String::new();
    loop {
        text.clear();
        let n = r
            .read_line(&mut text)
            .map_err(|e| BenchError::io("no PONG after publishing", e))?;
        if n == 0 {
            return Err(error("NATS closed the publisher's connection"));
        }
        match line(text.trim_end().as_bytes()) {
            Line::Pong => return Ok(()),
            Line::Ping => w
                .write_all(b"PONG\r\n")
                .map_err(|e| BenchError::io("cannot send PONG", e))?,
            Line::Err(e) => return Err(error(String::from_utf8_lossy(e))),
            _ => {}
        }
    }
}

/// Something the server sent, as [`Conn::next`] returns it.
pub(crate) enum Incoming {
    /// A message (`payload` holds its headers, if any). `status`: a
    /// headers-only message without a reply subject.
    Msg {
        reply: Option<Vec<u8>>,
        payload: Vec<u8>,
        status: bool,
    },
    Pong,
}

/// An async connection with a queue of commands not sent yet.
pub(crate) struct Conn(Pipeline);

impl Conn {
    /// Connects and waits for the server to take `CONNECT`.
    pub(crate) async fn connect(addr: SocketAddr) -> Result<Conn, BenchError> {
        let mut c = Conn(Pipeline::connect(addr, "NATS").await?);
        c.0.out.extend_from_slice(CONNECT.as_bytes());
        c.round_trip().await?;
        Ok(c)
    }

    /// Queues `SUB <subject> <sid>`.
    pub(crate) fn subscribe(&mut self, subject: &str, sid: u32) {
        self.0
            .out
            .extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
    }

    /// Queues `UNSUB <sid> [max]`: at once, or after `max` messages.
    pub(crate) fn unsubscribe(&mut self, sid: u32, max: Option<u32>) {
        let line = match max {
            Some(max) => format!("UNSUB {sid} {max}\r\n"),
            None => format!("UNSUB {sid}\r\n"),
        };
        self.0.out.extend_from_slice(line.as_bytes());
    }

    /// Queues a message.
    pub(crate) fn publish(&mut self, subject: &str, reply: Option<&[u8]>, payload: &[u8]) {
        push_pub(&mut self.0.out, subject.as_bytes(), reply, payload);
    }

    /// Sends what is queued.
    pub(crate) async fn flush(&mut self) -> Result<(), BenchError> {
        self.0.flush().await
    }

    /// Flushes, then waits for the server to have read everything (a
    /// `PING`'s `PONG`); messages meanwhile are dropped.
    pub(crate) async fn round_trip(&mut self) -> Result<(), BenchError> {
        self.0.out.extend_from_slice(b"PING\r\n");
        self.flush().await?;
        loop {
            if let Incoming::Pong = self.next().await? {
                return Ok(());
            }
        }
    }

    /// The next message or `PONG`; answers `PING`s, skips the rest.
    pub(crate) async fn next(&mut self) -> Result<Incoming, BenchError> {
        loop {
            let rest = self.0.input.unparsed();
            let Some(eol) = memchr::memmem::find(rest, b"\r\n") else {
                self.0.fill().await?;
                continue;
            };
            let body = eol + 2;
            let (reply, len, headers) = match line(&rest[..eol]) {
                Line::Msg {
                    reply,
                    len,
                    headers,
                } => (reply.map(<[u8]>::to_vec), len, headers),
                Line::Ping => {
                    self.0.input.consume(body);
                    self.0.out.extend_from_slice(b"PONG\r\n");
                    self.flush().await?;
                    continue;
                }
                Line::Pong => {
                    self.0.input.consume(body);
                    return Ok(Incoming::Pong);
                }
                Line::Err(_) | Line::Bad => {
                    return Err(error(String::from_utf8_lossy(&rest[..eol])));
                }
                Line::Other => {
                    self.0.input.consume(body);
                    continue;
                }
            };
            if rest.len() < body + len + 2 {
                self.0.fill().await?;
                continue;
            }
            let payload = rest[body..body + len].to_vec();
            self.0.input.consume(body + len + 2);
            let status = headers && reply.is_none();
            return Ok(Incoming::Msg {
                reply,
                payload,
                status,
            });
        }
    }

    /// The socket and the bytes read past what was parsed, for a reader
    /// that parses in place from here on.
    pub(crate) fn into_parts(self) -> (TcpStream, Vec<u8>) {
        self.0.into_parts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_classified() {
        assert_eq!(
            line(b"MSG s 1 5"),
            Line::Msg {
                reply: None,
                len: 5,
                headers: false
            }
        );
        assert_eq!(
            line(b"MSG s 1 _INBOX.x 3"),
            Line::Msg {
                reply: Some(b"_INBOX.x"),
                len: 3,
                headers: false
            }
        );
        assert_eq!(
            line(b"HMSG s 1 12 30"),
            Line::Msg {
                reply: None,
                len: 30,
                headers: true
            }
        );
        assert_eq!(
            line(b"HMSG s 1 $JS.ACK.x 12 30"),
            Line::Msg {
                reply: Some(b"$JS.ACK.x"),
                len: 30,
                headers: true
            }
        );
        assert_eq!(line(b"MSG s 1 x"), Line::Bad);
        assert_eq!(line(b"MSG s"), Line::Bad);
        assert_eq!(line(b"PING"), Line::Ping);
        assert_eq!(line(b"PONG"), Line::Pong);
        assert_eq!(line(b"-ERR 'x'"), Line::Err(b"-ERR 'x'"));
        assert_eq!(line(b"INFO {}"), Line::Other);
    }

    #[test]
    fn pub_frames_say_where_the_payload_is() {
        let mut out = Vec::new();
        let at = push_pub(&mut out, b"s", None, b"{}");
        assert_eq!((out.as_slice(), at), (&b"PUB s 2\r\n{}\r\n"[..], 9));
        out.clear();
        push_pub(&mut out, b"s", Some(b"r"), b"+ACK");
        assert_eq!(out, b"PUB s r 4\r\n+ACK\r\n");
    }

    #[test]
    fn only_loopback_addresses_are_benchmarked() {
        assert!(loopback("127.0.0.1:4222".parse().unwrap()).is_ok());
        assert!(loopback("192.0.2.1:4222".parse().unwrap()).is_err());
    }
}
