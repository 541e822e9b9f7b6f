//! NATS subscribers of a fan-out run: connected and subscribed with the
//! bench's NATS client, then `MSG`s parsed in place.

use std::net::SocketAddr;
use std::time::Duration;

use super::receive::{Deliveries, Received, Subscribed};
use crate::nats::{self, Conn, Line};
use crate::BenchError;

/// How long connecting and subscribing may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// NATS deliveries.
pub(crate) struct Nats;

/// Connects and subscribes to `subject`; returns once the server answered
/// the `PING` that follows the `SUB`, so the subscription is in place.
pub(crate) async fn subscribe(
    addr: SocketAddr,
    subject: &str,
) -> Result<Subscribed<Nats>, BenchError> {
    let setup = async {
        let mut c = Conn::connect(addr).await?;
        c.subscribe(subject, 1);
        c.round_trip().await?;
        let (stream, leftover) = c.into_parts();
        Ok(Subscribed {
            stream,
            leftover,
            protocol: Nats,
        })
    };
    tokio::time::timeout(SETUP_TIMEOUT, setup)
        .await
        .unwrap_or_else(|_| Err(nats::error("no answer to SUB within the setup timeout")))
}

/// `PUB <subject> <n>\r\n<json>\r\n`, and where the JSON starts in it.
pub(crate) fn pub_frame(subject: &str, json: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(json.len() + subject.len() + 16);
    let at = nats::push_pub(&mut out, subject.as_bytes(), None, json);
    (out, at)
}

impl Deliveries for Nats {
    fn parse(&mut self, buf: &[u8], got: &mut Received<'_>) -> usize {
        let mut at = 0;
        while let Some(eol) = memchr::memmem::find(&buf[at..], b"\r\n") {
            let head = &buf[at..at + eol];
            match nats::line(head) {
                Line::Msg { len, .. } => {
                    let body = at + eol + 2;
                    if buf.len() < body + len + 2 {
                        break;
                    }
                    got.event(&buf[body..body + len]);
                    at = body + len + 2;
                    continue;
                }
                Line::Bad => {
                    let bad = format!("bad MSG line {:?}", String::from_utf8_lossy(head));
                    got.tally.error = Some(bad);
                    return at;
                }
                Line::Ping => got.replies.extend_from_slice(b"PONG\r\n"),
                Line::Err(e) => {
                    got.tally
                        .error
                        .get_or_insert_with(|| String::from_utf8_lossy(e).into_owned());
                }
                Line::Pong | Line::Other => {}
            }
            at += eol + 2;
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::fanout::stamp::Tally;

    #[test]
    fn messages_pings_and_partial_payloads() {
        let mut t = Tally::default();
        let mut replies = Vec::new();
        let mut got = Received {
            tally: &mut t,
            base: Instant::now(),
            now: Instant::now(),
            replies: &mut replies,
        };
        let buf = b"MSG s 1 5\r\nhello\r\nPING\r\nMSG s 1 r 3\r\nabc\r\nMSG s 1 9\r\nabc";
        let used = Nats.parse(buf, &mut got);
        assert_eq!(t.delivered, 2);
        assert_eq!(replies, b"PONG\r\n");
        assert_eq!(&buf[used..], b"MSG s 1 9\r\nabc");
        let (frame, at) = pub_frame("s", b"{}");
        assert_eq!((frame.as_slice(), at), (&b"PUB s 2\r\n{}\r\n"[..], 9));
    }
}
