//! `busbar range`, `busbar tail` and `busbar streams`: reads over the HTTP
//! API, printed as tables for people or JSON lines for scripts.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use busbar_event::EventId;
use clap::Args;
use serde_json::Value;

use crate::client::{stream_path, Client, ClientError, HttpArgs};
use crate::decode::{report, IdAt, Page, Undecodable};

/// `busbar range` arguments.
#[derive(Args)]
pub struct RangeArgs {
    /// The stream.
    pub stream: String,
    /// First id (inclusive): `<ms>-<seq>`, `<ms>` or `-` (the start).
    #[arg(long)]
    pub from: Option<String>,
    /// Last id (inclusive): `<ms>-<seq>`, `<ms>` or `+` (the end).
    #[arg(long)]
    pub to: Option<String>,
    /// At most this many events.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Newest first.
    #[arg(long)]
    pub reverse: bool,
    /// Only these types; `order.*` matches a prefix. Comma-separated.
    #[arg(long)]
    pub types: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// `busbar tail` arguments.
#[derive(Args)]
pub struct TailArgs {
    /// The stream.
    pub stream: String,
    /// Start at this id (`-` for the beginning) instead of new events only.
    #[arg(long)]
    pub from: Option<String>,
    /// Only these types; `order.*` matches a prefix. Comma-separated.
    #[arg(long)]
    pub types: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// `busbar streams` arguments.
#[derive(Args)]
pub struct StreamsArgs {
    #[command(flatten)]
    pub http: HttpArgs,
}

/// Prints a range: every event that could be decoded; one that could not
/// is named on stderr, and the exit status is then non-zero.
pub fn range(args: RangeArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.http, Duration::from_secs(60));
    let path = format!("{}/events", stream_path(&args.stream)?);
    let mut events = Vec::new();
    let mut lines = Vec::new();
    let mut failed: Vec<Undecodable> = Vec::new();
    let mut from = args.from.clone();
    // The daemon answers at most its `max_read_count` events a request,
    // with `next` when there are more: page on up to --count.
    let next = loop {
        let read = events.len() + failed.len();
        let mut query = vec![("limit", args.count.saturating_sub(read).to_string())];
        if let Some(from) = &from {
            query.push(("from", from.clone()));
        }
        if let Some(to) = &args.to {
            query.push(("to", to.clone()));
        }
        if args.reverse {
            query.push(("reverse", "true".to_owned()));
        }
        if let Some(types) = &args.types {
            query.push(("types", types.clone()));
        }
        let text = client.get_text(&path, &query)?;
        let page = Page::new(&text, "events", IdAt::Item)?;
        let next = page.member("next");
        for item in page.items {
            lines.push(item.text);
            events.push(item.value);
        }
        failed.extend(page.failed);
        match next.as_str() {
            Some(next) if events.len() + failed.len() < args.count => from = Some(next.to_owned()),
            next => break next.map(str::to_owned),
        }
    };
    let mut out = std::io::stdout().lock();
    if args.http.json {
        for line in &lines {
            writeln!(out, "{line}")?;
        }
    } else {
        // "(no events)" only when there were none, not when none decoded.
        if !events.is_empty() || failed.is_empty() {
            print_table(&mut out, &events)?;
        }
        if let Some(next) = next {
            writeln!(out, "(more: --from {next})")?;
        }
    }
    out.flush()?;
    Ok(report("event", &failed))
}

/// Follows a stream with long polls until interrupted. An event that
/// cannot be decoded stops it, once the events read with it are printed,
/// with a non-zero exit status and where to go on from.
pub fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    const WAIT_MS: u64 = 20_000;
    let client = Client::new(&args.http, Duration::from_millis(WAIT_MS + 10_000));
    let path = stream_path(&args.stream)?;
    let mut from = match &args.from {
        Some(from) => from.clone(),
        None => match client.get(&path, &[]) {
            // New events only: everything after the current last id.
            Ok(info) => after(info["last_id"].as_str().unwrap_or("0-0"))?,
            Err(ClientError::Api { status: 404, .. }) => "-".to_owned(),
            Err(e) => return Err(e.into()),
        },
    };
    let mut out = std::io::stdout();
    loop {
        let mut query = vec![
            ("from", from.clone()),
            ("limit", "1000".to_owned()),
            ("wait_ms", WAIT_MS.to_string()),
        ];
        if let Some(types) = &args.types {
            query.push(("types", types.clone()));
        }
        let text = match client.get_text(&format!("{path}/events"), &query) {
            Ok(text) => text,
            // The stream does not exist yet: wait for its first event.
            Err(ClientError::Api { status: 404, .. }) => {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let page = Page::new(&text, "events", IdAt::Item)?;
        let mut lock = out.lock();
        for item in &page.items {
            if args.http.json {
                writeln!(lock, "{}", item.text)?;
            } else {
                writeln!(lock, "{}", row(&item.value, true).join("  "))?;
            }
        }
        lock.flush()?;
        if let Some(last) = &page.last_id {
            from = after(last)?;
        }
        if !page.failed.is_empty() {
            let code = report("event", &page.failed);
            eprintln!("busbar: tail stopped; go on with --from {from}");
            return Ok(code);
        }
        out = std::io::stdout();
    }
}

/// Lists streams.
pub fn streams(args: StreamsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.http, Duration::from_secs(30));
    let answer = client.get("/api/streams", &[])?;
    let streams = answer["streams"].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if args.http.json {
        writeln!(out, "{answer}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![[
        "STREAM", "EVENTS", "FIRST ID", "LAST ID", "BYTES", "SEGMENTS",
    ]
    .map(str::to_owned)
    .to_vec()];
    for s in &streams {
        rows.push(vec![
            text(&s["name"]),
            text(&s["length"]),
            text(&s["first_id"]),
            text(&s["last_id"]),
            text(&s["bytes"]),
            text(&s["segments"]),
        ]);
    }
    write_rows(&mut out, &rows)?;
    Ok(ExitCode::SUCCESS)
}

/// The smallest id after `id`.
fn after(id: &str) -> anyhow::Result<String> {
    let parsed: EventId = id
        .parse()
        .with_context(|| format!("the daemon sent an invalid id `{id}`"))?;
    Ok(parsed.successor().unwrap_or(EventId::MAX).to_string())
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An event as table cells: id, type, receive time, data (shortened).
fn row(e: &Value, tail: bool) -> Vec<String> {
    let data = e["data"].to_string();
    let limit = if tail { 120 } else { 80 };
    let data = if data.chars().count() > limit {
        format!("{}…", data.chars().take(limit - 1).collect::<String>())
    } else {
        data
    };
    vec![
        text(&e["id"]),
        text(&e["type"]),
        e["received_at"]
            .as_u64()
            .map(format_ms)
            .unwrap_or_else(|| "-".to_owned()),
        data,
    ]
}

fn print_table(out: &mut impl Write, events: &[Value]) -> std::io::Result<()> {
    if events.is_empty() {
        return writeln!(out, "(no events)");
    }
    let mut rows = vec![["ID", "TYPE", "RECEIVED", "DATA"]
        .map(str::to_owned)
        .to_vec()];
    rows.extend(events.iter().map(|e| row(e, false)));
    write_rows(out, &rows)
}

pub(crate) fn write_rows(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Milliseconds since the epoch as `YYYY-MM-DD hh:mm:ss.mmm` UTC.
pub(crate) fn format_ms(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn after_is_the_successor() {
        assert_eq!(after("5-1").unwrap(), "5-2");
        assert!(after("x").is_err());
    }
}
