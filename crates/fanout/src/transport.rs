//! What a transport gives a live connection: an [`Inbound`] that yields
//! what the client sent and an [`Outbound`] that writes batches of
//! [`Outgoing`] messages. `busbar-live` implements both for WebSocket and
//! for a socket that switched to the live protocol.

use std::future::Future;
use std::io;

use crate::{CloseReason, Outgoing, Text};

/// What a client sent.
#[derive(Debug)]
pub enum Incoming {
    /// A text message: one op.
    Text(Text),
    /// Something that is not an op; answered with this error, and the
    /// connection goes on.
    Refused {
        /// A stable reason (`too_large`, `bad_message`, `unsupported`).
        reason: &'static str,
        /// What was wrong.
        message: String,
    },
    /// A sign of life without content (a WebSocket ping or pong).
    Heard,
    /// The client sent a close frame: it is answered with one.
    CloseFrame,
    /// The connection failed.
    Closed,
    /// The client's input ended (a socket's end of file): answers already
    /// due are written before the connection closes.
    End,
    /// The client broke the transport's rules (a message over the size
    /// limit, a protocol error): the connection is closed with this reason,
    /// which a WebSocket client gets as its close frame's code.
    Violation(CloseReason),
}

/// The receiving half of a connection.
pub trait Inbound: Send + 'static {
    /// The next thing the client sent.
    ///
    /// # Cancel safety
    /// Must be cancel safe: nothing may be lost when it is cancelled.
    fn next(&mut self) -> impl Future<Output = Incoming> + Send;

    /// Whether the transport has heartbeats the client answers without
    /// knowing (WebSocket pings). Without them a quiet client is not taken
    /// for a dead one: the transport relies on the kernel and the write
    /// deadline instead.
    fn has_heartbeats(&self) -> bool;
}

/// Whether a writer goes on after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Write the next batch.
    More,
    /// An [`Outgoing::Close`] was written: stop.
    Done,
}

/// The sending half of a connection.
pub trait Outbound: Send + 'static {
    /// Writes `batch` (draining it) and flushes once; stops after an
    /// [`Outgoing::Close`].
    fn write(&mut self, batch: &mut Vec<Outgoing>)
        -> impl Future<Output = io::Result<Flow>> + Send;

    /// Ends the connection's output (a close frame, or the socket's end of
    /// file).
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}
