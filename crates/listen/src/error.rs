use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

/// Why a listener could not be set up.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Binding a TCP address failed.
    #[error("cannot listen on TCP {addr}: {source}")]
    BindTcp {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Binding a Unix socket failed.
    #[error("cannot listen on Unix socket {path}: {source}")]
    BindUnix {
        /// The socket path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Another process accepts connections on the socket.
    #[error(
        "{path} is in use by a running process (is another busbar running on this data directory?)"
    )]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// A file that is not a socket sits where the socket should go.
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Preparing the socket's directory or permissions failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}
