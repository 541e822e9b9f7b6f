//! The command socket's listener: one command per line, one JSON answer
//! line per command (see [`crate::commands`]).

use std::sync::Arc;
use std::time::Duration;

use busbar_engine::Transport;
use busbar_listen::{stopped, Accept, Limits, Rejected, UnixSocket};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::commands::failure;
use crate::Ops;

/// Longest command line.
const MAX_COMMAND_LINE: usize = 64 * 1024;
/// Open command connections at once.
const MAX_COMMAND_CONNECTIONS: usize = 64;
/// How long shutdown waits for commands in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves the command socket until `shutdown` becomes true.
pub async fn serve_commands(socket: UnixSocket, ops: Arc<Ops>, shutdown: watch::Receiver<bool>) {
    let accept = Accept::new(
        ops.engine(),
        Transport::Command,
        Limits::total(MAX_COMMAND_CONNECTIONS),
        DRAIN,
        shutdown.clone(),
    );
    accept
        .run(
            || socket.listener().accept(),
            move |stream: UnixStream, _| {
                let ops = ops.clone();
                let shutdown = shutdown.clone();
                async move { serve_connection(stream, &ops, shutdown).await }
            },
            |mut stream: UnixStream, why: Rejected| async move {
                let _ = stream.write_all(why.json_line().as_bytes()).await;
            },
        )
        .await;
}

async fn serve_connection(stream: UnixStream, ops: &Ops, mut shutdown: watch::Receiver<bool>) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_COMMAND_LINE as u64 + 1);
        let read = tokio::select! {
            _ = stopped(&mut shutdown) => break,
            read = limited.read_until(b'\n', &mut line) => read,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let answer = if line.len() > MAX_COMMAND_LINE {
            // Too long to be a command; the connection cannot be resynced.
            let answer = failure("too_large", "command line over 64 KiB");
            let _ = w.write_all(format!("{answer}\n").as_bytes()).await;
            break;
        } else {
            let text = String::from_utf8_lossy(&line);
            if text.trim().is_empty() {
                continue;
            }
            ops.handle_line(text.trim()).await
        };
        if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}
