//! `busbar publish`: events from arguments or NDJSON on stdin, sent in
//! batches over the HTTP API.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::client::{stream_path, Client, HttpArgs};

/// Events per request.
const BATCH_EVENTS: usize = 1000;
/// Body bytes per request (well under the daemon's default body limit).
const BATCH_BYTES: usize = 1024 * 1024;

/// `busbar publish` arguments.
#[derive(Args)]
pub struct PublishArgs {
    /// Events as JSON objects, e.g. '{"type":"order.created","n":1}'. Without
    /// any, NDJSON is read from stdin.
    pub events: Vec<String>,
    /// The stream to publish to.
    #[arg(long, short, default_value = "events")]
    pub stream: String,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// Publishes and prints the ids (or a summary for large input).
pub fn run(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.http, Duration::from_secs(60));
    let path = format!("{}/events", stream_path(&args.stream)?);
    let mut sent = Sent::default();
    if !args.events.is_empty() {
        let body = args.events.join("\n");
        sent.send(&client, &path, body.as_bytes(), 0)?;
    } else {
        let stdin = std::io::stdin();
        let progress = if std::io::stderr().is_terminal() && !stdin.is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {pos} events published ({per_sec})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            Some(bar)
        } else {
            None
        };
        let mut body = Vec::with_capacity(BATCH_BYTES + 4096);
        let (mut lines_in_body, mut first_line) = (0usize, 1usize);
        for (n, line) in stdin.lock().lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            if lines_in_body == 0 {
                first_line = n + 1;
            }
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
            lines_in_body += 1;
            if lines_in_body >= BATCH_EVENTS || body.len() >= BATCH_BYTES {
                sent.send_lines(&client, &path, &body, first_line, progress.as_ref())?;
                body.clear();
                lines_in_body = 0;
            }
        }
        if lines_in_body > 0 {
            sent.send_lines(&client, &path, &body, first_line, progress.as_ref())?;
        }
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
    }
    sent.print(&args.stream, args.http.json);
    Ok(ExitCode::SUCCESS)
}

#[derive(Default)]
struct Sent {
    count: u64,
    first: Option<String>,
    last: Option<String>,
    /// Kept only while small enough to print.
    ids: Vec<String>,
}

impl Sent {
    fn send_lines(
        &mut self,
        client: &Client,
        path: &str,
        body: &[u8],
        first_line: usize,
        progress: Option<&ProgressBar>,
    ) -> anyhow::Result<()> {
        self.send(client, path, body, first_line)?;
        if let Some(bar) = progress {
            bar.set_position(self.count);
        }
        Ok(())
    }

    /// Sends one NDJSON body; `first_line` (1-based, 0 for arguments) turns
    /// the daemon's event index into a line number in errors.
    fn send(
        &mut self,
        client: &Client,
        path: &str,
        body: &[u8],
        first_line: usize,
    ) -> anyhow::Result<()> {
        let answer = client
            .post(path, "application/x-ndjson", body)
            .map_err(|e| {
                let at = match &e {
                    crate::client::ClientError::Api { .. } if first_line > 0 => {
                        format!(" in the batch starting at line {first_line}")
                    }
                    _ => String::new(),
                };
                anyhow::anyhow!(
                    "{e}{at}; {} events were published before this failure",
                    self.count
                )
            })?;
        for id in answer["ids"].as_array().into_iter().flatten() {
            let id = id.as_str().unwrap_or_default().to_owned();
            if self.first.is_none() {
                self.first = Some(id.clone());
            }
            if self.ids.len() < 100 {
                self.ids.push(id.clone());
            }
            self.last = Some(id);
            self.count += 1;
        }
        Ok(())
    }

    fn print(&self, stream: &str, as_json: bool) {
        let all = self.count as usize == self.ids.len();
        if as_json {
            let mut out = json!({"stream": stream, "count": self.count, "first_id": self.first, "last_id": self.last});
            if all {
                out["ids"] = Value::from(self.ids.clone());
            }
            println!("{out}");
        } else if all {
            for id in &self.ids {
                println!("{id}");
            }
        } else {
            println!(
                "published {} events to {stream} ({} .. {})",
                self.count,
                self.first.as_deref().unwrap_or("-"),
                self.last.as_deref().unwrap_or("-")
            );
        }
    }
}
