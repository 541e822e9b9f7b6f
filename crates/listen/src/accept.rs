//! The accept loop every socket transport shares: admission, the
//! connection limit, the connection gauges and draining at shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{Engine, EngineError, Transport};
use tokio::sync::{watch, Semaphore};

/// How a listener names its peers to admission hooks and logs.
pub trait PeerName {
    /// `ip:port`, or `unix` for a Unix socket peer.
    fn peer_name(&self) -> String;
}

impl PeerName for std::net::SocketAddr {
    fn peer_name(&self) -> String {
        self.to_string()
    }
}

impl PeerName for tokio::net::unix::SocketAddr {
    fn peer_name(&self) -> String {
        "unix".to_owned()
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
    /// An admission hook refused it ([`EngineError::Overloaded`] or
    /// [`EngineError::Paused`]).
    Refused(EngineError),
}

impl Rejected {
    /// A stable reason (`too_many_connections`, `overloaded`, `paused`).
    pub fn reason(&self) -> &'static str {
        match self {
            Rejected::TooManyConnections { .. } => "too_many_connections",
            Rejected::Refused(e) => e.reason(),
        }
    }

    /// What the client is told.
    pub fn message(&self) -> String {
        match self {
            Rejected::TooManyConnections { .. } => {
                "the connection limit of this transport is reached; retry later".to_owned()
            }
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
/// ([`Engine::admit_connection`]), then takes one of `max_connections`
/// slots; either refusal hands the connection to the transport's `reject`
/// with the [`Rejected`] reason (bounded to one second), and counts it in
/// `busbar_connections_rejected_total{transport}` (the limit) or
/// `busbar_admission_refused_total{kind="connect"}` (a hook). Served
/// connections are counted in `busbar_connections{transport}`.
pub struct Accept {
    engine: Arc<Engine>,
    transport: Transport,
    max: u32,
    slots: Arc<Semaphore>,
    drain_timeout: Duration,
    shutdown: watch::Receiver<bool>,
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
    /// An accept loop for `transport` holding at most `max_connections`
    /// connections, that stops when `shutdown` turns true and then waits
    /// up to `drain_timeout` for open connections to finish.
    pub fn new(
        engine: &Arc<Engine>,
        transport: Transport,
        max_connections: usize,
        drain_timeout: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let max =
            u32::try_from(max_connections.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        Accept {
            engine: engine.clone(),
            transport,
            max,
            slots: Arc::new(Semaphore::new(max as usize)),
            drain_timeout,
            shutdown,
        }
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
        let gauge = self
            .engine
            .metrics()
            .connections
            .get([self.transport.as_str()]);
        let rejected = self
            .engine
            .metrics()
            .connections_rejected
            .get([self.transport.as_str()]);
        let transport = self.transport.as_str();
        loop {
            let (stream, addr) = tokio::select! {
                _ = stopped(&mut self.shutdown) => break,
                accepted = accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning on the error.
                        tracing::warn!(transport, error = %e, "accept failed");
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
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    gauge.add(1);
                    let gauge = gauge.clone();
                    let served = handle(stream, addr);
                    tokio::spawn(async move {
                        served.await;
                        gauge.add(-1);
                        drop(permit);
                    });
                }
                Err(_) => {
                    rejected.inc();
                    tracing::warn!(
                        transport,
                        limit = self.max,
                        "connection refused: connection limit reached"
                    );
                    let refused = reject(
                        stream,
                        Rejected::TooManyConnections {
                            limit: self.max as usize,
                        },
                    );
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
