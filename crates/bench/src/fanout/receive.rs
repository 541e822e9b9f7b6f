//! The subscriber side of a fan-out run: one task per connection reads
//! what its system delivers, counts it and answers keep-alives, until every
//! event is accounted for, the connection goes quiet after the publisher
//! finished, or the run's deadline passes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stamp::{SharedLatency, Tally};

/// Read buffer of one subscriber connection (it grows for a larger message).
const READ_BUFFER: usize = 32 * 1024;

/// What every subscriber of a run shares.
pub(crate) struct Ctx {
    /// Send stamps count from here.
    pub(crate) base: Instant,
    /// Events published in the run.
    pub(crate) events: u64,
    /// Subscribers stop reading at this time.
    pub(crate) deadline: Instant,
    /// A subscriber silent this long after the publisher finished has
    /// received everything it will.
    pub(crate) quiet: Duration,
    /// Set once the publisher finished.
    pub(crate) published: AtomicBool,
    /// Publish → receive latency of every subscriber.
    pub(crate) latency: SharedLatency,
}

/// A system's delivery protocol, as a subscriber reads it.
pub(crate) trait Deliveries: Send + 'static {
    /// Counts the complete messages at the start of `buf` into `got`,
    /// with what must be answered (pings), and returns how many bytes it
    /// used.
    fn parse(&mut self, buf: &[u8], got: &mut Received<'_>) -> usize;
}

/// What one read of a subscriber brought.
pub(crate) struct Received<'a> {
    pub(crate) tally: &'a mut Tally,
    /// Send stamps count from here.
    pub(crate) base: Instant,
    /// When the bytes were read.
    pub(crate) now: Instant,
    /// What to send back (pongs).
    pub(crate) replies: &'a mut Vec<u8>,
}

impl Received<'_> {
    /// Counts an event.
    pub(crate) fn event(&mut self, msg: &[u8]) {
        self.tally.event(msg, self.base, self.now);
    }
}

/// A subscribed connection, with the bytes read past its setup.
pub(crate) struct Subscribed<P> {
    pub(crate) stream: TcpStream,
    pub(crate) leftover: Vec<u8>,
    pub(crate) protocol: P,
}

/// Reads deliveries until the subscriber is done; see the module docs.
pub(crate) async fn receive<P: Deliveries>(sub: Subscribed<P>, ctx: &Ctx) -> Tally {
    let Subscribed {
        mut stream,
        leftover,
        mut protocol,
    } = sub;
    let mut tally = Tally::default();
    let mut buf = leftover;
    let mut filled = buf.len();
    buf.resize(READ_BUFFER.max(filled * 2), 0);
    let mut replies = Vec::new();
    // Whatever arrived with the setup answers is counted first.
    let mut now = Instant::now();
    loop {
        let mut got = Received {
            tally: &mut tally,
            base: ctx.base,
            now,
            replies: &mut replies,
        };
        let used = protocol.parse(&buf[..filled], &mut got);
        buf.copy_within(used..filled, 0);
        filled -= used;
        tally.flush(&ctx.latency);
        if !replies.is_empty() {
            if let Err(e) = stream.write_all(&replies).await {
                tally
                    .error
                    .get_or_insert(format!("cannot answer a ping: {e}"));
            }
            replies.clear();
        }
        if tally.error.is_some() || tally.complete(ctx.events) {
            break;
        }
        now = Instant::now();
        if now >= ctx.deadline {
            break;
        }
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let wait = ctx.quiet.min(ctx.deadline - now);
        match tokio::time::timeout(wait, stream.read(&mut buf[filled..])).await {
            Err(_) if ctx.published.load(Ordering::Acquire) => break,
            Err(_) => {}
            Ok(Ok(0)) => {
                tally.error = Some("the connection was closed".to_owned());
                break;
            }
            Ok(Ok(n)) => filled += n,
            Ok(Err(e)) => {
                tally.error = Some(format!("cannot read: {e}"));
                break;
            }
        }
        now = Instant::now();
    }
    tally
}
