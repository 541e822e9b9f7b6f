//! Support packs: `POST /api/ops/support-pack` and `busbar support-pack`.
//!
//! The body (all optional): `sessionId` (that session's statistics, and
//! the pack is refused with 404 `no_such_session` when the caller sees no
//! such session), `includeConfig` (the config file and the `BUSBAR_*`
//! environment, redacted), `traceId` (that trace; 404 `no_such_trace`
//! when unknown). The answer is a `.tar.gz` (`application/gzip`) holding
//! one directory:
//!
//! | file | what |
//! |---|---|
//! | `README.txt` | what the pack holds and what was redacted |
//! | `summary.json` | the ops summary |
//! | `versions.json` | version, build (profile, target), process (pid, uptime) |
//! | `ops-events.json` | the newest 1,000 ops events |
//! | `sessions.json`, `sockets.json`, ... | what side services add ([`Ops::add_pack_part`](crate::Ops::add_pack_part)) |
//! | `session.json` | the asked-for session's statistics |
//! | `metrics.txt` | a `/metrics` scrape |
//! | `log.txt` | the newest log lines the daemon kept ([`LogTail`]) |
//! | `trace.json` | the asked-for trace |
//! | `config.toml`, `environment.txt` | with `includeConfig` |
//!
//! Every file goes through the [`Redactor`](crate::redact::Redactor)
//! before it is archived. A tenant-bound caller's pack holds only what
//! that caller may see through the other ops routes (no process-wide
//! metrics, no config, no log).

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use busbar_engine::Principal;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::redact::Redactor;
use crate::Ops;

/// The body of `POST /api/ops/support-pack`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PackRequest {
    /// A session whose statistics to include.
    pub session_id: Option<String>,
    /// Include the config file and environment (redacted).
    pub include_config: Option<bool>,
    /// A trace to include.
    pub trace_id: Option<String>,
}

/// Why a pack was not made: HTTP status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackError {
    /// HTTP status.
    pub status: u16,
    /// Machine-readable reason.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

/// The newest log lines, kept in memory for support packs, bounded in
/// bytes (the oldest go first).
#[derive(Debug)]
pub struct LogTail {
    lines: Mutex<(VecDeque<String>, usize)>,
    max_bytes: usize,
}

impl LogTail {
    /// A tail keeping at most `max_bytes` of lines.
    pub fn new(max_bytes: usize) -> Arc<LogTail> {
        Arc::new(LogTail {
            lines: Mutex::new((VecDeque::new(), 0)),
            max_bytes,
        })
    }

    /// Adds one line (without its newline; terminal colour codes are
    /// left out).
    pub fn push(&self, line: &str) {
        let mut plain = String::with_capacity(line.len());
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // CSI: ESC [ parameters, ended by a letter.
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                plain.push(c);
            }
        }
        let line: String = plain.chars().take(self.max_bytes).collect();
        let mut guard = self.lines.lock();
        let (lines, bytes) = &mut *guard;
        *bytes += line.len() + 1;
        lines.push_back(line);
        while *bytes > self.max_bytes {
            match lines.pop_front() {
                Some(old) => *bytes -= old.len() + 1,
                None => break,
            }
        }
    }

    /// The kept lines, oldest first, joined.
    pub fn text(&self) -> String {
        let guard = self.lines.lock();
        let mut out = String::with_capacity(guard.1);
        for l in &guard.0 {
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    /// A writer for one log record (`tracing_subscriber`'s `MakeWriter`
    /// is any `Fn() -> impl Write`): what is written goes in as lines when
    /// the writer is dropped.
    pub fn writer(self: &Arc<Self>) -> LogTailWriter {
        LogTailWriter {
            tail: self.clone(),
            buf: Vec::new(),
        }
    }
}

/// See [`LogTail::writer`].
#[derive(Debug)]
pub struct LogTailWriter {
    tail: Arc<LogTail>,
    buf: Vec<u8>,
}

impl Write for LogTailWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // One record is small; bound it anyway.
        let room = (self.tail.max_bytes).saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogTailWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        for line in text.lines() {
            self.tail.push(line);
        }
    }
}

/// Where the daemon's configuration came from, for `includeConfig`.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The config file, if one was given.
    pub path: Option<PathBuf>,
}

fn error(status: u16, reason: &'static str, message: String) -> PackError {
    PackError {
        status,
        reason,
        message,
    }
}

/// The environment variables a pack shows (names and redacted values).
fn environment() -> String {
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("BUSBAR_")
                || [
                    "OPS_UI_ENABLED",
                    "METRICS_ENABLED",
                    "DIAGNOSTICS_ENABLED",
                    "LOG_LEVEL",
                ]
                .contains(&k.as_str())
        })
        .collect();
    vars.sort();
    vars.iter()
        .map(|(k, v)| {
            // A variable naming a secret keeps its name only.
            let secret = ["TOKEN", "SECRET", "PASSWORD", "KEY"]
                .iter()
                .any(|s| k.to_ascii_uppercase().contains(s));
            if secret {
                format!("{k}=[redacted]\n")
            } else {
                format!("{k}={v}\n")
            }
        })
        .collect()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Builds the pack `principal` asked for: its file name and its bytes.
///
/// # Errors
/// [`PackError`]: an unknown session or trace, a failed build.
pub async fn build(
    ops: &Ops,
    principal: &Principal,
    request: &PackRequest,
) -> Result<(String, Vec<u8>), PackError> {
    let engine = ops.engine();
    let untenanted = principal.tenant().is_none();
    let mut files: Vec<(&str, String)> = Vec::new();

    if let Some(session) = &request.session_id {
        let lookup = ops.session_lookup.read().clone();
        match lookup.and_then(|f| f(principal, session)) {
            Some(stats) => files.push(("session.json", pretty(&stats))),
            None => {
                return Err(error(
                    404,
                    "no_such_session",
                    format!(
                        "no session `{}` (unknown, or another tenant's)",
                        session.chars().take(64).collect::<String>()
                    ),
                ))
            }
        }
    }
    if let Some(trace) = &request.trace_id {
        match ops.traces().show(engine, principal, trace).await {
            Ok(t) => files.push(("trace.json", pretty(&t))),
            Err(e) => {
                let (status, reason, message) = e.parts();
                return Err(error(status, reason, message));
            }
        }
    }
    let include_config = request.include_config.unwrap_or(false);
    if include_config && !untenanted {
        return Err(error(
            403,
            "forbidden",
            "the daemon's configuration is for an untenanted admin token".into(),
        ));
    }

    files.push(("summary.json", pretty(&ops.summary(principal).await)));
    let now = busbar_event::now_ms();
    files.push((
        "versions.json",
        pretty(&json!({
            "busbar": env!("CARGO_PKG_VERSION"),
            "build": {
                "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
                "os": std::env::consts::OS,
                "arch": std::env::consts::ARCH,
            },
            "backend": engine.backend(),
            "process": if untenanted {
                json!({"pid": std::process::id(), "uptimeSec": engine.uptime().as_secs()})
            } else {
                Value::Null
            },
            "packMadeAt": now,
        })),
    ));
    let events = crate::events::recent(
        engine,
        principal,
        &crate::events::EventsQuery {
            limit: Some(crate::events::MAX_LIMIT),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_default();
    files.push(("ops-events.json", pretty(&json!({"events": events}))));
    let parts = ops.pack_parts.read().clone();
    for (name, part) in &parts {
        files.push((name, pretty(&part(principal))));
    }
    let metrics = engine
        .render_metrics_for(principal)
        .await
        .unwrap_or_else(|e| format!("# metrics unavailable: {e}\n"));
    files.push(("metrics.txt", metrics));
    if untenanted {
        files.push(("log.txt", ops.log_tail().text()));
    }
    if include_config {
        let source = ops.config_source.read().clone();
        let text = match &source.path {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(t) => format!("# {}\n{t}", path.display()),
                Err(e) => format!("# the config file {} cannot be read: {e}\n", path.display()),
            },
            None => "# no config file: defaults and the environment\n".to_owned(),
        };
        files.push(("config.toml", text));
        files.push(("environment.txt", environment()));
    }

    let redactor = Redactor::new(engine.auth().secrets());
    let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    let readme = format!(
        "busbar support pack, made at {now} ms since the epoch.\n\n\
         Files: {}.\n\n\
         Redacted in every file: configured token secrets, JWTs, bearer \
         credentials, values of secret-like keys (secret, token, password, \
         api_key, authorization, ...), well-known API key shapes; e-mail \
         addresses are masked and session and user ids truncated to {} \
         characters.\n",
        names.join(", "),
        crate::redact::KEEP_ID_CHARS
    );
    let dir = format!("busbar-support-{now}");
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut add = |name: &str, text: &str| -> std::io::Result<()> {
        let bytes = text.as_bytes();
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(now / 1000);
        header.set_cksum();
        archive.append_data(&mut header, format!("{dir}/{name}"), bytes)
    };
    let failed =
        |e: std::io::Error| error(500, "pack_failed", format!("cannot build the pack: {e}"));
    add("README.txt", &readme).map_err(failed)?;
    for (name, text) in &files {
        add(name, &redactor.text(text)).map_err(failed)?;
    }
    let bytes = archive
        .into_inner()
        .and_then(flate2::write::GzEncoder::finish)
        .map_err(failed)?;
    engine.journal().record(
        busbar_engine::OpsEvent::new("ops:support_pack", "ops")
            .tenant(principal.tenant())
            .field("by", principal.name())
            .field("files", names.len())
            .field("bytes", bytes.len()),
    );
    Ok((format!("{dir}.tar.gz"), bytes))
}
