//! A minimal WebSocket client for busbar's `/ws`: the upgrade, one masked
//! `subscribe` message, then server frames parsed in place.
//!
//! It is deliberately as lean as the NATS client beside it (no allocation
//! or UTF-8 validation per message), so that the bench measures the
//! servers, not two client libraries of different weight.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::receive::{Deliveries, Received, Subscribed};
use super::stamp::Tally;
use crate::{net, BenchError};

/// How long the upgrade and the `subscribed` answer may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// busbar's deliveries over WebSocket.
pub(crate) struct Busbar;

/// Opens `/ws` on `http` and subscribes live to `stream`; returns once
/// busbar answered `subscribed`.
pub(crate) async fn subscribe(
    http: SocketAddr,
    stream: &str,
    sub: &str,
) -> Result<Subscribed<Busbar>, BenchError> {
    let setup = async {
        let mut s = net::connect(http, "busbar").await?;
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(request.as_bytes())
            .await
            .map_err(|e| BenchError::io("cannot send the WebSocket upgrade", e))?;
        let mut buf = Vec::with_capacity(1024);
        let head_end = loop {
            if let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            read_more(&mut s, &mut buf).await?;
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
            return Err(refused(String::from_utf8_lossy(line).into_owned()));
        }
        buf.drain(..head_end);
        let op = format!(r#"{{"op":"subscribe","id":"{sub}","stream":"{stream}","from":"live"}}"#);
        s.write_all(&client_frame(OP_TEXT, op.as_bytes()))
            .await
            .map_err(|e| BenchError::io("cannot send the subscription", e))?;
        // Wait for `subscribed`; nothing is published before every
        // subscriber has it, so no event can precede it.
        loop {
            while let Some((opcode, payload, next)) = frame_at(&buf) {
                let text = &buf[payload];
                let has = |s: &[u8]| memchr::memmem::find(text, s).is_some();
                if opcode == OP_TEXT && has(b"\"type\":\"subscribed\"") {
                    buf.drain(..next);
                    return Ok(Subscribed {
                        stream: s,
                        leftover: buf,
                        protocol: Busbar,
                    });
                }
                if opcode == OP_TEXT && has(b"\"type\":\"error\"") {
                    return Err(refused(String::from_utf8_lossy(text).into_owned()));
                }
                buf.drain(..next);
            }
            read_more(&mut s, &mut buf).await?;
        }
    };
    match tokio::time::timeout(SETUP_TIMEOUT, setup).await {
        Ok(result) => result,
        Err(_) => Err(refused(format!(
            "no subscription within {}s",
            SETUP_TIMEOUT.as_secs()
        ))),
    }
}

fn refused(reason: String) -> BenchError {
    BenchError::Subscribe {
        system: "busbar",
        reason,
    }
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), BenchError> {
    let mut chunk = [0u8; 4096];
    let n = s
        .read(&mut chunk)
        .await
        .map_err(|e| BenchError::io("cannot read from busbar", e))?;
    if n == 0 {
        return Err(refused(
            "busbar closed the WebSocket during setup".to_owned(),
        ));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// One client frame (masked, as RFC 6455 requires of clients).
pub(crate) fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    // The mask only has to differ from connection to connection in
    // browsers; a server must accept any.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos());
    let mask = (nanos | 1).to_be_bytes();
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The server frame at the start of `buf`: its opcode, where its payload
/// is, and where the next frame starts; `None` until it is complete.
pub(crate) fn frame_at(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (len, mut at): (u64, usize) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    if masked {
        // Servers never mask; skip the key rather than misparse.
        at += 4;
    }
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    (buf.len() >= end).then_some((b0 & 0x0f, at..end, end))
}

impl Deliveries for Busbar {
    fn parse(&mut self, buf: &[u8], got: &mut Received<'_>) -> usize {
        let mut at = 0;
        while let Some((opcode, payload, next)) = frame_at(&buf[at..]) {
            let body = &buf[at + payload.start..at + payload.end];
            match opcode {
                OP_TEXT if body.starts_with(b"{\"type\":\"event\"") => got.event(body),
                OP_TEXT => text(body, got.tally),
                OP_PING => got.replies.extend_from_slice(&client_frame(OP_PONG, body)),
                OP_CLOSE => {
                    got.tally
                        .error
                        .get_or_insert_with(|| "busbar closed the WebSocket".to_owned());
                }
                _ => {}
            }
            at += next;
        }
        at
    }
}

/// A message other than an event: a lag notice, or an error.
fn text(body: &[u8], tally: &mut Tally) {
    if memchr::memmem::find(body, b"\"type\":\"lagged\"").is_some() {
        tally.lag_notices += 1;
        tally.missed += number_after(body, b"\"missed\":").unwrap_or(0);
    } else if memchr::memmem::find(body, b"\"type\":\"error\"").is_some() {
        tally
            .error
            .get_or_insert_with(|| String::from_utf8_lossy(body).into_owned());
    }
}

fn number_after(body: &[u8], key: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(body, key)? + key.len();
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit());
    digits.fold(None, |n, &d| {
        Some(n.unwrap_or(0) * 10 + u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_in_place_and_wait_for_their_end() {
        let mut buf = vec![0x81, 5];
        buf.extend_from_slice(b"hello");
        buf.extend_from_slice(&[0x81, 126, 0x01, 0x00]);
        buf.extend(std::iter::repeat_n(b'x', 256));
        let (op, p, next) = frame_at(&buf).unwrap();
        assert_eq!((op, &buf[p], next), (OP_TEXT, &b"hello"[..], 7));
        let (op, p, next) = frame_at(&buf[7..]).unwrap();
        assert_eq!((op, p.len(), next), (OP_TEXT, 256, 260));
        assert!(frame_at(&buf[7..buf.len() - 1]).is_none());
        assert!(frame_at(&buf[..1]).is_none());
    }

    #[test]
    fn client_frames_are_masked() {
        let f = client_frame(OP_TEXT, b"abc");
        assert_eq!(f[0], 0x81);
        assert_eq!(f[1], 0x80 | 3);
        let mask = &f[2..6];
        let plain: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(plain, b"abc");
    }

    #[test]
    fn lag_notices_are_counted() {
        let mut t = Tally::default();
        text(br#"{"missed":12,"sub":"a","type":"lagged"}"#, &mut t);
        text(br#"{"type":"lagged","sub":"a","missed":3}"#, &mut t);
        assert_eq!((t.lag_notices, t.missed), (2, 15));
        text(br#"{"type":"error","error":"x"}"#, &mut t);
        assert!(t.error.is_some());
    }
}
