//! busbar's socket transports: NDJSON ingest over a Unix socket and TCP, and
//! the operator command socket.
//!
//! # The ingest protocol
//!
//! A producer writes one JSON event per line (`\n`-terminated; a final line
//! without `\n` counts when the producer closes). By default the connection
//! is fire-and-forget: busbar writes nothing back, and shuts down its own
//! sending side once it has read the first event, so this returns as soon
//! as the line is sent:
//!
//! ```text
//! echo '{"type":"test"}' | nc -U data/sock/events.sock
//! ```
//!
//! ## Hello and acknowledgements
//!
//! A producer that wants acknowledgements (or must authenticate, on TCP when
//! tokens are configured) sends a hello as its **first** line:
//!
//! ```text
//! {"hello":{"acks":true,"token":"<secret>"}}
//! ```
//!
//! Both members are optional (`acks` defaults to false). busbar does not
//! answer a good hello. With `acks` on, busbar writes exactly one line per
//! event line, in the order the events were sent, as soon as each event is
//! durable (so producers may pipeline: keep writing without waiting):
//!
//! ```text
//! {"id":"1700000000000-0"}
//! {"error":"malformed_json","message":"malformed JSON: expected value at line 1 column 1"}
//! ```
//!
//! `error` is a stable reason (`malformed_json`, `missing_type`,
//! `invalid_field`, `too_large`, `invalid_stream`, `wrong_tenant`,
//! `forbidden`, `shutting_down`, `storage_error`...); `message` says what was
//! wrong. A bad event never closes the connection: the next line is read as
//! usual. Blank lines are ignored and get no answer.
//!
//! A line longer than `max_line_bytes` is discarded up to its newline and
//! answered with `too_large`. Errors are counted in
//! `busbar_ingest_errors_total{transport,reason}` whether or not acks are on.
//!
//! A hello that is not understood, a bad token, or (on TCP with tokens
//! configured) a first line that is not a hello gets one error line
//! (`bad_hello`, `bad_token`, `unauthenticated`) and the connection is
//! closed. A producer that shuts down its write side still receives every
//! acknowledgement before busbar closes the connection.
//!
//! Callers on the Unix socket are trusted (the socket's file mode guards
//! it); a token sent there is ignored. A tenant-bound token publishes to
//! `<tenant>:events` by default, may only name its own tenant's streams, and
//! its events carry its tenant.
//!
//! ## Batching
//!
//! Each connection parses every complete line it has read and groups the
//! events into one batch per stream; while the previous batch is being made
//! durable, new lines join the next batch. One batch is one store append, so
//! a fast producer gets group commit without per-line appends.
//!
//! # The command socket
//!
//! See [`commands`].

#![warn(missing_docs)]

mod batcher;
pub mod commands;
mod connection;
mod error;
mod lines;
mod listener;
mod tcp;
mod unix;

pub use error::IngestError;
pub use listener::{Ingest, IngestOptions};
pub use tcp::bind_tcp;
pub use unix::{bind_unix, UnixSocket};
