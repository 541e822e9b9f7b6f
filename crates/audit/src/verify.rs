//! Walking the chain: [`verify`] names the first broken record, or gives
//! the head of an intact log.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::record::{Hash, Record, GENESIS};

/// The newest record of a chain: its sequence number and hash. An empty
/// log's head is `0` and [`GENESIS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The newest record's `seq` (0: no record).
    pub seq: u64,
    /// Its hash.
    pub hash: Hash,
}

impl Head {
    /// The head of an empty log.
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: GENESIS,
    };
}

impl fmt::Display for Head {
    /// `<seq>:<hash>`, the form `--expect-head` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// A head an operator remembered (`<seq>:<hash or a prefix of it>`), to
/// check a log against: see [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedHead {
    /// The record's `seq`.
    pub seq: u64,
    /// Its hash's hex, or the first 16 or more digits of it (the metric's
    /// label holds 16).
    pub hash: String,
}

/// The shortest hash prefix an [`ExpectedHead`] may hold.
pub const MIN_HEAD_PREFIX: usize = 16;

impl FromStr for ExpectedHead {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (seq, hash) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not <seq>:<hash>"))?;
        let seq = seq
            .trim()
            .parse()
            .map_err(|_| format!("`{seq}` is not a sequence number"))?;
        let hash = hash.trim().to_ascii_lowercase();
        if hash.len() < MIN_HEAD_PREFIX
            || hash.len() > 64
            || !hash.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(format!(
                "`{hash}` is not a hash: {MIN_HEAD_PREFIX} to 64 hex digits"
            ));
        }
        Ok(ExpectedHead { seq, hash })
    }
}

impl fmt::Display for ExpectedHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// An intact chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Its head.
    pub head: Head,
    /// Bytes of complete, valid lines (the whole file when intact).
    pub valid_len: u64,
}

/// Why a record breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The line is not a record (not JSON, a missing or unknown field, a
    /// hash not spelled as 64 lowercase hex digits, an empty line).
    Malformed {
        /// The parser's reason.
        reason: String,
    },
    /// The record's `seq` is not the one after the record before it: a
    /// record was deleted (`found` > `expected`), or records were
    /// reordered or duplicated.
    OutOfSequence {
        /// The seq that should be here.
        expected: u64,
        /// The seq the line holds.
        found: u64,
    },
    /// The record's `prev` is not the hash of the record before it.
    PrevMismatch {
        /// The previous record's hash.
        expected: Hash,
        /// What the record holds.
        found: Hash,
    },
    /// The record's fields do not hash to its `hash`: it was edited.
    HashMismatch {
        /// What the record holds.
        stored: Hash,
        /// What its fields hash to.
        computed: Hash,
    },
    /// The file ends in the middle of a line: a write torn by a crash, or
    /// a file cut short.
    TruncatedLastLine {
        /// Bytes of the partial line.
        bytes: u64,
    },
    /// The log ends before the record an operator remembered as its head:
    /// records at the end were removed (truncation at a record boundary).
    ShorterThanRemembered {
        /// The remembered head.
        remembered: ExpectedHead,
    },
    /// The record at the remembered head's seq has another hash: history
    /// up to it was rewritten.
    DiffersFromRemembered {
        /// The remembered head.
        remembered: ExpectedHead,
        /// The hash the log holds at that seq.
        found: Hash,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Malformed { reason } => write!(f, "malformed line: {reason}"),
            Problem::OutOfSequence { expected, found } if found > expected => write!(
                f,
                "sequence gap: expected seq {expected}, found {found} (records deleted or moved)"
            ),
            Problem::OutOfSequence { expected, found } => write!(
                f,
                "out of sequence: expected seq {expected}, found {found} (records reordered or repeated)"
            ),
            Problem::PrevMismatch { expected, found } => write!(
                f,
                "prev mismatch: the record before hashes to {}, this one names {}",
                expected.prefix(16),
                found.prefix(16)
            ),
            Problem::HashMismatch { stored, computed } => write!(
                f,
                "hash mismatch: the record holds {}, its fields hash to {} (edited)",
                stored.prefix(16),
                computed.prefix(16)
            ),
            Problem::TruncatedLastLine { bytes } => write!(
                f,
                "truncated last line: {bytes} bytes without a newline (a torn write or a cut file)"
            ),
            Problem::ShorterThanRemembered { remembered } => write!(
                f,
                "the log ends before the remembered head {remembered} (records removed from the end)"
            ),
            Problem::DiffersFromRemembered { remembered, found } => write!(
                f,
                "the record at the remembered head {remembered} hashes to {} (history rewritten)",
                found.prefix(16)
            ),
        }
    }
}

/// The first broken record of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The record's line (1-based); for a log shorter than a remembered
    /// head, the line after its last.
    pub line: u64,
    /// The seq the chain expects there.
    pub seq: u64,
    /// The line's byte offset in the file.
    pub offset: u64,
    /// Why it breaks the chain.
    pub problem: Problem,
    /// The chain up to the record before it.
    pub valid: Verified,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record {} (line {}, byte {}): {}",
            self.seq, self.line, self.offset, self.problem
        )
    }
}

impl std::error::Error for Break {}

/// Walks the chain in `log` (a file's bytes) and returns its head, or the
/// first record that breaks it and why. With `expect`, the chain must also
/// hold that remembered head: a log cut at a record boundary, or rewritten
/// up to a point, is detectable only so (see the crate docs).
///
/// # Errors
/// The first [`Break`].
///
/// ```
/// use busbar_audit::{verify, Actor, Entry, Problem, Record, GENESIS};
///
/// let entry = |action: &str| Entry {
///     ts: 0,
///     actor: Actor::system(),
///     action: action.into(),
///     target: "orders".into(),
///     params: serde_json::json!({}),
/// };
/// let first = Record::chain(1, GENESIS, entry("stream.trim"));
/// let second = Record::chain(2, first.hash.parse().unwrap(), entry("dlq.purge"));
/// let mut log = [first.to_line(), second.to_line()].concat();
/// assert_eq!(verify(&log, None).unwrap().head.seq, 2);
///
/// let text = String::from_utf8(log).unwrap().replace("dlq.purge", "dlq.list");
/// let broken = verify(text.as_bytes(), None).unwrap_err();
/// assert_eq!((broken.seq, broken.line), (2, 2));
/// assert!(matches!(broken.problem, Problem::HashMismatch { .. }));
/// ```
pub fn verify(log: &[u8], expect: Option<&ExpectedHead>) -> Result<Verified, Box<Break>> {
    let mut valid = Verified {
        head: Head::EMPTY,
        valid_len: 0,
    };
    let mut remembered: Option<Hash> = None;
    let mut offset = 0usize;
    let mut line_no = 0u64;
    while offset < log.len() {
        line_no += 1;
        let seq = valid.head.seq + 1;
        let broken = |problem| {
            Box::new(Break {
                line: line_no,
                seq,
                offset: offset as u64,
                problem,
                valid,
            })
        };
        let rest = &log[offset..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(broken(Problem::TruncatedLastLine {
                bytes: rest.len() as u64,
            }));
        };
        let record = check(&rest[..end], &valid.head).map_err(broken)?;
        offset += end + 1;
        valid = Verified {
            head: Head {
                seq: record.0,
                hash: record.1,
            },
            valid_len: offset as u64,
        };
        if expect.is_some_and(|e| e.seq == record.0) {
            remembered = Some(record.1);
        }
    }
    if let Some(e) = expect {
        let problem = match remembered {
            _ if e.seq == 0 => None,
            None => Some(Problem::ShorterThanRemembered {
                remembered: e.clone(),
            }),
            Some(found) if !found.to_hex().starts_with(&e.hash) => {
                Some(Problem::DiffersFromRemembered {
                    remembered: e.clone(),
                    found,
                })
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            let (line, seq) = if remembered.is_some() {
                (e.seq, e.seq)
            } else {
                (line_no + 1, valid.head.seq + 1)
            };
            return Err(Box::new(Break {
                line,
                seq,
                offset: valid.valid_len,
                problem,
                valid,
            }));
        }
    }
    Ok(valid)
}

/// Checks one line against the head before it; its seq and hash.
fn check(line: &[u8], before: &Head) -> Result<(u64, Hash), Problem> {
    let malformed = |reason: String| Problem::Malformed { reason };
    if line.is_empty() {
        return Err(malformed("empty line".to_owned()));
    }
    let record: Record = serde_json::from_slice(line).map_err(|e| malformed(e.to_string()))?;
    let stored: Hash = record
        .hash
        .parse()
        .map_err(|e| malformed(format!("hash: {e}")))?;
    let prev: Hash = record
        .prev
        .parse()
        .map_err(|e| malformed(format!("prev: {e}")))?;
    if !record.params.is_object() {
        return Err(malformed("params is not an object".to_owned()));
    }
    let expected = before.seq + 1;
    if record.seq != expected {
        return Err(Problem::OutOfSequence {
            expected,
            found: record.seq,
        });
    }
    if prev != before.hash {
        return Err(Problem::PrevMismatch {
            expected: before.hash,
            found: prev,
        });
    }
    let computed = record.compute_hash(&prev);
    if computed != stored {
        return Err(Problem::HashMismatch { stored, computed });
    }
    Ok((record.seq, stored))
}

/// Reads a log that a daemon may be appending to. A write in progress can
/// leave the last line incomplete for an instant: while the file ends in
/// the middle of a line, it is read again (for up to about a second)
/// until the line is complete. A line still incomplete after that is
/// returned as it is, for [`verify`] to report.
///
/// # Errors
/// The file cannot be read.
pub fn read_log(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = std::fs::read(path)?;
    for _ in 0..20 {
        if bytes.is_empty() || bytes.ends_with(b"\n") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        bytes = std::fs::read(path)?;
    }
    Ok(bytes)
}

/// Every complete line of `log` that is a record, oldest first, with its
/// line number; lines that are not records are left out (use [`verify`]
/// to know whether the log is intact).
pub fn records(log: &[u8]) -> impl Iterator<Item = (u64, Record)> + '_ {
    log.split_inclusive(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| line.ends_with(b"\n"))
        .filter_map(|(n, line)| {
            serde_json::from_slice::<Record>(line)
                .ok()
                .map(|r| (n as u64 + 1, r))
        })
}
