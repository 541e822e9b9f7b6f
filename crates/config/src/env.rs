//! `BUSBAR_*` environment overrides.

use std::path::PathBuf;
use std::str::FromStr;

use crate::{Config, ConfigError};

type Setter = fn(&mut Config, &str) -> Result<(), String>;

/// Every environment variable busbar reads, the key it sets and how.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("BUSBAR_STORAGE_BACKEND", "storage.backend"),
    ("BUSBAR_DATA_DIR", "storage.data_dir"),
    ("BUSBAR_DURABILITY", "storage.durability"),
    ("BUSBAR_SEGMENT_SIZE", "storage.segment_size"),
    ("BUSBAR_ON_CORRUPTION", "storage.on_corruption"),
    ("BUSBAR_STORAGE_RESERVE", "storage.reserve"),
    ("BUSBAR_DEDUP_WINDOW", "storage.dedup_window"),
    ("BUSBAR_EVENTS_SOCKET", "ingest.socket"),
    ("BUSBAR_TCP_ADDR", "ingest.tcp_addr"),
    ("BUSBAR_MAX_LINE_BYTES", "ingest.max_line_bytes"),
    ("BUSBAR_MAX_CONNECTIONS", "ingest.max_connections"),
    ("BUSBAR_MAX_DEPTH", "ingest.max_depth"),
    ("BUSBAR_GROUP_SWEEP_INTERVAL", "groups.sweep_interval"),
    ("BUSBAR_HTTP_ADDR", "http.addr"),
    ("BUSBAR_MAX_BODY_BYTES", "http.max_body_bytes"),
    ("BUSBAR_MAX_BATCH_EVENTS", "http.max_batch_events"),
    ("BUSBAR_MAX_READ_COUNT", "http.max_read_count"),
    ("BUSBAR_JOBS_MAX_RUNNING", "jobs.max_running"),
    ("BUSBAR_HEALTH_MAX_DLQ", "health.max_dlq"),
    ("BUSBAR_HEALTH_MAX_LAG", "health.max_lag"),
    (
        "BUSBAR_ALLOW_UNAUTHENTICATED_REMOTE",
        "auth.allow_unauthenticated_remote",
    ),
    ("BUSBAR_COMMANDS_SOCKET", "commands.socket"),
    ("BUSBAR_LOG_LEVEL", "log.level"),
    ("BUSBAR_LOG_FORMAT", "log.format"),
    ("BUSBAR_LOG_FILE", "log.file"),
    ("BUSBAR_LOG_MAX_SIZE", "log.max_size"),
    ("BUSBAR_LOG_KEEP", "log.keep"),
    ("BUSBAR_MIN_FREE_DISK", "readiness.min_free_disk"),
    ("BUSBAR_AUDIT_ENABLED", "audit.enabled"),
    ("BUSBAR_AUDIT_PATH", "audit.path"),
    ("BUSBAR_AUDIT_ON_BROKEN", "audit.on_broken"),
    ("BUSBAR_OPS_ENABLED", "ops.enabled"),
    ("BUSBAR_DIAGNOSTICS_ENABLED", "ops.diagnostics"),
    ("BUSBAR_METRICS_ENABLED", "metrics.enabled"),
];

/// The runbooks' own names for some switches, read when the `BUSBAR_*`
/// variable beside them is unset: `(alias, BUSBAR_* variable)`. A
/// `BUSBAR_*` variable wins over its alias; both win over the file.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("LOG_LEVEL", "BUSBAR_LOG_LEVEL"),
    ("OPS_UI_ENABLED", "BUSBAR_OPS_ENABLED"),
    ("DIAGNOSTICS_ENABLED", "BUSBAR_DIAGNOSTICS_ENABLED"),
    ("METRICS_ENABLED", "BUSBAR_METRICS_ENABLED"),
];

/// `BUSBAR_*` variables busbar's commands read besides the configuration's
/// own ([`ENV_VARS`]): the config file, and the CLI's daemon URL and token.
pub const OTHER_ENV_VARS: &[&str] = &["BUSBAR_CONFIG", "BUSBAR_URL", "BUSBAR_TOKEN"];

/// The `BUSBAR_*` variables among `names` that busbar does not read: a
/// typo (`BUSBAR_DURABILTY`) or a variable of another version. An unknown
/// TOML key is an error; an unknown variable is warned about at start-up,
/// since the environment is shared with other programs.
pub fn unknown_env_vars(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut unknown: Vec<String> = names
        .into_iter()
        .filter(|n| n.starts_with("BUSBAR_"))
        .filter(|n| !ENV_VARS.iter().any(|(v, _)| v == n) && !OTHER_ENV_VARS.contains(&n.as_str()))
        .collect();
    unknown.sort();
    unknown
}

fn parse<T: FromStr>(v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.trim().parse().map_err(|e: T::Err| e.to_string())
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

fn setter(var: &str) -> Option<Setter> {
    let f: Setter = match var {
        "BUSBAR_STORAGE_BACKEND" => |c, v| {
            c.storage.backend = parse(v)?;
            Ok(())
        },
        "BUSBAR_DATA_DIR" => |c, v| {
            c.storage.data_dir = PathBuf::from(v);
            Ok(())
        },
        "BUSBAR_DURABILITY" => |c, v| {
            c.storage.durability = parse(v)?;
            Ok(())
        },
        "BUSBAR_SEGMENT_SIZE" => |c, v| {
            c.storage.segment_size = parse(v)?;
            Ok(())
        },
        "BUSBAR_ON_CORRUPTION" => |c, v| {
            c.storage.on_corruption = parse(v)?;
            Ok(())
        },
        "BUSBAR_STORAGE_RESERVE" => |c, v| {
            c.storage.reserve = parse(v)?;
            Ok(())
        },
        "BUSBAR_DEDUP_WINDOW" => |c, v| {
            c.storage.dedup_window = parse(v)?;
            Ok(())
        },
        "BUSBAR_EVENTS_SOCKET" => |c, v| {
            c.ingest.socket = Some(PathBuf::from(v));
            Ok(())
        },
        "BUSBAR_TCP_ADDR" => |c, v| {
            c.ingest.tcp_addr = parse(v)?;
            Ok(())
        },
        "BUSBAR_MAX_LINE_BYTES" => |c, v| {
            c.ingest.max_line_bytes = parse(v)?;
            Ok(())
        },
        "BUSBAR_MAX_CONNECTIONS" => |c, v| {
            c.ingest.max_connections = parse(v)?;
            Ok(())
        },
        "BUSBAR_MAX_DEPTH" => |c, v| {
            c.ingest.max_depth = parse(v)?;
            Ok(())
        },
        "BUSBAR_GROUP_SWEEP_INTERVAL" => |c, v| {
            c.groups.sweep_interval = parse(v)?;
            Ok(())
        },
        "BUSBAR_HTTP_ADDR" => |c, v| {
            c.http.addr = parse(v)?;
            Ok(())
        },
        "BUSBAR_MAX_BODY_BYTES" => |c, v| {
            c.http.max_body_bytes = parse(v)?;
            Ok(())
        },
        "BUSBAR_MAX_BATCH_EVENTS" => |c, v| {
            c.http.max_batch_events = parse(v)?;
            Ok(())
        },
        "BUSBAR_MAX_READ_COUNT" => |c, v| {
            c.http.max_read_count = parse(v)?;
            Ok(())
        },
        "BUSBAR_JOBS_MAX_RUNNING" => |c, v| {
            c.jobs.max_running = parse(v)?;
            Ok(())
        },
        "BUSBAR_HEALTH_MAX_DLQ" => |c, v| {
            c.health.max_dlq = parse(v)?;
            Ok(())
        },
        "BUSBAR_HEALTH_MAX_LAG" => |c, v| {
            c.health.max_lag = parse(v)?;
            Ok(())
        },
        "BUSBAR_ALLOW_UNAUTHENTICATED_REMOTE" => |c, v| {
            c.auth.allow_unauthenticated_remote = parse_bool(v)?;
            Ok(())
        },
        "BUSBAR_COMMANDS_SOCKET" => |c, v| {
            c.commands.socket = Some(PathBuf::from(v));
            Ok(())
        },
        "BUSBAR_LOG_LEVEL" => |c, v| {
            c.log.level = v.trim().to_owned();
            Ok(())
        },
        "BUSBAR_LOG_FORMAT" => |c, v| {
            c.log.format = parse(v)?;
            Ok(())
        },
        "BUSBAR_LOG_FILE" => |c, v| {
            c.log.file = Some(PathBuf::from(v));
            Ok(())
        },
        "BUSBAR_LOG_MAX_SIZE" => |c, v| {
            c.log.max_size = parse(v)?;
            Ok(())
        },
        "BUSBAR_LOG_KEEP" => |c, v| {
            c.log.keep = parse(v)?;
            Ok(())
        },
        "BUSBAR_MIN_FREE_DISK" => |c, v| {
            c.readiness.min_free_disk = parse(v)?;
            Ok(())
        },
        "BUSBAR_AUDIT_ENABLED" => |c, v| {
            c.audit.enabled = parse_bool(v)?;
            Ok(())
        },
        "BUSBAR_AUDIT_PATH" => |c, v| {
            c.audit.path = Some(PathBuf::from(v));
            Ok(())
        },
        "BUSBAR_AUDIT_ON_BROKEN" => |c, v| {
            c.audit.on_broken = parse(v)?;
            Ok(())
        },
        "BUSBAR_OPS_ENABLED" => |c, v| {
            c.ops.enabled = parse_bool(v)?;
            Ok(())
        },
        "BUSBAR_DIAGNOSTICS_ENABLED" => |c, v| {
            c.ops.diagnostics = parse_bool(v)?;
            Ok(())
        },
        "BUSBAR_METRICS_ENABLED" => |c, v| {
            c.metrics.enabled = parse_bool(v)?;
            Ok(())
        },
        _ => return None,
    };
    Some(f)
}

pub(crate) fn apply(
    config: &mut Config,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    // An empty variable counts as unset, the way shells export them.
    let set = |name: &str| lookup(name).filter(|v| !v.is_empty());
    for &(busbar_var, key) in ENV_VARS {
        let alias = ENV_ALIASES
            .iter()
            .find(|(_, target)| *target == busbar_var)
            .map(|(alias, _)| *alias);
        // The error names the variable the value came from.
        let (var, value) = match (set(busbar_var), alias) {
            (Some(value), _) => (busbar_var, value),
            (None, Some(alias)) => match set(alias) {
                Some(value) => (alias, value),
                None => continue,
            },
            (None, None) => continue,
        };
        let Some(apply) = setter(busbar_var) else {
            continue;
        };
        apply(config, &value).map_err(|reason| ConfigError::Env {
            var,
            key,
            value: value.clone(),
            reason,
        })?;
    }
    Ok(())
}
