//! The connections of the bench's clients (busbar's socket protocol and
//! WebSocket, Redis, NATS): how they connect, and the buffer they read
//! into.

use std::io::ErrorKind;
use std::net::SocketAddr;

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
