//! The operator command socket (`commands.sock`).
//!
//! One command per line, one JSON answer line per command:
//!
//! ```text
//! {"cmd":"health"}
//! {"cmd":"rotate","args":{"reason":"manual"}}
//! rotate {"reason":"manual"}          (the same, easier to type into nc)
//! ```
//!
//! | command | args | answer |
//! |---|---|---|
//! | `health` | | `{"ok":true,"status":"ok"\|"degraded","backend","uptime_seconds","not_ready":[..]}` |
//! | `stats` | | streams, events, bytes, events ingested by transport, errors by reason, connections, memory |
//! | `rotate` | `reason` (logged), optional `stream` | seals the active segment of every stream (or one) |
//! | `flush` | | pushes relay backlogs now; answers `flushed: 0` while no relay sink exists |
//! | `streams` | | every stream's info |
//!
//! Every answer has `ok`; a failure is `{"ok":false,"error":"<reason>","message":".."}`,
//! an unknown command's message lists the known ones. Callers are trusted
//! (the socket's file mode is the access control). Latency is recorded in
//! `busbar_command_duration_seconds{command}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_engine::{Engine, Principal, Transport};
use busbar_event::StreamName;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::listener::{Accept, IngestOptions};
use crate::UnixSocket;

/// The commands the socket understands.
pub const COMMANDS: [&str; 5] = ["health", "stats", "rotate", "flush", "streams"];

/// Longest command line.
const MAX_COMMAND_LINE: usize = 64 * 1024;
/// Open command connections at once.
const MAX_COMMAND_CONNECTIONS: usize = 64;

/// Serves the command socket until `shutdown` becomes true.
pub async fn serve_commands(
    socket: UnixSocket,
    engine: Arc<Engine>,
    shutdown: watch::Receiver<bool>,
) {
    let options = IngestOptions {
        max_line_bytes: MAX_COMMAND_LINE,
        max_connections: MAX_COMMAND_CONNECTIONS,
        drain_timeout: Duration::from_secs(5),
    };
    let accept = Accept::new(&engine, Transport::Command, &options, shutdown.clone());
    accept
        .run(
            || socket.listener().accept(),
            move |stream: UnixStream, _| {
                let engine = engine.clone();
                let shutdown = shutdown.clone();
                async move { serve_connection(stream, &engine, shutdown).await }
            },
            |mut stream: UnixStream| async move {
                let answer = failure(
                    "too_many_connections",
                    "too many command connections; retry later",
                );
                let _ = stream.write_all(format!("{answer}\n").as_bytes()).await;
            },
        )
        .await;
}

async fn serve_connection(
    stream: UnixStream,
    engine: &Engine,
    mut shutdown: watch::Receiver<bool>,
) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_COMMAND_LINE as u64 + 1);
        let read = tokio::select! {
            _ = crate::listener::stopped(&mut shutdown) => break,
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
            handle_line(engine, text.trim()).await
        };
        if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

/// Parses and runs one command line, timing it.
pub async fn handle_line(engine: &Engine, line: &str) -> Value {
    let (name, args) = match parse_line(line) {
        Ok(parsed) => parsed,
        Err(message) => return failure("bad_command", &message),
    };
    let started = Instant::now();
    let answer = run_command(engine, &name, &args).await;
    // Label values stay bounded: anything unknown is one label.
    let label = COMMANDS
        .iter()
        .find(|c| **c == name)
        .copied()
        .unwrap_or("unknown");
    engine
        .metrics()
        .command_seconds
        .get([label])
        .observe(started.elapsed());
    answer
}

/// `{"cmd":"name","args":{..}}` or `name [json-args]`.
fn parse_line(line: &str) -> Result<(String, Value), String> {
    if line.starts_with('{') {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Line {
            cmd: String,
            #[serde(default)]
            args: Value,
        }
        let parsed: Line = serde_json::from_str(line).map_err(|e| {
            format!("invalid command line: {e}; expected {{\"cmd\":\"<name>\",\"args\":{{..}}}}")
        })?;
        return Ok((parsed.cmd, parsed.args));
    }
    let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let args = if rest.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(rest.trim()).map_err(|e| format!("invalid JSON arguments: {e}"))?
    };
    Ok((name.to_owned(), args))
}

fn failure(reason: &str, message: &str) -> Value {
    json!({"ok": false, "error": reason, "message": message})
}

/// Runs one command.
pub async fn run_command(engine: &Engine, name: &str, args: &Value) -> Value {
    if !(args.is_null() || args.is_object()) {
        return failure("bad_command", "arguments must be a JSON object");
    }
    match name {
        "health" => health(engine),
        "stats" => stats(engine).await,
        "rotate" => rotate(engine, args).await,
        "flush" => json!({
            "ok": true,
            "flushed": 0,
            "message": "nothing to flush: no relay sink is configured",
        }),
        "streams" => match engine.streams(&Principal::Trusted).await {
            Ok(streams) => json!({"ok": true, "streams": streams}),
            Err(e) => failure(e.reason(), &e.to_string()),
        },
        other => failure(
            "unknown_command",
            &format!(
                "unknown command `{}`; known commands: {}",
                other.chars().take(64).collect::<String>(),
                COMMANDS.join(", ")
            ),
        ),
    }
}

fn health(engine: &Engine) -> Value {
    let not_ready = engine.readiness().check();
    json!({
        "ok": true,
        "status": if not_ready.is_empty() { "ok" } else { "degraded" },
        "backend": engine.store().kind(),
        "uptime_seconds": engine.metrics().uptime().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "not_ready": not_ready,
    })
}

async fn stats(engine: &Engine) -> Value {
    let metrics = engine.metrics();
    let mut ingested = serde_json::Map::new();
    metrics.events_ingested.for_each(|labels, c| {
        let entry = ingested.entry(labels[1].clone()).or_insert(json!(0));
        *entry = json!(entry.as_u64().unwrap_or(0) + c.get());
    });
    let mut errors = serde_json::Map::new();
    metrics.ingest_errors.for_each(|labels, c| {
        let entry = errors.entry(labels[1].clone()).or_insert(json!(0));
        *entry = json!(entry.as_u64().unwrap_or(0) + c.get());
    });
    let mut connections = serde_json::Map::new();
    metrics.connections.for_each(|labels, g| {
        connections.insert(labels[0].clone(), json!(g.get()));
    });
    let (mut streams, mut events, mut bytes) = (0u64, 0u64, 0u64);
    if let Ok(infos) = engine.streams(&Principal::Trusted).await {
        for info in infos {
            streams += 1;
            events += info.length;
            bytes += info.bytes;
        }
    }
    json!({
        "ok": true,
        "backend": engine.store().kind(),
        "uptime_seconds": metrics.uptime().as_secs(),
        "streams": streams,
        "events": events,
        "bytes": bytes,
        "events_ingested": ingested,
        "ingest_errors": errors,
        "connections": connections,
        "group_commits": metrics.commits.get(),
        "resident_memory_bytes": busbar_engine::metrics::resident_bytes(),
    })
}

async fn rotate(engine: &Engine, args: &Value) -> Value {
    let reason = args
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("unspecified")
        .chars()
        .take(200)
        .collect::<String>();
    let stream = match args
        .get("stream")
        .and_then(Value::as_str)
        .map(StreamName::new)
    {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return failure("invalid_stream", &e.to_string()),
    };
    match engine.rotate(&Principal::Trusted, stream.as_ref()).await {
        Ok(rotated) => {
            let sealed = rotated.iter().filter(|(_, r)| r.sealed).count();
            tracing::info!(reason = %reason, streams = rotated.len(), sealed, "rotation requested on the command socket");
            let detail: Vec<Value> = rotated
                .iter()
                .map(|(s, r)| json!({"stream": s, "sealed": r.sealed, "segments": r.segments}))
                .collect();
            json!({"ok": true, "reason": reason, "rotated": detail})
        }
        Err(e) => failure(e.reason(), &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use busbar_engine::{Auth, EngineConfig, Metrics, Readiness};
    use busbar_store::memory::MemoryStore;

    fn engine() -> Arc<Engine> {
        Engine::new(
            Arc::new(MemoryStore::new()),
            Auth::default(),
            EngineConfig::default(),
            Arc::new(Metrics::default()),
            Readiness::new(None, 0),
        )
    }

    #[tokio::test]
    async fn both_line_forms_and_unknown_commands() {
        let e = engine();
        let a = handle_line(&e, r#"{"cmd":"health"}"#).await;
        assert_eq!(a["ok"], true);
        assert_eq!(a["backend"], "memory");
        let b = handle_line(&e, r#"rotate {"reason":"manual"}"#).await;
        assert_eq!(b["reason"], "manual");
        let c = handle_line(&e, "nope").await;
        assert_eq!(c["error"], "unknown_command");
        assert!(c["message"]
            .as_str()
            .unwrap()
            .contains("health, stats, rotate, flush, streams"));
        let d = handle_line(&e, "{bad").await;
        assert_eq!(d["error"], "bad_command");
        assert_eq!(e.metrics().command_seconds.get(["unknown"]).count(), 1);
        assert_eq!(e.metrics().command_seconds.get(["health"]).count(), 1);
    }
}
