//! [`Store`] for [`EmbeddedStore`]: writes and group operations go to the
//! writer thread; reads, infos and group listings take a snapshot of the
//! shared state and never wait for it.

use std::time::Duration;

use async_trait::async_trait;
use busbar_event::{now_ms, Event, EventBatch, EventId, StreamName};

use super::writer::Op;
use super::EmbeddedStore;
use crate::group::host;
use crate::group::{
    validate_name, AckOutcome, ClaimOutcome, Expired, GroupConfig, GroupInfo, GroupStart,
    NackOptions, NackOutcome, PendingInfo, ReadOutcome,
};
use crate::{
    AppendOptions, Appended, ReadQuery, Result, Rotated, Store, StoreError, StoreMetrics,
    StreamInfo, Trim, WriteHealth,
};

#[async_trait]
impl Store for EmbeddedStore {
    async fn append_detailed(
        &self,
        stream: &StreamName,
        batch: EventBatch,
        opts: AppendOptions,
    ) -> Result<Appended> {
        StoreError::check_single_partition(stream, opts.partition)?;
        let stream = stream.clone();
        self.call(|reply| Op::Append {
            stream,
            batch,
            trim: opts.trim,
            dedup: opts.dedup,
            reply,
        })
        .await
    }

    async fn read(&self, stream: &StreamName, query: &ReadQuery) -> Result<Vec<Event>> {
        query.check_single_partition(stream)?;
        let handle = self.handle(stream)?;
        let snapshot = handle.state.read().snapshot(query.start, query.end);
        snapshot.read(query)
    }

    async fn trim(&self, stream: &StreamName, trim: Trim) -> Result<u64> {
        let stream = stream.clone();
        self.call(|reply| Op::Trim {
            stream,
            trim,
            reply,
        })
        .await
    }

    async fn delete(&self, stream: &StreamName, ids: &[EventId]) -> Result<u64> {
        let stream = stream.clone();
        let ids = ids.to_vec();
        self.call(|reply| Op::Delete { stream, ids, reply }).await
    }

    async fn info(&self, stream: &StreamName) -> Result<StreamInfo> {
        let handle = self.handle(stream)?;
        let state = handle.state.read();
        state.info(stream)
    }

    async fn added(&self, stream: &StreamName) -> Result<u64> {
        Ok(self.handle(stream)?.state.read().added)
    }

    async fn streams(&self) -> Result<Vec<StreamName>> {
        if self.tx.is_closed() {
            return Err(StoreError::Closed);
        }
        Ok(self.shared.streams.read().keys().cloned().collect())
    }

    async fn delete_stream(&self, stream: &StreamName) -> Result<bool> {
        let stream = stream.clone();
        self.call(|reply| Op::DeleteStream { stream, reply }).await
    }

    async fn rotate(&self, stream: &StreamName) -> Result<Rotated> {
        let stream = stream.clone();
        self.call(|reply| Op::Rotate { stream, reply }).await
    }

    async fn sync(&self) -> Result<()> {
        self.call(|reply| Op::Sync { reply }).await
    }

    async fn close(&self) -> Result<()> {
        let result = self.call(|reply| Op::Close { reply }).await;
        let handle = self.writer.lock().take();
        if let Some(handle) = handle {
            // The writer has answered Close and is returning.
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        match result {
            Err(StoreError::Closed) => Ok(()),
            other => other,
        }
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn metrics(&self) -> Option<std::sync::Arc<StoreMetrics>> {
        Some(self.metrics.clone())
    }

    fn write_health(&self) -> WriteHealth {
        self.shared.health.lock().clone()
    }

    async fn create_group(
        &self,
        stream: &StreamName,
        group: &str,
        start: GroupStart,
        config: GroupConfig,
    ) -> Result<GroupInfo> {
        validate_name("group", group)?;
        let name = group.to_owned();
        self.group_call(stream, true, move |h| {
            let cursor = match start {
                GroupStart::Beginning => EventId::ZERO,
                GroupStart::End => h.last_id()?,
                GroupStart::After(id) => id,
            };
            host::create(h, &name, cursor, config)
        })
        .await?;
        self.group(stream, group).await
    }

    async fn delete_group(&self, stream: &StreamName, group: &str) -> Result<bool> {
        let name = group.to_owned();
        self.group_call(stream, false, move |h| host::destroy(h, &name))
            .await
    }

    async fn groups(&self, stream: &StreamName) -> Result<Vec<GroupInfo>> {
        let handle = self.handle(stream)?;
        let state = handle.state.read();
        let now = now_ms();
        state
            .groups
            .values()
            .map(|g| Ok(g.info(stream, state.count_after(g.cursor)?, now)))
            .collect()
    }

    async fn group(&self, stream: &StreamName, group: &str) -> Result<GroupInfo> {
        let handle = self.handle(stream)?;
        let state = handle.state.read();
        let g = state
            .groups
            .get(group)
            .ok_or_else(|| StoreError::NoSuchGroup {
                stream: stream.clone(),
                group: group.to_owned(),
            })?;
        Ok(g.info(stream, state.count_after(g.cursor)?, now_ms()))
    }

    async fn read_group(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<ReadOutcome> {
        validate_name("consumer", consumer)?;
        let (g, c) = (group.to_owned(), consumer.to_owned());
        self.group_call(stream, false, move |h| {
            host::read(h, &g, &c, count, now_ms())
        })
        .await
    }

    async fn ack(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: Option<&str>,
        ids: &[EventId],
    ) -> Result<AckOutcome> {
        let (g, c, ids) = (group.to_owned(), consumer.map(str::to_owned), ids.to_vec());
        self.group_call(stream, false, move |h| {
            host::ack(h, &g, c.as_deref(), &ids, now_ms())
        })
        .await
    }

    async fn nack(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        ids: &[EventId],
        opts: NackOptions,
    ) -> Result<NackOutcome> {
        let (g, c, ids) = (group.to_owned(), consumer.to_owned(), ids.to_vec());
        self.group_call(stream, false, move |h| {
            host::nack(h, &g, &c, &ids, &opts, now_ms())
        })
        .await
    }

    async fn claim(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: EventId,
        count: usize,
    ) -> Result<ClaimOutcome> {
        validate_name("consumer", consumer)?;
        let (g, c) = (group.to_owned(), consumer.to_owned());
        self.group_call(stream, false, move |h| {
            host::claim(h, &g, &c, min_idle, start, count, now_ms())
        })
        .await
    }

    async fn pending(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: Option<&str>,
        start: EventId,
        end: EventId,
        count: usize,
    ) -> Result<Vec<PendingInfo>> {
        let handle = self.handle(stream)?;
        let state = handle.state.read();
        let g = state
            .groups
            .get(group)
            .ok_or_else(|| StoreError::NoSuchGroup {
                stream: stream.clone(),
                group: group.to_owned(),
            })?;
        Ok(g.pending_info(consumer, start, end, count, now_ms()))
    }

    async fn set_paused(&self, stream: &StreamName, group: &str, paused: bool) -> Result<()> {
        let name = group.to_owned();
        self.group_call(stream, false, move |h| host::pause(h, &name, paused))
            .await
    }

    async fn delete_consumer(
        &self,
        stream: &StreamName,
        group: &str,
        consumer: &str,
    ) -> Result<u64> {
        let (g, c) = (group.to_owned(), consumer.to_owned());
        self.group_call(stream, false, move |h| host::delete_consumer(h, &g, &c))
            .await
    }

    async fn set_cursor(&self, stream: &StreamName, group: &str, cursor: EventId) -> Result<()> {
        let name = group.to_owned();
        self.group_call(stream, false, move |h| host::set_cursor(h, &name, cursor))
            .await
    }

    async fn expire(&self, stream: &StreamName) -> Result<Vec<Expired>> {
        self.group_call(stream, false, move |h| {
            crate::group::expire_all(h, now_ms())
        })
        .await
    }
}
