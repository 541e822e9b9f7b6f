//! busbar's configuration.
//!
//! Values come in four layers, each overriding the one before:
//!
//! 1. built-in defaults ([`Config::default`]);
//! 2. a TOML file (`busbar serve --config busbar.toml`), one table per
//!    section: `[storage]`, `[ingest]`, `[groups]`, `[http]`, `[jobs]`,
//!    `[health]`, `[live]`, `[auth]`, `[commands]`, `[log]`, `[readiness]`,
//!    `[listen]`, `[audit]`, `[journal]`, `[trace]`, `[ops]`, `[metrics]`;
//!    unknown keys are errors, so typos surface;
//! 3. `BUSBAR_*` environment variables ([`ENV_VARS`]); a few also answer
//!    to the bare names the runbooks use ([`ENV_ALIASES`]: `LOG_LEVEL`,
//!    `OPS_UI_ENABLED`, `METRICS_ENABLED`, `DIAGNOSTICS_ENABLED`), below
//!    their `BUSBAR_*` variable when both are set;
//! 4. command-line flags, which the binary writes into the struct before
//!    calling [`Config::validate`].
//!
//! Sizes and durations are written for humans (`"1 MiB"`, `"500ms"`).
//!
//! A running daemon reads the same layers again on `busbar cmd reload` or
//! SIGHUP; [`Config::changes`] says which changed keys it applies at once
//! and which wait for a restart ([`reload`]).
//!
//! `busbar.example.toml` at the repository root describes every key with
//! its default and environment variable; for a limit, also what a client
//! sees when it is reached.
//!
//! ```
//! use busbar_config::{Backend, Config};
//!
//! let toml = r#"
//!     [storage]
//!     backend = "memory"
//!     [ingest]
//!     max_line_bytes = "64 KiB"
//! "#;
//! let env = |name: &str| (name == "BUSBAR_TCP_ADDR").then(|| "127.0.0.1:0".to_string());
//! let config = Config::from_toml_str(toml, "inline")?.with_env(env)?;
//! assert_eq!(config.storage.backend, Backend::Memory);
//! assert_eq!(config.ingest.max_line_bytes.bytes(), 64 * 1024);
//! assert_eq!(config.ingest.tcp_addr.port(), 0);
//! config.validate()?;
//! # Ok::<(), busbar_config::ConfigError>(())
//! ```

#![warn(missing_docs)]

mod env;
pub mod reload;
mod run;
mod sections;
mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

pub use env::{unknown_env_vars, ENV_ALIASES, ENV_VARS, OTHER_ENV_VARS};
pub use reload::{Changes, Reload};
pub use run::Addresses;
pub use sections::{
    AuditSection, AuthConfig, Backend, CommandsConfig, GroupsConfig, HealthSection, HttpSection,
    IngestConfig, JobsSection, JournalSection, ListenSection, LiveSection, LogConfig, LogFormat,
    MetricsSection, OnAuditBroken, OnCorruption, OpsSection, ReadinessConfig, RetentionConfig,
    StorageConfig, TraceSection, DEFAULT_HTTP_ADDR, DEFAULT_TCP_ADDR,
};
pub use units::{ByteSize, FileMode, HumanDuration, ParseModeError, ParseSizeError};

/// Why a configuration was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a value has the wrong type; the message
    /// quotes the offending line.
    #[error("invalid config file {origin}: {message}")]
    Parse {
        /// The file (or `inline`).
        origin: String,
        /// The TOML parser's report, naming the line and key.
        message: String,
    },
    /// An environment variable holds a bad value.
    #[error("invalid {var}=`{value}` (sets {key}): {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// The key it overrides.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid {key}: {reason}")]
    Invalid {
        /// The key, as `section.key`.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A listener would accept unauthenticated traffic from other machines.
    #[error(
        "{key} = {addr} is not a loopback address and no [auth] tokens are configured: \
         anyone who can reach it could publish and read. Configure [[auth.tokens]], bind to \
         127.0.0.1, or set allow_unauthenticated_remote = true in [auth] \
         (BUSBAR_ALLOW_UNAUTHENTICATED_REMOTE=true) if that is really what you want"
    )]
    UnauthenticatedRemote {
        /// `ingest.tcp_addr` or `http.addr`.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[storage]`
    pub storage: StorageConfig,
    /// `[ingest]`
    pub ingest: IngestConfig,
    /// `[groups]`
    pub groups: GroupsConfig,
    /// `[http]`
    pub http: HttpSection,
    /// `[jobs]`
    pub jobs: JobsSection,
    /// `[health]`
    pub health: HealthSection,
    /// `[live]`
    pub live: LiveSection,
    /// `[auth]`
    pub auth: AuthConfig,
    /// `[commands]`
    pub commands: CommandsConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[readiness]`
    pub readiness: ReadinessConfig,
    /// `[listen]`
    pub listen: ListenSection,
    /// `[journal]`
    pub journal: JournalSection,
    /// `[trace]`
    pub trace: TraceSection,
    /// `[audit]`
    pub audit: AuditSection,
    /// `[ops]`
    pub ops: OpsSection,
    /// `[metrics]`
    pub metrics: MetricsSection,
}

impl Config {
    /// Defaults, then `file` if given, then the process environment.
    /// Command-line flags go on top; call [`Config::validate`] after them.
    ///
    /// # Errors
    /// [`ConfigError::Read`], [`ConfigError::Parse`], [`ConfigError::Env`].
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let config = match file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.with_env(|name| std::env::var(name).ok())
    }

    /// Defaults overridden by a TOML file.
    ///
    /// # Errors
    /// [`ConfigError::Read`], [`ConfigError::Parse`].
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text, &path.display().to_string())
    }

    /// Defaults overridden by TOML text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`].
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Applies `BUSBAR_*` overrides read through `lookup` (the process
    /// environment in [`Config::load`]; a map in tests).
    ///
    /// # Errors
    /// [`ConfigError::Env`] naming the variable.
    pub fn with_env(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        env::apply(&mut self, lookup)?;
        Ok(self)
    }

    /// The events socket: `ingest.socket`, or `<data_dir>/sock/events.sock`.
    pub fn events_socket(&self) -> PathBuf {
        self.ingest
            .socket
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("sock").join("events.sock"))
    }

    /// The command socket: `commands.socket`, or
    /// `<data_dir>/sock/commands.sock`.
    pub fn commands_socket(&self) -> PathBuf {
        self.commands
            .socket
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("sock").join("commands.sock"))
    }

    /// The audit log: `audit.path`, or `<data_dir>/audit/audit.log`.
    pub fn audit_path(&self) -> PathBuf {
        self.audit
            .path
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("audit").join("audit.log"))
    }

    /// Where the daemon writes its run files ([`Addresses`]).
    pub fn run_dir(&self) -> PathBuf {
        run::run_dir(&self.storage.data_dir)
    }

    /// Checks ranges and cross-key rules. Call it once every layer is in.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] or [`ConfigError::UnauthenticatedRemote`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.storage.data_dir.as_os_str().is_empty() {
            return invalid("storage.data_dir", "must not be empty");
        }
        if self
            .audit
            .path
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty() || p.file_name().is_none())
        {
            return invalid("audit.path", "must name a file");
        }
        if self.storage.segment_size.bytes() < 4096 {
            return invalid("storage.segment_size", "must be at least 4 KiB");
        }
        if self.storage.index_interval.bytes() == 0 {
            return invalid("storage.index_interval", "must be greater than 0");
        }
        if self.storage.queue_depth == 0 {
            return invalid("storage.queue_depth", "must be greater than 0");
        }
        if self.ingest.max_line_bytes.bytes() < 64 {
            return invalid("ingest.max_line_bytes", "must be at least 64 bytes");
        }
        if self.ingest.max_line_bytes.bytes() > u64::from(u32::MAX) {
            return invalid("ingest.max_line_bytes", "must be at most 4 GiB");
        }
        if self.ingest.max_connections == 0 {
            return invalid("ingest.max_connections", "must be greater than 0");
        }
        if self.ingest.max_unauthenticated == 0 {
            return invalid("ingest.max_unauthenticated", "must be greater than 0");
        }
        if self.ingest.first_line_timeout.0.is_zero() {
            return invalid("ingest.first_line_timeout", "must be greater than 0");
        }
        if self.ingest.unauthenticated_bytes.bytes() < 256 {
            return invalid("ingest.unauthenticated_bytes", "must be at least 256 bytes");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(self.log.level.trim()) {
            return Err(ConfigError::Invalid {
                key: "log.level",
                reason: format!(
                    "`{}` is not a level (error, warn, info, debug, trace) or a filter such as \
                     info,busbar_ingest=debug: {e}",
                    self.log.level
                ),
            });
        }
        if self.log.file.is_some() && self.log.max_size.bytes() < 4096 {
            return invalid("log.max_size", "must be at least 4 KiB");
        }
        if self.http.max_connections == 0 {
            return invalid("http.max_connections", "must be greater than 0");
        }
        let ceiling = busbar_event::Limits::DEPTH_CEILING;
        if !(2..=ceiling).contains(&self.ingest.max_depth) {
            // At least 2: a socket op's `ids` is an array.
            return invalid(
                "ingest.max_depth",
                &format!("must be between 2 and {ceiling}"),
            );
        }
        for (key, value) in [
            ("live.feed_capacity", self.live.feed_capacity),
            ("live.send_queue", self.live.send_queue),
            ("live.max_connections", self.live.max_connections),
            ("live.max_subscriptions", self.live.max_subscriptions),
        ] {
            if value == 0 {
                return invalid(key, "must be greater than 0");
            }
        }
        if self.live.feed_capacity > 1 << 24 {
            return invalid("live.feed_capacity", "must be at most 16777216");
        }
        if self.live.stall_timeout.0.is_zero() {
            return invalid("live.stall_timeout", "must be greater than 0");
        }
        if self.live.heartbeat.0.is_zero() || self.live.write_deadline.0.is_zero() {
            return invalid(
                "live.heartbeat",
                "heartbeat and write_deadline must be greater than 0",
            );
        }
        if self.groups.sweep_interval.0.is_zero() {
            return invalid("groups.sweep_interval", "must be greater than 0");
        }
        if self.http.max_body_bytes.bytes() == 0 {
            return invalid("http.max_body_bytes", "must be greater than 0");
        }
        if self.http.max_batch_events == 0 {
            return invalid("http.max_batch_events", "must be greater than 0");
        }
        if self.http.max_read_count == 0 {
            return invalid("http.max_read_count", "must be greater than 0");
        }
        for (key, value) in [
            ("jobs.max_running", self.jobs.max_running),
            ("jobs.history", self.jobs.history),
            ("jobs.default_rate", self.jobs.default_rate as usize),
            ("jobs.max_rate", self.jobs.max_rate as usize),
        ] {
            if value == 0 {
                return invalid(key, "must be greater than 0");
            }
        }
        if self.jobs.default_rate > self.jobs.max_rate {
            return Err(ConfigError::Invalid {
                key: "jobs.default_rate",
                reason: format!(
                    "{} is over jobs.max_rate ({})",
                    self.jobs.default_rate, self.jobs.max_rate
                ),
            });
        }
        let mut names = std::collections::HashSet::new();
        for token in &self.auth.tokens {
            if token.name.is_empty() {
                return invalid("auth.tokens.name", "must not be empty");
            }
            if !names.insert(token.name.as_str()) {
                return Err(ConfigError::Invalid {
                    key: "auth.tokens.name",
                    reason: format!("token name `{}` is used twice", token.name),
                });
            }
            if token.secret.len() < 8 {
                return Err(ConfigError::Invalid {
                    key: "auth.tokens.secret",
                    reason: format!(
                        "the secret of token `{}` must be at least 8 characters",
                        token.name
                    ),
                });
            }
            if token.scopes.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "auth.tokens.scopes",
                    reason: format!("token `{}` has no scope", token.name),
                });
            }
        }
        for token in &self.auth.tokens {
            if let Some(t) = &token.tenant {
                if t.is_empty() || t.starts_with('_') || t.contains(':') {
                    return Err(ConfigError::Invalid {
                        key: "auth.tokens.tenant",
                        reason: format!(
                            "the tenant `{t}` of token `{}` must be non-empty, without `:`, and not start with `_` (busbar's own streams are `_busbar:...`)",
                            token.name
                        ),
                    });
                }
            }
        }
        for (key, zero) in [
            ("journal.max_events", self.journal.max_events == 0),
            ("journal.queue", self.journal.queue == 0),
            ("journal.max_age", self.journal.max_age.0.is_zero()),
            ("trace.max_running", self.trace.max_running == 0),
            ("trace.max_duration", self.trace.max_duration.0.is_zero()),
            ("trace.max_events", self.trace.max_events == 0),
            ("trace.max_bytes", self.trace.max_bytes.bytes() == 0),
        ] {
            if zero {
                return invalid(key, "must be greater than 0");
            }
        }
        if self.auth.tokens.is_empty() && !self.auth.allow_unauthenticated_remote {
            for (key, addr) in [
                ("ingest.tcp_addr", self.ingest.tcp_addr),
                ("http.addr", self.http.addr),
            ] {
                if !addr.ip().is_loopback() {
                    return Err(ConfigError::UnauthenticatedRemote { key, addr });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
