//! busbar's listeners: binding the Unix sockets (private directory, file
//! mode, stale files) and TCP ports, and the accept loop every socket
//! transport shares ([`Accept`]): admission hooks, the per-transport
//! connection limit with its client-visible answer and metrics, and
//! draining at shutdown.
//!
//! The ingest sockets (`busbar-ingest`), the command socket (`busbar-ops`)
//! and later listeners use it, so a limit or a deadline added here holds
//! on every one of them.

#![warn(missing_docs)]

mod accept;
mod budget;
mod error;
mod tcp;
mod unix;

pub use accept::{stopped, Accept, Limits, PeerName, PeerSlot, PerPeer, Rejected};
pub use budget::{open_file_limit, Budget, BudgetPermit, DEFAULT_FD_RESERVE};
pub use error::ListenError;
pub use tcp::bind_tcp;
pub use unix::{bind_unix, UnixSocket};
