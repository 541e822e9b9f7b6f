//! `busbar cmd reload`, SIGHUP, `busbar cmd log-level` and the runbooks'
//! switches, through the real daemon.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{eventually, http, options, start_in, Daemon};

fn tokens(name: &str, secret: &str) -> String {
    format!(
        "[[auth.tokens]]\nname = \"{name}\"\nsecret = \"{secret}\"\nscopes = [\"publish\", \"consume\", \"admin\"]\n"
    )
}

/// `busbar cmd <args> --json` against `d`: (exit success, answer).
fn cmd(d: &Daemon, args: &[&str]) -> (bool, Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .arg("cmd")
        .args(args)
        .arg("--json")
        .arg("--data-dir")
        .arg(d.dir().join("data"))
        .env_remove("BUSBAR_COMMANDS_SOCKET")
        .env_remove("BUSBAR_CONFIG")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

fn status_with(d: &Daemon, token: &str) -> u16 {
    http(d, "GET", "/api/streams", Some(token), None).0
}

fn rewrite(dir: &Path, toml: &str) {
    std::fs::write(dir.join("busbar.toml"), toml).unwrap();
}

#[test]
fn reload_swaps_tokens_and_reports_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(
        dir.path(),
        &options().config(&tokens("old", "old-secret-0123")),
    );
    assert_eq!(status_with(&d, "old-secret-0123"), 200);
    assert_eq!(status_with(&d, "new-secret-0123"), 401);

    let new = format!(
        "{}[live]\nmax_delay = \"1m\"\n[storage]\nsegment_size = \"1 MiB\"\n",
        tokens("new", "new-secret-0123")
    );
    rewrite(dir.path(), &new);
    let (ok, answer) = cmd(&d, &["reload"]);
    assert!(ok, "{answer}");
    assert_eq!(
        answer["applied"],
        serde_json::json!(["live.max_delay", "auth.tokens"])
    );
    assert_eq!(
        answer["restart_required"],
        serde_json::json!(["storage.segment_size"])
    );
    assert_eq!(status_with(&d, "old-secret-0123"), 401);
    assert_eq!(status_with(&d, "new-secret-0123"), 200);

    // Nothing new: the restart key is still reported, nothing applied.
    let (ok, again) = cmd(&d, &["reload"]);
    assert!(ok);
    assert_eq!(again["applied"], serde_json::json!([]));
    assert_eq!(
        again["restart_required"],
        serde_json::json!(["storage.segment_size"])
    );

    let log = d.log();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(log.contains("auth.tokens"), "{log}");
    assert!(!log.contains("new-secret-0123"), "a secret was logged");
}

#[test]
fn an_invalid_file_is_refused_and_the_old_config_stays() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(
        dir.path(),
        &options().config(&tokens("old", "old-secret-0123")),
    );
    for (bad, reason) in [
        ("[auth\nnope", "invalid config file"),
        ("[ingest]\nmax_conections = 3\n", "max_conections"),
        (
            "[[auth.tokens]]\nname = \"x\"\nsecret = \"short\"\nscopes = [\"admin\"]\n",
            "auth.tokens.secret",
        ),
        (
            "[http]\nmax_read_count = 0\n[[auth.tokens]]\nname = \"x\"\nsecret = \"0123456789\"\nscopes = [\"admin\"]\n",
            "http.max_read_count",
        ),
    ] {
        rewrite(dir.path(), bad);
        let (ok, answer) = cmd(&d, &["reload"]);
        assert!(!ok, "{bad}: {answer}");
        assert_eq!(answer["error"], "invalid_config");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(reason), "{bad}: {message}");
        assert_eq!(status_with(&d, "old-secret-0123"), 200, "{bad}");
    }
    assert!(d.log().contains("reload refused"));
}

#[test]
fn sighup_reloads_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(
        dir.path(),
        &options().config(&tokens("old", "old-secret-0123")),
    );
    let hup = |d: &Daemon| {
        // SAFETY: kill only sends a signal to the daemon this test started.
        let sent = unsafe { libc::kill(d.addresses().pid as libc::pid_t, libc::SIGHUP) };
        assert_eq!(sent, 0);
    };
    rewrite(dir.path(), "this is not toml");
    hup(&d);
    eventually("the refusal in the log", || {
        d.log().contains("reload refused")
    });
    assert_eq!(status_with(&d, "old-secret-0123"), 200);

    rewrite(dir.path(), &tokens("new", "new-secret-0123"));
    hup(&d);
    eventually("the new token", || {
        status_with(&d, "new-secret-0123") == 200
    });
    assert_eq!(status_with(&d, "old-secret-0123"), 401);
    // Still running and answering.
    assert_eq!(cmd(&d, &["health"]).1["status"], "ok");
}

#[test]
fn log_level_changes_for_a_while_then_reverts() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    let (ok, shown) = cmd(&d, &["log-level"]);
    assert!(ok);
    assert_eq!(shown["level"], "info");
    let (ok, set) = cmd(&d, &["log-level", "debug", "--for", "1s"]);
    assert!(ok, "{set}");
    assert_eq!(
        (set["level"].as_str(), set["previous"].as_str()),
        (Some("debug"), Some("info"))
    );
    assert_eq!(cmd(&d, &["log-level"]).1["level"], "debug");
    std::thread::sleep(Duration::from_millis(1500));
    eventually("the configured level back", || {
        cmd(&d, &["log-level"]).1["level"] == "info"
    });
    let (ok, bad) = cmd(&d, &["log-level", "busbar=loud"]);
    assert!(!ok);
    assert_eq!(bad["error"], "bad_level");
    let (ok, bad) = cmd(&d, &["log-level", r#"{"level":"debug","for":"soon"}"#]);
    assert!(!ok);
    assert!(bad["message"].as_str().unwrap().contains("for"), "{bad}");
}

#[test]
fn log_file_is_written_and_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("logs/busbar.log");
    let d = start_in(
        dir.path(),
        &options()
            .env("BUSBAR_LOG_FILE", &file)
            .env("BUSBAR_LOG_MAX_SIZE", "4 KiB")
            .env("BUSBAR_LOG_KEEP", "2"),
    );
    // Each rotation logs a line with its reason.
    for n in 0..80 {
        let reason = format!(
            "{{\"reason\":\"padding the log file {n} {}\"}}",
            "x".repeat(60)
        );
        assert!(cmd(&d, &["rotate", &reason]).0);
    }
    eventually("rotated files", || file.with_extension("log.2").exists());
    assert!(!file.with_extension("log.3").exists(), "keep = 2");
    let all = std::fs::read_to_string(&file).unwrap()
        + &std::fs::read_to_string(file.with_extension("log.1")).unwrap();
    assert!(all.contains("padding the log file 79"), "{all}");
}

#[test]
fn the_runbooks_switches_turn_routes_off() {
    let dir = tempfile::tempdir().unwrap();
    let on = start_in(dir.path(), &options());
    assert_eq!(http(&on, "GET", "/api/ops/sessions", None, None).0, 200);
    assert_eq!(on.http("GET", "/metrics", None, None).unwrap().0, 200);
    drop(on);
    let dir = tempfile::tempdir().unwrap();
    let off = start_in(
        dir.path(),
        &options()
            .env("OPS_UI_ENABLED", "0")
            .env("METRICS_ENABLED", "false"),
    );
    assert_eq!(http(&off, "GET", "/api/ops/sessions", None, None).0, 404);
    assert_eq!(off.http("GET", "/metrics", None, None).unwrap().0, 404);
    assert_eq!(http(&off, "GET", "/readyz", None, None).0, 200);
}
