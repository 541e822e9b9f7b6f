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
//! | `health` | | `{"ok","status":"ok"\|"degraded","backend","uptime_seconds","not_ready":[..]}`; `ok` is `false` (with `error: not_ready`) exactly when `/readyz` answers 503 |
//! | `stats` | | clients' streams, events, bytes (busbar's own `_busbar:` streams apart, in `internal_streams`), events ingested by transport, errors by reason, connections, memory |
//! | `rotate` | `reason` (logged), optional `stream` | seals the active segment of every stream (or one) |
//! | `flush` | | pushes every registered backlog (relay sinks) now: `{"ok","flushed":<events>,"backlogs":[{"name","sent","error"?}]}`; with none registered, `flushed: 0` and a message saying there is nothing to flush |
//! | `streams` | | every stream's info |
//!
//! Every answer has `ok`; a failure is `{"ok":false,"error":"<reason>","message":".."}`,
//! an unknown command's message lists the known ones. Callers are trusted
//! (the socket's file mode is the access control). Latency is recorded in
//! `busbar_command_duration_seconds{command}` (by registered command name;
//! anything else is `unknown`, so label values stay bounded).
//!
//! Other crates add commands with [`Ops::command`](crate::Ops::command) and
//! backlogs for `flush` with [`Ops::add_flusher`](crate::Ops::add_flusher).

use std::sync::Arc;
use std::time::Instant;

use busbar_engine::{Engine, Principal};
use busbar_event::StreamName;
use serde_json::{json, Value};

use crate::{Flushed, Ops};

/// The commands every daemon has.
pub const BUILTIN: [&str; 5] = ["health", "stats", "rotate", "flush", "streams"];

pub(crate) fn register_builtins(ops: &Arc<Ops>) {
    let engine = ops.engine().clone();
    ops.command(
        "health",
        "readiness of the daemon, as /readyz sees it",
        move |_| {
            let engine = engine.clone();
            async move { health(&engine) }
        },
    );
    let engine = ops.engine().clone();
    ops.command(
        "stats",
        "streams, events, bytes, ingest and error counts, connections, memory",
        move |_| {
            let engine = engine.clone();
            async move { stats(&engine).await }
        },
    );
    let engine = ops.engine().clone();
    ops.command(
        "rotate",
        "seal the active segment of every stream (or {\"stream\"}), logging {\"reason\"}",
        move |args| {
            let engine = engine.clone();
            async move { rotate(&engine, &args).await }
        },
    );
    let weak = Arc::downgrade(ops);
    ops.command(
        "flush",
        "push every relay backlog now, skipping backoff",
        move |_| {
            let ops = weak.upgrade();
            async move {
                match ops {
                    Some(ops) => flush(&ops).await,
                    None => failure("shutting_down", "busbar is shutting down"),
                }
            }
        },
    );
    let engine = ops.engine().clone();
    ops.command("streams", "every stream's info", move |_| {
        let engine = engine.clone();
        async move {
            match engine.streams(&Principal::Trusted).await {
                Ok(streams) => json!({"ok": true, "streams": streams}),
                Err(e) => failure(e.reason(), &e.to_string()),
            }
        }
    });
}

impl Ops {
    /// Parses and runs one command line, timing it.
    pub async fn handle_line(&self, line: &str) -> Value {
        let (name, args) = match parse_line(line) {
            Ok(parsed) => parsed,
            Err(message) => return failure("bad_command", &message),
        };
        let started = Instant::now();
        let (label, answer) = match self.find(&name) {
            Some((label, command)) if args.is_null() || args.is_object() => {
                (label, command.run(args).await)
            }
            Some((label, _)) => (
                label,
                failure("bad_command", "arguments must be a JSON object"),
            ),
            None => (
                // Label values stay bounded: anything unknown is one label.
                "unknown",
                failure(
                    "unknown_command",
                    &format!(
                        "unknown command `{}`; known commands: {}",
                        name.chars().take(64).collect::<String>(),
                        self.command_names().join(", ")
                    ),
                ),
            ),
        };
        self.engine
            .metrics()
            .command_seconds
            .get([label])
            .observe(started.elapsed());
        answer
    }
}

/// `{"cmd":"name","args":{..}}` or `name [json-args]`. The JSON is held
/// to the default input limits ([`busbar_event::check_json`]) before
/// serde_json reads it: a command's arguments are a few flat members, and
/// the command socket gets no deeper text than the event transports do.
fn parse_line(line: &str) -> Result<(String, Value), String> {
    let within = |json: &str| match busbar_event::check_json(
        json.as_bytes(),
        busbar_event::Limits::DEFAULT_MAX_DEPTH,
    ) {
        // Not JSON: serde_json says why, below.
        Ok(()) | Err(busbar_event::EventError::MalformedJson { .. }) => Ok(()),
        Err(e) => Err(format!("invalid JSON: {e}")),
    };
    if line.starts_with('{') {
        within(line)?;
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
        within(rest.trim())?;
        serde_json::from_str(rest.trim()).map_err(|e| format!("invalid JSON arguments: {e}"))?
    };
    Ok((name.to_owned(), args))
}

/// A failed command's answer.
pub(crate) fn failure(reason: &str, message: &str) -> Value {
    json!({"ok": false, "error": reason, "message": message})
}

async fn flush(ops: &Ops) -> Value {
    let flushers = ops.flushers();
    if flushers.is_empty() {
        return json!({
            "ok": true,
            "flushed": 0,
            "backlogs": [],
            "message": "nothing to flush: no relay sink is configured",
        });
    }
    let mut backlogs: Vec<Flushed> = Vec::with_capacity(flushers.len());
    for f in flushers {
        backlogs.push(f.flush().await);
    }
    let flushed: u64 = backlogs.iter().map(|b| b.sent).sum();
    let ok = backlogs.iter().all(|b| b.error.is_none());
    json!({"ok": ok, "flushed": flushed, "backlogs": backlogs})
}

/// `ok` is what `/readyz` says: a daemon that is not ready answers
/// `ok: false` with `error: not_ready` and its reasons, so `busbar cmd
/// health` exits non-zero exactly when `/readyz` answers 503.
fn health(engine: &Engine) -> Value {
    let not_ready = engine.not_ready();
    let ready = not_ready.is_empty();
    let mut answer = json!({
        "ok": ready,
        "status": if ready { "ok" } else { "degraded" },
        "backend": engine.backend(),
        "uptime_seconds": engine.uptime().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "not_ready": not_ready,
    });
    if !ready {
        answer["error"] = json!("not_ready");
        answer["message"] = json!(format!(
            "not ready: {}",
            not_ready
                .iter()
                .map(|r| serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v["reason"].as_str().map(str::to_owned))
                    .unwrap_or_default())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    answer
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
    // Clients' streams; busbar's own (the ops journal) apart.
    let (mut streams, mut events, mut bytes) = (0u64, 0u64, 0u64);
    let mut internal = serde_json::Map::new();
    if let Ok(infos) = engine.streams(&Principal::Trusted).await {
        for info in infos {
            if busbar_engine::journal::is_internal(info.name.as_str()) {
                internal.insert(
                    info.name.to_string(),
                    json!({"events": info.length, "bytes": info.bytes}),
                );
                continue;
            }
            streams += 1;
            events += info.length;
            bytes += info.bytes;
        }
    }
    json!({
        "ok": true,
        "backend": engine.backend(),
        "uptime_seconds": engine.uptime().as_secs(),
        "streams": streams,
        "events": events,
        "bytes": bytes,
        "internal_streams": internal,
        "events_ingested": ingested,
        "ingest_errors": errors,
        "connections": connections,
        "group_commits": engine.store_metrics().commits.get(),
        "resident_memory_bytes": busbar_metrics::resident_bytes(),
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
    match engine
        .rotate_because(&Principal::Trusted, stream.as_ref(), &reason)
        .await
    {
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
    use busbar_store::memory::MemoryStore;

    fn ops() -> Arc<Ops> {
        Ops::new(Engine::builder(Arc::new(MemoryStore::new())).build())
    }

    #[tokio::test]
    async fn both_line_forms_and_unknown_commands() {
        let ops = ops();
        let a = ops.handle_line(r#"{"cmd":"health"}"#).await;
        assert_eq!(a["ok"], true);
        assert_eq!(a["backend"], "memory");
        let b = ops.handle_line(r#"rotate {"reason":"manual"}"#).await;
        assert_eq!(b["reason"], "manual");
        let c = ops.handle_line("nope").await;
        assert_eq!(c["error"], "unknown_command");
        assert!(c["message"]
            .as_str()
            .unwrap()
            .contains("flush, health, rotate, stats, streams"));
        let d = ops.handle_line("{bad").await;
        assert_eq!(d["error"], "bad_command");
        let e = ops.handle_line("health [1]").await;
        assert_eq!(e["error"], "bad_command");
        // Past the input limits, before serde_json reads it.
        let deep = format!("rotate {}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let f = ops.handle_line(&deep).await;
        assert_eq!(f["error"], "bad_command");
        assert!(
            f["message"].as_str().unwrap().contains("nesting depth 65"),
            "{f}"
        );
        let g = ops
            .handle_line(r#"{"cmd":"rotate","args":{"n":1e999}}"#)
            .await;
        assert!(
            g["message"].as_str().unwrap().contains("number at byte"),
            "{g}"
        );
        let m = ops.engine().metrics();
        assert_eq!(m.command_seconds.get(["unknown"]).count(), 1);
        assert_eq!(m.command_seconds.get(["health"]).count(), 2);
    }

    struct Backlog(u64);

    impl crate::Flusher for Backlog {
        fn flush(&self) -> crate::FlushFuture {
            let sent = self.0;
            Box::pin(async move {
                Flushed {
                    name: format!("sink-{sent}"),
                    sent,
                    error: None,
                }
            })
        }
    }

    #[tokio::test]
    async fn flush_is_honest_without_backlogs_and_sums_registered_ones() {
        let ops = ops();
        let none = ops.handle_line("flush").await;
        assert_eq!(none["flushed"], 0);
        assert!(none["message"]
            .as_str()
            .unwrap()
            .contains("nothing to flush"));
        ops.add_flusher(Arc::new(Backlog(3)));
        ops.add_flusher(Arc::new(Backlog(4)));
        let two = ops.handle_line("flush").await;
        assert_eq!(two["ok"], true);
        assert_eq!(two["flushed"], 7);
        assert_eq!(two["backlogs"][1]["name"], "sink-4");
        assert!(two.get("message").is_none());
    }

    #[tokio::test]
    async fn registered_commands_run_and_are_listed() {
        let ops = ops();
        ops.command("cleanup", "release memory", |args: Value| async move {
            json!({"ok": true, "asked": args})
        });
        let a = ops.handle_line(r#"cleanup {"force":true}"#).await;
        assert_eq!(a["asked"]["force"], true);
        assert!(ops.command_names().contains(&"cleanup"));
        assert_eq!(
            ops.engine()
                .metrics()
                .command_seconds
                .get(["cleanup"])
                .count(),
            1
        );
    }
}
