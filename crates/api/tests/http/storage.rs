//! A disk that fails the embedded store, seen over HTTP: a full disk is a
//! clear `storage_full` to the producer and a `/readyz` reason, reads go on,
//! and writing resumes by itself when space returns; a failed read is an
//! error, never an empty answer; a failed `fdatasync` acknowledges nothing.

use std::sync::Arc;

use busbar_store::embedded::{EmbeddedConfig, EmbeddedStore};
use busbar_store::fs::{Fault, FaultFs, RealFs};

use crate::common::{ids, Server, Setup};

async fn server(dir: &std::path::Path, faults: &FaultFs) -> Server {
    let mut config = EmbeddedConfig::new(dir);
    config.fs = Arc::new(faults.clone());
    let store = EmbeddedStore::open(config).unwrap();
    Server::start_over(Arc::new(store), Setup::default()).await
}

async fn publish(s: &Server, n: u32) -> crate::common::Reply {
    s.post("/api/streams/orders/events")
        .json(&serde_json::json!({"type": "order.created", "n": n}))
        .send()
        .await
}

async fn stored(s: &Server) -> Vec<u64> {
    let r = s
        .get("/api/streams/orders/events?limit=1000")
        .send()
        .await
        .expect(200);
    r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_full_disk_refuses_publishes_clearly_and_heals_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultFs::new(RealFs);
    let s = server(dir.path(), &faults).await;
    let before = ids(&publish(&s, 1).await.expect(201));
    s.get("/readyz").send().await.expect(200);

    faults.fail_writes(Fault::NoSpace);
    let refused = publish(&s, 2).await.expect(507);
    assert_eq!(refused.reason(), "storage_full");
    assert_eq!(refused.headers["retry-after"], "5");
    let ready = s.get("/readyz").send().await.expect(503);
    let reasons = ready.json()["reasons"].clone();
    assert_eq!(reasons[0]["reason"], "storage_full", "{reasons}");
    let health = s.get("/health").send().await.expect(200);
    assert_eq!(health.json()["status"], "degraded");
    assert_eq!(health.json()["reasons"][0]["reason"], "storage_full");
    // Readers are not affected.
    assert_eq!(stored(&s).await, [1]);
    let metrics = s.get("/metrics").send().await.expect(200).text();
    assert!(
        metrics.contains("busbar_storage_write_state 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("busbar_storage_write_errors_total{kind=\"full\"} 1\n"));

    // Space returns: the next publish goes through, and readiness follows.
    faults.clear();
    let after = ids(&publish(&s, 3).await.expect(201));
    s.get("/readyz").send().await.expect(200);
    assert_eq!(s.get("/health").send().await.json()["status"], "ok");
    assert_eq!(stored(&s).await, [1, 3], "the refused event was not stored");
    assert!(after[0] > before[0]);
    s.shutdown().await;
}

#[tokio::test]
async fn a_failed_read_is_an_error_not_an_empty_answer() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultFs::new(RealFs);
    let s = server(dir.path(), &faults).await;
    publish(&s, 1).await.expect(201);
    faults.fail_reads(Fault::Io);
    let r = s.get("/api/streams/orders/events").send().await.expect(500);
    assert_eq!(r.reason(), "storage_error");
    faults.clear();
    assert_eq!(stored(&s).await, [1]);
    s.shutdown().await;
}

#[tokio::test]
async fn a_failed_fdatasync_acknowledges_nothing_and_writing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultFs::new(RealFs);
    let s = server(dir.path(), &faults).await;
    publish(&s, 1).await.expect(201);
    faults.fail_syncs(Fault::Io);
    let r = publish(&s, 2).await.expect(500);
    assert_eq!(r.reason(), "storage_error");
    s.get("/readyz").send().await.expect(503);
    faults.clear();
    publish(&s, 3).await.expect(201);
    assert_eq!(
        stored(&s).await,
        [1, 3],
        "the event of the failed group is not there"
    );
    s.get("/readyz").send().await.expect(200);
    s.shutdown().await;
}
