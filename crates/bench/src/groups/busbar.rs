//! busbar's side of `busbar bench groups`: a fresh `busbar serve` child,
//! pre-filled over TCP, then consumers speaking the group ops of the socket
//! protocol.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{measure_consumers, Consumer, Outcome, Work};
use crate::daemon::Daemon;
use crate::ingest::Level;
use crate::net::{self, ReadBuf};
use crate::BenchError;

const STREAM: &str = "bench-groups";
const GROUP: &str = "g";
/// Bytes the pre-fill writes at once.
const WRITE_CHUNK: usize = 192 * 1024;

/// Lines read from a connection, kept whole.
struct Lines {
    reader: OwnedReadHalf,
    input: ReadBuf,
}

impl Lines {
    /// The next line (without its newline); valid until the next call.
    async fn next(&mut self) -> Result<&[u8], BenchError> {
        loop {
            if let Some(at) = memchr::memchr(b'\n', self.input.unparsed()) {
                return Ok(&self.input.take(at + 1)[..at]);
            }
            let read = self.reader.read(self.input.spare()).await;
            self.input
                .filled(read)
                .map_err(|e| BenchError::io("cannot read from busbar", e))?;
        }
    }
}

async fn send(w: &mut OwnedWriteHalf, bytes: &[u8]) -> Result<(), BenchError> {
    w.write_all(bytes)
        .await
        .map_err(|e| BenchError::io("cannot write to busbar", e))
}

/// A connection with acks on.
async fn connect(addr: SocketAddr) -> Result<(Lines, OwnedWriteHalf), BenchError> {
    let (reader, mut w) = net::connect(addr, "busbar").await?.into_split();
    send(&mut w, b"{\"hello\":{\"acks\":true}}\n").await?;
    let lines = Lines {
        reader,
        input: ReadBuf::default(),
    };
    Ok((lines, w))
}

/// Sends one op and returns its answer, which must start with `expect`.
async fn call(
    (lines, w): &mut (Lines, OwnedWriteHalf),
    op: &'static str,
    line: &str,
    expect: &str,
) -> Result<String, BenchError> {
    send(w, line.as_bytes()).await?;
    let answer = String::from_utf8_lossy(lines.next().await?).into_owned();
    if !answer.starts_with(expect) {
        return Err(BenchError::Busbar { op, answer });
    }
    Ok(answer)
}

/// Publishes `work.events` events over one pipelined connection.
async fn prefill(addr: SocketAddr, work: &Work) -> Result<(), BenchError> {
    let (mut lines, mut w) = connect(addr).await?;
    let events = work.events;
    let stream = format!(",\"stream\":\"{STREAM}\"}}\n");
    let template = work.clone();
    // Written on a task of its own, so the answers are read meanwhile.
    let writer = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(WRITE_CHUNK + 1024);
        for n in 0..events {
            let e = template.event(n);
            // `{...}` becomes `{..., "stream": ...}`.
            buf.extend_from_slice(&e.as_bytes()[..e.len() - 1]);
            buf.extend_from_slice(stream.as_bytes());
            if buf.len() > WRITE_CHUNK {
                send(&mut w, &buf).await?;
                buf.clear();
            }
        }
        send(&mut w, &buf).await
    });
    for _ in 0..events {
        let line = lines.next().await?;
        if !line.starts_with(b"{\"id\"") {
            writer.abort();
            return Err(BenchError::Busbar {
                op: "publish",
                answer: String::from_utf8_lossy(line).into_owned(),
            });
        }
    }
    writer
        .await
        .map_err(|e| BenchError::io("the pre-fill writer failed", std::io::Error::other(e)))?
}

fn read_op(consumer: &str, count: usize) -> String {
    format!(
        "{{\"op\":\"read\",\"stream\":\"{STREAM}\",\"group\":\"{GROUP}\",\"consumer\":\"{consumer}\",\"count\":{count},\"block_ms\":200}}\n"
    )
}

/// Appends the delivered ids of a read answer to `out`, comma-separated;
/// returns how many. Each delivery starts `{"id":"<id>","delivery_count":`.
fn delivered_ids(line: &[u8], out: &mut Vec<u8>) -> usize {
    const MARK: &[u8] = b"\",\"delivery_count\":";
    let mut n = 0;
    for at in memchr::memmem::find_iter(line, MARK) {
        let Some(open) = memchr::memrchr(b'"', &line[..at]) else {
            continue;
        };
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&line[open..=at]);
        n += 1;
    }
    n
}

async fn consume(addr: SocketAddr, mut me: Consumer) -> Result<Histogram<u64>, BenchError> {
    let (mut lines, mut w) = connect(addr).await?;
    let name = me.name();
    let read = read_op(&name, me.work.batch);
    let ack_head =
        format!("{{\"op\":\"ack\",\"stream\":\"{STREAM}\",\"group\":\"{GROUP}\",\"consumer\":\"{name}\",\"ids\":[");
    let mut out = Vec::with_capacity(64 * 1024);
    let mut sent = Instant::now();
    send(&mut w, read.as_bytes()).await?;
    loop {
        let line = lines.next().await?;
        if !line.starts_with(b"{\"deliveries\"") {
            return Err(BenchError::Busbar {
                op: "read",
                answer: String::from_utf8_lossy(line).into_owned(),
            });
        }
        out.clear();
        out.extend_from_slice(ack_head.as_bytes());
        let n = delivered_ids(line, &mut out);
        if n == 0 {
            // Drained: stop once every event is acked.
            if me.done() {
                return Ok(me.latency);
            }
            sent = Instant::now();
            send(&mut w, read.as_bytes()).await?;
            continue;
        }
        me.read(sent);
        out.extend_from_slice(b"]}\n");
        // The ack goes out with the next read.
        out.extend_from_slice(read.as_bytes());
        sent = Instant::now();
        send(&mut w, &out).await?;
        let answer = lines.next().await?;
        if !answer.starts_with(b"{\"acked\"") {
            return Err(BenchError::Busbar {
                op: "ack",
                answer: String::from_utf8_lossy(answer).into_owned(),
            });
        }
        me.acked(n as u64);
    }
}

/// Pre-fills a fresh daemon, measures the consumers, checks that nothing
/// is left unacked, and stops the daemon.
pub(super) async fn run(
    exe: &Path,
    level: Level,
    work_dir: Option<&Path>,
    work: &Work,
) -> Result<Outcome, BenchError> {
    let daemon = Daemon::start(exe, level.busbar_flags(), work_dir).await?;
    let mut admin = connect(daemon.tcp).await?;
    let create = format!(
        "{{\"op\":\"create_group\",\"stream\":\"{STREAM}\",\"group\":\"{GROUP}\",\"start\":\"0\",\"ack_wait_ms\":600000,\"max_pending_per_consumer\":{}}}\n",
        work.batch * 4
    );
    call(&mut admin, "create_group", &create, "{\"group\"").await?;
    prefill(daemon.tcp, work).await?;
    let addr = daemon.tcp;
    let outcome = measure_consumers(work, "busbar", |me| tokio::spawn(consume(addr, me))).await?;
    let info = format!("{{\"op\":\"group\",\"stream\":\"{STREAM}\",\"group\":\"{GROUP}\"}}\n");
    let info = call(&mut admin, "group", &info, "{").await?;
    let v: serde_json::Value = serde_json::from_str(&info).map_err(|_| BenchError::Busbar {
        op: "group",
        answer: info.clone(),
    })?;
    if v["group"]["pending"] != 0 || v["group"]["lag"] != 0 {
        return Err(BenchError::Busbar {
            op: "group",
            answer: format!("events left unacked: {info}"),
        });
    }
    drop(admin);
    daemon.stop().await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_ids_become_an_ack_list() {
        let line = br#"{"deliveries":[{"id":"1-0","delivery_count":1,"event":{}},{"id":"1-1","delivery_count":2,"event":{"a":"\"x\""}}]}"#;
        let mut out = b"[".to_vec();
        assert_eq!(delivered_ids(line, &mut out), 2);
        assert_eq!(out, br#"["1-0","1-1""#);
        assert_eq!(delivered_ids(br#"{"deliveries":[]}"#, &mut out), 0);
    }
}
