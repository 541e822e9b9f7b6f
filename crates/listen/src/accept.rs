//! The accept loop every socket transport shares: admission, the
//! connection limits (per transport, per peer address, and the process's
//! descriptor budget), running out of descriptors, the connection gauges
//! and draining at shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{Engine, EngineError, Transport};
use parking_lot::Mutex;
use tokio::sync::{watch, Semaphore};

use crate::budget::{Budget, BudgetPermit, Throttled};

/// How a listener names its peers to admission hooks and logs.
pub trait PeerName {
    /// `ip:port`, or `unix` for a Unix socket peer.
    fn peer_name(&self) -> String;

    /// The peer's address, for the per-peer limit (`None`: not limited per
    /// peer, as on a Unix socket).
    fn peer_ip(&self) -> Option<IpAddr> {
        None
    }
}

impl PeerName for std::net::SocketAddr {
    fn peer_name(&self) -> String {
        self.to_string()
    }

    fn peer_ip(&self) -> Option<IpAddr> {
        Some(self.ip())
    }
}

impl PeerName for tokio::net::unix::SocketAddr {
    fn peer_name(&self) -> String {
        "unix".to_owned()
    }
}

/// The connection limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections the listener holds at once.
    pub max_connections: usize,
    /// Connections one peer address holds at once (0: no limit).
    pub max_per_peer: usize,
}

impl Limits {
    /// At most `max_connections`, no limit per peer.
    pub fn total(max_connections: usize) -> Self {
        Limits {
            max_connections,
            max_per_peer: 0,
        }
    }
}

/// Why a connection was turned away before it was served.
#[derive(Debug)]
#[non_exhaustive]
pub enum Rejected {
    /// The transport's connection limit is reached.
    TooManyConnections {
        /// The limit.
        limit: usize,
    },
    /// The peer address holds as many connections as it may.
    TooManyFromPeer {
        /// The limit.
        limit: usize,
    },
    /// The process's connection budget (its file descriptors, less those
    /// kept for the store) is spent.
    OutOfDescriptors,
    /// As many connections as allowed have not authenticated yet.
    TooManyUnauthenticated {
        /// The limit.
        limit: usize,
    },
    /// An admission hook refused it ([`EngineError::Overloaded`] or
    /// [`EngineError::Paused`]).
    Refused(EngineError),
}

impl Rejected {
    /// A stable reason (`too_many_connections`, `overloaded`, `paused`).
    pub fn reason(&self) -> &'static str {
        match self {
            Rejected::TooManyConnections { .. } => "too_many_connections",
            Rejected::TooManyFromPeer { .. } => "too_many_from_peer",
            Rejected::OutOfDescriptors => "out_of_descriptors",
            Rejected::TooManyUnauthenticated { .. } => "too_many_unauthenticated",
            Rejected::Refused(e) => e.reason(),
        }
    }

    /// What the client is told.
    pub fn message(&self) -> String {
        match self {
            Rejected::TooManyConnections { limit } => format!(
                "the connection limit of this transport ({limit}) is reached; retry later"
            ),
            Rejected::TooManyFromPeer { limit } => format!(
                "this address holds the most connections one peer may ({limit}); close some or retry later"
            ),
            Rejected::OutOfDescriptors => {
                "busbar holds as many connections as its file descriptors allow; retry later"
                    .to_owned()
            }
            Rejected::TooManyUnauthenticated { limit } => format!(
                "{limit} connections are waiting to authenticate; send the hello at once, or retry later"
            ),
            Rejected::Refused(e) => e.to_string(),
        }
    }

    /// The answer line of the socket transports:
    /// `{"error":"<reason>","message":"..."[,"retry_after_ms":n]}` and `\n`.
    pub fn json_line(&self) -> String {
        let mut line = format!(
            "{{\"error\":\"{}\",\"message\":{}",
            self.reason(),
            json_string(&self.message())
        );
        if let Rejected::Refused(e) = self {
            if let Some(after) = e.retry_after() {
                line.push_str(&format!(",\"retry_after_ms\":{}", after.as_millis()));
            }
        }
        line.push_str("}\n");
        line
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Resolves once `shutdown` is true (or its sender is gone, which also
/// means stop).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// One transport's accept loop.
///
/// Every accepted connection is first put to the engine's admission hooks
/// ([`Engine::admit_connection`]), then takes one slot of the process's
/// [`Budget`] (when the listener has one), one of the listener's
/// `max_connections` and one of its peer address's `max_per_peer`. Any
/// refusal hands the connection to the transport's `reject` with the
/// [`Rejected`] reason (bounded to one second), and counts it in
/// `busbar_connections_rejected_total{transport,reason}` (a limit) or
/// `busbar_admission_refused_total{kind="connect"}` (a hook). Served
/// connections are counted in `busbar_connections{transport}`.
///
/// Running out of file descriptors anyway (another part of the process,
/// or a budget set too high) degrades this listener alone: the loop keeps
/// one descriptor in reserve, and on `EMFILE`/`ENFILE` gives it up to
/// accept and at once close the waiting connection (so the kernel's
/// backlog does not spin the loop), counts
/// `busbar_accept_errors_total{transport,reason="out_of_descriptors"}`,
/// writes one log line per ten seconds at most, and goes on.
pub struct Accept {
    engine: Arc<Engine>,
    transport: Transport,
    max: u32,
    slots: Arc<Semaphore>,
    per_peer: Option<Arc<PerPeer>>,
    budget: Option<Budget>,
    drain_timeout: Duration,
    shutdown: watch::Receiver<bool>,
}

/// Connections held per peer address, at most `limit` each.
#[derive(Debug)]
pub struct PerPeer {
    limit: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's share of its peer's limit, returned when dropped.
#[derive(Debug)]
pub struct PeerSlot {
    peers: Arc<PerPeer>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut held = self.peers.held.lock();
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

impl PerPeer {
    /// At most `limit` connections per address.
    pub fn new(limit: usize) -> Arc<PerPeer> {
        Arc::new(PerPeer {
            limit,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for a connection from `ip`, if it holds fewer than the limit.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let mut held = self.held.lock();
        let n = held.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

/// What a served connection holds until it ends.
struct Held {
    _slot: tokio::sync::OwnedSemaphorePermit,
    _peer: Option<PeerSlot>,
    _budget: Option<BudgetPermit>,
}

/// Whether an accept error means the process is out of descriptors.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A descriptor held back so a listener out of descriptors can still
/// accept (and close) the connection waiting in its backlog.
fn reserve_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

impl std::fmt::Debug for Accept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accept")
            .field("transport", &self.transport)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Accept {
    /// An accept loop for `transport` within `limits`, that stops when
    /// `shutdown` turns true and then waits up to `drain_timeout` for open
    /// connections to finish.
    pub fn new(
        engine: &Arc<Engine>,
        transport: Transport,
        limits: Limits,
        drain_timeout: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let max = u32::try_from(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS))
            .unwrap_or(u32::MAX);
        let per_peer = (limits.max_per_peer > 0).then(|| PerPeer::new(limits.max_per_peer));
        Accept {
            engine: engine.clone(),
            transport,
            max,
            slots: Arc::new(Semaphore::new(max as usize)),
            per_peer,
            budget: None,
            drain_timeout,
            shutdown,
        }
    }

    /// Counts every connection against the process's `budget` too.
    pub fn with_budget(mut self, budget: Option<Budget>) -> Self {
        self.budget = budget;
        self
    }

    /// Takes what a connection from `ip` needs, or says which limit refused.
    fn hold(&self, ip: Option<IpAddr>) -> Result<Held, Rejected> {
        let budget = match &self.budget {
            Some(b) => Some(b.try_take().ok_or(Rejected::OutOfDescriptors)?),
            None => None,
        };
        let peer = match (&self.per_peer, ip) {
            (Some(peers), Some(ip)) => Some(
                peers
                    .take(ip)
                    .ok_or(Rejected::TooManyFromPeer { limit: peers.limit })?,
            ),
            _ => None,
        };
        let slot =
            self.slots
                .clone()
                .try_acquire_owned()
                .map_err(|_| Rejected::TooManyConnections {
                    limit: self.max as usize,
                })?;
        Ok(Held {
            _slot: slot,
            _peer: peer,
            _budget: budget,
        })
    }

    /// Accepts until shutdown, then waits for open connections to finish.
    pub async fn run<S, Addr, A, AF, H, HF, R, RF>(mut self, accept: A, handle: H, reject: R)
    where
        Addr: PeerName,
        A: Fn() -> AF,
        AF: Future<Output = std::io::Result<(S, Addr)>>,
        H: Fn(S, Addr) -> HF,
        HF: Future<Output = ()> + Send + 'static,
        R: Fn(S, Rejected) -> RF,
        RF: Future<Output = ()> + Send + 'static,
    {
        let metrics = self.engine.metrics().clone();
        let transport = self.transport.as_str();
        let gauge = metrics.connections.get([transport]);
        let throttled = Throttled::new(Duration::from_secs(10));
        let mut reserve = reserve_descriptor();
        loop {
            let (stream, addr) = tokio::select! {
                _ = stopped(&mut self.shutdown) => break,
                accepted = accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) if out_of_descriptors(&e) => {
                        metrics.accept_errors.get([transport, "out_of_descriptors"]).inc();
                        if let Some(suppressed) = throttled.ready() {
                            tracing::warn!(
                                transport,
                                suppressed,
                                "out of file descriptors: closing connections as they come \
                                 (raise the open-file limit, or lower [listen] max_connections)"
                            );
                        }
                        // Give the reserve up for the one waiting in the
                        // backlog, close it, and take the reserve back.
                        drop(reserve.take());
                        if let Ok(accepted) = accept().await {
                            drop(accepted);
                        }
                        if reserve.is_none() {
                            reserve = reserve_descriptor();
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    Err(e) => {
                        metrics.accept_errors.get([transport, "other"]).inc();
                        if let Some(suppressed) = throttled.ready() {
                            tracing::warn!(transport, suppressed, error = %e, "accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            if let Err(e) = self
                .engine
                .admit_connection(self.transport, &addr.peer_name())
            {
                tracing::debug!(
                    transport,
                    reason = e.reason(),
                    "connection refused by admission"
                );
                let refused = reject(stream, Rejected::Refused(e));
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(1), refused).await;
                });
                continue;
            }
            match self.hold(addr.peer_ip()) {
                Ok(held) => {
                    gauge.add(1);
                    let gauge = gauge.clone();
                    let served = handle(stream, addr);
                    tokio::spawn(async move {
                        served.await;
                        gauge.add(-1);
                        drop(held);
                    });
                }
                Err(why) => {
                    metrics
                        .connections_rejected
                        .get([transport, why.reason()])
                        .inc();
                    if let Some(suppressed) = throttled.ready() {
                        tracing::warn!(
                            transport,
                            suppressed,
                            reason = why.reason(),
                            "connection refused: {}",
                            why.message()
                        );
                    }
                    let refused = reject(stream, why);
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(1), refused).await;
                    });
                }
            }
        }
        // Every permit back means every connection has finished.
        let drained =
            tokio::time::timeout(self.drain_timeout, self.slots.acquire_many(self.max)).await;
        if drained.is_err() {
            tracing::warn!(
                transport,
                open = gauge.get(),
                timeout = ?self.drain_timeout,
                "connections still open after the drain timeout"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_lines_are_json_with_the_reason() {
        let line = Rejected::TooManyConnections { limit: 3 }.json_line();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["error"], "too_many_connections");
        let line = Rejected::Refused(EngineError::Overloaded {
            reason: "memory \"critical\"".into(),
            retry_after: Duration::from_millis(1500),
        })
        .json_line();
        assert!(line.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["error"], "overloaded");
        assert_eq!(v["retry_after_ms"], 1500);
        assert!(v["message"].as_str().unwrap().contains("critical"));
    }
}
