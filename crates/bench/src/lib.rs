//! busbar's load scenarios.
//!
//! [`ingest::run`] is `busbar bench ingest`: it starts its own `busbar
//! serve` child on a temporary data directory with ephemeral ports, drives
//! it with many producer connections over TCP and the Unix socket (acks on,
//! each connection pipelining a bounded number of un-acked events), then
//! runs the same load (same connection count, same pipelining depth, same
//! payload bytes) against Redis `XADD`, with Redis' persistence set to match
//! busbar's durability:
//!
//! | busbar | Redis |
//! |---|---|
//! | `--durability always` | `appendonly yes`, `appendfsync always` |
//! | `--durability interval:1s` | `appendonly yes`, `appendfsync everysec` |
//! | `--memory` | `appendonly no` |
//!
//! Redis' settings are read first and put back afterwards, also when the
//! run fails or is interrupted, and the bench's keys are deleted. RDB
//! snapshots (`save`) are off during a run so a fork never lands in the
//! middle of one.
//!
//! Every figure is measured by one client, in one process, on one thread
//! by default: throughput is acknowledged events divided by the time from
//! the first send to the last acknowledgement; latency is publish →
//! acknowledgement per event, in an HDR histogram. Each level runs a few
//! rounds alternating busbar and Redis and reports the median round, so a load that comes and goes on the machine
//! weighs on both systems alike.
//!
//! Everything is bounded: a fixed event count per run, a time limit per run,
//! and loopback addresses only.
//!
//! [`fanout::run`] is `busbar bench fanout`: live fan-out from one
//! publisher to many WebSocket subscribers of a fresh daemon, against the
//! same shape on NATS core pub/sub; see its module docs.
//!
//! [`groups::run`] is `busbar bench groups`: consumer-group delivery with
//! acks against Redis `XREADGROUP`/`XACK` and NATS JetStream pull
//! consumers, at each durability level; see its module docs.
//!
//! Every scenario starts its daemons with `busbar-testkit` and talks to
//! the peers through one Redis client and one NATS client.

#![warn(missing_docs)]

mod daemon;
mod error;
pub mod fanout;
pub mod groups;
pub mod ingest;
mod load;
mod nats;
mod net;
mod procfs;
mod redis;
mod report;
mod runtime;
mod wire;

pub use error::BenchError;
pub use report::{LevelReport, Report, RunReport};
