//! `busbar cmd <name> [json]`: one command on the command socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

/// `busbar cmd` arguments.
#[derive(Args)]
pub struct CmdArgs {
    /// health, stats, rotate, flush, streams, reload or log-level.
    pub name: String,
    /// Arguments as a JSON object, e.g. '{"reason":"manual"}'; for
    /// log-level, the level alone will do (`busbar cmd log-level debug`).
    pub args: Option<String>,
    /// log-level: how long the level holds before the configured one is
    /// back, e.g. 10m.
    #[arg(long = "for", value_name = "DURATION")]
    pub for_duration: Option<String>,
    /// The command socket (default: <data-dir>/sock/commands.sock).
    #[arg(long, env = "BUSBAR_COMMANDS_SOCKET")]
    pub socket: Option<PathBuf>,
    /// The daemon's data directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The daemon's config file, to find the socket it names.
    #[arg(long, short, env = "BUSBAR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the answer as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// Sends the command and prints the answer; fails when it says `ok: false`.
pub fn run(args: CmdArgs) -> anyhow::Result<ExitCode> {
    let socket = match &args.socket {
        Some(s) => s.clone(),
        None => {
            let mut config = busbar_config::Config::load(args.config.as_deref())?;
            if let Some(dir) = &args.data_dir {
                config.storage.data_dir = dir.clone();
            }
            config.commands_socket()
        }
    };
    let mut cmd_args: Value = match &args.args {
        None => Value::Null,
        Some(text) if args.name == "log-level" && !text.trim_start().starts_with('{') => {
            serde_json::json!({ "level": text })
        }
        Some(text) => serde_json::from_str(text)
            .with_context(|| format!("arguments must be a JSON object, got `{text}`"))?,
    };
    if let Some(duration) = &args.for_duration {
        if cmd_args.is_null() {
            cmd_args = serde_json::json!({});
        }
        let Some(object) = cmd_args.as_object_mut() else {
            anyhow::bail!("--for needs the arguments to be a JSON object");
        };
        object.insert("for".to_owned(), Value::String(duration.clone()));
    }
    let line = serde_json::json!({"cmd": args.name, "args": cmd_args});

    let mut stream = UnixStream::connect(&socket).with_context(|| {
        format!(
            "cannot connect to {}: is `busbar serve` running with this data directory? (use --data-dir or --socket)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    writeln!(stream, "{line}")?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .with_context(|| format!("no answer from {}", socket.display()))?;
    let value: Value = serde_json::from_str(answer.trim())
        .with_context(|| format!("unexpected answer: {}", answer.trim()))?;
    if args.json {
        println!("{value}");
    } else {
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    if value["ok"] == Value::Bool(true) {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}
