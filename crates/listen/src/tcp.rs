//! Binding TCP listeners.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::ListenError;

/// Binds a TCP listener (port 0 picks a free port; read it back with
/// `local_addr`).
///
/// # Errors
/// [`ListenError::BindTcp`].
pub async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::BindTcp { addr, source })
}
