//! Redis' side of `busbar bench groups`: `XREADGROUP` / `XACK`, with
//! persistence set to match busbar's durability and put back afterwards.

use std::net::SocketAddr;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::{bounded, measure_consumers, Consumer, Outcome, Work};
use crate::ingest::Level;
use crate::redis::{self, Conn, Reply, Session};
use crate::BenchError;

const KEY: &str = "busbar-bench-groups";
const GROUP: &str = "g";
/// How long a read waits for entries.
const BLOCK_MS: u64 = 200;
/// `XADD`s pipelined at once while pre-filling.
const WINDOW: u64 = 1000;

async fn prefill(c: &mut Conn, work: &Work) -> Result<(), BenchError> {
    let mut n = 0;
    while n < work.events {
        let window = (work.events - n).min(WINDOW);
        for i in 0..window {
            c.push_xadd(KEY, "d", work.event(n + i).as_bytes());
        }
        c.flush().await?;
        for _ in 0..window {
            c.reply().await?.ok("XADD")?;
        }
        n += window;
    }
    c.call(&[b"XGROUP", b"CREATE", KEY.as_bytes(), GROUP.as_bytes(), b"0"])
        .await?;
    Ok(())
}

async fn consume(addr: SocketAddr, mut me: Consumer) -> Result<Histogram<u64>, BenchError> {
    let mut c = Conn::connect(addr).await?;
    let (name, batch) = (me.name(), me.work.batch);
    c.push_xreadgroup(KEY, GROUP, &name, batch, BLOCK_MS);
    let mut sent = Instant::now();
    c.flush().await?;
    loop {
        let ids = c.reply().await?.ok("XREADGROUP")?.entry_ids();
        if ids.is_empty() {
            if me.done() {
                return Ok(me.latency);
            }
            c.push_xreadgroup(KEY, GROUP, &name, batch, BLOCK_MS);
            sent = Instant::now();
            c.flush().await?;
            continue;
        }
        me.read(sent);
        c.push_xack(KEY, GROUP, &ids);
        // The ack goes out with the next read.
        c.push_xreadgroup(KEY, GROUP, &name, batch, BLOCK_MS);
        sent = Instant::now();
        c.flush().await?;
        match c.reply().await?.ok("XACK")? {
            Reply::Int(n) if usize::try_from(n) == Ok(ids.len()) => me.acked(n as u64),
            other => {
                return Err(BenchError::redis(
                    "XACK",
                    format!("answered {other:?} for {} ids", ids.len()),
                ))
            }
        }
    }
}

/// Sets Redis' persistence for `level`, pre-fills, measures, and puts
/// everything back (also when the run fails).
pub(super) async fn run(url: &str, level: Level, work: &Work) -> Result<Outcome, BenchError> {
    let addr = redis::parse_url(url)?;
    let mut session = Session::begin(addr)?;
    let result = bounded(work, async {
        session.prepare(level.appendfsync(), KEY)?;
        prefill(&mut Conn::connect(addr).await?, work).await?;
        measure_consumers(work, "Redis", |me| tokio::spawn(consume(addr, me))).await
    })
    .await;
    let restored = session.restore();
    let outcome = result?;
    restored?;
    Ok(outcome)
}
