use std::time::Duration;

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The `busbar serve` child could not be started or stopped, or did
    /// not answer an HTTP request.
    #[error(transparent)]
    Serve(#[from] busbar_testkit::Error),
    /// The daemon exited uncleanly or refused a request.
    #[error("the busbar daemon {what}; its log ends with:\n{log}")]
    Daemon {
        /// What went wrong.
        what: String,
        /// The end of its log.
        log: String,
    },
    /// A Redis URL that is not `redis://<loopback host>:<port>`.
    #[error("invalid Redis URL {url:?}: {reason}")]
    RedisUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Redis answered a command with an error or an unexpected reply.
    #[error("Redis {command}: {message}")]
    Redis {
        /// The command.
        command: String,
        /// Redis' error, or what was unexpected.
        message: String,
    },
    /// busbar answered an op with an error or something unexpected.
    #[error("busbar {op}: {answer}")]
    Busbar {
        /// The op: `create_group`, `publish`, `read`, `ack`, `group`.
        op: &'static str,
        /// What it answered.
        answer: String,
    },
    /// A system did not finish within its bound.
    #[error("{what} within {limit:?}")]
    TimedOut {
        /// What did not happen.
        what: String,
        /// The bound.
        limit: Duration,
    },
    /// A system under test refused an event or broke the protocol.
    #[error("{system} answered {count} events with errors; first: {first}")]
    Refused {
        /// `busbar` or `redis`.
        system: &'static str,
        /// Events answered with an error.
        count: u64,
        /// The first error line.
        first: String,
    },
    /// A subscriber could not subscribe.
    #[error("{system} did not take a subscription: {reason}")]
    Subscribe {
        /// `busbar` or `nats`.
        system: &'static str,
        /// What happened.
        reason: String,
    },
    /// A connection ended before every event was acknowledged.
    #[error("{system} closed a producer connection with {missing} events unacknowledged")]
    Closed {
        /// `busbar` or `redis`.
        system: &'static str,
        /// Events sent and never answered.
        missing: u64,
    },
    /// NATS answered with an error or broke its protocol.
    #[error("NATS: {message}")]
    Nats {
        /// What NATS said, or what was unexpected.
        message: String,
    },
    /// A NATS address that is not on the loopback interface.
    #[error("NATS address {addr} is not a loopback address")]
    NatsAddr {
        /// The address given.
        addr: std::net::SocketAddr,
    },
    /// The open-file limit cannot cover every connection.
    #[error(
        "the bench needs {need} open files but the hard limit is {hard} (raise it with ulimit -Hn)"
    )]
    FileLimit {
        /// Files needed.
        need: u64,
        /// The hard `RLIMIT_NOFILE`.
        hard: u64,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// SIGINT or SIGTERM arrived; settings were restored.
    #[error("interrupted")]
    Interrupted,
}

impl BenchError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn redis(command: impl Into<String>, message: impl Into<String>) -> Self {
        BenchError::Redis {
            command: command.into(),
            message: message.into(),
        }
    }
}
