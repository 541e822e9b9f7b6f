//! The HTTP listener: the same accept loop as every other transport
//! (admission, the connection limits, the descriptor budget, draining),
//! then HTTP/1.1 over hyper with a deadline for each request's headers.
//!
//! `header_timeout` counts from when a connection opens, and again from
//! when each response has been written, until the next request's headers
//! are in: a client that sends nothing, a slowloris that trickles its
//! headers, and an idle keep-alive connection are all closed by it. A
//! request's body must arrive within `body_timeout` (see `body.rs`).
//! Upgraded connections (`/ws`) leave this listener's count and are the
//! live hub's from then on.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use busbar_engine::{Engine, Transport};
use busbar_listen::{Accept, Limits, Rejected};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::Service;

use crate::HttpConfig;

/// Serves `app` on `listener` until `shutdown` turns true, then lets open
/// connections finish their requests (up to `cfg.drain_timeout`).
pub(crate) async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    cfg: &HttpConfig,
    app: Router,
    shutdown: watch::Receiver<bool>,
) {
    let limits = Limits {
        max_connections: cfg.max_connections,
        max_per_peer: cfg.max_connections_per_peer,
    };
    let accept = Accept::new(
        &engine,
        Transport::Http,
        limits,
        cfg.drain_timeout,
        shutdown.clone(),
    )
    .with_budget(cfg.budget.clone());
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    let header_timeout = cfg.header_timeout;
    let timeouts = engine
        .metrics()
        .connection_timeouts
        .get([Transport::Http.as_str(), "header"]);
    accept
        .run(
            || listener.accept(),
            move |stream: TcpStream, addr: SocketAddr| {
                // Responses are small and latency-bound.
                let _ = stream.set_nodelay(true);
                let service = make.clone().call(addr);
                let shutdown = shutdown.clone();
                let timeouts = timeouts.clone();
                async move {
                    let Ok(service) = service.await;
                    let mut builder = http1::Builder::new();
                    builder.timer(TokioTimer::new());
                    if !header_timeout.is_zero() {
                        builder.header_read_timeout(header_timeout);
                    }
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                        .with_upgrades();
                    if let Err(e) = until_shutdown(conn, shutdown).await {
                        if e.is_timeout() {
                            timeouts.inc();
                        }
                        tracing::debug!(peer = %addr, error = %e, "HTTP connection ended");
                    }
                }
            },
            refuse,
        )
        .await;
}

/// Serves `conn` to its end; once `shutdown` turns true it finishes the
/// request in flight and closes.
async fn until_shutdown<C>(conn: C, mut shutdown: watch::Receiver<bool>) -> hyper::Result<()>
where
    C: Future<Output = hyper::Result<()>> + GracefulConnection,
{
    tokio::pin!(conn);
    tokio::select! {
        done = &mut conn => return done,
        _ = busbar_listen::stopped(&mut shutdown) => {}
    }
    conn.as_mut().shut_down();
    conn.await
}

/// A hyper connection that can be asked to stop after its current request.
trait GracefulConnection {
    fn shut_down(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConnection for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shut_down(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Answers a connection turned away before it was served (a limit or
/// admission), then closes it.
async fn refuse(mut stream: TcpStream, why: Rejected) {
    let body = serde_json::json!({"error": why.reason(), "message": why.message()}).to_string();
    let retry = match &why {
        Rejected::Refused(e) => e.retry_after(),
        _ => Some(Duration::from_secs(1)),
    }
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
