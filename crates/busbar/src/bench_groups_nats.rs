//! NATS JetStream's side of `busbar bench groups`: a durable pull consumer
//! shared by every worker (the JetStream form of a consumer group), fetched
//! in batches and acked with `+ACK`, over a small client of the NATS text
//! protocol. NATS acks are not answered, so each worker ends with a
//! round trip and the consumer must report nothing pending.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{bounded, histogram, loopback, measure_consumers, record, Outcome, Work};

const STREAM: &str = "BUSBAR_BENCH_GROUPS";
const SUBJECT: &str = "busbar.bench.groups";
const DURABLE: &str = "g";
/// Longest wait for a pull's next message.
const PULL_TIMEOUT: Duration = Duration::from_secs(2);

/// Something the server sent.
enum Incoming {
    /// A message: its reply subject (if any) and whether it is a status
    /// (headers only, no reply: a pull that ended short).
    Msg {
        reply: Option<Vec<u8>>,
        payload: Vec<u8>,
        status: bool,
    },
    Pong,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot reach NATS at {addr}"))?;
        stream.set_nodelay(true)?;
        let mut c = Conn {
            stream,
            buf: Vec::with_capacity(1 << 20),
            pos: 0,
            out: Vec::with_capacity(64 * 1024),
        };
        c.out.extend_from_slice(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"lang\":\"busbar-bench\",\"version\":\"0\"}\r\n",
        );
        c.round_trip().await?;
        Ok(c)
    }

    fn publish(&mut self, subject: &str, reply: Option<&[u8]>, payload: &[u8]) {
        self.out.extend_from_slice(b"PUB ");
        self.out.extend_from_slice(subject.as_bytes());
        if let Some(r) = reply {
            self.out.push(b' ');
            self.out.extend_from_slice(r);
        }
        self.out
            .extend_from_slice(format!(" {}\r\n", payload.len()).as_bytes());
        self.out.extend_from_slice(payload);
        self.out.extend_from_slice(b"\r\n");
    }

    fn ack(&mut self, reply: &[u8]) {
        self.out.extend_from_slice(b"PUB ");
        self.out.extend_from_slice(reply);
        self.out.extend_from_slice(b" 4\r\n+ACK\r\n");
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// Flushes, then waits for the server to have seen everything.
    async fn round_trip(&mut self) -> anyhow::Result<()> {
        self.out.extend_from_slice(b"PING\r\n");
        self.flush().await?;
        loop {
            if let Incoming::Pong = self.next().await? {
                return Ok(());
            }
        }
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + 256 * 1024, 0);
        let n = self.stream.read(&mut self.buf[len..]).await?;
        self.buf.truncate(len + n);
        if n == 0 {
            bail!("NATS closed the connection");
        }
        Ok(())
    }

    async fn line(&mut self) -> anyhow::Result<Vec<u8>> {
        loop {
            if let Some(at) = memchr::memmem::find(&self.buf[self.pos..], b"\r\n") {
                let line = self.buf[self.pos..self.pos + at].to_vec();
                self.pos += at + 2;
                return Ok(line);
            }
            self.fill().await?;
        }
    }

    async fn take(&mut self, len: usize) -> anyhow::Result<Vec<u8>> {
        while self.buf.len() - self.pos < len + 2 {
            self.fill().await?;
        }
        let data = self.buf[self.pos..self.pos + len].to_vec();
        self.pos += len + 2;
        Ok(data)
    }

    /// The next message or pong; answers pings, skips the rest.
    async fn next(&mut self) -> anyhow::Result<Incoming> {
        loop {
            let line = self.line().await?;
            let words: Vec<&[u8]> = line
                .split(|b| *b == b' ')
                .filter(|w| !w.is_empty())
                .collect();
            let num = |w: &[u8]| -> anyhow::Result<usize> {
                Ok(std::str::from_utf8(w)?.parse::<usize>()?)
            };
            match words.first().copied() {
                Some(b"MSG") => {
                    // MSG <subject> <sid> [reply] <len>
                    let (reply, len) = match words.len() {
                        5 => (Some(words[3].to_vec()), num(words[4])?),
                        4 => (None, num(words[3])?),
                        _ => bail!("bad MSG line"),
                    };
                    let payload = self.take(len).await?;
                    return Ok(Incoming::Msg {
                        reply,
                        payload,
                        status: false,
                    });
                }
                Some(b"HMSG") => {
                    // HMSG <subject> <sid> [reply] <header len> <total len>
                    let (reply, total) = match words.len() {
                        6 => (Some(words[3].to_vec()), num(words[5])?),
                        5 => (None, num(words[4])?),
                        _ => bail!("bad HMSG line"),
                    };
                    let body = self.take(total).await?;
                    let status = reply.is_none();
                    return Ok(Incoming::Msg {
                        reply,
                        payload: body,
                        status,
                    });
                }
                Some(b"PING") => {
                    self.out.extend_from_slice(b"PONG\r\n");
                    self.flush().await?;
                }
                Some(b"PONG") => return Ok(Incoming::Pong),
                Some(b"-ERR") => bail!("NATS: {}", String::from_utf8_lossy(&line)),
                _ => {}
            }
        }
    }

    /// A JetStream API request; the JSON answer.
    async fn request(&mut self, subject: &str, body: &str) -> anyhow::Result<serde_json::Value> {
        self.out
            .extend_from_slice(b"SUB _INBOX.busbar-bench.api 99\r\n");
        self.publish(subject, Some(b"_INBOX.busbar-bench.api"), body.as_bytes());
        self.out.extend_from_slice(b"UNSUB 99 1\r\n");
        self.flush().await?;
        loop {
            if let Incoming::Msg {
                payload, status, ..
            } = self.next().await?
            {
                if status {
                    bail!("no JetStream answer to {subject} (is JetStream enabled?)");
                }
                let v: serde_json::Value = serde_json::from_slice(&payload)?;
                if let Some(e) = v.get("error") {
                    bail!("{subject}: {e}");
                }
                return Ok(v);
            }
        }
    }
}

async fn prepare(c: &mut Conn, always: bool, work: &Work) -> anyhow::Result<()> {
    // A stream left by an interrupted run goes first.
    let _ = c
        .request(&format!("$JS.API.STREAM.DELETE.{STREAM}"), "")
        .await;
    let storage = if always { "file" } else { "memory" };
    c.request(
        &format!("$JS.API.STREAM.CREATE.{STREAM}"),
        &format!(
            "{{\"name\":\"{STREAM}\",\"subjects\":[\"{SUBJECT}\"],\"storage\":\"{storage}\",\"retention\":\"limits\",\"num_replicas\":1}}"
        ),
    )
    .await?;
    // Published with answers, a window at a time, so nothing is dropped.
    c.out
        .extend_from_slice(b"SUB _INBOX.busbar-bench.pub 98\r\n");
    let mut n = 0;
    while n < work.events {
        let window = (work.events - n).min(1000);
        for i in 0..window {
            let e = work.event(n + i);
            c.publish(SUBJECT, Some(b"_INBOX.busbar-bench.pub"), e.as_bytes());
        }
        c.flush().await?;
        let mut answered = 0;
        while answered < window {
            if let Incoming::Msg { payload, .. } = c.next().await? {
                if memchr::memmem::find(&payload, b"\"error\"").is_some() {
                    bail!("publish refused: {}", String::from_utf8_lossy(&payload));
                }
                answered += 1;
            }
        }
        n += window;
    }
    c.out.extend_from_slice(b"UNSUB 98\r\n");
    c.request(
        &format!("$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.{DURABLE}"),
        &format!(
            "{{\"stream_name\":\"{STREAM}\",\"config\":{{\"durable_name\":\"{DURABLE}\",\"deliver_policy\":\"all\",\"ack_policy\":\"explicit\",\"ack_wait\":600000000000,\"max_ack_pending\":{},\"replay_policy\":\"instant\"}}}}",
            work.batch * work.consumers * 4
        ),
    )
    .await?;
    Ok(())
}

async fn consume(
    addr: SocketAddr,
    worker: usize,
    work: Work,
    done: Arc<AtomicU64>,
    finished: Arc<OnceLock<Instant>>,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let mut c = Conn::connect(addr).await?;
    let mut latency = histogram();
    let inbox = format!("_INBOX.busbar-bench.{worker}");
    c.out
        .extend_from_slice(format!("SUB {inbox} 1\r\n").as_bytes());
    let pull_subject = format!("$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{DURABLE}");
    let pull = format!("{{\"batch\":{},\"expires\":200000000}}", work.batch);
    c.publish(&pull_subject, Some(inbox.as_bytes()), pull.as_bytes());
    let mut sent = Instant::now();
    c.flush().await?;
    let mut replies: Vec<Vec<u8>> = Vec::with_capacity(work.batch);
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
            if let Some(r) = reply {
                replies.push(r);
            }
            if replies.len() < work.batch {
                continue;
            }
        }
        if !replies.is_empty() {
            record(&mut latency, sent);
        }
        if replies.is_empty() && done.load(Ordering::Acquire) >= work.events {
            c.round_trip().await?;
            return Ok(latency);
        }
        let n = replies.len() as u64;
        for r in replies.drain(..) {
            c.ack(&r);
        }
        // The acks go out with the next pull.
        c.publish(&pull_subject, Some(inbox.as_bytes()), pull.as_bytes());
        sent = Instant::now();
        c.flush().await?;
        if n > 0 && done.fetch_add(n, Ordering::AcqRel) + n >= work.events {
            let _ = finished.set(Instant::now());
        }
    }
}

async fn measure(addr: SocketAddr, work: &Work) -> anyhow::Result<Outcome> {
    measure_consumers(work, "NATS", |n, done, finished| {
        tokio::spawn(consume(addr, n, work.clone(), done, finished))
    })
    .await
}

/// Creates the stream, pre-fills it, measures, deletes it.
pub(crate) async fn run(addr: &str, always: bool, work: &Work) -> anyhow::Result<Outcome> {
    let addr = loopback(addr)?;
    let mut c = Conn::connect(addr).await?;
    let result = bounded(work, async {
        prepare(&mut c, always, work).await?;
        let outcome = measure(addr, work).await?;
        // Acks are not answered: the consumer must hold nothing pending.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = c
                .request(&format!("$JS.API.CONSUMER.INFO.{STREAM}.{DURABLE}"), "")
                .await?;
            if info["num_ack_pending"] == 0 && info["num_pending"] == 0 {
                return Ok(outcome);
            }
            if Instant::now() > deadline {
                bail!("NATS still holds unacked messages: {info}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // On a fresh connection: a run cut short may leave answers unread.
    if let Ok(mut fresh) = Conn::connect(addr).await {
        let _ = fresh
            .request(&format!("$JS.API.STREAM.DELETE.{STREAM}"), "")
            .await;
    }
    result
}
