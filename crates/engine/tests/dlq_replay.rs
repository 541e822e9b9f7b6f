//! Dead-letter operations and replay jobs through the engine, over a
//! memory store.

use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{
    Auth, DlqQuery, Engine, EngineConfig, EngineError, HealthStatus, HealthThresholds, JobState,
    JobStatus, JobsConfig, Principal, ReplaySpec, ReplayTarget, Scope, TokenSpec, Transport,
};
use busbar_event::{EventBatch, EventId, NewEvent, StreamName};
use busbar_store::group::{DlqOrigin, GroupConfig, GroupStart, NackOptions};
use busbar_store::memory::MemoryStore;
use busbar_store::{ReadQuery, StoreError, TypeFilter};

fn engine_with(config: EngineConfig) -> Arc<Engine> {
    Engine::builder(Arc::new(MemoryStore::new()))
        .auth(Auth::default())
        .config(config)
        .build()
}

fn engine() -> Arc<Engine> {
    engine_with(EngineConfig::default())
}

fn stream(name: &str) -> StreamName {
    StreamName::new(name).unwrap()
}

const P: Principal = Principal::Open;

async fn publish(e: &Engine, s: &StreamName, types: &[&str]) -> Vec<EventId> {
    let mut batch = EventBatch::new();
    for (i, t) in types.iter().enumerate() {
        let payload = format!("{{\"n\":{i}}}");
        batch
            .push(&NewEvent::new(t, payload.as_bytes()).with_key("k"))
            .unwrap();
    }
    e.publish(&P, s, batch, Default::default(), Transport::Local)
        .await
        .unwrap()
}

/// Publishes `types`, then dead-letters each with a terminal nack whose
/// error names its type.
async fn dead_letter(e: &Engine, s: &StreamName, types: &[&str]) -> Vec<EventId> {
    let ids = publish(e, s, types).await;
    let _ = e
        .create_group(&P, s, "g", GroupStart::Beginning, GroupConfig::default())
        .await;
    let out = e
        .read_group(&P, s, "g", "c", 1000, Duration::ZERO)
        .await
        .unwrap();
    for d in out.deliveries {
        let opts = NackOptions {
            terminal: true,
            error: Some(format!("handler failed on {}", d.event.event_type())),
            ..NackOptions::default()
        };
        e.nack(&P, s, "g", "c", &[d.event.id()], opts)
            .await
            .unwrap();
    }
    ids
}

async fn wait(e: &Engine, job: &JobStatus) -> JobStatus {
    for _ in 0..500 {
        let status = e.job(&P, &job.id).unwrap();
        if status.state != JobState::Running {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {} did not finish: {:?}", job.id, e.job(&P, &job.id));
}

fn fast() -> Option<u32> {
    Some(100_000)
}

#[tokio::test]
async fn lists_dead_letters_with_filters_and_pages() {
    let e = engine();
    let s = stream("orders");
    dead_letter(&e, &s, &["order.created", "order.paid", "user.created"]).await;

    let all = e.dlq_list(&P, &s, DlqQuery::all(10)).await.unwrap();
    assert_eq!(all.stream.as_str(), "orders:dlq");
    assert_eq!(all.entries.len(), 3);
    assert!(all.next.is_none());
    let origin = all.entries[0].origin.as_ref().unwrap();
    assert_eq!(origin.group, "g");
    assert_eq!(origin.stream, "orders");

    let typed = DlqQuery {
        types: Some(TypeFilter::new(["order.*"])),
        ..DlqQuery::all(10)
    };
    assert_eq!(e.dlq_list(&P, &s, typed).await.unwrap().entries.len(), 2);

    let by_error = DlqQuery {
        error: Some("ON USER".into()),
        ..DlqQuery::all(10)
    };
    let page = e.dlq_list(&P, &s, by_error).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].event.event_type(), "user.created");

    // Paging, both ways.
    let first = e.dlq_list(&P, &s, DlqQuery::all(2)).await.unwrap();
    let rest = DlqQuery {
        start: first.next.unwrap(),
        ..DlqQuery::all(2)
    };
    let second = e.dlq_list(&P, &s, rest).await.unwrap();
    assert_eq!(second.entries.len(), 1);
    assert!(second.next.is_none());
    let newest = DlqQuery {
        reverse: true,
        ..DlqQuery::all(1)
    };
    let newest = e.dlq_list(&P, &s, newest).await.unwrap();
    assert_eq!(newest.entries[0].event.event_type(), "user.created");

    // A stream nothing failed on lists nothing; an unknown one is an error.
    publish(&e, &stream("quiet"), &["t"]).await;
    let quiet = e
        .dlq_list(&P, &stream("quiet"), DlqQuery::all(10))
        .await
        .unwrap();
    assert!(quiet.entries.is_empty());
    let missing = e.dlq_list(&P, &stream("nope"), DlqQuery::all(10)).await;
    assert!(matches!(
        missing,
        Err(EngineError::Store(StoreError::NoSuchStream { .. }))
    ));
    let inverted = DlqQuery {
        start: EventId::new(5, 0),
        end: EventId::new(1, 0),
        ..DlqQuery::all(10)
    };
    assert_eq!(
        e.dlq_list(&P, &s, inverted).await.unwrap_err().reason(),
        "inverted_range"
    );
}

#[tokio::test]
async fn reprocessing_one_appends_first_then_deletes() {
    let e = engine();
    let s = stream("orders");
    let original = dead_letter(&e, &s, &["order.created"]).await;
    let entry = e.dlq_list(&P, &s, DlqQuery::all(1)).await.unwrap().entries[0].clone();
    let dlq_id = entry.event.id();
    assert_eq!(e.dlq_entry(&P, &s, dlq_id).await.unwrap(), entry);

    let moved = e.dlq_reprocess(&P, &s, dlq_id).await.unwrap();
    assert_eq!(moved.dlq_id, dlq_id);
    assert_eq!(moved.original_id, Some(original[0]));
    let copy = e
        .read(&P, &s, ReadQuery::range(moved.id, moved.id, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(copy.event_type(), "order.created");
    assert_eq!(copy.payload(), br#"{"n":0}"#);
    assert_eq!(copy.key(), Some("k"));
    let meta: serde_json::Value = serde_json::from_slice(copy.meta().unwrap()).unwrap();
    assert_eq!(
        meta,
        serde_json::json!({
            "reprocessed_from": dlq_id.to_string(),
            "original_id": original[0].to_string(),
            "dlq_stream": "orders:dlq",
        })
    );
    assert!(e
        .dlq_list(&P, &s, DlqQuery::all(10))
        .await
        .unwrap()
        .entries
        .is_empty());
    // The group that gave up sees the copy as a new event.
    let again = e
        .read_group(&P, &s, "g", "c", 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(again.deliveries[0].event.id(), moved.id);

    // Gone now: a clear 404, for reprocess, show and delete alike.
    for err in [
        e.dlq_reprocess(&P, &s, dlq_id).await.unwrap_err(),
        e.dlq_entry(&P, &s, dlq_id).await.unwrap_err(),
        e.dlq_delete(&P, &s, dlq_id).await.unwrap_err(),
    ] {
        assert_eq!(err.reason(), "no_such_dlq_entry");
        assert_eq!(err.http_status(), 404);
        assert!(err.to_string().contains(&dlq_id.to_string()), "{err}");
    }
}

#[tokio::test]
async fn delete_and_purge() {
    let e = engine();
    let s = stream("orders");
    dead_letter(&e, &s, &["a", "b", "c"]).await;
    let entries = e.dlq_list(&P, &s, DlqQuery::all(10)).await.unwrap().entries;
    e.dlq_delete(&P, &s, entries[0].event.id()).await.unwrap();

    let refused = e.dlq_purge(&P, &s, false).await.unwrap_err();
    assert_eq!(refused.reason(), "confirmation_required");
    assert_eq!(refused.http_status(), 400);
    let left = e.dlq_list(&P, &s, DlqQuery::all(10)).await.unwrap();
    assert_eq!(left.entries.len(), 2);
    assert_eq!(e.dlq_purge(&P, &s, true).await.unwrap(), 2);
    assert_eq!(e.dlq_purge(&P, &s, true).await.unwrap(), 0);
    // New dead letters never reuse a purged id.
    dead_letter(&e, &s, &["d"]).await;
    let after = e.dlq_list(&P, &s, DlqQuery::all(10)).await.unwrap().entries;
    assert!(after[0].event.id() > entries[2].event.id());
}

#[tokio::test]
async fn bulk_reprocess_runs_as_a_job_by_type_or_all() {
    let e = engine();
    let s = stream("orders");
    dead_letter(&e, &s, &["order.a", "user.b", "order.c", "user.d"]).await;
    let types = Some(TypeFilter::new(["order.*"]));
    let job = e.dlq_reprocess_all(&P, &s, types, fast()).await.unwrap();
    assert!(job.id.starts_with("reprocess-"), "{}", job.id);
    let done = wait(&e, &job).await;
    assert_eq!(done.state, JobState::Done);
    assert_eq!(done.published, 2);
    assert_eq!(done.total_estimate, Some(2));
    let left = e.dlq_list(&P, &s, DlqQuery::all(10)).await.unwrap().entries;
    let left: Vec<&str> = left.iter().map(|d| d.event.event_type()).collect();
    assert_eq!(left, ["user.b", "user.d"]);

    let job = e.dlq_reprocess_all(&P, &s, None, fast()).await.unwrap();
    assert_eq!(wait(&e, &job).await.published, 2);
    let main = e.read(&P, &s, ReadQuery::all(100)).await.unwrap();
    assert_eq!(main.iter().filter(|ev| ev.meta().is_some()).count(), 4);

    // Nothing to do is a finished job, not an error.
    let empty = e.dlq_reprocess_all(&P, &s, None, None).await.unwrap();
    assert_eq!(wait(&e, &empty).await.published, 0);
    let bad_rate = e.dlq_reprocess_all(&P, &s, None, Some(0)).await;
    assert_eq!(bad_rate.unwrap_err().reason(), "invalid_param");
}

/// `limit` moves at most that many entries, the oldest first; the rest
/// stay dead-lettered.
#[tokio::test]
async fn a_bulk_reprocess_moves_at_most_its_limit_oldest_first() {
    let e = engine();
    let s = stream("orders");
    let types: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    dead_letter(&e, &s, &types).await;
    let before = e.dlq_list(&P, &s, DlqQuery::all(100)).await.unwrap();
    let job = e
        .dlq_reprocess_some(&P, &s, None, fast(), Some(12))
        .await
        .unwrap();
    let done = wait(&e, &job).await;
    assert_eq!(
        (done.state, done.published, done.total_estimate),
        (JobState::Done, 12, Some(12))
    );
    let left = e.dlq_list(&P, &s, DlqQuery::all(100)).await.unwrap();
    let left_ids: Vec<_> = left.entries.iter().map(|d| d.event.id()).collect();
    let expected: Vec<_> = before.entries[12..].iter().map(|d| d.event.id()).collect();
    assert_eq!(left_ids, expected);
    let zero = e.dlq_reprocess_some(&P, &s, None, None, Some(0)).await;
    assert_eq!(zero.unwrap_err().reason(), "invalid_param");
}

#[tokio::test]
async fn a_slow_bulk_reprocess_can_be_cancelled() {
    let e = engine();
    let s = stream("orders");
    let types: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    dead_letter(&e, &s, &types).await;
    let job = e.dlq_reprocess_all(&P, &s, None, Some(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    e.cancel_job(&P, &job.id).unwrap();
    let stopped = wait(&e, &job).await;
    assert_eq!(stopped.state, JobState::Cancelled);
    assert!(stopped.published < 30, "{stopped:?}");
    assert_eq!(stopped.error.as_deref(), Some("cancelled on request"));
    // Whatever was not moved is still dead-lettered: nothing lost.
    let left = e.dlq_list(&P, &s, DlqQuery::all(100)).await.unwrap();
    assert_eq!(left.entries.len() as u64 + stopped.published, 30);
    assert_eq!(
        e.cancel_job(&P, &job.id).unwrap_err().reason(),
        "job_not_running"
    );
}

#[tokio::test]
async fn republish_replays_a_filtered_range_with_meta() {
    let e = engine();
    let s = stream("orders");
    let ids = publish(&e, &s, &["a", "b", "a", "a", "b", "a"]).await;
    let spec = ReplaySpec {
        start: ids[1],
        end: ids[4],
        types: Some(TypeFilter::new(["a"])),
        target: ReplayTarget::Stream(stream("replayed")),
        rate: fast(),
        batch_size: Some(2),
        ..ReplaySpec::new(s.clone())
    };
    let job = e.start_replay(&P, spec).await.unwrap();
    let done = wait(&e, &job).await;
    assert_eq!(done.state, JobState::Done, "{done:?}");
    assert_eq!(done.published, 2);
    assert_eq!(done.total_estimate, Some(2));
    assert_eq!(done.scanned, 4);
    let copies = e
        .read(&P, &stream("replayed"), ReadQuery::all(10))
        .await
        .unwrap();
    assert_eq!(copies.len(), 2);
    let meta: serde_json::Value = serde_json::from_slice(copies[0].meta().unwrap()).unwrap();
    assert_eq!(meta["replayed_from"], ids[2].to_string());
    assert_eq!(meta["stream"], "orders");
    assert_eq!(meta["job"], job.id.as_str());

    // Onto the source itself, with a limit: it ends, and copies follow.
    let spec = ReplaySpec {
        limit: Some(4),
        rate: fast(),
        ..ReplaySpec::new(s.clone())
    };
    let done = wait(&e, &e.start_replay(&P, spec).await.unwrap()).await;
    assert_eq!(done.published, 4);
    assert_eq!(e.info(&P, &s).await.unwrap().length, 10);
}

#[tokio::test]
async fn bad_replays_are_refused_up_front() {
    let e = engine();
    let s = stream("orders");
    let ids = publish(&e, &s, &["a", "b"]).await;
    let inverted = ReplaySpec {
        start: ids[1],
        end: ids[0],
        ..ReplaySpec::new(s.clone())
    };
    let err = e.start_replay(&P, inverted).await.unwrap_err();
    assert_eq!(err.reason(), "inverted_range");
    assert_eq!(err.http_status(), 400);

    let missing = e.start_replay(&P, ReplaySpec::new(stream("nope"))).await;
    assert_eq!(missing.unwrap_err().reason(), "no_such_stream");

    let typed_group = ReplaySpec {
        types: Some(TypeFilter::new(["a"])),
        target: ReplayTarget::Group("g".into()),
        ..ReplaySpec::new(s.clone())
    };
    let err = e.start_replay(&P, typed_group).await.unwrap_err();
    assert_eq!(err.reason(), "invalid_param");
    assert!(err.to_string().contains("eventTypes"), "{err}");

    let no_group = ReplaySpec {
        target: ReplayTarget::Group("ghost".into()),
        ..ReplaySpec::new(s.clone())
    };
    assert_eq!(
        e.start_replay(&P, no_group).await.unwrap_err().reason(),
        "no_such_group"
    );
    for (limit, batch) in [(Some(0), None), (None, Some(0)), (None, Some(1_000_000))] {
        let spec = ReplaySpec {
            limit,
            batch_size: batch,
            ..ReplaySpec::new(s.clone())
        };
        assert_eq!(
            e.start_replay(&P, spec).await.unwrap_err().reason(),
            "invalid_param"
        );
    }
}

#[tokio::test]
async fn replay_into_an_existing_group_moves_its_cursor_back() {
    let e = engine();
    let s = stream("orders");
    let ids = publish(&e, &s, &["a", "b", "c", "d"]).await;
    e.create_group(&P, &s, "g", GroupStart::Beginning, GroupConfig::default())
        .await
        .unwrap();
    let first = e
        .read_group(&P, &s, "g", "c", 10, Duration::ZERO)
        .await
        .unwrap();
    let handed: Vec<EventId> = first.deliveries.iter().map(|d| d.event.id()).collect();
    e.ack(&P, &s, "g", Some("c"), &handed).await.unwrap();

    let spec = ReplaySpec {
        start: ids[2],
        target: ReplayTarget::Group("g".into()),
        ..ReplaySpec::new(s.clone())
    };
    let job = e.start_replay(&P, spec).await.unwrap();
    assert_eq!(job.target, "group g");
    // Moved at once.
    let info = e.group(&P, &s, "g").await.unwrap();
    assert_eq!(info.last_delivered_id, ids[1]);
    assert_eq!(info.lag, 2);

    let again = e
        .read_group(&P, &s, "g", "c", 10, Duration::ZERO)
        .await
        .unwrap();
    let again: Vec<EventId> = again.deliveries.iter().map(|d| d.event.id()).collect();
    assert_eq!(again, &ids[2..]);
    let done = wait(&e, &job).await;
    assert_eq!(done.state, JobState::Done);
    assert_eq!(done.delivered, 2);
    assert_eq!(done.total_estimate, Some(2));
}

#[tokio::test]
async fn cancelling_a_group_replay_puts_the_cursor_back() {
    let e = engine();
    let s = stream("orders");
    let ids = publish(&e, &s, &["a", "b", "c"]).await;
    e.create_group(&P, &s, "g", GroupStart::Beginning, GroupConfig::default())
        .await
        .unwrap();
    e.read_group(&P, &s, "g", "c", 10, Duration::ZERO)
        .await
        .unwrap();
    let spec = ReplaySpec {
        target: ReplayTarget::Group("g".into()),
        ..ReplaySpec::new(s.clone())
    };
    let job = e.start_replay(&P, spec).await.unwrap();
    let moved = e.group(&P, &s, "g").await.unwrap();
    assert_eq!(moved.last_delivered_id, EventId::ZERO);
    e.cancel_job(&P, &job.id).unwrap();
    assert_eq!(wait(&e, &job).await.state, JobState::Cancelled);
    let restored = e.group(&P, &s, "g").await.unwrap();
    assert_eq!(restored.last_delivered_id, ids[2]);
}

#[tokio::test]
async fn replay_into_a_new_group_starts_it_at_the_range() {
    let e = engine();
    let s = stream("orders");
    let ids = publish(&e, &s, &["a", "b", "c"]).await;
    let spec = ReplaySpec {
        start: ids[1],
        target: ReplayTarget::NewGroup {
            name: "late".into(),
            config: GroupConfig::default(),
        },
        ..ReplaySpec::new(s.clone())
    };
    let job = e.start_replay(&P, spec.clone()).await.unwrap();
    let got = e
        .read_group(&P, &s, "late", "c", 10, Duration::ZERO)
        .await
        .unwrap();
    let got: Vec<EventId> = got.deliveries.iter().map(|d| d.event.id()).collect();
    assert_eq!(got, &ids[1..]);
    assert_eq!(wait(&e, &job).await.delivered, 2);
    // The name is taken now.
    assert_eq!(
        e.start_replay(&P, spec).await.unwrap_err().reason(),
        "group_exists"
    );
}

#[tokio::test]
async fn running_jobs_are_bounded_and_tenants_see_their_own() {
    let e = engine_with(EngineConfig {
        jobs: JobsConfig {
            max_running: 1,
            ..JobsConfig::default()
        },
        ..EngineConfig::default()
    });
    let s = stream("acme:orders");
    publish(&e, &s, &["a"; 50]).await;
    let slow = ReplaySpec {
        rate: Some(1),
        ..ReplaySpec::new(s.clone())
    };
    let job = e.start_replay(&P, slow.clone()).await.unwrap();
    let err = e.start_replay(&P, slow.clone()).await.unwrap_err();
    assert_eq!(err.reason(), "too_many_jobs");
    assert_eq!(err.http_status(), 429);
    assert!(err.to_string().contains("limit of 1 running jobs"), "{err}");
    let too_fast = ReplaySpec {
        rate: Some(JobsConfig::default().max_rate + 1),
        ..slow
    };
    let err = e.start_replay(&P, too_fast).await.unwrap_err();
    assert_eq!(err.reason(), "invalid_param");
    let metrics = e.render_metrics().await;
    for line in [
        r#"busbar_jobs_running{kind="replay"} 1"#,
        r#"busbar_jobs_running{kind="dlq_reprocess"} 0"#,
        r#"busbar_jobs_rejected_total{kind="replay",limit="max_running"} 1"#,
        r#"busbar_jobs_rejected_total{kind="replay",limit="max_rate"} 1"#,
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }

    let other = Principal::Token {
        name: "other".into(),
        scopes: vec![Scope::Admin, Scope::Consume],
        tenant: Some("other".into()),
    };
    assert!(e.jobs(&other).unwrap().is_empty());
    assert_eq!(e.job(&other, &job.id).unwrap_err().reason(), "no_such_job");
    assert_eq!(e.jobs(&P).unwrap().len(), 1);
    e.cancel_job(&P, &job.id).unwrap();
    wait(&e, &job).await;
}

#[tokio::test]
async fn mutations_need_the_admin_scope() {
    let auth = Auth::new(vec![TokenSpec {
        name: "reader".into(),
        secret: "r".into(),
        scopes: vec![Scope::Consume],
        tenant: None,
    }]);
    let reader = auth.authenticate(Some("r")).unwrap();
    let e = engine();
    let s = stream("orders");
    dead_letter(&e, &s, &["a"]).await;
    let listed = e.dlq_list(&reader, &s, DlqQuery::all(1)).await.unwrap();
    let id = listed.entries[0].event.id();
    let refusals = [
        e.dlq_reprocess(&reader, &s, id).await.unwrap_err(),
        e.dlq_delete(&reader, &s, id).await.unwrap_err(),
        e.dlq_purge(&reader, &s, true).await.unwrap_err(),
        e.dlq_reprocess_all(&reader, &s, None, None)
            .await
            .unwrap_err(),
        e.start_replay(&reader, ReplaySpec::new(s.clone()))
            .await
            .unwrap_err(),
    ];
    for err in refusals {
        assert_eq!(err.reason(), "forbidden");
    }
    let shown = e.dlq_entry(&reader, &s, id).await.unwrap();
    assert!(DlqOrigin::of(&shown.event).is_some());
}

#[tokio::test]
async fn health_follows_the_runbook_thresholds() {
    let e = engine_with(EngineConfig {
        health: HealthThresholds {
            max_dlq: 1,
            max_lag: 3,
        },
        ..EngineConfig::default()
    });
    let s = stream("events");
    let missing = e.stream_health(&P, &s).await.unwrap();
    assert!(!missing.exists);
    assert_eq!(missing.status, HealthStatus::Healthy);

    dead_letter(&e, &s, &["a"]).await;
    let h = e.stream_health(&P, &s).await.unwrap();
    assert_eq!(
        (h.stream_length, h.dlq_length, h.consumer_groups),
        (1, 1, 1)
    );
    assert_eq!(h.status, HealthStatus::Healthy);
    assert!(h.last_processed_ms.is_none());

    let metrics = e.render_metrics().await;
    assert!(metrics.contains("busbar_stream_degraded{stream=\"events\"} 0\n"));
    dead_letter(&e, &s, &["b"]).await;
    let h = e.stream_health(&P, &s).await.unwrap();
    assert_eq!(h.status, HealthStatus::Degraded);
    // The same verdict on /metrics; never for the dead-letter stream itself.
    let metrics = e.render_metrics().await;
    assert!(
        metrics.contains("busbar_stream_degraded{stream=\"events\"} 1\n"),
        "{metrics}"
    );
    assert!(!metrics.contains("busbar_stream_degraded{stream=\"events:dlq\"}"));

    publish(&e, &s, &["c"; 4]).await;
    let lagging = engine_with(EngineConfig {
        health: HealthThresholds {
            max_dlq: 100,
            max_lag: 3,
        },
        ..EngineConfig::default()
    });
    publish(&lagging, &s, &["c"; 4]).await;
    lagging
        .create_group(&P, &s, "g", GroupStart::Beginning, GroupConfig::default())
        .await
        .unwrap();
    let h = lagging.stream_health(&P, &s).await.unwrap();
    assert_eq!((h.max_lag, h.status), (4, HealthStatus::Degraded));
    let metrics = lagging.render_metrics().await;
    assert!(metrics.contains("busbar_stream_degraded{stream=\"events\"} 1\n"));
}

#[tokio::test]
async fn reads_over_max_read_count_are_clamped_and_counted() {
    let e = engine_with(EngineConfig {
        max_read_count: 2,
        ..EngineConfig::default()
    });
    let s = stream("orders");
    // Each dead_letter reads its group asking for 1000: clamped twice.
    dead_letter(&e, &s, &["a", "b"]).await;
    dead_letter(&e, &s, &["c"]).await;
    publish(&e, &s, &["d", "e", "f"]).await;
    assert_eq!(e.read(&P, &s, ReadQuery::all(10)).await.unwrap().len(), 2);
    assert_eq!(e.read(&P, &s, ReadQuery::all(2)).await.unwrap().len(), 2);
    let group = e
        .read_group(&P, &s, "g", "c", 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(group.deliveries.len(), 2);
    let listed = e.dlq_list(&P, &s, DlqQuery::all(10)).await.unwrap();
    assert_eq!(listed.entries.len(), 2);
    assert!(
        listed.next.is_some(),
        "a clamped listing says where to go on"
    );
    let metrics = e.render_metrics().await;
    for line in [
        r#"busbar_reads_clamped_total{op="range"} 1"#,
        r#"busbar_reads_clamped_total{op="group_read"} 3"#,
        r#"busbar_reads_clamped_total{op="dlq_list"} 1"#,
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
}

#[tokio::test]
async fn replays_default_to_batches_the_engine_accepts() {
    let e = engine_with(EngineConfig {
        max_batch_events: 10,
        ..EngineConfig::default()
    });
    let s = stream("orders");
    for _ in 0..3 {
        publish(&e, &s, &["a"; 10]).await;
    }
    let job = e
        .start_replay(&P, ReplaySpec::new(s.clone()))
        .await
        .unwrap();
    assert_eq!(wait(&e, &job).await.state, JobState::Done);
    assert_eq!(e.info(&P, &s).await.unwrap().length, 60);
    let too_big = ReplaySpec {
        batch_size: Some(11),
        ..ReplaySpec::new(s.clone())
    };
    let err = e.start_replay(&P, too_big).await.unwrap_err();
    assert_eq!(err.reason(), "invalid_param");
    assert!(err.to_string().contains("1 to 10"), "{err}");
}
