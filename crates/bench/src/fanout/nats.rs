//! A minimal NATS core client: `CONNECT`, `SUB`, `PUB`, and `MSG` parsed
//! in place (<https://docs.nats.io/reference/reference-protocols/nats-protocol>).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::receive::{Ctx, Deliveries, Subscribed};
use super::stamp::Tally;
use crate::BenchError;

/// How long connecting and subscribing may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a bench connection tells the server: no `+OK` per command, and no
/// copies of its own messages.
const CONNECT: &str =
    "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\"name\":\"busbar-bench\"}\r\n";

/// NATS deliveries.
pub(crate) struct Nats;

fn error(message: impl Into<String>) -> BenchError {
    BenchError::Nats {
        message: message.into(),
    }
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

/// Connects and subscribes to `subject`; returns once the server answered
/// the `PING` that follows the `SUB`, so the subscription is in place.
pub(crate) async fn subscribe(
    addr: SocketAddr,
    subject: &str,
) -> Result<Subscribed<Nats>, BenchError> {
    let setup = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| BenchError::io(format!("cannot connect to NATS at {addr}"), e))?;
        s.set_nodelay(true)
            .map_err(|e| BenchError::io("cannot set TCP_NODELAY", e))?;
        let hello = format!("{CONNECT}SUB {subject} 1\r\nPING\r\n");
        s.write_all(hello.as_bytes())
            .await
            .map_err(|e| BenchError::io("cannot subscribe on NATS", e))?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            // INFO, then PONG; an -ERR means the SUB was refused.
            let mut at = 0;
            while let Some(eol) = memchr::memmem::find(&buf[at..], b"\r\n") {
                let line = &buf[at..at + eol];
                if line.starts_with(b"-ERR") {
                    return Err(error(String::from_utf8_lossy(line).into_owned()));
                }
                at += eol + 2;
                if line == b"PONG" {
                    buf.drain(..at);
                    return Ok(Subscribed {
                        stream: s,
                        leftover: buf,
                        protocol: Nats,
                    });
                }
            }
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| BenchError::io("cannot read from NATS", e))?;
            if n == 0 {
                return Err(error("NATS closed a subscriber connection during setup"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(SETUP_TIMEOUT, setup)
        .await
        .unwrap_or_else(|_| Err(error("no answer to SUB within the setup timeout")))
}

/// A publishing connection: blocking, on the publisher's own thread.
pub(crate) fn publisher(addr: SocketAddr) -> Result<std::net::TcpStream, BenchError> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, SETUP_TIMEOUT)
        .map_err(|e| BenchError::io(format!("cannot connect to NATS at {addr}"), e))?;
    s.set_nodelay(true)
        .map_err(|e| BenchError::io("cannot set TCP_NODELAY", e))?;
    s.write_all(CONNECT.as_bytes())
        .map_err(|e| BenchError::io("cannot send CONNECT", e))?;
    Ok(s)
}

/// After the last `PUB`: a `PING` whose `PONG` says the server read
/// everything before it. Errors the server sent meanwhile are reported.
pub(crate) fn finish_publishing(s: std::net::TcpStream) -> Result<(), BenchError> {
    let mut w = &s;
    w.write_all(b"PING\r\n")
        .map_err(|e| BenchError::io("cannot send PING", e))?;
    s.set_read_timeout(Some(SETUP_TIMEOUT * 6))
        .map_err(|e| BenchError::io("cannot set a read timeout", e))?;
    let mut r = BufReader::new(&s);
    let mut line = String::new();
    loop {
        line.clear();
        let n = r
            .read_line(&mut line)
            .map_err(|e| BenchError::io("no PONG after publishing", e))?;
        match line.trim_end() {
            _ if n == 0 => return Err(error("NATS closed the publisher's connection")),
            "PONG" => return Ok(()),
            "PING" => {
                w.write_all(b"PONG\r\n")
                    .map_err(|e| BenchError::io("cannot send PONG", e))?;
            }
            l if l.starts_with("-ERR") => return Err(error(l.to_owned())),
            _ => {}
        }
    }
}

/// `PUB <subject> <n>\r\n<json>\r\n`, and where the JSON starts in it.
pub(crate) fn pub_frame(subject: &str, json: &[u8]) -> (Vec<u8>, usize) {
    let mut out = format!("PUB {subject} {}\r\n", json.len()).into_bytes();
    let at = out.len();
    out.extend_from_slice(json);
    out.extend_from_slice(b"\r\n");
    (out, at)
}

impl Deliveries for Nats {
    fn parse(
        &mut self,
        buf: &[u8],
        tally: &mut Tally,
        ctx: &Ctx,
        now: Instant,
        replies: &mut Vec<u8>,
    ) -> usize {
        let mut at = 0;
        while let Some(eol) = memchr::memmem::find(&buf[at..], b"\r\n") {
            let line = &buf[at..at + eol];
            if line.starts_with(b"MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let len = line
                    .rsplit(|&b| b == b' ')
                    .next()
                    .and_then(|n| std::str::from_utf8(n).ok())
                    .and_then(|n| n.parse::<usize>().ok());
                let Some(len) = len else {
                    tally.error = Some(format!("bad MSG line {:?}", String::from_utf8_lossy(line)));
                    return at;
                };
                let body = at + eol + 2;
                if buf.len() < body + len + 2 {
                    break;
                }
                tally.event(&buf[body..body + len], ctx.base, now);
                at = body + len + 2;
                continue;
            }
            if line == b"PING" {
                replies.extend_from_slice(b"PONG\r\n");
            } else if line.starts_with(b"-ERR") {
                tally
                    .error
                    .get_or_insert_with(|| String::from_utf8_lossy(line).into_owned());
            }
            at += eol + 2;
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::fanout::stamp;

    #[test]
    fn messages_pings_and_partial_payloads() {
        let ctx = Ctx {
            base: Instant::now(),
            events: 10,
            deadline: Instant::now(),
            quiet: Duration::ZERO,
            published: AtomicBool::new(false),
            latency: Arc::new(Mutex::new(stamp::histogram())),
        };
        let mut t = Tally::default();
        let mut replies = Vec::new();
        let buf = b"MSG s 1 5\r\nhello\r\nPING\r\nMSG s 1 r 3\r\nabc\r\nMSG s 1 9\r\nabc";
        let used = Nats.parse(buf, &mut t, &ctx, Instant::now(), &mut replies);
        assert_eq!(t.delivered, 2);
        assert_eq!(replies, b"PONG\r\n");
        assert_eq!(&buf[used..], b"MSG s 1 9\r\nabc");
        let (frame, at) = pub_frame("s", b"{}");
        assert_eq!((frame.as_slice(), at), (&b"PUB s 2\r\n{}\r\n"[..], 9));
    }
}
