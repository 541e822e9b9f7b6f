//! `busbar doctor`: the runbooks' smoke test in one command.
//!
//! Finds the daemon from `<data-dir>/run/addresses.json`, then checks, in
//! order, each with its time:
//!
//! | check | passes when |
//! |---|---|
//! | `daemon` | the run file is there and its process is alive |
//! | `unix`, `tcp`, `http`, `websocket` | a probe event published over that transport is acknowledged with an id, and reading the stream from that id over HTTP gives back the same probe |
//! | `readyz` | `/readyz` answers 200 |
//! | `commands` | the command socket answers `health` with status `ok` |
//! | `relay` | every relay sink reports itself healthy (skipped while the daemon has no relay command or no sink) |
//! | `disk` | the data directory's disk has more free space than the store's `[storage] reserve` (skipped for the memory backend) |
//!
//! A transport the daemon does not listen on is skipped, not failed. The
//! probes go to their own stream, `busbar-doctor` (type
//! `busbar.doctor.probe`), trimmed to its last [`KEEP_PROBES`] events
//! after the run when the token may trim; users' streams are not touched.
//! The exit status is 0 when nothing failed, 1 otherwise, with the failed
//! checks named on stderr.

mod checks;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use busbar_config::Addresses;
use clap::Args;
use serde::Serialize;
use serde_json::json;

use crate::client::{Client, HttpArgs};

/// The stream probes go to.
pub const PROBE_STREAM: &str = "busbar-doctor";
/// The type of a probe event.
pub const PROBE_TYPE: &str = "busbar.doctor.probe";
/// Probe events kept in [`PROBE_STREAM`] after a run (a short history of
/// smoke tests; older ones are trimmed).
pub const KEEP_PROBES: u64 = 100;

/// `busbar doctor` arguments.
#[derive(Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// The daemon's config file, for its storage reserve (default: the
    /// built-in reserve, with BUSBAR_* overrides).
    #[arg(long, short, env = "BUSBAR_CONFIG")]
    config: Option<PathBuf>,
    /// How long each check may take.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It worked.
    Pass,
    /// Nothing to check (a transport not configured, no relay sink).
    Skip,
    /// It did not work; the detail says why.
    Fail,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Skip => "skip",
            Outcome::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Serialize)]
pub struct Check {
    check: &'static str,
    result: Outcome,
    detail: String,
    ms: u64,
}

/// What a check function returns.
pub type Verdict = (Outcome, String);

/// The checks run so far.
#[derive(Default)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn run(&mut self, check: &'static str, f: impl FnOnce() -> Verdict) -> Outcome {
        let started = Instant::now();
        let (result, detail) = f();
        self.checks.push(Check {
            check,
            result,
            detail,
            ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        result
    }

    fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| c.result == Outcome::Fail)
            .map(|c| c.check)
            .collect()
    }

    fn print_table(&self) {
        let width = |f: &dyn Fn(&Check) -> usize, title: &str| {
            self.checks
                .iter()
                .map(f)
                .max()
                .unwrap_or(0)
                .max(title.len())
        };
        let w_check = width(&|c| c.check.len(), "CHECK");
        let w_detail = width(&|c| c.detail.chars().count(), "DETAIL");
        println!(
            "{:<w_check$}  {:<6}  {:<w_detail$}  TIME",
            "CHECK", "RESULT", "DETAIL"
        );
        for c in &self.checks {
            println!(
                "{:<w_check$}  {:<6}  {:<w_detail$}  {}ms",
                c.check,
                c.result.as_str(),
                c.detail,
                c.ms
            );
        }
    }
}

/// Runs every check and prints the report.
pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut report = Report::default();
    let run_file = Addresses::path(&args.http.data_dir);
    let mut addresses = None;
    report.run("daemon", || match checks::find_daemon(&run_file) {
        Ok(a) => {
            let detail = format!("pid {} ({} store)", a.pid, a.backend);
            addresses = Some(a);
            (Outcome::Pass, detail)
        }
        Err(why) => (Outcome::Fail, why),
    });
    if let Some(addresses) = &addresses {
        let mut http_args = args.http.clone();
        if http_args.url.is_none() {
            http_args.url = Some(format!("http://{}", addresses.http));
        }
        let client = Client::new(&http_args, args.timeout);
        let probe = checks::Probe {
            client: &client,
            token: args.http.token.as_deref(),
            timeout: args.timeout,
            nonce: checks::nonce(),
        };
        report.run("unix", || probe.unix(&addresses.events_socket));
        report.run("tcp", || probe.tcp(addresses.tcp));
        report.run("http", || probe.http());
        report.run("websocket", || probe.websocket(addresses.http));
        report.run("readyz", || checks::readyz(&client));
        report.run("commands", || {
            checks::command_health(&addresses.commands_socket, args.timeout)
        });
        report.run("relay", || {
            checks::relay(&addresses.commands_socket, args.timeout)
        });
        let data_dir = args.http.data_dir.clone();
        report.run("disk", || {
            checks::disk(&data_dir, &addresses.backend, args.config.as_deref())
        });
        // Best effort: a token without `admin` may not trim, and the probes
        // then stay until retention removes them.
        let _ = client.post_json(
            &format!("/api/streams/{PROBE_STREAM}/trim"),
            &json!({ "maxlen": KEEP_PROBES }),
        );
    }
    let failed = report.failed();
    if args.http.json {
        let answer = json!({
            "ok": failed.is_empty(),
            "checks": report.checks,
            "failed": failed,
        });
        println!("{answer}");
    } else {
        report.print_table();
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("busbar doctor: failed: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}
