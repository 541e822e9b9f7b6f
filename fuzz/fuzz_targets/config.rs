//! Config parsing: TOML text, then `BUSBAR_*` overrides, then validation,
//! on any input. The input is the TOML text, optionally followed by a NUL
//! byte and `NAME=value` lines read as the environment.
//!
//! Invariants: parsing, the overrides and validation return a config or an
//! error, never panic; overrides applied twice change nothing more than
//! once; every size, duration and file mode of a parsed config prints as
//! text that parses back to the same value.

#![no_main]

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

use busbar_config::{ByteSize, Config, FileMode, HumanDuration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, env) = text.split_once('\0').unwrap_or((text, ""));
    let vars: HashMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
    let lookup = |name: &str| vars.get(name).map(|v| (*v).to_owned());

    let Ok(config) = Config::from_toml_str(toml, "fuzz") else {
        return;
    };
    round_trips(&config);
    let Ok(layered) = config.with_env(lookup) else {
        return;
    };
    round_trips(&layered);
    let again = layered
        .clone()
        .with_env(lookup)
        .expect("overrides that applied once apply again");
    assert_eq!(again, layered, "overrides applied twice changed more");
    if layered.validate().is_ok() {
        assert!(layered.ingest.max_line_bytes.bytes() >= 64);
        assert!(!layered.storage.data_dir.as_os_str().is_empty());
    }
});

fn round_trip<T>(value: T)
where
    T: Display + FromStr + PartialEq + std::fmt::Debug,
    T::Err: std::fmt::Debug,
{
    let text = value.to_string();
    let back: T = text
        .parse()
        .unwrap_or_else(|e| panic!("`{text}` does not parse back: {e:?}"));
    assert_eq!(back, value, "`{text}` parses back to another value");
}

fn duration(d: HumanDuration) {
    let text = d.to_string();
    let back: HumanDuration = text
        .parse()
        .unwrap_or_else(|e| panic!("`{text}` does not parse back: {e:?}"));
    assert_eq!(back.0, d.0, "`{text}` parses back to another duration");
}

fn round_trips(c: &Config) {
    let sizes: [ByteSize; 8] = [
        c.storage.segment_size,
        c.storage.index_interval,
        c.ingest.max_line_bytes,
        c.ingest.unauthenticated_bytes,
        c.live.max_message_bytes,
        c.http.max_body_bytes,
        c.readiness.min_free_disk,
        c.storage.retention.max_bytes.unwrap_or(ByteSize(0)),
    ];
    for size in sizes {
        round_trip(size);
    }
    let modes: [FileMode; 2] = [c.ingest.socket_mode, c.commands.socket_mode];
    for mode in modes {
        round_trip(mode);
    }
    let durations: [HumanDuration; 12] = [
        c.ingest.first_line_timeout,
        c.ingest.idle_timeout,
        c.ingest.drain_timeout,
        c.groups.sweep_interval,
        c.live.write_deadline,
        c.live.stall_timeout,
        c.live.heartbeat,
        c.live.max_delay,
        c.live.drift_warn,
        c.http.header_timeout,
        c.http.body_timeout,
        c.storage
            .retention
            .max_age
            .unwrap_or(HumanDuration(Default::default())),
    ];
    for d in durations {
        duration(d);
    }
}
