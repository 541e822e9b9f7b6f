//! `busbar doctor` against a healthy daemon and broken ones.

use std::path::Path;

use busbar_config::Addresses;
use serde_json::Value;

use crate::harness::{options, read_all, start_in};

/// `busbar doctor --json` on the data directory under `dir`: (exit
/// success, report, stderr).
fn doctor(dir: &Path, token: Option<&str>) -> (bool, Value, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_busbar"));
    command
        .args(["doctor", "--json", "--timeout", "3s", "--data-dir"])
        .arg(dir.join("data"))
        .env_remove("BUSBAR_URL")
        .env_remove("BUSBAR_TOKEN")
        .env_remove("BUSBAR_CONFIG");
    if let Some(t) = token {
        command.args(["--token", t]);
    }
    let out = command.output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (
        out.status.success(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn result_of<'a>(report: &'a Value, check: &str) -> (&'a str, &'a str) {
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no {check} in {report}"));
    (c["result"].as_str().unwrap(), c["detail"].as_str().unwrap())
}

#[test]
fn a_healthy_daemon_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(
        dir.path(),
        &options().config(
            "[[auth.tokens]]\nname = \"ops\"\nsecret = \"ops-secret-0123\"\nscopes = [\"publish\", \"consume\", \"admin\"]\n",
        ),
    );
    let (ok, report, stderr) = doctor(dir.path(), Some("ops-secret-0123"));
    assert!(ok, "{report} {stderr}");
    for check in [
        "daemon",
        "unix",
        "tcp",
        "http",
        "websocket",
        "readyz",
        "commands",
    ] {
        assert_eq!(result_of(&report, check).0, "pass", "{check}: {report}");
    }
    let (relay, detail) = result_of(&report, "relay");
    assert_eq!(relay, "skip");
    assert!(detail.contains("no sinks configured"), "{detail}");
    let disk = result_of(&report, "disk").0;
    if d.addresses().backend == "memory" {
        assert_eq!(disk, "skip");
    } else {
        assert_eq!(disk, "pass", "{report}");
    }
    // The probes went to their own stream, one per transport.
    let probes = read_all(&d, "busbar-doctor", Some("ops-secret-0123"));
    let transports: Vec<&str> = probes
        .iter()
        .map(|e| e["data"]["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports, ["unix", "tcp", "http", "websocket"]);
    assert!(probes.iter().all(|e| e["type"] == "busbar.doctor.probe"));
    assert!(read_all(&d, "events", Some("ops-secret-0123")).is_empty());

    // Without the token, the transports that need one fail, by name.
    let (ok, report, stderr) = doctor(dir.path(), None);
    assert!(!ok);
    // The trusted socket publishes, but reading back needs the token.
    let (unix, detail) = result_of(&report, "unix");
    assert_eq!(unix, "fail");
    assert!(detail.contains("reading it back failed"), "{detail}");
    let (tcp, detail) = result_of(&report, "tcp");
    assert_eq!(tcp, "fail");
    assert!(detail.contains("unauthenticated"), "{detail}");
    assert!(stderr.contains("tcp"), "{stderr}");
}

#[test]
fn a_closed_tcp_port_fails_the_tcp_check() {
    let dir = tempfile::tempdir().unwrap();
    let _d = start_in(dir.path(), &options());
    let run_file = Addresses::path(&dir.path().join("data"));
    let mut addresses: Addresses =
        serde_json::from_slice(&std::fs::read(&run_file).unwrap()).unwrap();
    // A port nothing listens on any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    addresses.tcp = closed.local_addr().unwrap();
    drop(closed);
    std::fs::write(&run_file, serde_json::to_vec(&addresses).unwrap()).unwrap();

    let (ok, report, stderr) = doctor(dir.path(), None);
    assert!(!ok, "{report}");
    assert_eq!(report["failed"], serde_json::json!(["tcp"]), "{report}");
    let (_, detail) = result_of(&report, "tcp");
    assert!(detail.contains("cannot connect"), "{detail}");
    assert!(stderr.contains("failed: tcp"), "{stderr}");
    assert_eq!(result_of(&report, "unix").0, "pass");
}

#[test]
fn a_removed_socket_file_fails_the_unix_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_in(dir.path(), &options());
    std::fs::remove_file(&d.addresses().events_socket).unwrap();
    let (ok, report, _) = doctor(dir.path(), None);
    assert!(!ok);
    assert_eq!(report["failed"], serde_json::json!(["unix"]), "{report}");
    assert!(result_of(&report, "unix").1.contains("removed"), "{report}");
}

#[test]
fn no_daemon_fails_naming_the_run_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, report, stderr) = doctor(dir.path(), None);
    assert!(!ok);
    assert_eq!(report["failed"], serde_json::json!(["daemon"]));
    assert!(result_of(&report, "daemon").1.contains("addresses.json"));
    assert!(stderr.contains("daemon"), "{stderr}");
}
