//! Every way of tampering with a log is caught by `verify`, naming the
//! record; reopening continues, repairs or refuses the chain as the crate
//! docs say.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use busbar_audit::{
    read_log, records, verify, Actor, AuditConfig, AuditError, AuditLog, Entry, ExpectedHead, Hash,
    OnBroken, Problem, Record,
};
use serde_json::json;

fn log_path(dir: &Path) -> PathBuf {
    dir.join("audit").join("audit.log")
}

/// A log of `n` records (`target` = `s1`, `s2`, ...), closed.
fn written(dir: &Path, n: u64) -> (PathBuf, String) {
    let path = log_path(dir);
    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    for i in 1..=n {
        log.record(
            Actor::system(),
            "stream.trim",
            &format!("s{i}"),
            json!({"removed": i}),
        );
    }
    log.close();
    let (seq, hash) = log.head();
    assert_eq!(seq, n);
    (path, format!("{seq}:{hash}"))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn check(path: &Path) -> Result<busbar_audit::Verified, Box<busbar_audit::Break>> {
    verify(&std::fs::read(path).unwrap(), None)
}

#[test]
fn an_intact_log_verifies_to_its_head() {
    let dir = tempfile::tempdir().unwrap();
    let (path, head) = written(dir.path(), 5);
    let v = check(&path).unwrap();
    assert_eq!(v.head.to_string(), head);
    assert_eq!(v.valid_len, std::fs::metadata(&path).unwrap().len());
    let expect: ExpectedHead = head.parse().unwrap();
    verify(&std::fs::read(&path).unwrap(), Some(&expect)).unwrap();
    // The metric's 16-digit prefix is enough.
    let short: ExpectedHead = head[..2 + 16].parse().unwrap();
    verify(&std::fs::read(&path).unwrap(), Some(&short)).unwrap();
    // An earlier head the operator remembered is still in the chain.
    let third = records(&std::fs::read(&path).unwrap())
        .nth(2)
        .map(|(_, r)| format!("3:{}", r.hash))
        .unwrap();
    verify(
        &std::fs::read(&path).unwrap(),
        Some(&third.parse().unwrap()),
    )
    .unwrap();
}

#[test]
fn editing_a_field_is_a_hash_mismatch_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written(dir.path(), 5);
    let mut l = lines(&path);
    l[2] = l[2].replace("\"removed\":3", "\"removed\":30");
    write_lines(&path, &l);
    let b = check(&path).unwrap_err();
    assert_eq!((b.seq, b.line), (3, 3), "{b}");
    assert!(matches!(b.problem, Problem::HashMismatch { .. }), "{b}");
    assert_eq!(b.valid.head.seq, 2);
    assert!(b.to_string().contains("record 3 (line 3"), "{b}");
}

#[test]
fn editing_a_record_and_its_hash_breaks_the_next_records_prev() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written(dir.path(), 5);
    let mut l = lines(&path);
    let mut r: Record = serde_json::from_str(&l[1]).unwrap();
    r.actor.name = Some("someone-else".into());
    let prev: Hash = r.prev.parse().unwrap();
    r.hash = r.compute_hash(&prev).to_hex();
    l[1] = String::from_utf8(r.to_line())
        .unwrap()
        .trim_end()
        .to_owned();
    write_lines(&path, &l);
    let b = check(&path).unwrap_err();
    assert_eq!((b.seq, b.line), (3, 3), "{b}");
    assert!(matches!(b.problem, Problem::PrevMismatch { .. }), "{b}");
}

#[test]
fn deleting_a_record_is_a_sequence_gap_there() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written(dir.path(), 5);
    let mut l = lines(&path);
    l.remove(2);
    write_lines(&path, &l);
    let b = check(&path).unwrap_err();
    assert_eq!((b.seq, b.line), (3, 3), "{b}");
    assert_eq!(
        b.problem,
        Problem::OutOfSequence {
            expected: 3,
            found: 4
        }
    );
}

#[test]
fn deleting_the_first_record_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written(dir.path(), 3);
    let mut l = lines(&path);
    l.remove(0);
    write_lines(&path, &l);
    let b = check(&path).unwrap_err();
    assert_eq!((b.seq, b.line), (1, 1), "{b}");
}

#[test]
fn reordering_two_records_is_caught_at_the_first_moved() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written(dir.path(), 5);
    let mut l = lines(&path);
    l.swap(1, 3);
    write_lines(&path, &l);
    let b = check(&path).unwrap_err();
    assert_eq!((b.seq, b.line), (2, 2), "{b}");
    assert_eq!(
        b.problem,
        Problem::OutOfSequence {
            expected: 2,
            found: 4
        }
    );

    // Adjacent records swapped, with their seqs swapped back too.
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written(dir.path(), 5);
    let mut l = lines(&path);
    l.swap(2, 3);
    let (a, b2) = (
        l[2].replace("\"seq\":4", "\"seq\":3"),
        l[3].replace("\"seq\":3", "\"seq\":4"),
    );
    l[2] = a;
    l[3] = b2;
    write_lines(&path, &l);
    let b = check(&path).unwrap_err();
    assert_eq!((b.seq, b.line), (3, 3), "{b}");
    assert!(matches!(b.problem, Problem::PrevMismatch { .. }), "{b}");
}

#[test]
fn truncating_in_the_middle_of_a_line_is_a_truncated_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written(dir.path(), 5);
    let l = lines(&path);
    let keep: usize = l[..3].iter().map(|x| x.len() + 1).sum::<usize>() + 20;
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..keep]).unwrap();
    let b = check(&path).unwrap_err();
    assert_eq!((b.seq, b.line), (4, 4), "{b}");
    assert_eq!(b.problem, Problem::TruncatedLastLine { bytes: 20 });
    assert_eq!(b.valid.head.seq, 3);
}

#[test]
fn truncating_at_a_record_boundary_is_caught_only_against_a_remembered_head() {
    let dir = tempfile::tempdir().unwrap();
    let (path, head) = written(dir.path(), 5);
    let mut l = lines(&path);
    l.truncate(3);
    write_lines(&path, &l);
    // The shorter chain is a valid chain: a log cannot know its future.
    assert_eq!(check(&path).unwrap().head.seq, 3);
    let expect: ExpectedHead = head.parse().unwrap();
    let b = verify(&std::fs::read(&path).unwrap(), Some(&expect)).unwrap_err();
    assert_eq!((b.seq, b.line), (4, 4), "{b}");
    assert!(
        matches!(b.problem, Problem::ShorterThanRemembered { .. }),
        "{b}"
    );
}

#[test]
fn a_rewritten_history_differs_from_the_remembered_head() {
    let dir = tempfile::tempdir().unwrap();
    let (path, head) = written(dir.path(), 3);
    // Someone who knows the format writes a whole new, valid chain.
    std::fs::remove_file(&path).unwrap();
    let (_, forged) = {
        let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
        for i in 1..=3 {
            log.record(Actor::system(), "stream.trim", &format!("x{i}"), json!({}));
        }
        log.close();
        log.head()
    };
    assert_ne!(format!("3:{forged}"), head);
    let expect: ExpectedHead = head.parse().unwrap();
    let b = verify(&std::fs::read(&path).unwrap(), Some(&expect)).unwrap_err();
    assert_eq!((b.seq, b.line), (3, 3), "{b}");
    assert!(
        matches!(b.problem, Problem::DiffersFromRemembered { .. }),
        "{b}"
    );
}

#[test]
fn an_appended_forged_record_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written(dir.path(), 3);
    let last: Record = serde_json::from_str(&lines(&path)[2]).unwrap();

    // A copied hash: the fields do not hash to it.
    let mut forged = last.clone();
    forged.seq = 4;
    forged.prev = last.hash.clone();
    forged.target = "forged".into();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(&forged.to_line()).unwrap();
    let b = check(&path).unwrap_err();
    assert_eq!((b.seq, b.line), (4, 4), "{b}");
    assert!(matches!(b.problem, Problem::HashMismatch { .. }), "{b}");

    // A line that is not a record.
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written(dir.path(), 3);
    let mut l = lines(&path);
    l.push(r#"{"seq":4,"action":"dlq.purge"}"#.to_owned());
    write_lines(&path, &l);
    let b = check(&path).unwrap_err();
    assert_eq!((b.seq, b.line), (4, 4), "{b}");
    assert!(matches!(b.problem, Problem::Malformed { .. }), "{b}");
}

#[test]
fn a_forged_record_appended_behind_a_running_writer_breaks_its_next_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(dir.path());
    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    log.record(Actor::system(), "stream.trim", "a", json!({}));
    log.sync();
    let (seq, hash) = log.head();
    // Correctly chained and hashed: only the writer's own head knows.
    let forged = Record::chain(
        seq + 1,
        hash.parse().unwrap(),
        Entry {
            ts: 1,
            actor: Actor::system(),
            action: "dlq.purge".into(),
            target: "orders".into(),
            params: json!({}),
        },
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&forged.to_line())
        .unwrap();
    assert_eq!(check(&path).unwrap().head.seq, 2);
    log.record(Actor::system(), "stream.trim", "b", json!({}));
    log.close();
    let b = check(&path).unwrap_err();
    assert_eq!((b.seq, b.line), (3, 3), "{b}");
    assert_eq!(
        b.problem,
        Problem::OutOfSequence {
            expected: 3,
            found: 2
        }
    );
}

#[test]
fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (path, head) = written(dir.path(), 2);
    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    assert_eq!(format!("{}:{}", log.head().0, log.head().1), head);
    log.record(Actor::system(), "stream.trim", "s3", json!({}));
    log.close();
    assert_eq!(check(&path).unwrap().head.seq, 3);
    assert_eq!(log.records_written(), 1);
}

#[test]
fn a_torn_last_line_is_cut_off_on_reopen_and_the_repair_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written(dir.path(), 3);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(br#"{"seq":4,"ts":17"#).unwrap();
    drop(file);
    assert!(matches!(
        check(&path).unwrap_err().problem,
        Problem::TruncatedLastLine { bytes: 16 }
    ));
    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    log.record(Actor::system(), "stream.trim", "s5", json!({}));
    log.close();
    let v = check(&path).unwrap();
    assert_eq!(v.head.seq, 5);
    let bytes = std::fs::read(&path).unwrap();
    let repair = records(&bytes).nth(3).unwrap().1;
    assert_eq!(repair.action, "audit.torn_tail_repaired");
    assert_eq!(repair.actor, Actor::system());
    assert_eq!(repair.params["bytes"], 16);
}

#[test]
fn a_broken_chain_is_refused_on_reopen_unless_told_to_start_anew() {
    let dir = tempfile::tempdir().unwrap();
    let (path, head) = written(dir.path(), 3);
    let mut l = lines(&path);
    l[1] = l[1].replace("s2", "s9");
    write_lines(&path, &l);
    let before = std::fs::read(&path).unwrap();
    match AuditLog::open(AuditConfig::new(&path)) {
        Err(AuditError::Broken { broken, .. }) => assert_eq!(broken.seq, 2),
        other => panic!("expected a broken chain, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before, "left untouched");

    let mut config = AuditConfig::new(&path);
    config.on_broken = OnBroken::NewFile;
    let log = AuditLog::open(config).unwrap();
    log.close();
    let v = check(&path).unwrap();
    assert_eq!(v.head.seq, 1);
    let bytes = std::fs::read(&path).unwrap();
    let first = records(&bytes).next().unwrap().1;
    assert_eq!(first.action, "audit.chain_restarted");
    assert_eq!(first.params["last_valid_head"], head_at(&before, 1));
    let kept = first.params["previous_file"].as_str().unwrap();
    assert!(kept.starts_with("audit.log.broken-"), "{kept}");
    assert_eq!(
        std::fs::read(path.parent().unwrap().join(kept)).unwrap(),
        before
    );
    let _ = head;
}

fn head_at(log: &[u8], seq: u64) -> String {
    let r = records(log).nth(seq as usize - 1).unwrap().1;
    format!("{}:{}", r.seq, r.hash)
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(dir.path());
    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    assert!(matches!(
        AuditLog::open(AuditConfig::new(&path)),
        Err(AuditError::Locked { .. })
    ));
    log.close();
    AuditLog::open(AuditConfig::new(&path)).unwrap().close();
}

#[test]
fn records_the_queue_cannot_take_are_counted_and_the_chain_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(dir.path());
    let mut config = AuditConfig::new(&path);
    config.queue = 1;
    let log = AuditLog::open(config).unwrap();
    let asked = 300u64;
    for i in 0..asked {
        log.record(Actor::system(), "stream.trim", &format!("s{i}"), json!({}));
    }
    log.sync();
    let failed = log.write_errors();
    log.record(Actor::system(), "stream.trim", "last", json!({}));
    log.close();
    let bytes = read_log(&path).unwrap();
    verify(&bytes, None).unwrap();
    let all: Vec<Record> = records(&bytes).map(|(_, r)| r).collect();
    let lost: u64 = all
        .iter()
        .filter(|r| r.action == "audit.records_lost")
        .map(|r| r.params["count"].as_u64().unwrap())
        .sum();
    let kept = all.iter().filter(|r| r.action == "stream.trim").count() as u64;
    assert_eq!(lost, failed);
    assert_eq!(kept + lost, asked + 1);
    // After close, a record is an error too, never silently gone.
    log.record(Actor::system(), "stream.trim", "late", json!({}));
    assert_eq!(log.write_errors(), failed + 1);
}

#[test]
fn the_engine_reports_admin_actions_with_their_actor() {
    use busbar_engine::{Engine, Principal, Scope};
    use busbar_event::{EventBatch, NewEvent, StreamName};
    use busbar_store::memory::MemoryStore;
    use busbar_store::Trim;

    let dir = tempfile::tempdir().unwrap();
    let path = log_path(dir.path());
    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let engine = Engine::builder(Arc::new(MemoryStore::new())).build();
        engine.add_hook(log.clone());
        let ops = Principal::Token {
            name: "ops".into(),
            scopes: vec![Scope::Admin, Scope::Publish],
            tenant: Some("acme".into()),
        };
        let stream = StreamName::new("acme:orders").unwrap();
        let mut batch = EventBatch::new();
        for _ in 0..3 {
            batch.push(&NewEvent::new("t", b"{\"secret\":1}")).unwrap();
        }
        engine
            .publish(
                &ops,
                &stream,
                batch,
                Default::default(),
                busbar_engine::Transport::Local,
            )
            .await
            .unwrap();
        engine
            .trim(
                &ops,
                &stream,
                Trim::MaxLen {
                    max: 1,
                    approx: false,
                },
            )
            .await
            .unwrap();
        engine.dlq_purge(&ops, &stream, true).await.unwrap();
        engine.set_all_paused(&Principal::Trusted, true).unwrap();
        // Refused: changes nothing, not recorded.
        let other = StreamName::new("globex:orders").unwrap();
        assert!(engine.delete_stream(&ops, &other).await.is_err());
    });
    log.close();
    let bytes = std::fs::read(&path).unwrap();
    verify(&bytes, None).unwrap();
    let all: Vec<Record> = records(&bytes).map(|(_, r)| r).collect();
    let actions: Vec<&str> = all.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["stream.trim", "dlq.purge", "delivery.pause"]);
    assert_eq!(all[0].actor.to_string(), "token:ops@acme");
    assert_eq!(all[0].target, "acme:orders");
    assert_eq!(all[0].params["removed"], 2);
    assert_eq!(all[0].params["trim"]["max_len"], 1);
    assert_eq!(all[2].actor.kind, "trusted");
    assert!(!String::from_utf8_lossy(&bytes).contains("secret"));
}
