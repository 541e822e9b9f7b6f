//! `busbar jobs ...`, and following a job's progress (replays, DLQ
//! reprocessing) with a progress bar.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::client::{Client, HttpArgs};
use crate::read::{format_ms, text, write_rows};

/// How often a followed job's status is polled.
const POLL: Duration = Duration::from_millis(250);

/// `busbar jobs` arguments.
#[derive(Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub command: Option<JobsCommand>,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// What to do with jobs.
#[derive(Subcommand)]
pub enum JobsCommand {
    /// List the jobs the daemon remembers (the default).
    List,
    /// One job's progress.
    Show {
        /// The job id.
        job: String,
    },
    /// Follow a job until it stops.
    Wait {
        /// The job id.
        job: String,
    },
    /// Stop a running job.
    Cancel {
        /// The job id.
        job: String,
    },
}

/// Runs a `busbar jobs` command.
pub fn run(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.http, Duration::from_secs(30));
    let as_json = args.http.json;
    match args.command.unwrap_or(JobsCommand::List) {
        JobsCommand::List => {
            let answer = client.get("/api/jobs", &[])?;
            if as_json {
                println!("{answer}");
            } else {
                print_jobs(answer["jobs"].as_array().map_or(&[][..], Vec::as_slice))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Show { job } => {
            let status = client.get(&job_path(&job), &[])?;
            if as_json {
                println!("{status}");
            } else {
                print_job(&status)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Wait { job } => follow(&client, &job, as_json),
        JobsCommand::Cancel { job } => {
            let status = client.post_json(&format!("{}/cancel", job_path(&job)), &json!({}))?;
            if as_json {
                println!("{status}");
            } else {
                println!("cancelling {job}: it stops before its next batch");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn job_path(job: &str) -> String {
    let safe: String = job
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!("/api/jobs/{safe}")
}

/// How many of its events a job has handled: republished, moved back or
/// redelivered.
fn handled(status: &Value) -> u64 {
    status["published"].as_u64().unwrap_or(0) + status["delivered"].as_u64().unwrap_or(0)
}

/// Polls a job until it stops, with a progress bar on a terminal. Exits
/// with failure when the job failed or was cancelled.
pub fn follow(client: &Client, job: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let bar = (std::io::stderr().is_terminal() && !as_json).then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let path = job_path(job);
    let status = loop {
        let status = client.get(&path, &[])?;
        if let Some(bar) = &bar {
            match status["total_estimate"].as_u64() {
                Some(total) => {
                    bar.set_length(total);
                    bar.set_message(text(&status["target"]));
                }
                None => bar.set_message("counting"),
            }
            bar.set_position(handled(&status));
        }
        if status["state"] != "running" {
            break status;
        }
        std::thread::sleep(POLL);
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if as_json {
        println!("{status}");
    } else {
        print_outcome(&status)?;
    }
    Ok(if status["state"] == "done" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_outcome(status: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let id = text(&status["id"]);
    match status["state"].as_str().unwrap_or_default() {
        "done" => writeln!(
            out,
            "{id} done: {} events to {} ({} scanned)",
            handled(status),
            text(&status["target"]),
            text(&status["scanned"])
        ),
        state => {
            writeln!(
                out,
                "{id} {state} after {} events: {}",
                handled(status),
                text(&status["error"])
            )?;
            if let Some(last) = status["last_id"].as_str() {
                writeln!(
                    out,
                    "the last source id handled was {last}: start again after it"
                )?;
            }
            Ok(())
        }
    }
}

fn print_job(s: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let total = s["total_estimate"]
        .as_u64()
        .map_or_else(|| "(counting)".to_owned(), |t| t.to_string());
    writeln!(out, "job        {} ({})", text(&s["id"]), text(&s["kind"]))?;
    writeln!(out, "state      {}", text(&s["state"]))?;
    writeln!(out, "stream     {}", text(&s["stream"]))?;
    writeln!(out, "target     {}", text(&s["target"]))?;
    writeln!(
        out,
        "progress   {} of {total} ({} scanned)",
        handled(s),
        text(&s["scanned"])
    )?;
    writeln!(out, "rate       {} events/s", text(&s["rate"]))?;
    writeln!(out, "last id    {}", text(&s["last_id"]))?;
    writeln!(
        out,
        "started    {}",
        s["started_at"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), format_ms)
    )?;
    if let Some(at) = s["finished_at"].as_u64() {
        writeln!(out, "finished   {}", format_ms(at))?;
    }
    if let Some(e) = s["error"].as_str() {
        writeln!(out, "error      {e}")?;
    }
    Ok(())
}

fn print_jobs(jobs: &[Value]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if jobs.is_empty() {
        return writeln!(out, "(no jobs)");
    }
    let mut rows = vec![[
        "JOB", "KIND", "STATE", "STREAM", "TARGET", "DONE", "TOTAL", "STARTED",
    ]
    .map(str::to_owned)
    .to_vec()];
    for j in jobs {
        rows.push(vec![
            text(&j["id"]),
            text(&j["kind"]),
            text(&j["state"]),
            text(&j["stream"]),
            text(&j["target"]),
            handled(j).to_string(),
            text(&j["total_estimate"]),
            j["started_at"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), format_ms),
        ]);
    }
    write_rows(&mut out, &rows)
}
