//! Handing a connection over to the live hub.
//!
//! A connection that sends an op of the live protocol (`subscribe`,
//! `join`, ...; see the crate docs) stops being an ingest connection: every
//! line before it is published and answered, then the socket, the bytes
//! already read from it (starting with that line) and the caller's
//! [`Principal`] go to a [`LiveUpgrade`]. This crate does not know the live
//! hub; the daemon installs one with [`Ingest::with_live`](crate::Ingest::with_live).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use busbar_engine::{Principal, Transport};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// The reading half of a handed-over connection.
pub type LiveReader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a handed-over connection.
pub type LiveWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A connection handed to the live hub.
#[non_exhaustive]
pub struct LiveConnection {
    /// [`Transport::Unix`] or [`Transport::Tcp`].
    pub transport: Transport,
    /// Who is calling: trusted on the Unix socket, else from the token of
    /// the connection's hello (or open when no tokens are configured).
    pub principal: Principal,
    /// The peer: `ip:port` on TCP; `unix` (with the peer's pid when the
    /// system says it) on the Unix socket.
    pub remote: String,
    /// Bytes read from the connection and not yet looked at: the line with
    /// the live op (`\n`-terminated), then whatever followed it.
    pub buffered: BytesMut,
    /// The rest of the input.
    pub reader: LiveReader,
    /// The output. Everything due before the hand-over was written and
    /// flushed.
    pub writer: LiveWriter,
    /// Turns true when the ingest transports shut down.
    pub shutdown: watch::Receiver<bool>,
}

impl fmt::Debug for LiveConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveConnection")
            .field("transport", &self.transport)
            .field("remote", &self.remote)
            .field("buffered", &self.buffered.len())
            .finish_non_exhaustive()
    }
}

/// Serves connections that switched to the live protocol.
pub trait LiveUpgrade: Send + Sync + 'static {
    /// Serves `conn` until it ends. The ingest listener counts the
    /// connection (its limit, its gauge, the drain at shutdown) until the
    /// returned future completes.
    fn upgrade(self: Arc<Self>, conn: LiveConnection) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}
