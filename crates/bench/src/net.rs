//! The connections of the bench's clients (busbar's socket protocol and
//! WebSocket, Redis, NATS): how they connect, the buffer they read into,
//! and the pipelined connection the Redis and NATS clients build on.

use std::io::ErrorKind;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BenchError;

/// A TCP connection to `system` at `addr` whose small writes leave at
/// once: pipelined requests must not wait for the answers to earlier ones.
pub(crate) async fn connect(addr: SocketAddr, system: &str) -> Result<TcpStream, BenchError> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| BenchError::io(format!("cannot connect to {system} at {addr}"), e))?;
    s.set_nodelay(true)
        .map_err(|e| BenchError::io("cannot set TCP_NODELAY", e))?;
    Ok(s)
}

/// A TCP connection whose requests are queued in `out` and written
/// together, so that a client pipelines (an ack with the next read), and
/// whose answers are read into `input`.
pub(crate) struct Pipeline {
    stream: TcpStream,
    /// What was read and not parsed yet.
    pub(crate) input: ReadBuf,
    /// What is queued and not written yet.
    pub(crate) out: Vec<u8>,
    system: &'static str,
}

impl Pipeline {
    /// Connects to `system` at `addr`.
    pub(crate) async fn connect(
        addr: SocketAddr,
        system: &'static str,
    ) -> Result<Pipeline, BenchError> {
        Ok(Pipeline {
            stream: connect(addr, system).await?,
            input: ReadBuf::default(),
            out: Vec::with_capacity(64 * 1024),
            system,
        })
    }

    /// Writes what is queued.
    pub(crate) async fn flush(&mut self) -> Result<(), BenchError> {
        self.stream
            .write_all(&self.out)
            .await
            .map_err(|e| BenchError::io(format!("cannot write to {}", self.system), e))?;
        self.out.clear();
        Ok(())
    }

    /// Reads what the peer sent next into `input`.
    pub(crate) async fn fill(&mut self) -> Result<(), BenchError> {
        let read = self.stream.read(self.input.spare()).await;
        self.input
            .filled(read)
            .map_err(|e| BenchError::io(format!("cannot read from {}", self.system), e))
    }

    /// The socket and the bytes read and not parsed, for a reader that
    /// parses in place from here on.
    pub(crate) fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.input.into_unparsed())
    }
}

/// Bytes a connection asks the socket for at once.
const READ_CHUNK: usize = 256 * 1024;

/// Bytes read and not parsed yet. A read goes into [`ReadBuf::spare`] and
/// its result into [`ReadBuf::filled`]; parsers look at
/// [`ReadBuf::unparsed`] and [`ReadBuf::consume`] what they used.
#[derive(Default)]
pub(crate) struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
}

impl ReadBuf {
    /// What was read and not consumed.
    pub(crate) fn unparsed(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Marks `n` bytes of [`ReadBuf::unparsed`] as used.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }

    /// Consumes `n` bytes and returns them; valid until the next read.
    pub(crate) fn take(&mut self, n: usize) -> &[u8] {
        let from = self.start;
        self.consume(n);
        &self.buf[from..self.start]
    }

    /// Room for the next read, after what is unparsed.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        self.buf.drain(..self.start);
        self.start = 0;
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        &mut self.buf[len..]
    }

    /// Keeps what the read into [`ReadBuf::spare`] brought. A read of
    /// nothing means the peer closed the connection: `UnexpectedEof`.
    pub(crate) fn filled(&mut self, read: std::io::Result<usize>) -> std::io::Result<()> {
        let n = *read.as_ref().unwrap_or(&0);
        self.buf.truncate(self.buf.len() - READ_CHUNK + n);
        match read? {
            0 => Err(ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    /// What is unparsed, for a reader that goes on without this buffer.
    pub(crate) fn into_unparsed(mut self) -> Vec<u8> {
        self.buf.drain(..self.start);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(b: &mut ReadBuf, data: &[u8]) {
        b.spare()[..data.len()].copy_from_slice(data);
        b.filled(Ok(data.len())).unwrap();
    }

    #[test]
    fn unparsed_bytes_survive_reads() {
        let mut b = ReadBuf::default();
        read(&mut b, b"one\ntw");
        assert_eq!(b.take(4), b"one\n");
        read(&mut b, b"o\n");
        assert_eq!(b.unparsed(), b"two\n");
        b.consume(100);
        assert!(b.unparsed().is_empty());
        read(&mut b, b"rest");
        assert_eq!(b.into_unparsed(), b"rest");
    }

    #[test]
    fn a_closed_connection_or_a_failed_read_keeps_nothing() {
        let mut b = ReadBuf::default();
        read(&mut b, b"x");
        b.spare();
        let closed = b.filled(Ok(0)).unwrap_err();
        assert_eq!(closed.kind(), ErrorKind::UnexpectedEof);
        b.spare();
        assert!(b.filled(Err(ErrorKind::ConnectionReset.into())).is_err());
        assert_eq!(b.unparsed(), b"x");
    }
}
