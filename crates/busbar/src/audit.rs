//! `busbar audit verify | show`: the audit log, read from its file (the
//! daemon need not run; when it does, a record it is appending does not
//! make verify fail).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use busbar_audit::{read_log, records, verify, ExpectedHead, Record};
use clap::{Args, Subcommand};
use serde_json::json;

/// `busbar audit` arguments.
#[derive(Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain: print the head when intact (exit 0), or name
    /// the first broken record (exit 1).
    Verify(VerifyArgs),
    /// Print records, oldest first, newest last.
    Show(ShowArgs),
}

/// Where the log is.
#[derive(Args)]
struct Location {
    /// The audit log file (default: `[audit] path`, or
    /// <data-dir>/audit/audit.log).
    #[arg(long)]
    path: Option<PathBuf>,
    /// The daemon's data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The daemon's config file, to find the log it names.
    #[arg(long, short, env = "BUSBAR_CONFIG")]
    config: Option<PathBuf>,
}

impl Location {
    fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.path {
            return Ok(p.clone());
        }
        let mut config = busbar_config::Config::load(self.config.as_deref())?;
        if let Some(dir) = &self.data_dir {
            config.storage.data_dir = dir.clone();
        }
        Ok(config.audit_path())
    }

    fn read(&self) -> anyhow::Result<(PathBuf, Vec<u8>)> {
        let path = self.path()?;
        let bytes = read_log(&path).with_context(|| {
            format!(
                "cannot read the audit log {} (use --path or --data-dir)",
                path.display()
            )
        })?;
        Ok((path, bytes))
    }
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    location: Location,
    /// A head remembered earlier (`<seq>:<hash>`, or the first 16 or more
    /// hex digits of the hash, as the busbar_audit_head metric shows it):
    /// the log must still hold that record. Only this catches records cut
    /// from the end at a record boundary.
    #[arg(long)]
    expect_head: Option<ExpectedHead>,
    /// Print the outcome as one JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ShowArgs {
    #[command(flatten)]
    location: Location,
    /// Print at most the newest N records.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Only records of this action (`dlq.purge`), or of this noun (`dlq`).
    #[arg(long)]
    action: Option<String>,
    /// Print each record as its raw JSON line.
    #[arg(long)]
    json: bool,
}

/// Runs `busbar audit ...`.
pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuditCommand::Verify(a) => run_verify(a),
        AuditCommand::Show(a) => run_show(a),
    }
}

fn run_verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let (path, bytes) = args.location.read()?;
    match verify(&bytes, args.expect_head.as_ref()) {
        Ok(v) => {
            if args.json {
                println!(
                    "{}",
                    json!({
                        "ok": true,
                        "path": path,
                        "records": v.head.seq,
                        "head": {"seq": v.head.seq, "hash": v.head.hash.to_hex()},
                    })
                );
            } else {
                println!("ok: {} records, chain intact; head {}", v.head.seq, v.head);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(b) => {
            if args.json {
                println!(
                    "{}",
                    json!({
                        "ok": false,
                        "path": path,
                        "broken": {
                            "seq": b.seq,
                            "line": b.line,
                            "offset": b.offset,
                            "problem": b.problem.to_string(),
                        },
                        "valid_head": {"seq": b.valid.head.seq, "hash": b.valid.head.hash.to_hex()},
                    })
                );
            } else {
                println!("broken: {} in {}", b, path.display());
                println!("last valid head: {}", b.valid.head);
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn run_show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let (path, bytes) = args.location.read()?;
    let wanted = |r: &Record| {
        args.action.as_deref().is_none_or(|a| {
            r.action == a
                || r.action
                    .strip_prefix(a)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let picked: Vec<(u64, Record)> = records(&bytes).filter(|(_, r)| wanted(r)).collect();
    let from = picked.len().saturating_sub(args.limit);
    for (line, record) in &picked[from..] {
        if args.json {
            let raw = usize::try_from(*line - 1)
                .ok()
                .and_then(|i| lines.get(i))
                .copied()
                .unwrap_or_default();
            println!("{raw}");
        } else {
            println!("{}", human(record));
        }
    }
    if let Err(b) = verify(&bytes, None) {
        eprintln!(
            "warning: the chain of {} is broken at {b}; see `busbar audit verify`",
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `seq  time  actor  action  target  params`.
fn human(r: &Record) -> String {
    let time = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(r.ts));
    let mut params = String::new();
    busbar_audit::canonical_json(&r.params, &mut params);
    format!(
        "{:>6}  {time}  {:<18}  {:<20}  {}  {params}",
        r.seq,
        r.actor.to_string(),
        r.action,
        r.target
    )
}
