//! The HTTP listener: every accepted connection is put to the engine's
//! admission hooks before hyper sees it, and counted while it is open.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use busbar_engine::{Engine, EngineError, Transport};
use busbar_metrics::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose connections pass admission first.
pub(crate) struct AdmittedListener {
    inner: TcpListener,
    engine: Arc<Engine>,
    open: Arc<Gauge>,
}

impl AdmittedListener {
    pub(crate) fn new(inner: TcpListener, engine: Arc<Engine>) -> Self {
        let open = engine.metrics().connections.get([Transport::Http.as_str()]);
        AdmittedListener {
            inner,
            engine,
            open,
        }
    }
}

/// An accepted HTTP connection, counted in `busbar_connections{transport="http"}`
/// until it is dropped.
pub(crate) struct Counted {
    stream: TcpStream,
    open: Arc<Gauge>,
}

impl Counted {
    /// Responses are small and latency-bound.
    pub(crate) fn set_nodelay(&mut self) {
        let _ = self.stream.set_nodelay(true);
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.add(-1);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Answers a connection admission refused, then closes it.
async fn refuse(mut stream: TcpStream, error: EngineError) {
    let body =
        serde_json::json!({"error": error.reason(), "message": error.to_string()}).to_string();
    let retry = error
        .retry_after()
        .map(|d| {
            format!(
                "Retry-After: {}\r\n",
                d.as_secs_f64().ceil().max(1.0) as u64
            )
        })
        .unwrap_or_default();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n{retry}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

impl axum::serve::Listener for AdmittedListener {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) {
                        // Out of file descriptors and the like: back off
                        // instead of spinning on the error.
                        tracing::warn!(transport = "http", error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            };
            if let Err(e) = self
                .engine
                .admit_connection(Transport::Http, &addr.to_string())
            {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(1), refuse(stream, e)).await;
                });
                continue;
            }
            self.open.add(1);
            return (
                Counted {
                    stream,
                    open: self.open.clone(),
                },
                addr,
            );
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}
