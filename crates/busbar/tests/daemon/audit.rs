//! The audit log through the real daemon: administrative actions over HTTP
//! and the command socket are recorded with the token's name (never its
//! secret), `busbar audit verify` passes, then fails once the file is
//! tampered with; a restart refuses the broken chain unless told to start
//! a new one.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::harness::{eventually, http, options, start_in, stop};

const OPS_SECRET: &str = "ops-secret-audit-0123";
const ACME_SECRET: &str = "acme-admin-secret-0123";

const TOKENS: &str = r#"
[[auth.tokens]]
name = "ops"
secret = "ops-secret-audit-0123"
scopes = ["publish", "consume", "admin"]

[[auth.tokens]]
name = "acme-admin"
secret = "acme-admin-secret-0123"
scopes = ["publish", "consume", "admin"]
tenant = "acme"
"#;

fn busbar(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("BUSBAR_CONFIG")
        .env_remove("BUSBAR_AUDIT_PATH")
        .env_remove("BUSBAR_COMMANDS_SOCKET")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The records `busbar audit show --json` prints.
fn shown(data: &Path) -> Vec<Value> {
    let out = busbar(&["audit", "show", "--json", "--limit", "1000"], data);
    assert!(out.status.success(), "{out:?}");
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn post(d: &busbar_testkit::Daemon, path: &str, token: &str, body: &str) -> u16 {
    let (status, text) = http(d, "POST", path, Some(token), Some(body.as_bytes()));
    assert!(status < 500, "{path}: {status} {text}");
    status
}

#[test]
fn admin_actions_are_audited_verified_and_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let opts = options().config(TOKENS).env("BUSBAR_AUDIT_ENABLED", "true");
    let d = start_in(dir.path(), &opts);

    let events = r#"[{"type":"a"},{"type":"b"},{"type":"c"},{"type":"d"}]"#;
    assert_eq!(
        post(&d, "/api/streams/orders/events", OPS_SECRET, events),
        201
    );
    assert_eq!(
        post(
            &d,
            "/api/streams/orders/groups",
            OPS_SECRET,
            r#"{"name":"billing"}"#
        ),
        201
    );
    assert_eq!(
        post(
            &d,
            "/api/streams/orders/trim",
            OPS_SECRET,
            r#"{"maxlen":2}"#
        ),
        200
    );
    assert_eq!(
        post(
            &d,
            "/api/streams/orders/dlq/purge",
            OPS_SECRET,
            r#"{"confirm":true}"#
        ),
        200
    );
    assert_eq!(
        post(
            &d,
            "/api/streams/orders/groups/billing/pause",
            OPS_SECRET,
            "{}"
        ),
        200
    );
    assert_eq!(post(&d, "/api/consumers/pause", ACME_SECRET, "{}"), 200);
    // Refused: nothing changed, nothing recorded.
    assert_eq!(
        post(
            &d,
            "/api/streams/orders/trim",
            ACME_SECRET,
            r#"{"maxlen":0}"#
        ),
        403
    );
    let rotated = busbar(&["cmd", "rotate", r#"{"reason":"audit test"}"#], &data);
    assert!(rotated.status.success(), "{rotated:?}");

    let expected = [
        ("group.create", "token", Some("ops"), None, "orders/billing"),
        ("stream.trim", "token", Some("ops"), None, "orders"),
        ("dlq.purge", "token", Some("ops"), None, "orders"),
        ("group.pause", "token", Some("ops"), None, "orders/billing"),
        (
            "delivery.pause",
            "token",
            Some("acme-admin"),
            Some("acme"),
            "*",
        ),
        ("stream.rotate", "trusted", None, None, "*"),
    ];
    eventually("every audit record", || {
        shown(&data).len() == expected.len()
    });
    let records = shown(&data);
    for (r, (action, kind, name, tenant, target)) in records.iter().zip(expected) {
        assert_eq!(r["action"], action, "{r}");
        assert_eq!(r["actor"]["kind"], kind, "{r}");
        assert_eq!(r["actor"]["name"].as_str(), name, "{r}");
        assert_eq!(r["actor"]["tenant"].as_str(), tenant, "{r}");
        assert_eq!(r["target"], target, "{r}");
    }
    assert_eq!(records[1]["params"]["removed"], 2);
    assert_eq!(records[1]["params"]["trim"]["max_len"], 2);
    let file = std::fs::read_to_string(data.join("audit/audit.log")).unwrap();
    for secret in [OPS_SECRET, ACME_SECRET] {
        assert!(!file.contains(secret), "a token secret is in the audit log");
    }

    // The filter and the human form.
    let purges = busbar(&["audit", "show", "--action", "dlq"], &data);
    let purges = stdout(&purges);
    assert_eq!(purges.lines().count(), 1, "{purges}");
    assert!(
        purges.contains("dlq.purge") && purges.contains("token:ops"),
        "{purges}"
    );

    // Intact: verify prints the head, which the metric shows too.
    let out = busbar(&["audit", "verify", "--json"], &data);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["head"]["seq"], 6);
    let hash = v["head"]["hash"].as_str().unwrap().to_owned();
    let metrics = d.metrics_as(Some(OPS_SECRET)).unwrap();
    assert!(
        metrics.contains(&format!("busbar_audit_head{{hash=\"{}\"}} 6", &hash[..16])),
        "{metrics}"
    );
    assert!(
        metrics.contains("busbar_audit_records_total 6"),
        "{metrics}"
    );
    let head = format!("6:{hash}");
    let out = busbar(&["audit", "verify", "--expect-head", &head], &data);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains(&head));

    assert!(stop(d).success());

    // Cut at a record boundary: a valid shorter chain, caught only
    // against the remembered head.
    let log = data.join("audit/audit.log");
    let original = std::fs::read_to_string(&log).unwrap();
    let kept: String = original.lines().take(5).map(|l| format!("{l}\n")).collect();
    std::fs::write(&log, &kept).unwrap();
    assert!(busbar(&["audit", "verify"], &data).status.success());
    let out = busbar(&["audit", "verify", "--expect-head", &head], &data);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("record 6"), "{}", stdout(&out));

    // An edited record: verify names it.
    let edited = original.replacen("\"removed\":2", "\"removed\":0", 1);
    std::fs::write(&log, &edited).unwrap();
    let out = busbar(&["audit", "verify"], &data);
    assert!(!out.status.success());
    let report = stdout(&out);
    assert!(report.contains("record 2 (line 2"), "{report}");
    assert!(report.contains("hash mismatch"), "{report}");

    // The daemon refuses to continue a broken chain...
    let refused = busbar_testkit::Daemon::start_in(dir.path(), &opts);
    let err = refused
        .expect_err("a broken audit chain is refused")
        .to_string();
    assert!(err.contains("audit log"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        edited,
        "left as it was"
    );
    // ...unless told to keep it aside and start a new chain.
    let d = start_in(
        dir.path(),
        &opts.clone().env("BUSBAR_AUDIT_ON_BROKEN", "new_file"),
    );
    let records = shown(&data);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["action"], "audit.chain_restarted");
    assert_eq!(
        records[0]["params"]["last_valid_head"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("1")
    );
    assert!(busbar(&["audit", "verify"], &data).status.success());
    assert!(stop(d).success());
}
