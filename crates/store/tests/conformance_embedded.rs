//! The conformance suite against the embedded engine, reopening over the
//! same directory. Small segments make every case cross segment boundaries.

use std::sync::Arc;

use async_trait::async_trait;
use busbar_store::conformance::Harness;
use busbar_store::embedded::{EmbeddedConfig, EmbeddedStore};
use busbar_store::{Dedup, Store};

struct Embedded {
    dir: tempfile::TempDir,
    dedup: Dedup,
}

impl Embedded {
    fn new() -> Self {
        Embedded {
            dir: tempfile::tempdir().expect("temp dir"),
            dedup: Dedup::default(),
        }
    }

    fn open_store(&self) -> Arc<dyn Store> {
        let mut config = EmbeddedConfig::new(self.dir.path());
        config.segment_bytes = 1024;
        config.index_interval_bytes = 256;
        config.dedup = self.dedup;
        Arc::new(EmbeddedStore::open(config).expect("open store"))
    }
}

#[async_trait]
impl Harness for Embedded {
    async fn open(&mut self) -> Arc<dyn Store> {
        self.open_store()
    }

    async fn reopen(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        store.close().await.expect("close");
        drop(store);
        self.open_store()
    }

    fn set_dedup(&mut self, dedup: Dedup) {
        self.dedup = dedup;
    }
}

busbar_store::store_conformance!(Embedded::new());
