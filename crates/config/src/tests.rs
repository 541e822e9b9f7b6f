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
fn defaults_follow_the_design() {
    let c = Config::default();
    assert_eq!(c.storage.backend, Backend::Embedded);
    assert_eq!(c.storage.durability, Durability::Always);
    assert_eq!(c.ingest.tcp_addr.to_string(), "127.0.0.1:9478");
    assert_eq!(c.http.addr.to_string(), "127.0.0.1:9479");
    assert_eq!(c.ingest.max_line_bytes.bytes(), 1 << 20);
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
        ]))
        .unwrap();
    assert_eq!(c.storage.data_dir, PathBuf::from("/from/env"));
    assert_eq!(
        c.storage.durability,
        Durability::Interval(std::time::Duration::from_millis(100))
    );
    assert_eq!(c.storage.backend, Backend::Memory);
    assert_eq!(c.ingest.max_line_bytes, ByteSize::kib(64));
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
        "#,
        "t",
    )
    .unwrap();
    with_token.validate().unwrap();
    assert_eq!(
        with_token.auth.tokens[0].scopes,
        [Scope::Admin, Scope::Publish]
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
