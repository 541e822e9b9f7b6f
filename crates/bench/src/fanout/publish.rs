//! The one publisher of a fan-out run: blocking writes on a thread of its
//! own, so that the subscribers' tasks never delay (or pace) it.

use std::io::Write;
use std::time::{Duration, Instant};

use super::stamp::{since, stamp};
use crate::BenchError;

/// Frames one write carries at full speed.
const BLOCK: usize = 64;

/// What to publish.
pub(crate) struct Publish {
    /// One event as the system's publish protocol frames it.
    pub(crate) frame: Vec<u8>,
    /// Where its send-time stamp goes.
    pub(crate) stamp_at: usize,
    /// How many.
    pub(crate) events: u64,
    /// Events per second; `None`: as fast as the connection takes them.
    pub(crate) rate: Option<u64>,
    /// Stamps count from here.
    pub(crate) base: Instant,
    /// Publishing stops here even if events remain.
    pub(crate) deadline: Instant,
}

/// What the publisher did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Published {
    pub(crate) sent: u64,
    pub(crate) started: Instant,
    pub(crate) finished: Instant,
}

/// Writes the events, each stamped when its block is written.
pub(crate) fn publish(w: &mut impl Write, p: &Publish) -> Result<Published, BenchError> {
    // Paced runs write about once a millisecond.
    let per_block = p.rate.map_or(BLOCK, |r| {
        usize::try_from(r / 1000).unwrap_or(BLOCK).clamp(1, BLOCK)
    });
    let len = p.frame.len();
    let mut block = p.frame.repeat(per_block);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < p.events {
        let now = Instant::now();
        if now >= p.deadline {
            break;
        }
        if let Some(rate) = p.rate.filter(|&r| r > 0) {
            let due = started + Duration::from_nanos(sent.saturating_mul(1_000_000_000) / rate);
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let n = usize::try_from(p.events - sent).map_or(per_block, |left| left.min(per_block));
        let ns = since(p.base, Instant::now());
        for i in 0..n {
            stamp(&mut block, i * len + p.stamp_at, ns);
        }
        w.write_all(&block[..n * len])
            .map_err(|e| BenchError::io("cannot publish", e))?;
        sent += n as u64;
    }
    w.flush().map_err(|e| BenchError::io("cannot publish", e))?;
    Ok(Published {
        sent,
        started,
        finished: Instant::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::stamp::{event_json, read_stamp};

    #[test]
    fn every_event_is_written_and_stamped() {
        let (mut frame, at) = event_json(100, "s");
        frame.push(b'\n');
        let base = Instant::now();
        let p = Publish {
            frame,
            stamp_at: at,
            events: 130,
            rate: None,
            base,
            deadline: base + Duration::from_secs(60),
        };
        let mut out = Vec::new();
        let done = publish(&mut out, &p).unwrap();
        assert_eq!(done.sent, 130);
        let lines: Vec<&[u8]> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 130);
        assert!(lines.iter().all(|l| read_stamp(l).is_some()));
    }
}
