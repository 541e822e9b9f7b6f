//! A blocking connection for control commands (`CONFIG`, `INFO`, `DEL`),
//! outside the load: usable from `Drop`, where [`super::Session`] puts
//! Redis' settings back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{command, next_reply, Reply};
use crate::net::ReadBuf;
use crate::BenchError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A blocking connection for control commands.
pub(crate) struct Control {
    stream: TcpStream,
    input: ReadBuf,
}

impl Control {
    pub(crate) fn connect(addr: SocketAddr) -> Result<Control, BenchError> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| BenchError::io(format!("cannot connect to Redis at {addr}"), e))?;
        let setup = |e| BenchError::io("cannot configure the Redis connection", e);
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(setup)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(setup)?;
        Ok(Control {
            stream,
            input: ReadBuf::default(),
        })
    }

    /// Sends a command; a Redis error reply is an `Err`.
    pub(crate) fn command(&mut self, args: &[&str]) -> Result<Reply, BenchError> {
        let name = args.join(" ");
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.stream
            .write_all(&command(&bytes))
            .map_err(|e| BenchError::io(format!("cannot send {name} to Redis"), e))?;
        let no_answer = |e| BenchError::io(format!("no answer from Redis to {name}"), e);
        loop {
            if let Some(reply) = next_reply(&mut self.input).map_err(no_answer)? {
                return reply.ok(&name);
            }
            let read = self.stream.read(self.input.spare());
            self.input.filled(read).map_err(no_answer)?;
        }
    }

    pub(super) fn config_get(&mut self, key: &str) -> Result<String, BenchError> {
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
    pub(super) fn info_field(
        &mut self,
        section: &str,
        field: &str,
    ) -> Result<Option<String>, BenchError> {
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
