//! busbar's tamper-evident audit log: an append-only file of every
//! administrative action (who, when, what, on what, with which
//! parameters), each record holding the blake3 hash of the one before, so
//! that editing, deleting, reordering or inserting a record breaks the
//! chain at that record; and [`verify`], which names the first broken one.
//!
//! The engine reports each action to [`AuditLog`] through its
//! [`Hook::administered`](busbar_engine::Hook::administered) seam;
//! `busbar audit verify` and `busbar audit show` read the file directly.
//!
//! # Design
//!
//! ## Constraints
//! Administrative actions are rare (an operator's trims, purges, pauses,
//! replays), so durability comes before speed: every record is fsynced
//! before the next is written. Nothing is written on the publish path.
//! The engine calls the hook on the caller's task, so the hook only queues
//! the record; a thread of its own writes it.
//!
//! ## On-disk format
//! One file, `<data_dir>/audit/audit.log` by default, mode 0600, one JSON
//! object per line, oldest first:
//!
//! ```text
//! {"seq":1,"ts":1765152000123,"actor":{"kind":"token","name":"ops"},"action":"dlq.purge",
//!  "target":"orders","params":{"removed":3},"prev":"0000…0000","hash":"5f1c…9a0e"}\n
//! {"seq":2,"ts":1765152004410,"actor":{"kind":"trusted"},"action":"stream.rotate",
//!  "target":"*","params":{"sealed":["orders"],"streams":1},"prev":"5f1c…9a0e","hash":"…"}\n
//! ```
//! (shown wrapped; each record is one line).
//!
//! - `seq`: 1 for the first record, then one more per record.
//! - `ts`: milliseconds since the Unix epoch, when the record was written.
//! - `actor`: `kind` is `token` (with the token's `name`, never its secret,
//!   and its `tenant` if it has one), `trusted` (a Unix socket or the
//!   command socket), `open` (no token is configured) or `system` (the
//!   log's own records, below).
//! - `action`, `target`, `params`: see
//!   [`AdminAction`](busbar_engine::AdminAction); `params` is a JSON
//!   object of ids, counts and limits, never an event payload or a secret.
//! - `prev`: the previous record's `hash`; for the first record, the
//!   genesis value [`GENESIS`], 64 zeros.
//! - `hash`: 64 lowercase hex digits of blake3, in key-derivation mode
//!   with the context `"busbar audit log 2026-12 record v1"`, over the
//!   record's canonical encoding: `seq` and `ts` as 8 little-endian bytes
//!   each; `actor.kind`, `action`, `target` and the canonical JSON of
//!   `params` (keys sorted, no whitespace) each as an 8-byte little-endian
//!   length and the bytes; `actor.name` and `actor.tenant` each as a 0
//!   byte when absent, else a 1 byte and the same length-prefixed form;
//!   then the 32 raw bytes of `prev`. The hash covers the fields, not the
//!   line's spelling, so the line may be re-serialised; a field that is
//!   not in the format makes the line malformed.
//!
//! ## What verify reports
//! [`verify`] walks the lines in order and stops at the first that is not
//! the valid successor of the one before, naming it by `seq`, line and
//! byte offset ([`Break`]), and why ([`Problem`]): a malformed line, a
//! sequence gap (a record deleted), a sequence out of order (records
//! reordered or repeated), a `prev` that is not the previous hash, a hash
//! that does not match the fields (a record edited), or a last line
//! without its newline (a torn write, or a file cut in the middle of a
//! record).
//!
//! ## What a hash chain cannot show alone
//! A log cannot know its own future: a file cut exactly at a record
//! boundary is a valid, shorter chain, and whoever can write the file and
//! knows this format can append records with correct hashes. Both are
//! caught only against a head remembered elsewhere:
//! `busbar audit verify --expect-head <seq>:<hash>` ([`ExpectedHead`])
//! fails when the log ends before that record or holds another hash
//! there. The daemon exports its head as the `busbar_audit_head` metric
//! (value: `seq`; label `hash`: the first 16 hex digits) and through
//! [`AuditLog::head`], so Prometheus, or an operator writing it into an
//! incident ticket, is that witness. While the daemon runs, a record
//! appended behind its back also breaks the chain at the daemon's next
//! record, which continues from its own head.
//!
//! ## Writes and fsync
//! [`AuditLog::record`] (and the hook) queue the record on a bounded
//! channel (1024 by default) and return. The writer thread assigns `seq`
//! and `prev`, writes the line with one `write` call, then `fdatasync`s
//! before taking the next record, and only then moves the head. A record
//! is never dropped silently: one the queue cannot take, or whose write
//! or fsync fails, is counted in `busbar_audit_write_errors_total{reason}`
//! and logged as an error, and the next record written is preceded by an
//! `audit.records_lost` record with the count, so the chain itself says
//! records are missing. After a failed write the file is cut back to its
//! last complete record; if that fails too, the writer stops appending
//! (every later record is an error) rather than write after a broken line.
//! The answer to an administrative request does not wait for its record's
//! fsync; at shutdown [`AuditLog::close`] writes every queued record.
//!
//! ## Recovery: reopening a log
//! [`AuditLog::open`] takes an exclusive lock on the file (a second daemon
//! on the same log is refused), walks the chain and continues it from the
//! newest record:
//!
//! - **A torn last line** (a crash during a write; the record's fsync never
//!   completed, so its action was never reported as audited) is cut off,
//!   and an `audit.torn_tail_repaired` record with the cut bytes' offset,
//!   length and blake3 hash is chained in its place: the repair is itself
//!   in the log. Until the daemon reopens the log, `verify` reports the
//!   torn line.
//! - **Any other break** is refused ([`OnBroken::Fail`], the default): the
//!   daemon does not start, naming the first broken record, and the file
//!   is left untouched. With [`OnBroken::NewFile`] the file is renamed to
//!   `<file>.broken-<ms>` and a new chain starts from the genesis value,
//!   its first record (`audit.chain_restarted`) naming the old file, the
//!   break and the old chain's last valid head.
//!
//! ## Readers
//! `busbar audit verify` and `show` read the file without a lock while the
//! daemon may append: [`read_log`] reads again while the file ends in the
//! middle of a line (a write in progress), so a live append does not make
//! verify fail; a line still incomplete after about a second is reported.

#![warn(missing_docs)]

mod log;
mod record;
mod verify;

use std::path::PathBuf;

use thiserror::Error;

pub use crate::log::{AuditConfig, AuditLog, OnBroken, DEFAULT_QUEUE};
pub use crate::record::{canonical_json, Actor, Entry, Hash, Record, GENESIS};
pub use crate::verify::{
    read_log, records, verify, Break, ExpectedHead, Head, Problem, Verified, MIN_HEAD_PREFIX,
};

/// Why an audit log could not be opened.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A file operation failed.
    #[error("cannot {what} the audit log {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Another process holds the log's lock.
    #[error("the audit log {path} is locked by another process (is another busbar running on this data directory?)")]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The chain is broken and the policy is to refuse it.
    #[error(
        "the audit log {path} is broken at {broken}; inspect it with `busbar audit verify`, \
         or set [audit] on_broken = \"new_file\" to keep it aside and start a new chain"
    )]
    Broken {
        /// The file.
        path: PathBuf,
        /// The first broken record.
        broken: Box<Break>,
    },
}
