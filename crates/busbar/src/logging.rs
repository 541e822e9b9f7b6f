//! Structured logs on stderr, plain or JSON.
//!
//! Log lines carry stream names, counts, addresses and reasons; never event
//! payloads or token secrets.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Context;
use busbar_config::{LogConfig, LogFormat};
use busbar_ops::pack::LogTail;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Every line also goes to `tail`, the
/// newest lines support packs include.
pub fn init(config: &LogConfig, tail: Arc<LogTail>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.level).with_context(|| {
        format!(
            "invalid log.level `{}`: expected a level (error, warn, info, debug, trace) or a filter such as info,busbar_ingest=debug",
            config.level
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr.and(move || tail.writer()))
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match config.format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
