//! Labels of where a request came from and what kind of read it is.

/// The transport a request came in on (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The events Unix socket.
    Unix,
    /// TCP NDJSON.
    Tcp,
    /// HTTP API.
    Http,
    /// WebSocket.
    WebSocket,
    /// Command socket.
    Command,
    /// In-process callers (library use, benchmarks).
    Local,
}

impl Transport {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Unix => "unix",
            Transport::Tcp => "tcp",
            Transport::Http => "http",
            Transport::WebSocket => "ws",
            Transport::Command => "command",
            Transport::Local => "local",
        }
    }
}

/// A read capped by [`EngineConfig::max_read_count`] (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadOp {
    /// A range read of a stream.
    Range,
    /// A consumer-group read.
    GroupRead,
    /// A claim of idle pending entries.
    Claim,
    /// A listing of a group's pending entries.
    Pending,
    /// A listing of a dead-letter stream.
    DlqList,
    /// A live feed or subscription following a stream.
    Live,
}

impl ReadOp {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadOp::Range => "range",
            ReadOp::GroupRead => "group_read",
            ReadOp::Claim => "claim",
            ReadOp::Pending => "pending",
            ReadOp::DlqList => "dlq_list",
            ReadOp::Live => "live",
        }
    }
}
