//! The load driver: many producer connections, each keeping up to
//! `pipeline` events un-acknowledged, publish → acknowledgement latency in
//! an HDR histogram.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::wire::{Answers, Wire};
use crate::{net, BenchError};

/// Where producers connect.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// The shape of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) producers: usize,
    pub(crate) pipeline: usize,
    /// Events over all producers.
    pub(crate) events: u64,
    /// Past this, producers stop sending and wait for what is in flight.
    pub(crate) max_duration: Duration,
}

/// What one run measured.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) acknowledged: u64,
    pub(crate) elapsed: Duration,
    /// Publish → acknowledgement, nanoseconds.
    pub(crate) latency: Histogram<u64>,
}

/// Latencies above an hour are recorded as an hour.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

fn histogram() -> Histogram<u64> {
    // Constant, valid bounds: creation cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// One producer's result.
struct Producer {
    acknowledged: u64,
    finished: Instant,
    latency: Histogram<u64>,
    answers: Answers,
}

/// Runs `load` against `target`: every connection is opened (and greeted)
/// first, then all start sending at once.
pub(crate) async fn run(
    target: &Target,
    wire: &Wire,
    frame: &[u8],
    load: &Load,
) -> Result<Measured, BenchError> {
    let producers = load.producers.max(1);
    let pipeline = load.pipeline.max(1);
    // One write sends up to `pipeline` events: a block of that many frames.
    let block: Arc<[u8]> = frame.repeat(pipeline).into();
    let mut streams = Vec::with_capacity(producers);
    for _ in 0..producers {
        streams.push(connect(target, wire).await?);
    }
    let start = Instant::now();
    let deadline = start + load.max_duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, stream) in streams.into_iter().enumerate() {
        let quota =
            load.events / producers as u64 + u64::from((i as u64) < load.events % producers as u64);
        let job = Job {
            block: block.clone(),
            frame_len: frame.len(),
            wire: wire.clone(),
            quota,
            pipeline,
            deadline,
        };
        match stream {
            Stream::Tcp(s) => tasks.spawn(job.run(s)),
            Stream::Unix(s) => tasks.spawn(job.run(s)),
        };
    }
    let mut latency = histogram();
    let mut acknowledged = 0;
    let mut end = start;
    let mut answers = Answers::default();
    while let Some(joined) = tasks.join_next().await {
        let p = joined
            .map_err(|e| BenchError::io("a producer task failed", std::io::Error::other(e)))??;
        acknowledged += p.acknowledged;
        end = end.max(p.finished);
        // Same bounds on both sides: adding cannot fail.
        let _ = latency.add(&p.latency);
        answers.errors += p.answers.errors;
        if answers.first_error.is_none() {
            answers.first_error = p.answers.first_error;
        }
    }
    if answers.errors > 0 {
        return Err(BenchError::Refused {
            system: wire.system(),
            count: answers.errors,
            first: answers.first_error.unwrap_or_default(),
        });
    }
    Ok(Measured {
        acknowledged,
        elapsed: end - start,
        latency,
    })
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

async fn connect(target: &Target, wire: &Wire) -> Result<Stream, BenchError> {
    let mut stream = match target {
        Target::Tcp(addr) => Stream::Tcp(net::connect(*addr, wire.system()).await?),
        Target::Unix(path) => Stream::Unix(
            UnixStream::connect(path)
                .await
                .map_err(|e| BenchError::io(format!("cannot connect to {}", path.display()), e))?,
        ),
    };
    let hello = wire.hello();
    if !hello.is_empty() {
        let written = match &mut stream {
            Stream::Tcp(s) => s.write_all(hello).await,
            Stream::Unix(s) => s.write_all(hello).await,
        };
        written.map_err(|e| BenchError::io("cannot send the hello", e))?;
    }
    Ok(stream)
}

/// One producer connection's work.
struct Job {
    block: Arc<[u8]>,
    frame_len: usize,
    wire: Wire,
    quota: u64,
    pipeline: usize,
    deadline: Instant,
}

impl Job {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        self,
        mut s: S,
    ) -> Result<Producer, BenchError> {
        let system = self.wire.system();
        let mut latency = histogram();
        let mut answers = Answers::default();
        // Send time of each group of events written together, and its size.
        let mut in_flight: VecDeque<(Instant, u64)> = VecDeque::with_capacity(self.pipeline);
        let mut pending = 0u64;
        let mut sent = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut filled = 0usize;
        let mut now = Instant::now();
        loop {
            let room = (self.pipeline as u64 - pending).min(self.quota - sent);
            if room > 0 && now < self.deadline {
                let bytes = &self.block[..room as usize * self.frame_len];
                s.write_all(bytes)
                    .await
                    .map_err(|e| BenchError::io(format!("cannot write to {system}"), e))?;
                in_flight.push_back((Instant::now(), room));
                pending += room;
                sent += room;
            }
            if pending == 0 {
                break;
            }
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let n = s
                .read(&mut buf[filled..])
                .await
                .map_err(|e| BenchError::io(format!("cannot read from {system}"), e))?;
            if n == 0 {
                return Err(BenchError::Closed {
                    system,
                    missing: pending,
                });
            }
            now = Instant::now();
            filled += n;
            let before = answers.answered;
            let used = self.wire.answers(&buf[..filled], &mut answers);
            buf.copy_within(used..filled, 0);
            filled -= used;
            let mut answered = answers.answered - before;
            pending -= answered.min(pending);
            while answered > 0 {
                let Some(front) = in_flight.front_mut() else {
                    break;
                };
                let take = front.1.min(answered);
                let ns = u64::try_from((now - front.0).as_nanos()).unwrap_or(MAX_LATENCY_NS);
                let _ = latency.record_n(ns.clamp(1, MAX_LATENCY_NS), take);
                front.1 -= take;
                answered -= take;
                if front.1 == 0 {
                    in_flight.pop_front();
                }
            }
        }
        Ok(Producer {
            acknowledged: sent - answers.errors,
            finished: now,
            latency,
            answers,
        })
    }
}
