//! `busbar dlq ...`: a stream's dead-letter queue over the HTTP API.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use busbar_event::EventId;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::client::{stream_path, Client, ClientError, HttpArgs};
use crate::decode::{report, IdAt, Page};
use crate::groups::shorten;
use crate::jobs::follow;
use crate::read::{format_ms, text, write_rows};

/// `busbar dlq` arguments.
#[derive(Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// What to do with dead letters.
#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered events, oldest first.
    List(ListArgs),
    /// Count dead letters by type and by last error (the runbook's
    /// `uniq -c`), over at most --scan entries, oldest first.
    Stats {
        /// The stream.
        stream: String,
        /// Read at most this many entries.
        #[arg(long, default_value_t = 100_000)]
        scan: usize,
    },
    /// Show one dead-lettered event in full.
    Show {
        /// The stream (its dead letters are in `<stream>:dlq`).
        stream: String,
        /// The dead-letter id (from `busbar dlq list`).
        id: String,
    },
    /// Move dead-lettered events back onto the stream: one by id, those of
    /// some types (--type), or all (--all).
    Reprocess(ReprocessArgs),
    /// Delete one dead-lettered event.
    Delete {
        /// The stream.
        stream: String,
        /// The dead-letter id.
        id: String,
    },
    /// Delete every dead-lettered event of a stream.
    Purge {
        /// The stream.
        stream: String,
        /// Confirm: every dead letter of the stream is deleted.
        #[arg(long)]
        yes: bool,
    },
}

/// `busbar dlq list` arguments.
#[derive(Args)]
pub struct ListArgs {
    /// The stream.
    pub stream: String,
    /// Only these types, comma-separated; `order.*` matches a prefix.
    #[arg(long = "type")]
    pub types: Option<String>,
    /// Dead-lettered at or after: an id, ms, or an RFC 3339 time.
    #[arg(long)]
    pub from: Option<String>,
    /// Dead-lettered at or before.
    #[arg(long)]
    pub to: Option<String>,
    /// Only entries whose last error contains this text (any case).
    #[arg(long)]
    pub error: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Newest first.
    #[arg(long)]
    pub reverse: bool,
}

/// `busbar dlq reprocess` arguments.
#[derive(Args)]
pub struct ReprocessArgs {
    /// The stream.
    pub stream: String,
    /// One dead-letter id.
    #[arg(conflicts_with_all = ["types", "all"])]
    pub id: Option<String>,
    /// Every entry of these types, comma-separated.
    #[arg(long = "type", conflicts_with = "all")]
    pub types: Option<String>,
    /// Every entry.
    #[arg(long)]
    pub all: bool,
    /// With --type or --all: at most this many, the oldest first (the
    /// runbook's `--limit 100`).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Events per second for --type and --all (default: the daemon's
    /// `jobs.default_rate`, 1000 unless configured).
    #[arg(long)]
    pub rate: Option<u32>,
    /// Follow the job until it ends (a progress bar on a terminal).
    #[arg(long)]
    pub progress: bool,
}

fn entry_path(stream: &str, id: &str) -> anyhow::Result<String> {
    if id.parse::<EventId>().is_err() {
        bail!("`{id}` is not a dead-letter id (<ms>-<seq>, as `busbar dlq list` shows)");
    }
    Ok(format!("{}/dlq/{id}", stream_path(stream)?))
}

/// Runs a `busbar dlq` command.
pub fn run(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let stream = match &args.command {
        DlqCommand::List(l) => l.stream.clone(),
        DlqCommand::Reprocess(r) => r.stream.clone(),
        DlqCommand::Show { stream, .. }
        | DlqCommand::Stats { stream, .. }
        | DlqCommand::Delete { stream, .. }
        | DlqCommand::Purge { stream, .. } => stream.clone(),
    };
    run_command(args).map_err(|e| match e.downcast_ref::<ClientError>() {
        Some(ClientError::Api { reason, .. }) if reason == "no_such_dlq_entry" => {
            anyhow::anyhow!("{e}; see what is there with `busbar dlq list {stream}`")
        }
        _ => e,
    })
}

fn run_command(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let http = &args.http;
    let client = Client::new(http, Duration::from_secs(60));
    match args.command {
        DlqCommand::List(l) => return list(&client, http.json, l),
        DlqCommand::Stats { stream, scan } => return stats(&client, http.json, &stream, scan),
        DlqCommand::Show { stream, id } => {
            let answer = client.get_text(&entry_path(&stream, &id)?, &[])?;
            let entry: serde_json::Value = serde_json::from_str(&answer)
                .map_err(|e| anyhow::anyhow!("dead letter {id} could not be decoded: {e}"))?;
            if http.json {
                println!("{entry}");
            } else {
                println!("{}", serde_json::to_string_pretty(&entry)?);
            }
        }
        DlqCommand::Reprocess(r) => return reprocess(&client, http.json, r),
        DlqCommand::Delete { stream, id } => {
            let answer = client.delete(&entry_path(&stream, &id)?)?;
            if http.json {
                println!("{answer}");
            } else {
                println!("deleted {id} from {stream}:dlq");
            }
        }
        DlqCommand::Purge { stream, yes } => {
            if !yes {
                bail!(
                    "purge deletes every dead-lettered event of {stream}; \
                     look first with `busbar dlq list {stream}`, then repeat with --yes"
                );
            }
            let path = format!("{}/dlq/purge", stream_path(&stream)?);
            let answer = client.post_json(&path, &json!({"confirm": true}))?;
            if http.json {
                println!("{answer}");
            } else {
                println!(
                    "purged {} events from {stream}:dlq",
                    text(&answer["deleted"])
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(client: &Client, as_json: bool, l: ListArgs) -> anyhow::Result<ExitCode> {
    let mut query = vec![("limit", l.limit.to_string())];
    for (key, value) in [
        ("type", &l.types),
        ("from", &l.from),
        ("to", &l.to),
        ("error", &l.error),
    ] {
        if let Some(v) = value {
            query.push((key, v.clone()));
        }
    }
    if l.reverse {
        query.push(("reverse", "true".to_owned()));
    }
    let answer = client.get_text(&format!("{}/dlq", stream_path(&l.stream)?), &query)?;
    let page = Page::new(&answer, "entries", IdAt::Item)?;
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", page.to_json_line("entries"))?;
        out.flush()?;
        return Ok(report("dead letter", &page.failed));
    }
    let entries: Vec<&serde_json::Value> = page.items.iter().map(|i| &i.value).collect();
    if page.is_empty() {
        writeln!(out, "(no dead-lettered events)")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![[
        "DLQ ID",
        "TYPE",
        "ORIGINAL ID",
        "GROUP",
        "ATTEMPTS",
        "DEAD-LETTERED",
        "LAST ERROR",
    ]
    .map(str::to_owned)
    .to_vec()];
    for e in &entries {
        let meta = &e["meta"];
        rows.push(vec![
            text(&e["id"]),
            text(&e["type"]),
            text(&meta["original_id"]),
            text(&meta["group"]),
            text(&meta["attempts"]),
            meta["dead_lettered_at"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), format_ms),
            shorten(&text(&meta["last_error"]), 60),
        ]);
    }
    if !entries.is_empty() {
        write_rows(&mut out, &rows)?;
    }
    if let Some(next) = page.member("next").as_str() {
        writeln!(out, "(more: --from {next})")?;
    }
    out.flush()?;
    Ok(report("dead letter", &page.failed))
}

/// Counts a stream's dead letters by type and by last error, reading pages
/// of at most 1,000, oldest first, until `scan` entries.
fn stats(client: &Client, as_json: bool, stream: &str, scan: usize) -> anyhow::Result<ExitCode> {
    let path = format!("{}/dlq", stream_path(stream)?);
    let mut by_type: std::collections::BTreeMap<String, u64> = Default::default();
    let mut by_error: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut total, mut failed) = (0usize, Vec::new());
    let mut from: Option<String> = None;
    let truncated = loop {
        let page_size = (scan - total).min(1000);
        if page_size == 0 {
            break true;
        }
        let mut query = vec![("limit", page_size.to_string())];
        if let Some(f) = &from {
            query.push(("from", f.clone()));
        }
        let answer = client.get_text(&path, &query)?;
        let page = Page::new(&answer, "entries", IdAt::Item)?;
        for item in &page.items {
            let e = &item.value;
            *by_type.entry(text(&e["type"])).or_default() += 1;
            let error = match e["meta"]["last_error"].as_str() {
                Some(err) => err.to_owned(),
                None => "(none)".to_owned(),
            };
            *by_error.entry(error).or_default() += 1;
            total += 1;
        }
        let next = page.member("next").as_str().map(str::to_owned);
        failed.extend(page.failed);
        match next {
            Some(next) => from = Some(next),
            None => break false,
        }
    };
    let sorted = |m: std::collections::BTreeMap<String, u64>| {
        let mut v: Vec<(String, u64)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    };
    let (by_type, by_error) = (sorted(by_type), sorted(by_error));
    if as_json {
        let obj = |v: &[(String, u64)]| {
            v.iter()
                .map(|(k, n)| json!({"key": k, "count": n}))
                .collect::<Vec<_>>()
        };
        println!(
            "{}",
            json!({"stream": stream, "total": total, "truncated": truncated,
                   "byType": obj(&by_type), "byError": obj(&by_error)})
        );
        return Ok(report("dead letter", &failed));
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{total} dead letters in {stream}:dlq{}",
        if truncated {
            " (scan limit reached: more not counted)"
        } else {
            ""
        }
    )?;
    for (title, rows) in [("TYPE", &by_type), ("LAST ERROR", &by_error)] {
        let mut table = vec![vec!["COUNT".to_owned(), title.to_owned()]];
        table.extend(
            rows.iter()
                .map(|(k, n)| vec![n.to_string(), shorten(k, 100)]),
        );
        writeln!(out)?;
        write_rows(&mut out, &table)?;
    }
    out.flush()?;
    Ok(report("dead letter", &failed))
}

fn reprocess(client: &Client, as_json: bool, r: ReprocessArgs) -> anyhow::Result<ExitCode> {
    if let Some(id) = &r.id {
        let moved = client.post_json(
            &format!("{}/reprocess", entry_path(&r.stream, id)?),
            &json!({}),
        )?;
        if as_json {
            println!("{moved}");
        } else {
            println!(
                "moved {id} back onto {} as {} (originally {})",
                r.stream,
                text(&moved["id"]),
                text(&moved["original_id"])
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut body = match (&r.types, r.all) {
        (Some(types), false) => {
            let list: Vec<&str> = types
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            json!({"type": list})
        }
        (None, true) => json!({"all": true}),
        _ => bail!("name one dead-letter id, or pass --type <types> or --all"),
    };
    if let Some(rate) = r.rate {
        body["rate"] = rate.into();
    }
    if let Some(limit) = r.limit {
        body["limit"] = limit.into();
    }
    let path = format!("{}/dlq/reprocess", stream_path(&r.stream)?);
    let job = client.post_json(&path, &body)?;
    let id = text(&job["id"]);
    if r.progress {
        return follow(client, &id, as_json);
    }
    if as_json {
        println!("{job}");
    } else {
        println!("reprocessing as job {id}; follow it with `busbar jobs wait {id}`");
    }
    Ok(ExitCode::SUCCESS)
}
