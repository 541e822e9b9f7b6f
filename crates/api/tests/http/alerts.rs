//! The runbook's alert thresholds, written as Prometheus rules over the
//! metrics busbar exports (`deploy/prometheus/busbar-alerts.yml`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use crate::common::Server;

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

/// Every `busbar_*` metric an expression names, without the histogram
/// series suffixes.
fn referenced_metrics(rules: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
    {
        let mut rest = line;
        while let Some(at) = rest.find("busbar_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(base.to_owned());
            rest = &tail[end..];
        }
    }
    names
}

#[tokio::test]
async fn alert_rules_use_exported_metrics() {
    let rules = std::fs::read_to_string(rules_dir().join("busbar-alerts.yml")).unwrap();
    let names = referenced_metrics(&rules);
    for expected in [
        "busbar_dlq_length",
        "busbar_group_lag",
        "busbar_group_dead_lettered_total",
        "busbar_group_processing_seconds",
    ] {
        assert!(names.contains(expected), "no rule on {expected}: {names:?}");
    }
    let server = Server::open().await;
    let metrics = server.get("/metrics").send().await.expect(200).text();
    for name in &names {
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "the rules use {name}, which busbar does not export"
        );
    }
}

#[test]
fn alert_rules_pass_promtool() {
    let dir = rules_dir();
    let check = Command::new("promtool")
        .args(["check", "rules", "busbar-alerts.yml"])
        .current_dir(&dir)
        .output();
    let Ok(check) = check else {
        eprintln!(
            "SKIPPED alert_rules_pass_promtool: promtool is not on PATH \
             (Debian: apt-get install prometheus)"
        );
        return;
    };
    assert!(
        check.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // The thresholds fire where the runbook says, and not before.
    let test = Command::new("promtool")
        .args(["test", "rules", "busbar-alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}
