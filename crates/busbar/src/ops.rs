//! `busbar ops summary | events` and `busbar trace start | show | list`:
//! the ops API from the command line.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::{Client, HttpArgs};
use crate::read::{format_ms, text, write_rows};

/// `busbar ops` arguments.
#[derive(Args)]
pub struct OpsArgs {
    #[command(subcommand)]
    pub command: OpsCommand,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// What to ask the ops API.
#[derive(Subcommand)]
pub enum OpsCommand {
    /// The system in one page: ingest rates, errors, storage, groups, DLQ,
    /// live connections.
    Summary,
    /// Recent ops events, newest first.
    Events {
        /// A type (`socket:join`), a prefix (`relay`) or a category;
        /// several separated by commas.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Only since: an event id, ms since the epoch, or a duration back
        /// from now (`10m`).
        #[arg(long)]
        since: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

/// Runs a `busbar ops` command.
pub fn run(args: OpsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.http, Duration::from_secs(30));
    let as_json = args.http.json;
    match args.command {
        OpsCommand::Summary => {
            let summary = client.get("/api/ops/summary", &[])?;
            if as_json {
                println!("{summary}");
            } else {
                print_summary(&summary)?;
            }
        }
        OpsCommand::Events { kind, since, limit } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(k) = kind {
                query.push(("type", k));
            }
            if let Some(s) = since {
                query.push(("since", s));
            }
            let answer = client.get("/api/ops/events", &query)?;
            let events = answer["events"].as_array().map_or(&[][..], Vec::as_slice);
            if as_json {
                for e in events {
                    println!("{e}");
                }
            } else {
                print_events(events)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rate_rows(title: &str, rows: &Value, key: &[&str]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for r in rows.as_array().map_or(&[][..], Vec::as_slice) {
        let name = key
            .iter()
            .map(|k| text(&r[*k]))
            .collect::<Vec<_>>()
            .join(" ");
        out.push(vec![
            format!("  {title} {name}"),
            text(&r["rate1m"]),
            text(&r["rate5m"]),
            text(&r["total"]),
        ]);
    }
    out
}

fn print_summary(s: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "busbar {} · {} · up {} s · {}",
        text(&s["version"]),
        text(&s["backend"]),
        text(&s["uptimeSec"]),
        if s["ready"] == Value::Bool(true) {
            "ready".to_owned()
        } else {
            format!("NOT READY {}", s["notReady"])
        }
    )?;
    let ingest = &s["ingest"];
    let mut rows = vec![
        vec![
            "ingest (events/s)".to_owned(),
            "1m".to_owned(),
            "5m".to_owned(),
            "total".to_owned(),
        ],
        vec![
            "  all".to_owned(),
            text(&ingest["rate1m"]),
            text(&ingest["rate5m"]),
            text(&ingest["total"]),
        ],
    ];
    rows.extend(rate_rows(
        "transport",
        &ingest["byTransport"],
        &["transport"],
    ));
    rows.extend(rate_rows("stream", &ingest["byStream"], &["stream"]));
    rows.extend(rate_rows("type", &ingest["byType"], &["stream", "type"]));
    rows.extend(rate_rows(
        "producer",
        &ingest["topProducers"],
        &["producer", "tenant"],
    ));
    if s["errors"].is_object() {
        rows.push(vec![
            "errors".to_owned(),
            text(&s["errors"]["rate1m"]),
            text(&s["errors"]["rate5m"]),
            text(&s["errors"]["total"]),
        ]);
        rows.extend(rate_rows(
            "reason",
            &s["errors"]["byReason"],
            &["reason", "transport"],
        ));
    }
    write_rows(&mut out, &rows)?;
    let st = &s["storage"];
    writeln!(
        out,
        "storage: {} streams, {} events, {} bytes, {} segments, free {}, writes {}",
        text(&st["streams"]),
        text(&st["events"]),
        text(&st["bytes"]),
        text(&st["segments"]),
        text(&st["freeBytes"]),
        text(&st["writeState"]),
    )?;
    for g in s["groups"].as_array().map_or(&[][..], Vec::as_slice) {
        writeln!(
            out,
            "group {}/{}: lag {}, pending {}",
            text(&g["stream"]),
            text(&g["group"]),
            text(&g["lag"]),
            text(&g["pending"])
        )?;
    }
    for d in s["dlq"].as_array().map_or(&[][..], Vec::as_slice) {
        writeln!(
            out,
            "dead letters {}: {}",
            text(&d["stream"]),
            text(&d["length"])
        )?;
    }
    if let Some(live) = s.get("live").filter(|l| l.is_object()) {
        writeln!(
            out,
            "live: {} sockets {}, {} subscriptions, {} sessions ({} drifting), {} rooms",
            text(&live["sockets"]),
            live["byTransportAndRole"],
            text(&live["subscriptions"]),
            text(&live["sessions"]),
            text(&live["sessionsDrifting"]),
            text(&live["rooms"]),
        )?;
    }
    if let Some(object) = s.as_object() {
        for (name, section) in object {
            let known = [
                "version",
                "uptimeSec",
                "backend",
                "ready",
                "notReady",
                "ingest",
                "errors",
                "storage",
                "groups",
                "dlq",
                "live",
            ];
            if !known.contains(&name.as_str()) {
                writeln!(out, "{name}: {section}")?;
            }
        }
    }
    Ok(())
}

fn print_events(events: &[Value]) -> std::io::Result<()> {
    let mut rows = vec![vec![
        "id".to_owned(),
        "time".to_owned(),
        "type".to_owned(),
        "tenant".to_owned(),
        "detail".to_owned(),
    ]];
    for e in events {
        let detail = e.as_object().map_or_else(String::new, |o| {
            o.iter()
                .filter(|(k, _)| !["id", "type", "at", "tenant", "category"].contains(&k.as_str()))
                .map(|(k, v)| format!("{k}={}", text(v)))
                .collect::<Vec<_>>()
                .join(" ")
        });
        rows.push(vec![
            text(&e["id"]),
            e["at"].as_u64().map_or_else(|| "-".to_owned(), format_ms),
            text(&e["type"]),
            text(&e["tenant"]),
            detail,
        ]);
    }
    write_rows(&mut std::io::stdout().lock(), &rows)
}

/// `busbar trace` arguments.
#[derive(Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    pub command: TraceCommand,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// What to do with traces.
#[derive(Subcommand)]
pub enum TraceCommand {
    /// Start a trace of one session, stream or connection; prints its id.
    Start {
        /// A producer session id.
        #[arg(long, conflicts_with_all = ["stream", "connection"])]
        session: Option<String>,
        /// A stream.
        #[arg(long, conflicts_with = "connection")]
        stream: Option<String>,
        /// A live connection's id (see /api/ops/sockets).
        #[arg(long)]
        connection: Option<u64>,
        /// How long, e.g. 30s or 5m.
        #[arg(long, default_value = "30s")]
        duration: humantime::Duration,
        /// Wait for the trace to finish and print it.
        #[arg(long)]
        wait: bool,
    },
    /// Print a trace (running or finished).
    Show {
        /// The trace id.
        trace: String,
    },
    /// List traces.
    List,
}

/// Runs a `busbar trace` command.
pub fn trace(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.http, Duration::from_secs(30));
    let as_json = args.http.json;
    match args.command {
        TraceCommand::Start {
            session,
            stream,
            connection,
            duration,
            wait,
        } => {
            let mut body = serde_json::json!({"durationSec": duration.as_secs().max(1)});
            if let Some(s) = session {
                body["sessionId"] = s.into();
            }
            if let Some(s) = stream {
                body["stream"] = s.into();
            }
            if let Some(c) = connection {
                body["connection"] = c.into();
            }
            let started = client.post_json("/api/ops/trace/start", &body)?;
            let id = text(&started["traceId"]);
            if !wait {
                if as_json {
                    println!("{started}");
                } else {
                    println!("{id}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!(
                "tracing as {id} for {}",
                humantime::format_duration(*duration)
            );
            loop {
                let trace = client.get(&format!("/api/ops/trace/{id}"), &[])?;
                if trace["state"] == "finished" {
                    print_trace(&trace, as_json)?;
                    return Ok(ExitCode::SUCCESS);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        TraceCommand::Show { trace } => {
            let trace = client.get(&format!("/api/ops/trace/{trace}"), &[])?;
            print_trace(&trace, as_json)?;
        }
        TraceCommand::List => {
            let answer = client.get("/api/ops/trace", &[])?;
            let traces = answer["traces"].as_array().map_or(&[][..], Vec::as_slice);
            if as_json {
                println!("{answer}");
            } else {
                let mut rows = vec![
                    ["trace", "state", "target", "started", "events", "anomalies"]
                        .map(str::to_owned)
                        .to_vec(),
                ];
                for t in traces {
                    rows.push(vec![
                        text(&t["traceId"]),
                        text(&t["state"]),
                        t["target"].to_string(),
                        t["startedAt"]
                            .as_u64()
                            .map_or_else(|| "-".to_owned(), format_ms),
                        text(&t["events"]),
                        text(&t["anomalies"]),
                    ]);
                }
                write_rows(&mut std::io::stdout().lock(), &rows)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_trace(trace: &Value, as_json: bool) -> std::io::Result<()> {
    if as_json {
        println!("{trace}");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "trace {} ({}) of {}: {} to {}",
        text(&trace["traceId"]),
        text(&trace["state"]),
        trace["target"],
        trace["startedAt"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), format_ms),
        trace["endsAt"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), format_ms),
    )?;
    let events = trace["events"].as_array().map_or(&[][..], Vec::as_slice);
    writeln!(
        out,
        "{} events captured (left out: {})",
        events.len(),
        trace["truncated"]
    )?;
    let mut rows = vec![["id", "stream", "type", "session", "bytes"]
        .map(str::to_owned)
        .to_vec()];
    for e in events {
        rows.push(vec![
            text(&e["id"]),
            text(&e["stream"]),
            text(&e["type"]),
            text(&e["session"]),
            text(&e["bytes"]),
        ]);
    }
    write_rows(&mut out, &rows)?;
    writeln!(out, "per second:")?;
    for c in trace["counters"].as_array().map_or(&[][..], Vec::as_slice) {
        writeln!(
            out,
            "  {} events {} bytes {}{}",
            c["second"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), format_ms),
            text(&c["events"]),
            text(&c["bytes"]),
            c.get("dropped").map_or_else(String::new, |d| format!(
                " sent {} dropped {d}",
                text(&c["sent"])
            )),
        )?;
    }
    let anomalies = trace["anomalies"].as_array().map_or(&[][..], Vec::as_slice);
    writeln!(out, "anomalies: {}", anomalies.len())?;
    for a in anomalies {
        writeln!(out, "  {a}")?;
    }
    Ok(())
}

/// `busbar support-pack` arguments.
#[derive(Args)]
pub struct SupportPackArgs {
    /// Include this producer session's statistics.
    #[arg(long)]
    session: Option<String>,
    /// Include the config file and the BUSBAR_* environment (redacted).
    #[arg(long)]
    include_config: bool,
    /// Include this trace.
    #[arg(long)]
    trace: Option<String>,
    /// Where to write the archive. Default: busbar-support-<time>.tar.gz
    /// in the current directory.
    #[arg(long, short)]
    output: Option<std::path::PathBuf>,
    #[command(flatten)]
    http: HttpArgs,
}

/// Runs `busbar support-pack`: asks the daemon for a redacted pack and
/// writes it.
pub fn support_pack(args: SupportPackArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.http, Duration::from_secs(120));
    let mut body = serde_json::json!({"includeConfig": args.include_config});
    if let Some(s) = args.session {
        body["sessionId"] = s.into();
    }
    if let Some(t) = args.trace {
        body["traceId"] = t.into();
    }
    let bytes = client.post_json_bytes("/api/ops/support-pack", &body)?;
    let path = args
        .output
        .unwrap_or_else(|| format!("busbar-support-{}.tar.gz", busbar_event::now_ms()).into());
    std::fs::write(&path, &bytes)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    if args.http.json {
        println!(
            "{}",
            serde_json::json!({"path": path, "bytes": bytes.len()})
        );
    } else {
        println!("wrote {} ({} bytes)", path.display(), bytes.len());
    }
    Ok(ExitCode::SUCCESS)
}
