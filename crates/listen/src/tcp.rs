//! Binding TCP listeners.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::IngestError;

/// Binds a TCP listener (port 0 picks a free port; read it back with
/// `local_addr`).
///
/// # Errors
/// [`IngestError::BindTcp`].
pub async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, IngestError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| IngestError::BindTcp { addr, source })
}
