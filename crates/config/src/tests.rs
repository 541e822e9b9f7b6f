use std::collections::HashMap;

use busbar_engine::Scope;
use busbar_store::Durability;

use super::*;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn example_file_parses_to_the_defaults() {
    let text = include_str!("../../../busbar.example.toml");
    let config = Config::from_toml_str(text, "busbar.example.toml").unwrap();
    assert_eq!(config, Config::default());
    config.validate().unwrap();
}

#[test]
fn example_file_names_every_environment_variable() {
    let text = include_str!("../../../busbar.example.toml");
    for (var, key) in ENV_VARS {
        assert!(
            text.contains(var),
            "busbar.example.toml does not name {var} ({key})"
        );
    }
}

#[test]
fn defaults_follow_the_design() {
    let c = Config::default();
    assert_eq!(c.storage.backend, Backend::Embedded);
    assert_eq!(c.storage.durability, Durability::Always);
    assert_eq!(c.ingest.tcp_addr.to_string(), "127.0.0.1:9478");
    assert_eq!(c.http.addr.to_string(), "127.0.0.1:9479");
    assert_eq!(c.ingest.max_line_bytes.bytes(), 1 << 20);
    assert_eq!(c.storage.reserve, ByteSize::mib(64));
    assert_eq!(
        c.storage.dedup_window.0,
        std::time::Duration::from_secs(120)
    );
    assert_eq!(c.storage.dedup_max_keys, 100_000);
    assert_eq!(c.groups.sweep_interval.0, std::time::Duration::from_secs(1));
    assert_eq!(c.events_socket(), PathBuf::from("data/sock/events.sock"));
    assert_eq!(
        c.commands_socket(),
        PathBuf::from("data/sock/commands.sock")
    );
}

#[test]
fn env_overrides_the_file() {
    let file = r#"
        [storage]
        data_dir = "/from/file"
        durability = "never"
        [log]
        format = "json"
    "#;
    let c = Config::from_toml_str(file, "t")
        .unwrap()
        .with_env(env(&[
            ("BUSBAR_DATA_DIR", "/from/env"),
            ("BUSBAR_DURABILITY", "interval:100ms"),
            ("BUSBAR_STORAGE_BACKEND", "memory"),
            ("BUSBAR_MAX_LINE_BYTES", "64 KiB"),
            ("BUSBAR_STORAGE_RESERVE", "0"),
            ("BUSBAR_DEDUP_WINDOW", "0s"),
        ]))
        .unwrap();
    assert_eq!(c.storage.data_dir, PathBuf::from("/from/env"));
    assert_eq!(
        c.storage.durability,
        Durability::Interval(std::time::Duration::from_millis(100))
    );
    assert_eq!(c.storage.backend, Backend::Memory);
    assert_eq!(c.ingest.max_line_bytes, ByteSize::kib(64));
    assert_eq!(c.storage.reserve, ByteSize(0));
    assert!(c.storage.dedup_window.0.is_zero());
    assert_eq!(c.log.format, LogFormat::Json);
    // Derived socket paths follow the data directory that won.
    assert_eq!(
        c.events_socket(),
        PathBuf::from("/from/env/sock/events.sock")
    );
}

#[test]
fn bad_env_value_names_the_variable_and_key() {
    let err = Config::default()
        .with_env(env(&[("BUSBAR_DURABILITY", "sometimes")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("BUSBAR_DURABILITY"), "{err}");
    assert!(err.contains("storage.durability"), "{err}");
}

#[test]
fn bad_file_value_quotes_the_key() {
    let err = Config::from_toml_str("[ingest]\nmax_line_bytes = \"lots\"\n", "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_line_bytes"), "{err}");
    assert!(err.contains("invalid size"), "{err}");
    let err = Config::from_toml_str("[ingest]\nmax_line_byte = 10\n", "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn remote_bind_without_tokens_is_refused() {
    let c = Config::default()
        .with_env(env(&[("BUSBAR_TCP_ADDR", "0.0.0.0:9478")]))
        .unwrap();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("ingest.tcp_addr"), "{err}");
    assert!(err.contains("allow_unauthenticated_remote"), "{err}");

    let allowed = c
        .clone()
        .with_env(env(&[("BUSBAR_ALLOW_UNAUTHENTICATED_REMOTE", "true")]))
        .unwrap();
    allowed.validate().unwrap();

    let with_token = Config::from_toml_str(
        r#"
        [http]
        addr = "0.0.0.0:9479"
        [[auth.tokens]]
        name = "ops"
        secret = "0123456789abcdef"
        scopes = ["admin", "publish"]
        tenant = "acme"
        [[auth.tokens]]
        name = "prometheus"
        secret = "fedcba9876543210"
        scopes = ["metrics", "director"]
        "#,
        "t",
    )
    .unwrap();
    with_token.validate().unwrap();
    assert_eq!(
        with_token.auth.tokens[0].scopes,
        [Scope::Admin, Scope::Publish]
    );
    assert_eq!(
        with_token.auth.tokens[1].scopes,
        [Scope::Metrics, Scope::Director]
    );
    // Debug output never carries a secret.
    assert!(!format!("{with_token:?}").contains("0123456789abcdef"));
}

#[test]
fn invalid_ranges_are_refused() {
    let mut c = Config::default();
    c.ingest.max_connections = 0;
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("ingest.max_connections"), "{err}");
}

#[test]
fn max_depth_comes_from_file_or_env_within_2_to_100() {
    assert_eq!(Config::default().ingest.max_depth, 64);
    let c = Config::from_toml_str("[ingest]\nmax_depth = 10", "inline").unwrap();
    assert_eq!(c.ingest.max_depth, 10);
    c.validate().unwrap();
    let c = c.with_env(env(&[("BUSBAR_MAX_DEPTH", "100")])).unwrap();
    assert_eq!(c.ingest.max_depth, 100);
    c.validate().unwrap();
    for bad in [0, 1, 101, 100_000] {
        let mut c = Config::default();
        c.ingest.max_depth = bad;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("ingest.max_depth"), "{bad}: {err}");
        assert!(err.contains("between 2 and 100"), "{bad}: {err}");
    }
    let err = Config::default()
        .with_env(env(&[("BUSBAR_MAX_DEPTH", "deep")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("BUSBAR_MAX_DEPTH"), "{err}");
}

#[test]
fn group_sweep_interval_comes_from_file_or_env_and_is_positive() {
    let c = Config::from_toml_str("[groups]\nsweep_interval = \"250ms\"", "inline").unwrap();
    assert_eq!(c.groups.sweep_interval.0.as_millis(), 250);
    let c = c
        .with_env(env(&[("BUSBAR_GROUP_SWEEP_INTERVAL", "2s")]))
        .unwrap();
    assert_eq!(c.groups.sweep_interval.0.as_secs(), 2);
    let zero = Config::from_toml_str("[groups]\nsweep_interval = \"0s\"", "inline").unwrap();
    let err = zero.validate().unwrap_err().to_string();
    assert!(err.contains("groups.sweep_interval"), "{err}");
}

#[test]
fn engine_limit_defaults_are_the_engines() {
    let c = Config::default();
    let engine = busbar_engine::EngineConfig::default();
    assert_eq!(c.http.max_batch_events, engine.max_batch_events);
    assert_eq!(c.http.max_read_count, engine.max_read_count);
    let jobs = &engine.jobs;
    assert_eq!(
        (
            c.jobs.max_running,
            c.jobs.history,
            c.jobs.default_rate,
            c.jobs.max_rate
        ),
        (
            jobs.max_running,
            jobs.history,
            jobs.default_rate,
            jobs.max_rate
        )
    );
    assert_eq!(
        (c.health.max_dlq, c.health.max_lag),
        (engine.health.max_dlq, engine.health.max_lag)
    );
}

#[test]
fn engine_limits_come_from_file_then_env() {
    let file = r#"
        [http]
        max_batch_events = 500
        max_read_count = 2000
        [jobs]
        max_running = 1
        history = 10
        default_rate = 50
        max_rate = 200
        [health]
        max_dlq = 0
        max_lag = 25
    "#;
    let c = Config::from_toml_str(file, "t").unwrap();
    assert_eq!(
        (c.http.max_batch_events, c.http.max_read_count),
        (500, 2000)
    );
    assert_eq!(
        c.jobs,
        JobsSection {
            max_running: 1,
            history: 10,
            default_rate: 50,
            max_rate: 200,
        }
    );
    assert_eq!(
        c.health,
        HealthSection {
            max_dlq: 0,
            max_lag: 25,
        }
    );
    c.validate().unwrap();

    let c = c
        .with_env(env(&[
            ("BUSBAR_MAX_BATCH_EVENTS", "100"),
            ("BUSBAR_MAX_READ_COUNT", "1000"),
            ("BUSBAR_JOBS_MAX_RUNNING", "3"),
            ("BUSBAR_HEALTH_MAX_DLQ", "7"),
            ("BUSBAR_HEALTH_MAX_LAG", "70"),
        ]))
        .unwrap();
    assert_eq!(
        (c.http.max_batch_events, c.http.max_read_count),
        (100, 1000)
    );
    assert_eq!(c.jobs.max_running, 3);
    // Keys without a variable keep the file's value.
    assert_eq!(c.jobs.max_rate, 200);
    assert_eq!((c.health.max_dlq, c.health.max_lag), (7, 70));

    let err = Config::default()
        .with_env(env(&[("BUSBAR_JOBS_MAX_RUNNING", "many")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("BUSBAR_JOBS_MAX_RUNNING"), "{err}");
    assert!(err.contains("jobs.max_running"), "{err}");
    let err = Config::from_toml_str("[jobs]\nmax_rate = -1\n", "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_rate"), "{err}");
    let err = Config::from_toml_str("[health]\nmax_dlqs = 1\n", "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn engine_limits_out_of_range_are_refused_naming_the_key() {
    let refused = |toml: &str, key: &str, why: &str| {
        let c = Config::from_toml_str(toml, "t").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(key), "{toml}: {err}");
        assert!(err.contains(why), "{toml}: {err}");
    };
    refused(
        "[jobs]\nmax_running = 0",
        "jobs.max_running",
        "greater than 0",
    );
    refused("[jobs]\nhistory = 0", "jobs.history", "greater than 0");
    refused(
        "[jobs]\ndefault_rate = 0",
        "jobs.default_rate",
        "greater than 0",
    );
    refused("[jobs]\nmax_rate = 0", "jobs.max_rate", "greater than 0");
    refused(
        "[jobs]\ndefault_rate = 2000\nmax_rate = 1000",
        "jobs.default_rate",
        "over jobs.max_rate (1000)",
    );
    refused(
        "[http]\nmax_batch_events = 0",
        "http.max_batch_events",
        "greater than 0",
    );
    refused(
        "[http]\nmax_read_count = 0",
        "http.max_read_count",
        "greater than 0",
    );
    // The boundaries themselves are fine.
    Config::from_toml_str(
        "[http]\nmax_read_count = 1\nmax_batch_events = 1\n[jobs]\ndefault_rate = 5\nmax_rate = 5",
        "t",
    )
    .unwrap()
    .validate()
    .unwrap();
}

#[test]
fn the_audit_log_lives_in_the_data_directory_unless_named() {
    let c = Config::default();
    assert!(c.audit.enabled);
    assert_eq!(c.audit_path(), PathBuf::from("data/audit/audit.log"));
    let c = Config::from_toml_str("[storage]\ndata_dir = \"/d\"\n", "t").unwrap();
    assert_eq!(c.audit_path(), PathBuf::from("/d/audit/audit.log"));
    let c = c
        .with_env(env(&[
            ("BUSBAR_AUDIT_ENABLED", "false"),
            ("BUSBAR_AUDIT_PATH", "/var/log/busbar/audit.log"),
            ("BUSBAR_AUDIT_ON_BROKEN", "new_file"),
        ]))
        .unwrap();
    assert!(!c.audit.enabled);
    assert_eq!(c.audit_path(), PathBuf::from("/var/log/busbar/audit.log"));
    assert_eq!(c.audit.on_broken, OnAuditBroken::NewFile);
    let bad = Config::default().with_env(env(&[("BUSBAR_AUDIT_ON_BROKEN", "ignore")]));
    assert!(
        matches!(
            bad,
            Err(ConfigError::Env {
                var: "BUSBAR_AUDIT_ON_BROKEN",
                ..
            })
        ),
        "{bad:?}"
    );
    let mut c = Config::default();
    c.audit.path = Some(PathBuf::from("/"));
    assert!(matches!(
        c.validate(),
        Err(ConfigError::Invalid {
            key: "audit.path",
            ..
        })
    ));
}

#[test]
fn runbook_switches_come_from_busbar_vars_or_their_aliases() {
    let c = Config::default()
        .with_env(env(&[
            ("OPS_UI_ENABLED", "0"),
            ("METRICS_ENABLED", "false"),
            ("DIAGNOSTICS_ENABLED", "no"),
            ("LOG_LEVEL", "debug"),
        ]))
        .unwrap();
    assert!(!c.ops.enabled && !c.metrics.enabled && !c.ops.diagnostics);
    assert_eq!(c.log.level, "debug");
    // The BUSBAR_* variable wins over the runbook's name.
    let c = Config::default()
        .with_env(env(&[
            ("LOG_LEVEL", "debug"),
            ("BUSBAR_LOG_LEVEL", "warn"),
            ("OPS_UI_ENABLED", "0"),
            ("BUSBAR_OPS_ENABLED", "1"),
        ]))
        .unwrap();
    assert_eq!(c.log.level, "warn");
    assert!(c.ops.enabled);
    // A bad value names the variable it came from.
    let e = Config::default()
        .with_env(env(&[("METRICS_ENABLED", "maybe")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("METRICS_ENABLED") && e.contains("metrics.enabled"),
        "{e}"
    );
    assert!(!e.contains("BUSBAR_METRICS_ENABLED"), "{e}");
}

#[test]
fn example_file_names_every_alias() {
    let text = include_str!("../../../busbar.example.toml");
    for (alias, _) in ENV_ALIASES {
        assert!(
            text.contains(alias),
            "busbar.example.toml does not name {alias}"
        );
    }
}

#[test]
fn log_file_keys_and_a_bad_level_name_the_key() {
    let c = Config::from_toml_str(
        "[log]\nfile = \"/var/log/busbar.log\"\nmax_size = \"1 MiB\"\nkeep = 2\n",
        "t",
    )
    .unwrap()
    .with_env(env(&[("BUSBAR_LOG_KEEP", "3")]))
    .unwrap();
    assert_eq!(c.log.file, Some(PathBuf::from("/var/log/busbar.log")));
    assert_eq!(c.log.max_size, ByteSize::mib(1));
    assert_eq!(c.log.keep, 3);
    c.validate().unwrap();
    let mut bad = Config::default();
    bad.log.level = "busbar=loud".to_owned();
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("log.level"), "{e}");
}

#[test]
fn unknown_busbar_variables_are_named_and_known_ones_are_not() {
    let names = [
        "BUSBAR_DURABILTY",
        "BUSBAR_DURABILITY",
        "BUSBAR_TOKEN",
        "BUSBAR_CONFIG",
        "PATH",
        "LOG_LEVEL",
        "BUSBAR_ZZZ",
    ]
    .map(str::to_owned);
    assert_eq!(
        crate::unknown_env_vars(names),
        ["BUSBAR_DURABILTY", "BUSBAR_ZZZ"]
    );
    // Every variable the config reads is known.
    assert!(crate::unknown_env_vars(ENV_VARS.iter().map(|(v, _)| (*v).to_owned())).is_empty());
}
