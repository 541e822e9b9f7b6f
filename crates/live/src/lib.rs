//! busbar's live transports, over the transport-free hub of
//! `busbar-fanout`:
//!
//! - `/ws` ([`router`]): the live protocol over WebSocket. The upgrade
//!   checks the daemon's state, the `Origin`, the token and the connection
//!   limit, asks the engine's admission hooks, then serves the connection
//!   with `tokio-tungstenite` ([`ws`]): text messages are framed straight
//!   from the hub's shared buffers.
//! - The same protocol, one message per line, on a Unix or TCP ingest
//!   connection that sends a live op: `busbar-ingest` hands it over
//!   through [`SocketUpgrade`], this crate's [`busbar_ingest::LiveUpgrade`]
//!   ([`lines`]).
//! - The hub's ops routes, registered with `busbar-ops` by
//!   [`register_ops`]: `/api/ops/sessions` (producer sessions with frame
//!   counts, rates and clock drift), `/api/ops/sockets` (connections with
//!   role and rooms) and `/api/ops/rooms` (room sizes and delays). A
//!   tenant-bound admin sees its own tenant's only.
//!
//! The protocol itself, and everything behind it (feeds, rooms, sessions,
//! slow-client policies), is in `busbar-fanout`.

#![warn(missing_docs)]

mod http;
pub mod lines;
mod socket;
pub mod ws;

pub use http::{register_ops, router};
pub use socket::SocketUpgrade;
