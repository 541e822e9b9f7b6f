//! What a running daemon tells other processes about itself.
//!
//! `busbar serve` writes [`Addresses`] to `<data_dir>/run/addresses.json`
//! once every listener is bound, and removes the file when it stops. Ports
//! configured as 0 are picked by the system, so the file is how tools,
//! tests and benches find a daemon. It is written whole and renamed into
//! place: a reader sees either no file or a complete one. A file left by a
//! daemon that was killed names another `pid`; a reader waiting for the
//! daemon it started compares the `pid` with its child's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a daemon listens: the content of `<data_dir>/run/addresses.json`.
///
/// ```
/// use std::path::Path;
/// use busbar_config::Addresses;
///
/// let path = Addresses::path(Path::new("/var/lib/busbar"));
/// assert_eq!(path, Path::new("/var/lib/busbar/run/addresses.json"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addresses {
    /// The daemon's process id.
    pub pid: u32,
    /// The store it runs: `embedded` or `memory`.
    pub backend: String,
    /// The TCP ingest listener.
    pub tcp: SocketAddr,
    /// The HTTP listener.
    pub http: SocketAddr,
    /// The events Unix socket.
    pub events_socket: PathBuf,
    /// The command socket.
    pub commands_socket: PathBuf,
}

impl Addresses {
    /// The file's name in the run directory.
    pub const FILE_NAME: &'static str = "addresses.json";

    /// The file of the daemon whose data directory is `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        run_dir(data_dir).join(Self::FILE_NAME)
    }
}

/// The run directory under `data_dir`.
pub(crate) fn run_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("run")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_keeps_the_names_readers_use() {
        let a = Addresses {
            pid: 42,
            backend: "memory".to_owned(),
            tcp: "127.0.0.1:7000".parse().unwrap(),
            http: "127.0.0.1:7001".parse().unwrap(),
            events_socket: "/d/sock/events.sock".into(),
            commands_socket: "/d/sock/commands.sock".into(),
        };
        let v: serde_json::Value = serde_json::to_value(&a).unwrap();
        assert_eq!(v["tcp"], "127.0.0.1:7000");
        assert_eq!(v["http"], "127.0.0.1:7001");
        assert_eq!(v["events_socket"], "/d/sock/events.sock");
        assert_eq!(v["backend"], "memory");
        assert_eq!(serde_json::from_value::<Addresses>(v).unwrap(), a);
    }
}
