//! busbar's side of `busbar bench groups`: a `busbar serve` child on a
//! temporary data directory, pre-filled over TCP, then consumers speaking
//! the group ops of the socket protocol.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use super::{histogram, record, Outcome, Work};

const STREAM: &str = "bench-groups";
const GROUP: &str = "g";

/// A running `busbar serve`; killed (and its data removed) on drop.
struct Daemon {
    child: Child,
    tcp: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(exe: &Path, always: bool, work_dir: Option<&Path>) -> anyhow::Result<Daemon> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("busbar-bench-groups-");
    let dir = match work_dir {
        Some(parent) => builder.tempdir_in(parent),
        None => builder.tempdir(),
    }
    .context("cannot create a temporary data directory")?;
    let data = dir.path().join("data");
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(if always {
            &["--durability", "always"][..]
        } else {
            &["--memory"][..]
        })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The operator's BUSBAR_* settings would change what is measured.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BUSBAR_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("BUSBAR_LOG_LEVEL", "warn");
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let mut daemon = Daemon {
        child,
        tcp: SocketAddr::from(([127, 0, 0, 1], 0)),
        _dir: dir,
    };
    let path = data.join("run").join("addresses.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(bytes) = std::fs::read(&path) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                if v["pid"].as_u64() == Some(u64::from(daemon.child.id())) {
                    daemon.tcp = v["tcp"]
                        .as_str()
                        .unwrap_or_default()
                        .parse()
                        .context("addresses.json names no TCP address")?;
                    return Ok(daemon);
                }
            }
        }
        if let Some(status) = daemon.child.try_wait()? {
            bail!("busbar serve exited with {status} before it was ready");
        }
        if Instant::now() > deadline {
            bail!("busbar serve not ready after 30s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lines read from a connection, kept whole.
struct Lines {
    reader: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
}

impl Lines {
    fn new(reader: OwnedReadHalf) -> Self {
        Lines {
            reader,
            buf: Vec::with_capacity(1 << 20),
            start: 0,
        }
    }

    /// The next line (without its newline); valid until the next call.
    async fn next(&mut self) -> anyhow::Result<&[u8]> {
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.buf[self.start..]) {
                let line = self.start..self.start + at;
                self.start += at + 1;
                return Ok(&self.buf[line]);
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let len = self.buf.len();
            self.buf.resize(len + 256 * 1024, 0);
            let n = self.reader.read(&mut self.buf[len..]).await?;
            self.buf.truncate(len + n);
            if n == 0 {
                bail!("busbar closed the connection");
            }
        }
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<(Lines, tokio::net::tcp::OwnedWriteHalf)> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (r, mut w) = s.into_split();
    w.write_all(b"{\"hello\":{\"acks\":true}}\n").await?;
    Ok((Lines::new(r), w))
}

/// Publishes `work.events` events over one pipelined connection.
async fn prefill(addr: SocketAddr, work: &Work) -> anyhow::Result<()> {
    let (mut lines, mut w) = connect(addr).await?;
    let events = work.events;
    let stream = format!(",\"stream\":\"{STREAM}\"}}\n");
    let template = work.clone();
    let writer = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(256 * 1024);
        for n in 0..events {
            let e = template.event(n);
            // `{...}` becomes `{..., "stream": ...}`.
            buf.extend_from_slice(&e.as_bytes()[..e.len() - 1]);
            buf.extend_from_slice(stream.as_bytes());
            if buf.len() > 192 * 1024 {
                w.write_all(&buf).await?;
                buf.clear();
            }
        }
        w.write_all(&buf).await?;
        Ok::<_, std::io::Error>(w)
    });
    for _ in 0..events {
        let line = lines.next().await?;
        if !line.starts_with(b"{\"id\"") {
            bail!("publish refused: {}", String::from_utf8_lossy(line));
        }
    }
    writer.await??;
    Ok(())
}

async fn call(
    lines: &mut Lines,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    line: &str,
) -> anyhow::Result<String> {
    w.write_all(line.as_bytes()).await?;
    Ok(String::from_utf8_lossy(lines.next().await?).into_owned())
}

fn read_op(consumer: &str, count: usize) -> String {
    format!(
        "{{\"op\":\"read\",\"stream\":\"{STREAM}\",\"group\":\"{GROUP}\",\"consumer\":\"{consumer}\",\"count\":{count},\"block_ms\":200}}\n"
    )
}

/// The delivered ids of a read answer (each delivery starts
/// `{"id":"<id>","delivery_count":`).
fn delivered_ids(line: &[u8], out: &mut Vec<u8>, n: &mut usize) {
    const MARK: &[u8] = b"\",\"delivery_count\":";
    for at in memchr::memmem::find_iter(line, MARK) {
        let Some(open) = memchr::memrchr(b'"', &line[..at]) else {
            continue;
        };
        if *n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&line[open..=at]);
        *n += 1;
    }
}

async fn consume(
    addr: SocketAddr,
    name: String,
    work: Work,
    done: Arc<AtomicU64>,
    finished: Arc<OnceLock<Instant>>,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let (mut lines, mut w) = connect(addr).await?;
    let mut latency = histogram();
    let read = read_op(&name, work.batch);
    let ack_head =
        format!("{{\"op\":\"ack\",\"stream\":\"{STREAM}\",\"group\":\"{GROUP}\",\"consumer\":\"{name}\",\"ids\":[");
    let mut out = Vec::with_capacity(64 * 1024);
    let mut sent = Instant::now();
    w.write_all(read.as_bytes()).await?;
    loop {
        let line = lines.next().await?;
        if !line.starts_with(b"{\"deliveries\"") {
            bail!("read failed: {}", String::from_utf8_lossy(line));
        }
        out.clear();
        out.extend_from_slice(ack_head.as_bytes());
        let mut n = 0;
        delivered_ids(line, &mut out, &mut n);
        if n == 0 {
            // Drained: stop once every event is acked.
            if done.load(Ordering::Acquire) >= work.events {
                return Ok(latency);
            }
            sent = Instant::now();
            w.write_all(read.as_bytes()).await?;
            continue;
        }
        record(&mut latency, sent);
        out.extend_from_slice(b"]}\n");
        // The ack goes out with the next read.
        out.extend_from_slice(read.as_bytes());
        sent = Instant::now();
        w.write_all(&out).await?;
        let answer = lines.next().await?;
        if !answer.starts_with(b"{\"acked\"") {
            bail!("ack failed: {}", String::from_utf8_lossy(answer));
        }
        if done.fetch_add(n as u64, Ordering::AcqRel) + n as u64 >= work.events {
            let _ = finished.set(Instant::now());
        }
    }
}

/// Pre-fills a fresh daemon, then measures the consumers.
pub(crate) async fn run(
    exe: &Path,
    always: bool,
    work_dir: Option<&Path>,
    work: &Work,
) -> anyhow::Result<Outcome> {
    let daemon = start(exe, always, work_dir).await?;
    let (mut lines, mut w) = connect(daemon.tcp).await?;
    let created = call(
        &mut lines,
        &mut w,
        &format!(
            "{{\"op\":\"create_group\",\"stream\":\"{STREAM}\",\"group\":\"{GROUP}\",\"start\":\"0\",\"ack_wait_ms\":600000,\"max_pending_per_consumer\":{}}}\n",
            work.batch * 4
        ),
    )
    .await?;
    if !created.starts_with("{\"group\"") {
        bail!("cannot create the group: {created}");
    }
    prefill(daemon.tcp, work).await?;
    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(OnceLock::new());
    let started = Instant::now();
    let tasks: Vec<_> = (0..work.consumers)
        .map(|n| {
            tokio::spawn(consume(
                daemon.tcp,
                format!("c{n}"),
                work.clone(),
                done.clone(),
                finished.clone(),
            ))
        })
        .collect();
    let mut latency = histogram();
    let mut tasks = tasks;
    let joined = tokio::time::timeout(work.max_run, async {
        let mut result = Ok(());
        for t in &mut tasks {
            match t.await {
                Ok(Ok(h)) => {
                    let _ = latency.add(&h);
                }
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(e.into()),
            }
        }
        result
    })
    .await;
    // Consumers still running (a time-out, a failed peer) stop here.
    for t in &tasks {
        t.abort();
    }
    let elapsed = finished
        .get()
        .map_or_else(|| started.elapsed(), |t| *t - started);
    match joined {
        Ok(r) => r?,
        Err(_) => bail!("busbar did not finish within {:?}", work.max_run),
    }
    let info = call(
        &mut lines,
        &mut w,
        &format!("{{\"op\":\"group\",\"stream\":\"{STREAM}\",\"group\":\"{GROUP}\"}}\n"),
    )
    .await?;
    let v: serde_json::Value = serde_json::from_str(&info)?;
    if v["group"]["pending"] != 0 || v["group"]["lag"] != 0 {
        bail!("events left unacked: {info}");
    }
    Ok(Outcome {
        events: done.load(Ordering::Acquire),
        elapsed,
        latency,
    })
}
