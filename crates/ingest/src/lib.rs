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
//! {"id":"1700000000000-0","duplicate":true}
//! ```
//!
//! Publishing is idempotent: an event whose `idempotency_key` its stream
//! stored within the duplicate window (`[storage] dedup_window`, two
//! minutes by default), or earlier in the same read, is not stored again
//! and is answered with the original's id and `"duplicate":true`.
//!
//! `error` is a stable reason (`malformed_json`, `too_deep`,
//! `invalid_number`, `missing_type`, `invalid_field`, `too_large`,
//! `invalid_stream`, `wrong_tenant`, `forbidden`, `shutting_down`,
//! `storage_error`...); `message` says what was wrong. A bad event never closes the connection: the next line is read as
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
//! ## Consumer groups on the same connection
//!
//! A connection also consumes: besides events, it may send **op lines**. A
//! line is an op when its top-level object has an `op` member and no `type`
//! member (every event has a `type`, so an event whose payload carries an
//! `op` field stays an event). Each op gets exactly one answer line, in
//! line order with the event acknowledgements, so ops may be pipelined
//! with events and with each other. `stream` defaults to the connection's
//! default stream (`events`, or `<tenant>:events` for a tenant token).
//!
//! ```text
//! {"op":"create_group","stream":"orders","group":"billing","start":"0","max_deliver":3,"ack_wait_ms":30000}
//! {"group":{"stream":"orders","name":"billing","pending":0,"lag":2,...}}
//! {"op":"read","stream":"orders","group":"billing","consumer":"w1","count":100,"block_ms":5000}
//! {"deliveries":[{"id":"1700000000000-0","delivery_count":1,"event":{"id":"1700000000000-0","stream":"orders","type":"order.created",...}}],"redelivered":0,"dead_lettered":0}
//! {"op":"ack","stream":"orders","group":"billing","consumer":"w1","ids":["1700000000000-0"]}
//! {"acked":["1700000000000-0"],"unknown":[],"wrong_consumer":[]}
//! ```
//!
//! | op | members (`?`: optional, default) | answer |
//! |---|---|---|
//! | `create_group` | `stream?`, `group`, `start?` (`"$"`: new events only, the default; `"0"`: from the beginning; an id: after it), `max_deliver?` (3), `ack_wait_ms?` (30000), `max_pending_per_consumer?` (1000), `on_exhausted?` (`"dead_letter"` or `"drop"`) | `{"group":{..}}` |
//! | `group` | `stream?`, `group` | `{"group":{..}}`: pending, lag, cursor, consumers, `paused` (by its own pause or a pause of all delivery) |
//! | `read` | `stream?`, `group`, `consumer`, `count?` (1), `block_ms?` (0; at most 60000) | `{"deliveries":[{"id","delivery_count","event"}],"redelivered":n,"dead_lettered":n}` |
//! | `ack` | `stream?`, `group`, `consumer?` (any consumer when absent), `ids` | `{"acked":[..],"unknown":[..],"wrong_consumer":[..]}` |
//! | `nack` | `stream?`, `group`, `consumer`, `ids`, `delay_ms?` (0), `terminal?` (false: dead-letter now), `error?` (kept with the entry and in the dead-letter stream) | `{"retried","dead_lettered","dropped","unknown","wrong_consumer"}` (lists of ids) |
//! | `claim` | `stream?`, `group`, `consumer`, `min_idle_ms`, `start?` (`"-"`), `count?` (1) | `{"deliveries":[..],"next":id or null,"deleted":[..]}` (`XAUTOCLAIM`) |
//! | `pending` | `stream?`, `group`, `consumer?`, `start?` (`"-"`), `end?` (`"+"`), `count?` (1) | `{"pending":[{"id","consumer","delivery_count","idle_ms","last_error"}]}` |
//!
//! Delivery is at least once. A delivered event stays pending for its
//! consumer until acked; a nack (after `delay_ms`) or an expired `ack_wait`
//! delivers it again, to whichever consumer reads next, with its
//! `delivery_count` one higher. After `max_deliver` deliveries it moves to
//! the stream's dead-letter stream `<stream>:dlq` exactly once, with
//! `meta` saying where it came from (`original_id`, `group`, `attempts`,
//! `last_error`, `dead_lettered_at`). Under `durability = always` a read's
//! deliveries and an ack are on disk before they are answered.
//!
//! A `read` with `block_ms` waits until it can deliver something or the
//! time is up (then `"deliveries":[]`); every answer due before it on the
//! connection is written before it waits, and other connections are not
//! held up. Answers to lines sent after it wait for it (they stay in
//! order): open another connection to ack while a read blocks, or pipeline
//! the acks before the next read. Events sent on the connection before an
//! op are appended before the op runs.
//!
//! An op that cannot run gets an error line and the connection goes on:
//! `unknown_op`, `missing_field`, `invalid_op` (a member of the wrong type,
//! one the op does not use, bad ids), `invalid_stream`, `invalid_id`,
//! `invalid_name`, `no_such_stream`, `no_such_group`, `group_exists`,
//! `forbidden`, `wrong_tenant`, `shutting_down`. An `ack` or `nack` naming
//! ids that are not pending (`unknown_id`) or are held by another consumer
//! (`wrong_consumer`) settles the others and answers with `error`,
//! `message` *and* the lists, so the caller sees exactly what happened.
//!
//! Ops are always answered. A connection whose first line is an op answers
//! every line, as if its hello had asked for acks. On a connection that
//! does not answer (no hello and an event first, or `"acks":false`) an op
//! is not run, since nothing could be written back; it is counted as
//! `busbar_ingest_errors_total{reason="acks_required"}`. On TCP with
//! tokens configured, ops need a token with the `consume` scope (and a
//! tenant-bound token reaches only its tenant's streams); Unix-socket
//! callers are trusted.
//!
//! ## Live subscriptions on the same connection
//!
//! A line with an op of the live protocol (`hello`, `subscribe`,
//! `unsubscribe`, `join`, `leave`, `publish`, `set_delay`, `ping`: the
//! `/ws` protocol of `busbar-live`) switches the connection to that
//! protocol, when the daemon runs a live hub. Every line before it is
//! published and answered first, in order; from that line on, the
//! connection speaks exactly the `/ws` protocol, one JSON message per line
//! in each direction, and event lines are no longer accepted (publish with
//! the `publish` op):
//!
//! ```text
//! → {"hello":{"token":"<secret>"}}                      (TCP with tokens)
//! → {"op":"subscribe","id":"a","stream":"orders","from":"1700000000000-0"}
//! ← {"type":"subscribed","sub":"a"}
//! ← {"type":"event","sub":"a","event":{"id":"1700000000000-0","stream":"orders",...}}
//! ```
//!
//! The caller is who its hello said (trusted on the Unix socket), checked
//! like a `/ws` client: subscribing needs the `consume` scope, and a
//! tenant-bound token reaches only its tenant's streams. The switch needs a
//! connection that can be answered: one that asked for acks, whose first
//! line is an op, or that sent nothing but its hello; otherwise the live op
//! is counted as `acks_required` like any op. Without a live hub the op is
//! answered with `unsupported` and the connection goes on. The protocol,
//! and what differs from WebSocket (no heartbeat pings; the end of the
//! client's input ends the connection), is described in `busbar-live`.
//!
//! TCP connections use keepalive (probes after 30 s of silence), so a
//! peer whose host vanished is noticed even on a quiet connection.
//!
//! ## Batching
//!
//! Each connection parses every complete line it has read and groups the
//! events into one batch per stream; while the previous batch is being made
//! durable, new lines join the next batch. One batch is one store append, so
//! a fast producer gets group commit without per-line appends.
//!
//! # Listeners
//!
//! Binding the sockets and the accept loop (connection limits, admission,
//! draining) are `busbar-listen`'s; the command socket is `busbar-ops`'.

#![warn(missing_docs)]

mod answer;
mod batcher;
mod connection;
mod hello;
pub mod lines;
mod listener;
pub mod live;
mod ops;
mod publish;

pub use listener::{Deadlines, Ingest, IngestOptions};
pub use live::{LiveConnection, LiveUpgrade};
