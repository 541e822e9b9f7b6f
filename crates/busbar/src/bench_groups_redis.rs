//! Redis' side of `busbar bench groups`: `XREADGROUP` / `XACK` over a small
//! RESP client, with persistence set to match busbar's durability and put
//! back afterwards.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{bounded, histogram, loopback, measure_consumers, record, Outcome, Work};

const KEY: &str = "busbar-bench-groups";
const GROUP: &str = "g";

/// A RESP reply.
#[derive(Debug)]
enum Reply {
    Simple(Vec<u8>),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn text(&self) -> String {
        match self {
            Reply::Simple(b) | Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Int(n) => n.to_string(),
            other => format!("{other:?}"),
        }
    }
}

/// One connection.
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
            .with_context(|| format!("cannot reach Redis at {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(1 << 20),
            pos: 0,
            out: Vec::with_capacity(64 * 1024),
        })
    }

    /// Queues a command.
    fn push(&mut self, args: &[&[u8]]) {
        self.out
            .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            self.out
                .extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            self.out.extend_from_slice(a);
            self.out.extend_from_slice(b"\r\n");
        }
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    async fn call(&mut self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        self.push(args);
        self.flush().await?;
        self.reply().await
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
            bail!("Redis closed the connection");
        }
        Ok(())
    }

    async fn reply(&mut self) -> anyhow::Result<Reply> {
        // Iterative over a stack of open arrays, so nesting costs no boxing.
        let mut stack: Vec<(usize, Vec<Reply>)> = Vec::new();
        loop {
            let line = self.line().await?;
            let (kind, rest) = line.split_first().context("empty RESP line")?;
            let number =
                || -> anyhow::Result<i64> { Ok(std::str::from_utf8(rest)?.parse::<i64>()?) };
            let mut value = match kind {
                b'+' => Reply::Simple(rest.to_vec()),
                b'-' => Reply::Error(String::from_utf8_lossy(rest).into_owned()),
                b':' => Reply::Int(number()?),
                b'$' => {
                    let len = number()?;
                    if len < 0 {
                        Reply::Bulk(None)
                    } else {
                        let len = len as usize;
                        while self.buf.len() - self.pos < len + 2 {
                            self.fill().await?;
                        }
                        let data = self.buf[self.pos..self.pos + len].to_vec();
                        self.pos += len + 2;
                        Reply::Bulk(Some(data))
                    }
                }
                b'*' => {
                    let n = number()?;
                    if n < 0 {
                        Reply::Array(None)
                    } else if n == 0 {
                        Reply::Array(Some(Vec::new()))
                    } else {
                        stack.push((n as usize, Vec::with_capacity(n as usize)));
                        continue;
                    }
                }
                other => bail!("unexpected RESP type byte {other}"),
            };
            loop {
                let Some((want, items)) = stack.last_mut() else {
                    return Ok(value);
                };
                items.push(value);
                if items.len() < *want {
                    break;
                }
                let (_, items) = stack.pop().context("RESP stack")?;
                value = Reply::Array(Some(items));
            }
        }
    }
}

fn ok(reply: Reply, what: &str) -> anyhow::Result<Reply> {
    match reply {
        Reply::Error(e) => bail!("{what}: {e}"),
        r => Ok(r),
    }
}

/// The ids of an `XREADGROUP` reply.
fn entry_ids(reply: Reply) -> anyhow::Result<Vec<Vec<u8>>> {
    let Reply::Array(Some(streams)) = ok(reply, "XREADGROUP")? else {
        return Ok(Vec::new());
    };
    let mut ids = Vec::new();
    for s in streams {
        let Reply::Array(Some(mut pair)) = s else {
            continue;
        };
        let Some(Reply::Array(Some(entries))) = pair.pop() else {
            continue;
        };
        for e in entries {
            if let Reply::Array(Some(mut fields)) = e {
                if let Some(Reply::Bulk(Some(id))) = fields.drain(..).next() {
                    ids.push(id);
                }
            }
        }
    }
    Ok(ids)
}

/// Persistence settings to restore.
struct Saved(Vec<(String, String)>);

async fn save(c: &mut Conn) -> anyhow::Result<Saved> {
    let mut saved = Vec::new();
    for key in ["appendonly", "appendfsync", "save"] {
        let reply = ok(
            c.call(&[b"CONFIG", b"GET", key.as_bytes()]).await?,
            "CONFIG GET",
        )?;
        if let Reply::Array(Some(items)) = reply {
            if let Some(v) = items.get(1) {
                saved.push((key.to_owned(), v.text()));
            }
        }
    }
    Ok(Saved(saved))
}

async fn configure(c: &mut Conn, always: bool) -> anyhow::Result<()> {
    let want: &[(&str, &str)] = if always {
        &[
            ("save", ""),
            ("appendonly", "yes"),
            ("appendfsync", "always"),
        ]
    } else {
        &[("save", ""), ("appendonly", "no")]
    };
    for (k, v) in want {
        ok(
            c.call(&[b"CONFIG", b"SET", k.as_bytes(), v.as_bytes()])
                .await?,
            "CONFIG SET",
        )?;
    }
    // Turning the AOF on starts a rewrite; measure after it.
    wait_for_rewrite(c).await
}

async fn wait_for_rewrite(c: &mut Conn) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let info = ok(c.call(&[b"INFO", b"persistence"]).await?, "INFO")?.text();
        let busy = info.lines().any(|l| {
            l.starts_with("aof_rewrite_in_progress:1") || l.starts_with("aof_rewrite_scheduled:1")
        });
        if !busy {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("Redis' AOF rewrite did not finish in 120s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn restore(c: &mut Conn, saved: &Saved) -> anyhow::Result<()> {
    c.call(&[b"DEL", KEY.as_bytes()]).await?;
    for (k, v) in &saved.0 {
        ok(
            c.call(&[b"CONFIG", b"SET", k.as_bytes(), v.as_bytes()])
                .await?,
            "CONFIG SET (restore)",
        )?;
    }
    Ok(())
}

async fn prefill(c: &mut Conn, work: &Work) -> anyhow::Result<()> {
    ok(c.call(&[b"DEL", KEY.as_bytes()]).await?, "DEL")?;
    let mut n = 0;
    while n < work.events {
        let window = (work.events - n).min(1000);
        for i in 0..window {
            let e = work.event(n + i);
            c.push(&[b"XADD", KEY.as_bytes(), b"*", b"d", e.as_bytes()]);
        }
        c.flush().await?;
        for _ in 0..window {
            ok(c.reply().await?, "XADD")?;
        }
        n += window;
    }
    ok(
        c.call(&[b"XGROUP", b"CREATE", KEY.as_bytes(), GROUP.as_bytes(), b"0"])
            .await?,
        "XGROUP CREATE",
    )?;
    Ok(())
}

async fn consume(
    addr: SocketAddr,
    name: String,
    work: Work,
    done: Arc<AtomicU64>,
    finished: Arc<OnceLock<Instant>>,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let mut c = Conn::connect(addr).await?;
    let mut latency = histogram();
    let count = work.batch.to_string();
    let read = |c: &mut Conn| {
        c.push(&[
            b"XREADGROUP",
            b"GROUP",
            GROUP.as_bytes(),
            name.as_bytes(),
            b"COUNT",
            count.as_bytes(),
            b"BLOCK",
            b"200",
            b"STREAMS",
            KEY.as_bytes(),
            b">",
        ]);
    };
    read(&mut c);
    let mut sent = Instant::now();
    c.flush().await?;
    loop {
        let ids = entry_ids(c.reply().await?)?;
        if ids.is_empty() {
            if done.load(Ordering::Acquire) >= work.events {
                return Ok(latency);
            }
            read(&mut c);
            sent = Instant::now();
            c.flush().await?;
            continue;
        }
        record(&mut latency, sent);
        let mut args: Vec<&[u8]> = vec![b"XACK", KEY.as_bytes(), GROUP.as_bytes()];
        args.extend(ids.iter().map(Vec::as_slice));
        c.push(&args);
        // The ack goes out with the next read.
        read(&mut c);
        sent = Instant::now();
        c.flush().await?;
        let acked = ok(c.reply().await?, "XACK")?;
        let Reply::Int(n) = acked else {
            bail!("XACK answered {acked:?}");
        };
        if n as usize != ids.len() {
            bail!("XACK acknowledged {n} of {}", ids.len());
        }
        if done.fetch_add(n as u64, Ordering::AcqRel) + n as u64 >= work.events {
            let _ = finished.set(Instant::now());
        }
    }
}

async fn measure(addr: SocketAddr, work: &Work) -> anyhow::Result<Outcome> {
    measure_consumers(work, "Redis", |n, done, finished| {
        tokio::spawn(consume(addr, format!("c{n}"), work.clone(), done, finished))
    })
    .await
}

/// Configures Redis, pre-fills, measures, and puts everything back.
pub(crate) async fn run(addr: &str, always: bool, work: &Work) -> anyhow::Result<Outcome> {
    let addr = loopback(addr)?;
    let mut c = Conn::connect(addr).await?;
    let saved = save(&mut c).await?;
    let result = bounded(work, async {
        configure(&mut c, always).await?;
        prefill(&mut c, work).await?;
        measure(addr, work).await
    })
    .await;
    // On a fresh connection: a run cut short may leave replies unread.
    let restored = match Conn::connect(addr).await {
        Ok(mut fresh) => restore(&mut fresh, &saved).await,
        Err(e) => Err(e),
    };
    let outcome = result?;
    restored.context("cannot put Redis' settings back")?;
    Ok(outcome)
}
