//! The live protocol over the ingest sockets: a Unix or TCP connection that
//! sends a live op is handed over here by `busbar-ingest`
//! ([`busbar_ingest::LiveUpgrade`]) and served like a `/ws` client, one
//! message per line (see [`crate::lines`]).
//!
//! Everything else is the WebSocket connection's: the principal from the
//! connection's hello gates subscriptions and publishes, and the send
//! queue, write deadline, slow policy, subscription limit, socket registry
//! and metrics are the same. `[live] max_connections` counts these
//! connections with the WebSocket ones; past it, or once the hub shuts
//! down, the connection gets one error line and is closed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use busbar_fanout::connection::{serve as serve_connection, Caller, Outbound};
use busbar_fanout::protocol::error_frame;
use busbar_fanout::{Fanout, Outgoing};
use busbar_ingest::{LiveConnection, LiveUpgrade};
use tokio::io::AsyncReadExt;

use crate::lines::{LineInbound, LineOutbound};

/// How long a refused connection's input is read and dropped, so closing
/// it does not reset the connection before the error line arrives.
const DISCARD_BEFORE_CLOSE: Duration = Duration::from_millis(500);

/// Serves ingest connections that switched to the live protocol (install
/// it with `Ingest::with_live`).
#[derive(Debug, Clone)]
pub struct SocketUpgrade(pub Arc<Fanout>);

impl LiveUpgrade for SocketUpgrade {
    fn upgrade(self: Arc<Self>, conn: LiveConnection) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(serve(self.0.clone(), conn))
    }
}

async fn serve(hub: Arc<Fanout>, conn: LiveConnection) {
    let LiveConnection {
        transport,
        principal,
        remote,
        buffered,
        mut reader,
        writer,
        shutdown,
        ..
    } = conn;
    let mut sink = LineOutbound::new(writer);
    if let Some((reason, message)) = hub.refusal() {
        hub.count_rejected(reason);
        let mut answer = vec![
            Outgoing::from(error_frame(reason, &message, None)),
            Outgoing::Close(None),
        ];
        let deadline = hub.config().write_deadline;
        let _ = tokio::time::timeout(deadline, sink.write(&mut answer)).await;
        sink.close().await;
        let mut discard = [0u8; 4096];
        let _ = tokio::time::timeout(DISCARD_BEFORE_CLOSE, async {
            while let Ok(n) = reader.read(&mut discard).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        return;
    }
    let tenant = principal.tenant().map(str::to_owned);
    let guard = hub
        .sockets()
        .register(transport, tenant, remote, busbar_event::now_ms());
    let source = LineInbound::new(reader, buffered, hub.config().max_message_bytes);
    let caller = Caller {
        principal,
        transport,
        shutdown: Some(shutdown),
    };
    serve_connection(hub, source, sink, caller, guard).await;
}
