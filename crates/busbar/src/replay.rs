//! `busbar replay <stream>`: start a replay job, and follow it.

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args};
use serde_json::{json, Value};

use crate::client::{Client, HttpArgs};
use crate::jobs::follow;

/// `busbar replay` arguments.
#[derive(Args)]
#[command(group(ArgGroup::new("target").args(["target_group", "new_group", "to_stream"])))]
pub struct ReplayArgs {
    /// The stream to replay.
    pub stream: String,
    /// First event: an id, ms since the epoch, or an RFC 3339 time
    /// (2025-12-01T00:00:00Z). Default: the start of the stream.
    #[arg(long)]
    pub from: Option<String>,
    /// Last event (inclusive), in the same forms. Default: the end.
    #[arg(long)]
    pub to: Option<String>,
    /// Only these types, comma-separated; `order.*` matches a prefix.
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
    /// At most this many events.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Events per batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Events per second at most (default: the daemon's
    /// `jobs.default_rate`, 1000 unless configured).
    #[arg(long)]
    pub rate: Option<u32>,
    /// Redeliver through this existing group: its cursor moves back to
    /// --from, and it delivers everything after it again.
    #[arg(long)]
    pub target_group: Option<String>,
    /// Create this group starting at --from.
    #[arg(long)]
    pub new_group: Option<String>,
    /// Copy the events onto this stream. Default (no target): copy them
    /// onto the stream itself, so every group sees them again.
    #[arg(long)]
    pub to_stream: Option<String>,
    /// Follow the job until it ends (a progress bar on a terminal).
    #[arg(long)]
    pub progress: bool,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// Starts the replay, then prints the job or follows it.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.http, Duration::from_secs(30));
    let mut body = json!({"stream": args.stream});
    for (key, value) in [("from", &args.from), ("to", &args.to)] {
        if let Some(v) = value {
            body[key] = v.clone().into();
        }
    }
    let types: Vec<&str> = args
        .types
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .collect();
    if !types.is_empty() {
        body["eventTypes"] = json!(types);
    }
    if let Some(n) = args.limit {
        body["limit"] = n.into();
    }
    if let Some(n) = args.batch_size {
        body["batchSize"] = n.into();
    }
    if let Some(n) = args.rate {
        body["rate"] = n.into();
    }
    let target = match (&args.target_group, &args.new_group, &args.to_stream) {
        (Some(g), _, _) => Some(json!({"group": g})),
        (_, Some(g), _) => Some(json!({"new_group": g})),
        (_, _, Some(s)) => Some(json!({"stream": s})),
        _ => None,
    };
    if let Some(target) = target {
        body["target"] = target;
    }
    let job: Value = client.post_json("/api/replay", &body)?;
    let id = job["id"].as_str().unwrap_or_default().to_owned();
    if args.progress {
        if !args.http.json {
            eprintln!("replay {id} started; Ctrl-C stops following, not the job (`busbar jobs cancel {id}` does)");
        }
        return follow(&client, &id, args.http.json);
    }
    if args.http.json {
        println!("{job}");
    } else {
        println!(
            "replay {id} started: {}",
            job["target"].as_str().unwrap_or("-")
        );
        println!("follow it with `busbar jobs wait {id}`; stop it with `busbar jobs cancel {id}`");
    }
    Ok(ExitCode::SUCCESS)
}
