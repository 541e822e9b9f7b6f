//! The socket line protocol (hello, event lines, op lines, acks) on any
//! input, served over an in-memory stream to an engine on the memory
//! store. Inputs of even length come from a trusted Unix-socket caller,
//! odd ones from a TCP caller, who must authenticate: tokens are
//! configured (`secret-p` publishes and consumes, `secret-t` is bound to
//! tenant `acme`).
//!
//! Invariants: the connection ends (time is virtual, so blocking reads and
//! timeouts pass at once), every line written back is a JSON object, there
//! are never more answers than lines sent (plus one refusal), and every id
//! acknowledged is in the store.

#![no_main]

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use busbar_engine::{Auth, Engine, EngineConfig, Principal, Scope, TokenSpec};
use busbar_event::EventId;
use busbar_ingest::lines::is_blank;
use busbar_ingest::{Ingest, IngestOptions};
use busbar_store::memory::MemoryStore;
use busbar_store::ReadQuery;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

thread_local! {
    static RT: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime"),
    );
}

fn tokens() -> Vec<TokenSpec> {
    vec![
        TokenSpec {
            name: "p".into(),
            secret: "secret-p".into(),
            scopes: vec![Scope::Publish, Scope::Consume],
            tenant: None,
        },
        TokenSpec {
            name: "t".into(),
            secret: "secret-t".into(),
            scopes: vec![Scope::Publish, Scope::Consume],
            tenant: Some("acme".into()),
        },
    ]
}

fuzz_target!(|data: &[u8]| {
    let peer = (data.len() % 2 == 1).then(|| "127.0.0.1:40000".parse().unwrap());
    let lines_sent = data.split(|&b| b == b'\n').filter(|l| !is_blank(l)).count();
    RT.with(|rt| {
        rt.borrow().block_on(async {
            let engine = Engine::builder(Arc::new(MemoryStore::new()))
                .auth(Auth::new(tokens()))
                // Small batches, so inputs reach batch cuts; reads keep the
                // default count (10 000), more than an input holds events,
                // so the check below sees every stored event.
                .config(EngineConfig {
                    max_batch_events: 64,
                    ..EngineConfig::default()
                })
                .build();
            let (_stop, shutdown) = watch::channel(false);
            let ingest = Ingest::new(
                engine.clone(),
                IngestOptions {
                    max_line_bytes: 4096,
                    max_depth: 16,
                    unauthenticated_bytes: 1024,
                    ..IngestOptions::default()
                },
                shutdown,
            );
            let (client, server) = tokio::io::duplex(16 * 1024);
            let (server_r, server_w) = tokio::io::split(server);
            let (mut client_r, mut client_w) = tokio::io::split(client);
            let serve = ingest.serve_stream(server_r, server_w, peer);
            let send = async {
                // A refused connection stops reading: the rest is dropped.
                let _ = client_w.write_all(data).await;
                let _ = client_w.shutdown().await;
                drop(client_w);
            };
            let receive = async {
                let mut out = Vec::new();
                let _ = client_r.read_to_end(&mut out).await;
                out
            };
            let ((), (), out) = tokio::time::timeout(Duration::from_secs(3600), async {
                tokio::join!(serve, send, receive)
            })
            .await
            .expect("the connection ends");

            let mut acked = Vec::new();
            let mut answers = 0;
            for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                answers += 1;
                let value: Value = serde_json::from_slice(line).expect("an answer is JSON");
                let object = value.as_object().expect("an answer is an object");
                if object.len() == 1 {
                    if let Some(id) = object.get("id") {
                        let id: EventId = id.as_str().expect("an id").parse().expect("an id");
                        acked.push(id);
                    }
                }
            }
            assert!(
                answers <= lines_sent + 1,
                "{answers} answers to {lines_sent} lines"
            );
            let mut stored = HashSet::new();
            for info in engine.streams(&Principal::Trusted).await.expect("streams") {
                let events = engine
                    .read(&Principal::Trusted, &info.name, ReadQuery::all(10_000))
                    .await
                    .expect("a stream reads");
                stored.extend(events.iter().map(|e| e.id()));
            }
            for id in acked {
                assert!(stored.contains(&id), "acknowledged {id} is not stored");
            }
        })
    });
});
