//! A small Redis client: RESP encoding and a reply parser shared by a
//! blocking connection for control commands ([`Control`]) and an async one
//! for load ([`Conn`]: pipelined `XADD`, `XREADGROUP`, `XACK`), and the
//! [`Session`] that sets Redis' persistence for each run and puts it back.

mod conn;
mod control;
mod session;

use std::net::{SocketAddr, ToSocketAddrs};

pub(crate) use conn::Conn;
pub(crate) use control::Control;
pub(crate) use session::Session;

use crate::net::ReadBuf;
use crate::BenchError;

/// The address of `redis://<host>:<port>` (or `<host>:<port>`); the host
/// must be a loopback address: the bench sends load nowhere else.
pub(crate) fn parse_url(url: &str) -> Result<SocketAddr, BenchError> {
    let bad = |reason| BenchError::RedisUrl {
        url: url.to_owned(),
        reason,
    };
    let rest = url.strip_prefix("redis://").unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or_default();
    if hostport.contains('@') {
        return Err(bad("credentials are not supported"));
    }
    let with_port = if hostport.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty() && !h.ends_with(':') && p.bytes().all(|b| b.is_ascii_digit())
    }) {
        hostport.to_owned()
    } else {
        format!("{hostport}:6379")
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|_| bad("cannot resolve the host"))?
        .collect();
    let addr = addrs
        .first()
        .copied()
        .ok_or(bad("the host has no address"))?;
    if !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Err(bad(
            "only loopback hosts (127.0.0.1, localhost, ::1) are benchmarked",
        ));
    }
    Ok(addr)
}

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// A null bulk string or array (`$-1`, `*-1`).
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    pub(crate) fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The reply, or [`BenchError::Redis`] for an error reply to `command`.
    pub(crate) fn ok(self, command: &str) -> Result<Reply, BenchError> {
        match self {
            Reply::Error(message) => Err(BenchError::redis(command, message)),
            reply => Ok(reply),
        }
    }

    /// The ids of an `XREADGROUP` (or `XREAD`) reply's entries, every
    /// stream's in order; none for a read that timed out.
    pub(crate) fn entry_ids(self) -> Vec<Vec<u8>> {
        let Reply::Array(streams) = self else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        for stream in streams {
            // [name, [[id, [field, value, ...]], ...]]
            let Reply::Array(mut pair) = stream else {
                continue;
            };
            let Some(Reply::Array(entries)) = pair.pop() else {
                continue;
            };
            for entry in entries {
                if let Reply::Array(fields) = entry {
                    if let Some(Reply::Bulk(id)) = fields.into_iter().next() {
                        ids.push(id);
                    }
                }
            }
        }
        ids
    }
}

/// Appends a command, a RESP array of bulk strings, to `out`.
pub(crate) fn push_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// A command as bytes.
pub(crate) fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    push_command(&mut out, args);
    out
}

fn invalid() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "not a RESP reply")
}

/// The reply at the start of `buf` and the bytes it takes; `None` until it
/// is complete.
fn parse(buf: &[u8]) -> std::io::Result<Option<(Reply, usize)>> {
    let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
        return Ok(None);
    };
    let (&kind, rest) = buf[..eol].split_first().ok_or_else(invalid)?;
    let number = || {
        std::str::from_utf8(rest)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(invalid)
    };
    let text = || String::from_utf8_lossy(rest).into_owned();
    let mut at = eol + 2;
    let reply = match kind {
        b'+' => Reply::Simple(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Int(number()?),
        b'$' => match usize::try_from(number()?) {
            Err(_) => Reply::Nil,
            Ok(len) if buf.len() < at + len + 2 => return Ok(None),
            Ok(len) => {
                let body = buf[at..at + len].to_vec();
                at += len + 2;
                Reply::Bulk(body)
            }
        },
        b'*' => match usize::try_from(number()?) {
            Err(_) => Reply::Nil,
            Ok(n) => {
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let Some((item, used)) = parse(&buf[at..])? else {
                        return Ok(None);
                    };
                    items.push(item);
                    at += used;
                }
                Reply::Array(items)
            }
        },
        _ => return Err(invalid()),
    };
    Ok(Some((reply, at)))
}

/// The next complete reply in `input`, if it is all there.
fn next_reply(input: &mut ReadBuf) -> std::io::Result<Option<Reply>> {
    let Some((reply, used)) = parse(input.unparsed())? else {
        return Ok(None);
    };
    input.consume(used);
    Ok(Some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_name_loopback_hosts() {
        let local = SocketAddr::from(([127, 0, 0, 1], 6379));
        assert_eq!(parse_url("redis://127.0.0.1:6379").unwrap(), local);
        assert_eq!(parse_url("127.0.0.1").unwrap(), local);
        assert_eq!(parse_url("127.0.0.1:6379").unwrap(), local);
        assert_eq!(parse_url("redis://127.0.0.1:6379/0").unwrap(), local);
        assert_eq!(parse_url("redis://127.0.0.1:7000").unwrap().port(), 7000);
        assert!(parse_url("redis://10.0.0.1:6379").is_err());
        assert!(parse_url("redis://u:p@127.0.0.1:6379").is_err());
    }

    fn all(mut input: &[u8]) -> Vec<Reply> {
        let mut out = Vec::new();
        while let Some((reply, used)) = parse(input).unwrap() {
            out.push(reply);
            input = &input[used..];
        }
        assert!(input.is_empty(), "left: {input:?}");
        out
    }

    #[test]
    fn replies_parse() {
        let replies =
            all(b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n+OK\r\n-ERR x\r\n:3\r\n$-1\r\n*-1\r\n");
        assert_eq!(
            replies,
            [
                Reply::Array(vec![
                    Reply::Bulk(b"appendonly".to_vec()),
                    Reply::Bulk(b"no".to_vec())
                ]),
                Reply::Simple("OK".into()),
                Reply::Error("ERR x".into()),
                Reply::Int(3),
                Reply::Nil,
                Reply::Nil,
            ]
        );
        assert!(parse(b"?\r\n").is_err());
    }

    #[test]
    fn incomplete_replies_wait_for_the_rest() {
        let whole =
            b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nd\r\n$2\r\n{}\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (reply, used) = parse(whole).unwrap().unwrap();
        assert_eq!(used, whole.len());
        assert_eq!(reply.entry_ids(), [b"1-0".to_vec()]);
    }

    #[test]
    fn entry_ids_of_a_read_that_timed_out_are_none() {
        assert!(Reply::Nil.entry_ids().is_empty());
    }

    #[test]
    fn commands_encode_as_arrays_of_bulk_strings() {
        assert_eq!(
            command(&[b"DEL", b"k"]),
            b"*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n".to_vec()
        );
    }

    #[test]
    fn replies_are_taken_whole_from_the_buffer() {
        let mut input = ReadBuf::default();
        let data = b"+OK\r\n:4";
        input.spare()[..data.len()].copy_from_slice(data);
        input.filled(Ok(data.len())).unwrap();
        assert_eq!(
            next_reply(&mut input).unwrap(),
            Some(Reply::Simple("OK".into()))
        );
        assert_eq!(next_reply(&mut input).unwrap(), None);
        assert_eq!(input.unparsed(), b":4");
    }
}
