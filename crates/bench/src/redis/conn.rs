//! An async connection for load: commands are queued, written together
//! and answered in order, so a consumer can send its `XACK` with its next
//! `XREADGROUP` in one write.

use std::net::SocketAddr;

use super::{next_reply, push_command, Reply};
use crate::net::Pipeline;
use crate::BenchError;

/// An async connection with a queue of commands not sent yet.
pub(crate) struct Conn(Pipeline);

impl Conn {
    pub(crate) async fn connect(addr: SocketAddr) -> Result<Conn, BenchError> {
        Ok(Conn(Pipeline::connect(addr, "Redis").await?))
    }

    /// Queues a command.
    pub(crate) fn push(&mut self, args: &[&[u8]]) {
        push_command(&mut self.0.out, args);
    }

    /// Queues `XADD <key> * <field> <value>`.
    pub(crate) fn push_xadd(&mut self, key: &str, field: &str, value: &[u8]) {
        self.push(&[b"XADD", key.as_bytes(), b"*", field.as_bytes(), value]);
    }

    /// Queues `XREADGROUP GROUP <group> <consumer> COUNT <count> BLOCK
    /// <block_ms> STREAMS <key> >`: new entries for `consumer`.
    pub(crate) fn push_xreadgroup(
        &mut self,
        key: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block_ms: u64,
    ) {
        let (count, block) = (count.to_string(), block_ms.to_string());
        self.push(&[
            b"XREADGROUP",
            b"GROUP",
            group.as_bytes(),
            consumer.as_bytes(),
            b"COUNT",
            count.as_bytes(),
            b"BLOCK",
            block.as_bytes(),
            b"STREAMS",
            key.as_bytes(),
            b">",
        ]);
    }

    /// Queues `XACK <key> <group> <ids...>`.
    pub(crate) fn push_xack(&mut self, key: &str, group: &str, ids: &[Vec<u8>]) {
        let mut args: Vec<&[u8]> = vec![b"XACK", key.as_bytes(), group.as_bytes()];
        args.extend(ids.iter().map(Vec::as_slice));
        self.push(&args);
    }

    /// Sends what is queued.
    pub(crate) async fn flush(&mut self) -> Result<(), BenchError> {
        self.0.flush().await
    }

    /// The next reply, error replies included.
    pub(crate) async fn reply(&mut self) -> Result<Reply, BenchError> {
        loop {
            let parsed = next_reply(&mut self.0.input);
            if let Some(reply) = parsed.map_err(|e| BenchError::io("cannot read from Redis", e))? {
                return Ok(reply);
            }
            self.0.fill().await?;
        }
    }

    /// Sends one command and waits for its reply; an error reply is an
    /// `Err`.
    pub(crate) async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, BenchError> {
        self.push(args);
        self.flush().await?;
        let name = String::from_utf8_lossy(args.first().copied().unwrap_or_default());
        self.reply().await?.ok(&name)
    }
}
