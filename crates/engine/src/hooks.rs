//! Engine hooks: how side services plug into the publish, read and
//! connection paths without the engine knowing them.
//!
//! A [`Hook`] is registered once, at start-up, with
//! [`Engine::add_hook`](crate::Engine::add_hook); hooks run in registration
//! order. Each method has a default that does nothing, so a hook implements
//! only what it needs:
//!
//! - [`Hook::admit`] may refuse a publish, a read or a connection with a
//!   [`Refusal`]: `Overloaded` (try again later) or `Paused` (an operator
//!   stopped it). The first refusal wins and the later hooks are not asked.
//!   Every transport turns the resulting [`EngineError::Overloaded`] or
//!   [`EngineError::Paused`](crate::EngineError::Paused) into its own answer:
//!   HTTP 503 with the reason and `Retry-After`, an error line on the
//!   sockets, an error message (or, for a refused connection, close code
//!   1013 "try again later") on WebSocket.
//! - [`Hook::publishing`] sees every batch a client publishes, and who
//!   publishes it, just before it is appended (the live hub counts producer
//!   sessions and clock drift here, by the publisher's tenant); [`Hook::published`] sees the ids once the append is durable
//!   (audit, relay wake-ups, ops counters). Engine-internal appends (DLQ
//!   reprocessing, replays) are not publishes and do not reach them.
//! - [`Hook::administered`] sees every administrative action once it has
//!   succeeded, and who performed it (an audit log; see [`crate::admin`]).
//!
//! Hooks are called on the caller's task, once per batch or connection,
//! never per event: keep them cheap and never block.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use busbar_engine::{Admit, Auth, Engine, EngineError, Hook, Principal, Refusal, Transport};
//! use busbar_event::{EventBatch, NewEvent, StreamName};
//! use busbar_store::memory::MemoryStore;
//!
//! /// Refuses every publish: intake is stopped.
//! struct Stopped;
//!
//! impl Hook for Stopped {
//!     fn name(&self) -> &'static str {
//!         "stopped"
//!     }
//!     fn admit(&self, request: &Admit<'_>) -> Result<(), Refusal> {
//!         match request {
//!             Admit::Publish { .. } => Err(Refusal::Paused { reason: "intake stopped".into() }),
//!             _ => Ok(()),
//!         }
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let engine = Engine::builder(Arc::new(MemoryStore::new())).build();
//! engine.add_hook(Arc::new(Stopped));
//! let mut batch = EventBatch::new();
//! batch.push(&NewEvent::new("t", b"{}")).unwrap();
//! let stream = StreamName::new("orders").unwrap();
//! let refused = engine
//!     .publish(&Principal::Trusted, &stream, batch, Default::default(), Transport::Local)
//!     .await
//!     .unwrap_err();
//! assert!(matches!(refused, EngineError::Paused { .. }));
//! assert_eq!(refused.reason(), "paused");
//! # });
//! ```

use std::time::Duration;

use busbar_event::{EventBatch, EventId, StreamName};

use crate::{AdminAction, EngineError, Principal, ReadOp, Transport};

/// What an admission check is asked about.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Admit<'a> {
    /// A batch about to be appended.
    Publish {
        /// Who publishes.
        principal: &'a Principal,
        /// Where.
        stream: &'a StreamName,
        /// Events in the batch.
        events: usize,
        /// How it came in.
        transport: Transport,
    },
    /// A read of a stream or a group.
    Read {
        /// Who reads.
        principal: &'a Principal,
        /// The stream.
        stream: &'a StreamName,
        /// Which kind of read.
        op: ReadOp,
    },
    /// A connection just accepted.
    Connect {
        /// The listener.
        transport: Transport,
        /// The peer: `ip:port` on TCP and HTTP, `unix` on the Unix sockets.
        peer: &'a str,
    },
}

impl Admit<'_> {
    /// `publish`, `read` or `connect` (a metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            Admit::Publish { .. } => "publish",
            Admit::Read { .. } => "read",
            Admit::Connect { .. } => "connect",
        }
    }
}

/// Why a hook refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Busy: the caller should try again after `retry_after`.
    Overloaded {
        /// Why, for the client and the logs (no payloads, no secrets).
        reason: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// An operator paused this kind of work.
    Paused {
        /// Why, for the client and the logs.
        reason: String,
    },
}

impl From<Refusal> for EngineError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Overloaded {
                reason,
                retry_after,
            } => EngineError::Overloaded {
                reason,
                retry_after,
            },
            Refusal::Paused { reason } => EngineError::Paused { reason },
        }
    }
}

/// A side service's view of the engine: see the module docs.
pub trait Hook: Send + Sync + 'static {
    /// A short name for logs and metrics (`live-sessions`, `overload`).
    fn name(&self) -> &'static str;

    /// Whether `request` may go ahead.
    ///
    /// # Errors
    /// The [`Refusal`] the caller gets.
    fn admit(&self, request: &Admit<'_>) -> Result<(), Refusal> {
        let _ = request;
        Ok(())
    }

    /// A client's `batch` is about to be appended to `stream` for
    /// `principal` (whose tenant, if any, is the events' tenant).
    fn publishing(&self, principal: &Principal, stream: &StreamName, batch: &EventBatch) {
        let _ = (principal, stream, batch);
    }

    /// A client's batch was appended to `stream` as `ids` (durable as the
    /// store's policy says).
    fn published(&self, stream: &StreamName, ids: &[EventId], transport: Transport) {
        let _ = (stream, ids, transport);
    }

    /// `principal` performed the administrative `action`, which succeeded
    /// (see [`crate::admin`]): a trim, a deletion, a rotation, a dead-letter
    /// move or purge, a replay, a pause, a job cancelled, a delay set. Rare;
    /// called on the caller's task, so hand slow work (a file write) to a
    /// thread of its own.
    fn administered(&self, principal: &Principal, action: &AdminAction<'_>) {
        let _ = (principal, action);
    }
}
