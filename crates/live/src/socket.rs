//! The live protocol over the ingest sockets: a Unix or TCP connection that
//! sends a live op is handed over here by `busbar-ingest`
//! ([`busbar_ingest::LiveUpgrade`]) and served like a `/ws` client, one
//! message per line (see [`crate::wire`]).
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

use axum::extract::ws::Message;
use busbar_ingest::{LiveConnection, LiveUpgrade};
use tokio::io::AsyncReadExt;

use crate::connection::Caller;
use crate::protocol::error_frame;
use crate::wire::{LineReader, Sink, Source};
use crate::Live;

/// How long a refused connection's input is read and dropped, so closing
/// it does not reset the connection before the error line arrives.
const DISCARD_BEFORE_CLOSE: Duration = Duration::from_millis(500);

impl LiveUpgrade for Live {
    fn upgrade(self: Arc<Self>, conn: LiveConnection) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(serve(self, conn))
    }
}

async fn serve(live: Arc<Live>, conn: LiveConnection) {
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
    let mut sink = Sink::lines(writer);
    let refusal = if *live.closing.borrow() {
        Some(("shutting_down", "busbar is shutting down".to_owned()))
    } else if live.sockets.len() >= live.config.max_connections {
        Some((
            "too_many_connections",
            format!(
                "at most {} live connections (WebSocket and socket)",
                live.config.max_connections
            ),
        ))
    } else {
        None
    };
    if let Some((reason, message)) = refusal {
        live.engine.metrics().ws_rejected.get([reason]).inc();
        let mut answer = vec![
            Message::Text(error_frame(reason, &message, None).into()),
            Message::Close(None),
        ];
        let _ = tokio::time::timeout(live.config.write_deadline, sink.write(&mut answer)).await;
        sink.close().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(DISCARD_BEFORE_CLOSE, async {
            while let Ok(n) = reader.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        return;
    }
    let guard = live
        .sockets
        .register(transport, remote, busbar_event::now_ms());
    let source = Source::Lines(LineReader::new(
        reader,
        buffered,
        live.config.max_message_bytes,
    ));
    let caller = Caller {
        principal,
        transport,
        shutdown: Some(shutdown),
    };
    crate::connection::run(live, (source, sink), caller, guard).await;
}
