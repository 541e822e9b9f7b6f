//! The kit against a stand-in for `busbar serve`: a shell script that
//! takes the same arguments, writes `addresses.json` the way the daemon
//! does, logs to standard error and exits 0 on SIGTERM.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use busbar_testkit::{Addresses, Daemon, Error, Options};

/// The stand-in, written once: a script written while another test thread
/// forks could not be executed ("text file busy"). `FAKE_BODY` is what it
/// runs after reading its arguments (`$data` is the data directory,
/// `$config` the config file, if any).
fn stand_in() -> &'static Path {
    static SCRIPT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = SCRIPT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake-busbar");
        std::fs::write(&path, SCRIPT_TEXT).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, path)
    });
    path
}

const SCRIPT_TEXT: &str = r#"#!/bin/sh
shift
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) data="$2"; shift ;;
    --config) config="$2"; shift ;;
    *) echo "arg $1" >&2 ;;
  esac
  shift
done
ready() {
  mkdir -p "$data/run"
  printf '{"pid":%s,"backend":"memory","tcp":"127.0.0.1:1","http":"127.0.0.1:2","events_socket":"%s","commands_socket":"%s"}' \
    $$ "$data/sock/events.sock" "$data/sock/commands.sock" > "$data/run/addresses.json.tmp"
  mv "$data/run/addresses.json.tmp" "$data/run/addresses.json"
}
trap 'echo "stopping" >&2; exit 0' TERM
echo "level $BUSBAR_LOG_LEVEL durability ${BUSBAR_DURABILITY:-unset}" >&2
eval "$FAKE_BODY"
"#;

/// Options starting the stand-in with `body`.
fn fake(body: &str) -> Options {
    Options::new(stand_in()).env("FAKE_BODY", body)
}

const SERVE: &str = "ready; while :; do sleep 0.02; done";

#[test]
fn waits_for_the_addresses_of_its_own_child() {
    let dir = tempfile::tempdir().unwrap();
    // A file left by an earlier daemon names another pid.
    let stale = dir.path().join("data/run/addresses.json");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(
        &stale,
        r#"{"pid":1,"backend":"memory","tcp":"127.0.0.1:9","http":"127.0.0.1:9","events_socket":"x","commands_socket":"y"}"#,
    )
    .unwrap();

    let options = fake(&format!("sleep 0.3; {SERVE}"))
        .args(["--memory"])
        .env("BUSBAR_DURABILITY", "always")
        .log_level("warn");
    let mut d = Daemon::start_in(dir.path(), &options).unwrap();
    let a: &Addresses = d.addresses();
    assert_ne!(a.pid, 1);
    assert_eq!(a.tcp.port(), 1);
    assert_eq!(d.http_url(), "http://127.0.0.1:2");
    assert_eq!(a.events_socket, dir.path().join("data/sock/events.sock"));
    let log = d.log();
    assert!(log.contains("level warn durability always"), "{log}");
    assert!(log.contains("arg --memory"), "{log}");
    assert!(log.contains("arg 127.0.0.1:0"), "ephemeral ports: {log}");

    let status = d.stop().unwrap();
    assert!(status.success());
    assert_eq!(d.stop().unwrap(), status, "a second stop only reports");
    assert!(d.log().ends_with("stopping\n"), "SIGTERM was sent");
    drop(d);
    let logs: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    assert_eq!(logs, ["daemon-1.log"]);

    // A restart on the same directory keeps the first log.
    let d = Daemon::start_in(dir.path(), &options).unwrap();
    assert!(dir.path().join("daemon-2.log").exists());
    d.kill();
}

#[test]
fn a_config_is_written_beside_the_data() {
    let options = fake(&format!("cat \"$config\" >&2; {SERVE}"));
    let d = Daemon::start(&options.config("[jobs]\nmax_running = 1\n")).unwrap();
    assert!(d.dir().join("busbar.toml").exists());
    assert!(d.log().contains("max_running = 1"));
    let dir = d.dir().to_owned();
    drop(d);
    assert!(
        !dir.exists(),
        "the temporary directory goes with the daemon"
    );
}

#[test]
fn temporary_directories_go_where_they_are_asked() {
    let parent = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(&fake(SERVE).temp_dir_in(parent.path())).unwrap();
    assert!(d.dir().starts_with(parent.path()));
    assert!(d.stop().unwrap().success());
    drop(d);
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
}

#[test]
fn an_early_exit_is_reported_with_the_log() {
    let err = Daemon::start(&fake("echo 'cannot bind' >&2; exit 3")).unwrap_err();
    let Error::Daemon { what, log } = &err else {
        panic!("{err}");
    };
    assert!(what.contains("exited"), "{what}");
    assert!(log.contains("cannot bind"), "{log}");
}

#[test]
fn a_missing_executable_is_a_spawn_error() {
    let err = Daemon::start(&Options::new("/nonexistent/busbar")).unwrap_err();
    assert!(matches!(err, Error::Spawn { .. }), "{err}");
}
