//! What a reload may change in a running daemon.
//!
//! `busbar cmd reload` and SIGHUP read the configuration again (the same
//! file, then the environment, then the daemon's command-line flags) and
//! compare it with the one in force, key by key ([`Config::changes`]).
//! Every key has one [`Reload`] class:
//!
//! - [`Reload::Live`]: the daemon applies the new value at once. New
//!   connections and requests see it; a connection already open keeps what
//!   it started with where the value is read per connection (the ingest
//!   deadlines).
//! - [`Reload::Restart`]: the value is read once at start-up (addresses,
//!   the data directory, the storage backend, buffer sizes, connection
//!   limits, the log's destination); the new value is reported as waiting
//!   for a restart and the old one stays in force.
//!
//! A file that does not parse or validate changes nothing.
//!
//! ```
//! use busbar_config::Config;
//!
//! let old = Config::default();
//! let new = Config::from_toml_str(
//!     "[log]\nlevel = \"debug\"\n[http]\naddr = \"127.0.0.1:7000\"\n",
//!     "inline",
//! )?;
//! let changes = old.changes(&new);
//! assert_eq!(changes.applied, ["log.level"]);
//! assert_eq!(changes.restart, ["http.addr"]);
//! # Ok::<(), busbar_config::ConfigError>(())
//! ```

use crate::Config;

/// When a changed key takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// At once, on reload.
    Live,
    /// At the next start.
    Restart,
}

/// The keys that differ between two configurations, by when they take
/// effect. Key names are `section.key`; values are never included (a
/// token's secret must not reach a log line or an answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Changed keys the daemon applies at once.
    pub applied: Vec<&'static str>,
    /// Changed keys that wait for a restart.
    pub restart: Vec<&'static str>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.restart.is_empty()
    }
}

struct Key {
    name: &'static str,
    class: Reload,
    changed: fn(&Config, &Config) -> bool,
}

macro_rules! keys {
    ($($class:ident $name:literal => $($path:ident).+;)*) => {
        &[$(Key {
            name: $name,
            class: Reload::$class,
            changed: |a: &Config, b: &Config| a.$($path).+ != b.$($path).+,
        }),*]
    };
}

/// Every key, in the order of `busbar.example.toml`.
const KEYS: &[Key] = keys! {
    Restart "storage.backend" => storage.backend;
    Restart "storage.data_dir" => storage.data_dir;
    Restart "storage.durability" => storage.durability;
    Restart "storage.segment_size" => storage.segment_size;
    Restart "storage.index_interval" => storage.index_interval;
    Restart "storage.on_corruption" => storage.on_corruption;
    Restart "storage.queue_depth" => storage.queue_depth;
    Restart "storage.reserve" => storage.reserve;
    Restart "storage.dedup_window" => storage.dedup_window;
    Restart "storage.dedup_max_keys" => storage.dedup_max_keys;
    Restart "storage.retention" => storage.retention;
    Restart "ingest.socket" => ingest.socket;
    Restart "ingest.socket_mode" => ingest.socket_mode;
    Restart "ingest.tcp_addr" => ingest.tcp_addr;
    // Also the HTTP and WebSocket event limits, which are set once.
    Restart "ingest.max_line_bytes" => ingest.max_line_bytes;
    Restart "ingest.max_connections" => ingest.max_connections;
    Restart "ingest.max_connections_per_peer" => ingest.max_connections_per_peer;
    Live "ingest.first_line_timeout" => ingest.first_line_timeout;
    Live "ingest.idle_timeout" => ingest.idle_timeout;
    Restart "ingest.max_unauthenticated" => ingest.max_unauthenticated;
    Restart "ingest.max_unauthenticated_per_peer" => ingest.max_unauthenticated_per_peer;
    Live "ingest.unauthenticated_bytes" => ingest.unauthenticated_bytes;
    Restart "ingest.drain_timeout" => ingest.drain_timeout;
    Restart "ingest.max_depth" => ingest.max_depth;
    Restart "groups.sweep_interval" => groups.sweep_interval;
    Restart "live.feed_capacity" => live.feed_capacity;
    Restart "live.send_queue" => live.send_queue;
    Restart "live.write_deadline" => live.write_deadline;
    Restart "live.stall_timeout" => live.stall_timeout;
    Restart "live.heartbeat" => live.heartbeat;
    Restart "live.max_message_bytes" => live.max_message_bytes;
    Restart "live.allowed_origins" => live.allowed_origins;
    Restart "live.max_connections" => live.max_connections;
    Restart "live.max_subscriptions" => live.max_subscriptions;
    Live "live.max_delay" => live.max_delay;
    Live "live.drift_warn" => live.drift_warn;
    Restart "http.addr" => http.addr;
    Restart "http.max_body_bytes" => http.max_body_bytes;
    Live "http.max_batch_events" => http.max_batch_events;
    Live "http.max_read_count" => http.max_read_count;
    Restart "http.max_connections" => http.max_connections;
    Restart "http.max_connections_per_peer" => http.max_connections_per_peer;
    Restart "http.header_timeout" => http.header_timeout;
    Restart "http.body_timeout" => http.body_timeout;
    Restart "jobs.max_running" => jobs.max_running;
    Restart "jobs.history" => jobs.history;
    Restart "jobs.default_rate" => jobs.default_rate;
    Restart "jobs.max_rate" => jobs.max_rate;
    Restart "health.max_dlq" => health.max_dlq;
    Restart "health.max_lag" => health.max_lag;
    Live "auth.tokens" => auth.tokens;
    // Checked when the new file is validated; nothing else reads it.
    Live "auth.allow_unauthenticated_remote" => auth.allow_unauthenticated_remote;
    Restart "commands.socket" => commands.socket;
    Restart "commands.socket_mode" => commands.socket_mode;
    Live "log.level" => log.level;
    Restart "log.format" => log.format;
    Restart "log.file" => log.file;
    Restart "log.max_size" => log.max_size;
    Restart "log.keep" => log.keep;
    Restart "readiness.min_free_disk" => readiness.min_free_disk;
    Restart "listen.fd_reserve" => listen.fd_reserve;
    Restart "listen.max_connections" => listen.max_connections;
    Restart "ops.enabled" => ops.enabled;
    Restart "ops.diagnostics" => ops.diagnostics;
    Restart "metrics.enabled" => metrics.enabled;
    Restart "audit.enabled" => audit.enabled;
    Restart "audit.path" => audit.path;
    Restart "audit.on_broken" => audit.on_broken;
    Restart "journal.max_events" => journal.max_events;
    Restart "journal.max_age" => journal.max_age;
    Restart "journal.queue" => journal.queue;
    Restart "journal.error_interval" => journal.error_interval;
    Restart "trace.max_running" => trace.max_running;
    Restart "trace.max_duration" => trace.max_duration;
    Restart "trace.max_events" => trace.max_events;
    Restart "trace.max_bytes" => trace.max_bytes;
    Restart "trace.keep" => trace.keep;
};

/// When `key` (`section.key`) takes effect once changed; `None` for a key
/// busbar does not have.
pub fn class(key: &str) -> Option<Reload> {
    KEYS.iter().find(|k| k.name == key).map(|k| k.class)
}

impl Config {
    /// The keys whose values differ in `new`, split by when they take
    /// effect (see [the module docs](crate::reload)).
    pub fn changes(&self, new: &Config) -> Changes {
        let mut changes = Changes::default();
        for key in KEYS {
            if (key.changed)(self, new) {
                match key.class {
                    Reload::Live => changes.applied.push(key.name),
                    Reload::Restart => changes.restart.push(key.name),
                }
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_change_is_empty() {
        assert!(Config::default().changes(&Config::default()).is_empty());
    }

    #[test]
    fn every_example_key_has_a_class() {
        // A key added to the example file must be classified here too.
        // Optional keys are commented out there.
        for key in [
            "ingest.socket",
            "commands.socket",
            "log.file",
            "storage.retention",
        ] {
            assert!(class(key).is_some(), "{key} has no reload class");
        }
        let text = include_str!("../../../busbar.example.toml");
        let mut section = String::new();
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                continue;
            }
            let Some((key, _)) = line.split_once(" = ") else {
                continue;
            };
            let full = format!("{section}.{key}");
            assert!(class(&full).is_some(), "{full} has no reload class");
        }
    }

    #[test]
    fn tokens_apply_and_listen_addresses_wait() {
        let new = Config::from_toml_str(
            r#"
            [ingest]
            tcp_addr = "127.0.0.1:1"
            idle_timeout = "1m"
            [[auth.tokens]]
            name = "ops"
            secret = "0123456789"
            scopes = ["admin"]
            "#,
            "t",
        )
        .unwrap();
        let changes = Config::default().changes(&new);
        assert_eq!(changes.applied, ["ingest.idle_timeout", "auth.tokens"]);
        assert_eq!(changes.restart, ["ingest.tcp_addr"]);
    }
}
