//! NATS JetStream's side of `busbar bench groups`: a durable pull consumer
//! shared by every worker (the JetStream form of a consumer group), pulled
//! in batches and acked with `+ACK`. NATS does not answer acks, so each
//! worker ends with a round trip and the consumer must report nothing
//! pending.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{bounded, measure_consumers, Consumer, Outcome, Work};
use crate::ingest::Level;
use crate::nats::{self, Conn, Incoming, Storage};
use crate::BenchError;

const STREAM: &str = "BUSBAR_BENCH_GROUPS";
const SUBJECT: &str = "busbar.bench.groups";
const DURABLE: &str = "g";
/// Where the stream's publish acknowledgements come back while pre-filling.
const PUB_INBOX: &str = "_INBOX.busbar-bench.pub";
const PUB_SID: u32 = 98;
/// Messages published at once while pre-filling.
const WINDOW: u64 = 1000;
/// How long a pull waits for messages before the server ends it.
const PULL_EXPIRES_MS: u64 = 200;
/// Longest wait for a pull's next message.
const PULL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long unacked messages stay with their consumer: longer than a run.
const ACK_WAIT_MS: u64 = 600_000;

/// A fresh stream, pre-filled, and the pull consumer.
async fn prepare(c: &mut Conn, level: Level, work: &Work) -> Result<(), BenchError> {
    // A stream left by an interrupted run goes first.
    let _ = c.delete_stream(STREAM).await;
    let storage = match level {
        Level::Memory => Storage::Memory,
        Level::Always | Level::Interval => Storage::File,
    };
    c.create_stream(STREAM, SUBJECT, storage).await?;
    // Published with acknowledgements, a window at a time, so nothing is
    // dropped.
    c.subscribe(PUB_INBOX, PUB_SID);
    let mut n = 0;
    while n < work.events {
        let window = (work.events - n).min(WINDOW);
        for i in 0..window {
            c.publish(
                SUBJECT,
                Some(PUB_INBOX.as_bytes()),
                work.event(n + i).as_bytes(),
            );
        }
        c.flush().await?;
        let mut answered = 0;
        while answered < window {
            if let Incoming::Msg { payload, .. } = c.next().await? {
                if memchr::memmem::find(&payload, b"\"error\"").is_some() {
                    let answer = String::from_utf8_lossy(&payload);
                    return Err(nats::error(format!("publish refused: {answer}")));
                }
                answered += 1;
            }
        }
        n += window;
    }
    c.unsubscribe(PUB_SID, None);
    let max_ack_pending = work.batch * work.consumers * 4;
    c.create_pull_consumer(STREAM, DURABLE, max_ack_pending, ACK_WAIT_MS)
        .await
}

async fn consume(addr: SocketAddr, mut me: Consumer) -> Result<Histogram<u64>, BenchError> {
    let mut c = Conn::connect(addr).await?;
    let batch = me.work.batch;
    let inbox = format!("_INBOX.busbar-bench.{}", me.n);
    c.subscribe(&inbox, 1);
    c.pull(STREAM, DURABLE, &inbox, batch, PULL_EXPIRES_MS);
    let mut sent = Instant::now();
    c.flush().await?;
    let mut replies: Vec<Vec<u8>> = Vec::with_capacity(batch);
    loop {
        // A pull the server dropped (it answers every pull, but a bench
        // must not hang on one that is lost) is treated as ended.
        let (reply, status) = match tokio::time::timeout(PULL_TIMEOUT, c.next()).await {
            Ok(got) => match got? {
                Incoming::Msg { reply, status, .. } => (reply, status),
                Incoming::Pong => continue,
            },
            Err(_) => (None, true),
        };
        if !status {
            replies.extend(reply);
            if replies.len() < batch {
                continue;
            }
        }
        if !replies.is_empty() {
            me.read(sent);
        }
        if replies.is_empty() && me.done() {
            c.round_trip().await?;
            return Ok(me.latency);
        }
        let n = replies.len() as u64;
        for r in replies.drain(..) {
            c.ack(&r);
        }
        // The acks go out with the next pull.
        c.pull(STREAM, DURABLE, &inbox, batch, PULL_EXPIRES_MS);
        sent = Instant::now();
        c.flush().await?;
        me.acked(n);
    }
}

/// Creates the stream, pre-fills it, measures, checks that nothing is left
/// unacked, and deletes the stream (also when the run fails).
pub(super) async fn run(
    addr: SocketAddr,
    level: Level,
    work: &Work,
) -> Result<Outcome, BenchError> {
    let addr = nats::loopback(addr)?;
    let mut c = Conn::connect(addr).await?;
    let result = bounded(work, async {
        prepare(&mut c, level, work).await?;
        let outcome = measure_consumers(work, "NATS", |me| tokio::spawn(consume(addr, me))).await?;
        // Acks are not answered: the consumer must come to hold nothing.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = c.consumer_info(STREAM, DURABLE).await?;
            if info["num_ack_pending"] == 0 && info["num_pending"] == 0 {
                return Ok(outcome);
            }
            if Instant::now() > deadline {
                return Err(nats::error(format!("still holds unacked messages: {info}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // On a fresh connection: a run cut short may leave answers unread.
    if let Ok(mut fresh) = Conn::connect(addr).await {
        let _ = fresh.delete_stream(STREAM).await;
    }
    result
}
