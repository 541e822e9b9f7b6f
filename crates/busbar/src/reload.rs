//! Reloading the configuration of a running daemon (`busbar cmd reload`,
//! SIGHUP) and changing its log level for a while (`busbar cmd log-level`).
//!
//! A reload reads the layers the daemon started with again (the same
//! file, the environment, the command-line flags), validates them, and
//! applies the keys that `busbar_config::reload` classes as live. A file
//! that does not parse or validate is refused with the reason and changes
//! nothing. Each reload is logged at info with the changed keys, never
//! their values.

use std::sync::Arc;
use std::time::Duration;

use busbar_config::Config;
use busbar_engine::{AdminAction, Engine, OpsEvent, Principal};
use busbar_fanout::Fanout;
use busbar_ingest::{Deadlines, Ingest};
use busbar_ops::Ops;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::logging::LogControl;

/// Reads the configuration again, as `busbar serve` did at start.
pub type Loader = Box<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// What a reload changes.
pub struct Reloader {
    load: Loader,
    /// The configuration the daemon started with: keys that need a
    /// restart are compared with it, so they are reported until then.
    started: Config,
    /// The configuration whose live keys are in force.
    current: Mutex<Config>,
    engine: Arc<Engine>,
    ingest: Ingest,
    live: Arc<Fanout>,
    log: Arc<LogControl>,
}

impl Reloader {
    /// A reloader of the daemon started with `config`.
    pub fn new(
        load: Loader,
        config: Config,
        engine: Arc<Engine>,
        ingest: Ingest,
        live: Arc<Fanout>,
        log: Arc<LogControl>,
    ) -> Arc<Reloader> {
        Arc::new(Reloader {
            load,
            current: Mutex::new(config.clone()),
            started: config,
            engine,
            ingest,
            live,
            log,
        })
    }

    /// Registers `reload` and `log-level` on the command socket.
    pub fn register(self: &Arc<Self>, ops: &Ops) {
        let reloader = self.clone();
        ops.command(
            "reload",
            "re-read the config file and environment; apply what can change at run time",
            move |_| {
                let reloader = reloader.clone();
                async move {
                    // Reading the file is blocking I/O.
                    tokio::task::spawn_blocking(move || reloader.reload("command"))
                        .await
                        .unwrap_or_else(|e| failure("internal", &format!("reload failed: {e}")))
                }
            },
        );
        let log = self.log.clone();
        ops.command(
            "log-level",
            "show or set the log level: {\"level\":\"debug\",\"for\":\"10m\"} reverts after 10 minutes",
            move |args| {
                let log = log.clone();
                async move { log_level(&log, &args) }
            },
        );
    }

    /// Reloads; `source` (`command`, `SIGHUP`) is logged. Answers as a
    /// command does.
    pub fn reload(&self, source: &str) -> Value {
        let new = match (self.load)() {
            Ok(config) => config,
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::warn!(source, error = %reason, "reload refused; the configuration in force is kept");
                self.engine.journal().record(
                    OpsEvent::new("config:reload_refused", "config")
                        .field("source", source)
                        .field("reason", reason.as_str()),
                );
                return failure("invalid_config", &reason);
            }
        };
        let mut current = self.current.lock();
        let applied = current.changes(&new).applied;
        let restart = self.started.changes(&new).restart;
        if applied.contains(&"log.level") {
            // Validated with the config already; a failure here would be
            // the subscriber's, and nothing else has changed yet.
            if let Err(e) = self.log.set_configured(&new.log.level) {
                tracing::warn!(source, error = %e, "reload refused; the configuration in force is kept");
                return failure("invalid_config", &e.to_string());
            }
        }
        self.apply(&new);
        *current = new;
        drop(current);
        if applied.is_empty() && restart.is_empty() {
            tracing::info!(source, "configuration reloaded: nothing changed");
        } else {
            tracing::info!(source, applied = ?applied, restart = ?restart, "configuration reloaded");
        }
        if !restart.is_empty() {
            tracing::warn!(keys = ?restart, "changed keys wait for a restart");
        }
        self.engine.journal().record(
            OpsEvent::new("config:reload", "config")
                .field("source", source)
                .field("applied", json!(applied))
                .field("restartRequired", json!(restart)),
        );
        self.engine.administered(
            &Principal::Trusted,
            &AdminAction::ConfigReload {
                source,
                applied: &applied,
                restart: &restart,
            },
        );
        json!({
            "ok": true,
            "applied": applied,
            "restart_required": restart,
            "message": summary(&applied, &restart),
        })
    }

    /// Applies every live key of `new` (setting an unchanged value again is
    /// harmless).
    fn apply(&self, new: &Config) {
        self.engine.auth().replace(new.auth.tokens.clone());
        self.engine
            .set_limits(new.http.max_batch_events, new.http.max_read_count);
        self.ingest.set_deadlines(Deadlines {
            first_line_timeout: new.ingest.first_line_timeout.0,
            idle_timeout: new.ingest.idle_timeout.0,
            unauthenticated_bytes: new.ingest.unauthenticated_bytes.as_usize(),
        });
        self.live.delays().set_max(new.live.max_delay.0);
        self.live.sessions().set_drift_warn(new.live.drift_warn.0);
    }
}

fn summary(applied: &[&str], restart: &[&str]) -> String {
    match (applied.is_empty(), restart.is_empty()) {
        (true, true) => "nothing changed".to_owned(),
        (false, true) => format!("applied: {}", applied.join(", ")),
        (true, false) => format!("nothing applied; restart to apply: {}", restart.join(", ")),
        (false, false) => format!(
            "applied: {}; restart to apply: {}",
            applied.join(", "),
            restart.join(", ")
        ),
    }
}

fn failure(reason: &str, message: &str) -> Value {
    json!({"ok": false, "error": reason, "message": message})
}

/// `log-level`: no `level` shows it; a `level` sets it, for `for` if given.
fn log_level(log: &Arc<LogControl>, args: &Value) -> Value {
    let Some(level) = args.get("level") else {
        return json!({"ok": true, "level": log.current(), "configured": log.configured()});
    };
    let Some(level) = level.as_str() else {
        return failure("bad_args", "level must be a string such as \"debug\"");
    };
    let revert_after = match args.get("for") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => match humantime::parse_duration(text.trim()) {
            Ok(d) if !d.is_zero() && d <= Duration::from_secs(7 * 24 * 3600) => Some(d),
            Ok(_) => {
                return failure("bad_args", "for must be more than 0 and at most 7 days");
            }
            Err(e) => {
                return failure(
                    "bad_args",
                    &format!("for: `{text}` is not a duration such as 10m: {e}"),
                );
            }
        },
        Some(_) => return failure("bad_args", "for must be a duration such as \"10m\""),
    };
    match log.set_for(level, revert_after) {
        Ok(previous) => {
            let seconds = revert_after.map(|d| d.as_secs());
            tracing::info!(level, previous = %previous, for_seconds = ?seconds, "log level changed on the command socket");
            json!({
                "ok": true,
                "level": level,
                "previous": previous,
                "configured": log.configured(),
                "revert_after_seconds": seconds,
            })
        }
        Err(e) => failure("bad_level", &e.to_string()),
    }
}
