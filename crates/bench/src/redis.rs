//! Talking to Redis outside the load: a small blocking RESP client, and the
//! session that sets Redis' persistence for each run and puts it back.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::wire::resp_command;
use crate::BenchError;

const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a run waits for the AOF rewrite that `appendonly yes` starts.
const AOF_TIMEOUT: Duration = Duration::from_secs(60);

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
    if !addrs.iter().all(|a| is_loopback(a.ip())) {
        return Err(bad(
            "only loopback hosts (127.0.0.1, localhost, ::1) are benchmarked",
        ));
    }
    Ok(addr)
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// A blocking connection for control commands.
pub(crate) struct Control {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Control {
    pub(crate) fn connect(addr: SocketAddr) -> Result<Control, BenchError> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| BenchError::io(format!("cannot connect to Redis at {addr}"), e))?;
        let setup = |e| BenchError::io("cannot configure the Redis connection", e);
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(setup)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(setup)?;
        let writer = stream
            .try_clone()
            .map_err(|e| BenchError::io("cannot clone the Redis connection", e))?;
        Ok(Control {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends a command; a Redis error reply is an `Err`.
    pub(crate) fn command(&mut self, args: &[&str]) -> Result<Reply, BenchError> {
        let name = args.join(" ");
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.writer
            .write_all(&resp_command(&bytes))
            .map_err(|e| BenchError::io(format!("cannot send {name} to Redis"), e))?;
        match read_reply(&mut self.reader)
            .map_err(|e| BenchError::io(format!("no answer from Redis to {name}"), e))?
        {
            Reply::Error(message) => Err(BenchError::redis(name, message)),
            reply => Ok(reply),
        }
    }

    fn config_get(&mut self, key: &str) -> Result<String, BenchError> {
        match self.command(&["CONFIG", "GET", key])? {
            Reply::Array(items) if items.len() == 2 => items[1]
                .text()
                .ok_or_else(|| BenchError::redis(format!("CONFIG GET {key}"), "not a string")),
            other => Err(BenchError::redis(
                format!("CONFIG GET {key}"),
                format!("unexpected reply {other:?}"),
            )),
        }
    }

    /// `field` of `INFO <section>`.
    fn info_field(&mut self, section: &str, field: &str) -> Result<Option<String>, BenchError> {
        let text = self.command(&["INFO", section])?.text().unwrap_or_default();
        Ok(text.lines().find_map(|l| {
            l.strip_prefix(field)
                .and_then(|v| v.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        }))
    }

    pub(crate) fn version(&mut self) -> Result<String, BenchError> {
        Ok(self
            .info_field("server", "redis_version")?
            .unwrap_or_else(|| "unknown".to_owned()))
    }
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a RESP reply");
    let (kind, rest) = line.split_at_checked(1).ok_or_else(invalid)?;
    let number = || rest.parse::<i64>().map_err(|_| invalid());
    Ok(match kind {
        "+" => Reply::Simple(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(number()?),
        "$" => {
            let len = number()?;
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let mut body = vec![0u8; len as usize + 2];
                r.read_exact(&mut body)?;
                body.truncate(len as usize);
                Reply::Bulk(Some(body))
            }
        }
        "*" => {
            let len = number()?;
            let mut items = Vec::new();
            for _ in 0..len.max(0) {
                items.push(read_reply(r)?);
            }
            Reply::Array(items)
        }
        _ => return Err(invalid()),
    })
}

/// Redis' persistence settings a run changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Persistence {
    appendonly: String,
    appendfsync: String,
    save: String,
}

/// Redis set up for the bench: persistence as each run asks, and on
/// [`Session::restore`] (or drop, after an error or an interruption) the
/// operator's settings back and the bench's keys deleted.
pub(crate) struct Session {
    addr: SocketAddr,
    saved: Persistence,
    keys: Vec<String>,
    restored: bool,
}

impl Session {
    /// Reads the current settings and turns RDB snapshots off.
    pub(crate) fn begin(addr: SocketAddr) -> Result<Session, BenchError> {
        let mut c = Control::connect(addr)?;
        let saved = Persistence {
            appendonly: c.config_get("appendonly")?,
            appendfsync: c.config_get("appendfsync")?,
            save: c.config_get("save")?,
        };
        let session = Session {
            addr,
            saved,
            keys: Vec::new(),
            restored: false,
        };
        c.command(&["CONFIG", "SET", "save", ""])?;
        Ok(session)
    }

    /// What Redis had before, for the report.
    pub(crate) fn original(&self) -> String {
        format!(
            "appendonly {}, appendfsync {}, save {:?}",
            self.saved.appendonly, self.saved.appendfsync, self.saved.save
        )
    }

    /// Sets persistence (`appendfsync` `None`: AOF off), waits for the AOF
    /// rewrite that turning it on starts, and empties `key`, which
    /// [`Session::restore`] deletes.
    pub(crate) fn prepare(
        &mut self,
        appendfsync: Option<&str>,
        key: &str,
    ) -> Result<(), BenchError> {
        let mut c = Control::connect(self.addr)?;
        if !self.keys.iter().any(|k| k == key) {
            self.keys.push(key.to_owned());
        }
        c.command(&["DEL", key])?;
        match appendfsync {
            Some(policy) => {
                c.command(&["CONFIG", "SET", "appendfsync", policy])?;
                c.command(&["CONFIG", "SET", "appendonly", "yes"])?;
            }
            None => {
                c.command(&["CONFIG", "SET", "appendonly", "no"])?;
            }
        }
        let deadline = Instant::now() + AOF_TIMEOUT;
        loop {
            let busy = c.info_field("persistence", "aof_rewrite_in_progress")?;
            let scheduled = c.info_field("persistence", "aof_rewrite_scheduled")?;
            if busy.as_deref() != Some("1") && scheduled.as_deref() != Some("1") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::redis(
                    "CONFIG SET appendonly yes",
                    "the AOF rewrite did not finish in time",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Deletes `key` now (it stays listed for [`Session::restore`]).
    pub(crate) fn delete(&mut self, key: &str) -> Result<(), BenchError> {
        Control::connect(self.addr)?.command(&["DEL", key])?;
        Ok(())
    }

    /// Puts the operator's settings back and deletes the bench's keys.
    pub(crate) fn restore(&mut self) -> Result<(), BenchError> {
        let mut c = Control::connect(self.addr)?;
        for key in &self.keys {
            c.command(&["DEL", key])?;
        }
        c.command(&["CONFIG", "SET", "appendfsync", &self.saved.appendfsync])?;
        c.command(&["CONFIG", "SET", "appendonly", &self.saved.appendonly])?;
        c.command(&["CONFIG", "SET", "save", &self.saved.save])?;
        self.restored = true;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.restored {
            if let Err(e) = self.restore() {
                eprintln!(
                    "busbar bench: could not restore Redis' settings ({}): {e}",
                    self.original()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_name_loopback_hosts() {
        let local = SocketAddr::from(([127, 0, 0, 1], 6379));
        assert_eq!(parse_url("redis://127.0.0.1:6379").unwrap(), local);
        assert_eq!(parse_url("127.0.0.1").unwrap(), local);
        assert_eq!(parse_url("redis://127.0.0.1:6379/0").unwrap(), local);
        assert_eq!(parse_url("redis://127.0.0.1:7000").unwrap().port(), 7000);
        assert!(parse_url("redis://10.0.0.1:6379").is_err());
        assert!(parse_url("redis://u:p@127.0.0.1:6379").is_err());
    }

    #[test]
    fn replies_parse() {
        let mut input: &[u8] =
            b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n+OK\r\n-ERR x\r\n:3\r\n$-1\r\n";
        let r = &mut input;
        assert_eq!(
            read_reply(r).unwrap(),
            Reply::Array(vec![
                Reply::Bulk(Some(b"appendonly".to_vec())),
                Reply::Bulk(Some(b"no".to_vec()))
            ])
        );
        assert_eq!(read_reply(r).unwrap(), Reply::Simple("OK".into()));
        assert_eq!(read_reply(r).unwrap(), Reply::Error("ERR x".into()));
        assert_eq!(read_reply(r).unwrap(), Reply::Int(3));
        assert_eq!(read_reply(r).unwrap(), Reply::Bulk(None));
    }
}
