//! The conformance suite against the memory engine.

use std::sync::Arc;

use async_trait::async_trait;
use busbar_store::conformance::Harness;
use busbar_store::memory::MemoryStore;
use busbar_store::{Dedup, Store};

#[derive(Default)]
struct Memory {
    dedup: Dedup,
}

#[async_trait]
impl Harness for Memory {
    async fn open(&mut self) -> Arc<dyn Store> {
        Arc::new(MemoryStore::new().with_dedup(self.dedup))
    }

    async fn reopen(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        store
    }

    fn set_dedup(&mut self, dedup: Dedup) {
        self.dedup = dedup;
    }
}

busbar_store::store_conformance!(Memory::default());
