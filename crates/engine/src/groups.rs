//! Consumer groups through the engine: scopes and tenants checked, blocking
//! reads, metrics, the sweeper that dead-letters exhausted entries nobody
//! reads, and pausing all delivery at once.
//!
//! ## Pausing
//! Delivery to a group stops when any of three pauses covers it: its own
//! (`set_group_paused`, kept by the store, so it survives a restart), its
//! tenant's, or everyone's (`set_all_paused`: in memory, a restart resumes).
//! "All delivery" means what the caller may see: a tenant-bound admin
//! pauses and resumes its tenant's streams' groups, an untenanted admin
//! every group. The three are independent (resuming one never lifts
//! another), and a group's info says `paused` when any of them holds, so it
//! always tells whether it is being delivered to.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
// The runtime's clock, as the waits below use: a deadline on another clock
// would leave the loop spinning when the runtime's time runs ahead of it.
use tokio::time::Instant;

use busbar_event::{EventId, StreamName};
use busbar_store::group::{
    AckOutcome, ClaimOutcome, GroupConfig, GroupInfo, GroupStart, NackOptions, NackOutcome,
    PendingInfo, ReadOutcome,
};

use crate::{AdminAction, Engine, EngineError, Principal, ReadOp, Scope};

/// How often a blocked group read looks again for entries that became due
/// with time (nack delays, `ack_wait` expiry) rather than with an append.
const DUE_POLL: Duration = Duration::from_millis(200);

/// Longest a group read may block.
pub const MAX_BLOCK: Duration = Duration::from_secs(60);

type Result<T> = std::result::Result<T, EngineError>;

/// The pauses of all delivery: everyone's, and each tenant's. Not
/// persisted.
#[derive(Debug, Default)]
pub(crate) struct Pauses {
    all: AtomicBool,
    tenants: RwLock<BTreeSet<String>>,
}

impl Pauses {
    /// Whether delivery to the groups of `stream` is paused.
    fn cover(&self, stream: &StreamName) -> bool {
        if self.all.load(Ordering::Acquire) {
            return true;
        }
        let tenants = self.tenants.read();
        tenants.iter().any(|t| {
            stream
                .as_str()
                .strip_prefix(t.as_str())
                .is_some_and(|rest| rest.starts_with(':'))
        })
    }
}

impl Engine {
    fn group_access(&self, p: &Principal, stream: &StreamName, scope: Scope) -> Result<()> {
        p.require(scope)?;
        p.check_stream(stream)
    }

    /// `info` as it is delivered to: paused when a pause of all delivery
    /// covers it too.
    fn truthful(&self, mut info: GroupInfo) -> GroupInfo {
        info.paused |= self.delivery_paused(&info.stream);
        info
    }

    /// Creates a group (the `consume` scope suffices: services create their
    /// own groups at start-up).
    ///
    /// # Errors
    /// Scope/tenant errors, store errors (`GroupExists`, `InvalidName`).
    pub async fn create_group(
        &self,
        p: &Principal,
        stream: &StreamName,
        group: &str,
        start: GroupStart,
        config: GroupConfig,
    ) -> Result<GroupInfo> {
        self.group_access(p, stream, Scope::Consume)?;
        let info = self
            .store()
            .create_group(stream, group, start, config)
            .await?;
        self.administered(
            p,
            &AdminAction::GroupCreate {
                stream,
                group,
                start,
            },
        );
        Ok(self.truthful(info))
    }

    /// Deletes a group (admin).
    ///
    /// # Errors
    /// Scope/tenant errors, store errors.
    pub async fn delete_group(
        &self,
        p: &Principal,
        stream: &StreamName,
        group: &str,
    ) -> Result<bool> {
        self.group_access(p, stream, Scope::Admin)?;
        let existed = self.store().delete_group(stream, group).await?;
        self.administered(
            p,
            &AdminAction::GroupDelete {
                stream,
                group,
                existed,
            },
        );
        Ok(existed)
    }

    /// Every group of a stream (`paused` as in [`Engine::group`]).
    ///
    /// # Errors
    /// Scope/tenant errors, store errors.
    pub async fn groups(&self, p: &Principal, stream: &StreamName) -> Result<Vec<GroupInfo>> {
        self.group_access(p, stream, Scope::Consume)?;
        let groups = self.store().groups(stream).await?;
        Ok(groups.into_iter().map(|g| self.truthful(g)).collect())
    }

    /// One group. `paused` says whether it is delivered to: its own pause,
    /// or a pause of all delivery that covers it (see the module docs).
    ///
    /// # Errors
    /// Scope/tenant errors, store errors (`NoSuchGroup`).
    pub async fn group(
        &self,
        p: &Principal,
        stream: &StreamName,
        group: &str,
    ) -> Result<GroupInfo> {
        self.group_access(p, stream, Scope::Consume)?;
        Ok(self.truthful(self.store().group(stream, group).await?))
    }

    /// Delivers up to `count` events to `consumer`, waiting up to `block`
    /// (capped at [`MAX_BLOCK`]) when there is nothing to deliver yet.
    /// Nothing is delivered while the group or all delivery is paused.
    ///
    /// # Errors
    /// Scope/tenant errors, store errors.
    ///
    /// # Cancel safety
    /// Not cancel safe once a read has reached the store: events it
    /// delivered are pending for `consumer` and come back after `ack_wait`.
    pub async fn read_group(
        &self,
        p: &Principal,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<ReadOutcome> {
        self.read_group_until(
            p,
            stream,
            group,
            consumer,
            count,
            block,
            std::future::pending(),
        )
        .await
    }

    /// [`Engine::read_group`] that also stops waiting, answering with what
    /// it has (nothing), when `stop` resolves: an HTTP long poll answers at
    /// once when graceful shutdown starts. Only the wait is cut short, never
    /// a read of the store, so no delivery is lost.
    ///
    /// # Errors
    /// As [`Engine::read_group`].
    #[allow(clippy::too_many_arguments)]
    pub async fn read_group_until(
        &self,
        p: &Principal,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<ReadOutcome> {
        self.group_access(p, stream, Scope::Consume)?;
        self.admit_read(p, stream, ReadOp::GroupRead)?;
        tokio::pin!(stop);
        let mut stopped = false;
        let count = self.clamp_read_count(ReadOp::GroupRead, count).max(1);
        let deadline = Instant::now() + block.min(MAX_BLOCK);
        loop {
            let mut appended = self.subscribe_appends();
            appended.mark_unchanged();
            let out = if self.delivery_paused(stream) {
                // Still checks the group exists, so a typo is an error.
                self.store().group(stream, group).await?;
                ReadOutcome::default()
            } else {
                self.store()
                    .read_group(stream, group, consumer, count)
                    .await?
            };
            self.count_read(stream, group, &out);
            let now = Instant::now();
            if !out.deliveries.is_empty()
                || now >= deadline
                || stopped
                || self.readiness().is_shutting_down()
            {
                return Ok(out);
            }
            let wait = (deadline - now).min(DUE_POLL);
            tokio::select! {
                _ = tokio::time::timeout(wait, appended.changed()) => {}
                () = &mut stop => stopped = true,
            }
        }
    }

    fn count_read(&self, stream: &StreamName, group: &str, out: &ReadOutcome) {
        let labels = [stream.as_str(), group];
        let m = self.metrics();
        if !out.deliveries.is_empty() {
            m.group_deliveries
                .get(labels)
                .add(out.deliveries.len() as u64);
        }
        if out.redelivered > 0 {
            m.group_redeliveries
                .get(labels)
                .add(u64::from(out.redelivered));
        }
        if out.dead_lettered > 0 {
            m.group_dead_lettered
                .get(labels)
                .add(u64::from(out.dead_lettered));
        }
    }

    /// Acknowledges events; the outcome lists ids that were unknown or held
    /// by another consumer.
    ///
    /// # Errors
    /// Scope/tenant errors, store errors.
    pub async fn ack(
        &self,
        p: &Principal,
        stream: &StreamName,
        group: &str,
        consumer: Option<&str>,
        ids: &[EventId],
    ) -> Result<AckOutcome> {
        self.group_access(p, stream, Scope::Consume)?;
        let out = self.store().ack(stream, group, consumer, ids).await?;
        let labels = [stream.as_str(), group];
        if !out.acked.is_empty() {
            self.metrics()
                .group_acks
                .get(labels)
                .add(out.acked.len() as u64);
            let histogram = self.metrics().group_processing.get(labels);
            for ms in &out.processing_ms {
                histogram.observe(Duration::from_millis(*ms));
            }
        }
        Ok(out)
    }

    /// Negatively acknowledges events.
    ///
    /// # Errors
    /// Scope/tenant errors, store errors.
    pub async fn nack(
        &self,
        p: &Principal,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        ids: &[EventId],
        opts: NackOptions,
    ) -> Result<NackOutcome> {
        self.group_access(p, stream, Scope::Consume)?;
        let out = self
            .store()
            .nack(stream, group, consumer, ids, opts)
            .await?;
        let labels = [stream.as_str(), group];
        let nacked = out.retried.len() + out.dead_lettered.len() + out.dropped.len();
        if nacked > 0 {
            self.metrics().group_nacks.get(labels).add(nacked as u64);
        }
        if !out.dead_lettered.is_empty() {
            self.metrics()
                .group_dead_lettered
                .get(labels)
                .add(out.dead_lettered.len() as u64);
        }
        Ok(out)
    }

    /// Claims idle pending entries for `consumer` (XAUTOCLAIM).
    ///
    /// # Errors
    /// Scope/tenant errors, store errors.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim(
        &self,
        p: &Principal,
        stream: &StreamName,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        start: EventId,
        count: usize,
    ) -> Result<ClaimOutcome> {
        self.group_access(p, stream, Scope::Consume)?;
        let count = self.clamp_read_count(ReadOp::Claim, count).max(1);
        let out = self
            .store()
            .claim(stream, group, consumer, min_idle, start, count)
            .await?;
        if !out.deliveries.is_empty() {
            let labels = [stream.as_str(), group];
            let n = out.deliveries.len() as u64;
            self.metrics().group_deliveries.get(labels).add(n);
            self.metrics().group_redeliveries.get(labels).add(n);
        }
        Ok(out)
    }

    /// Pending entries of a group.
    ///
    /// # Errors
    /// Scope/tenant errors, store errors.
    #[allow(clippy::too_many_arguments)]
    pub async fn pending(
        &self,
        p: &Principal,
        stream: &StreamName,
        group: &str,
        consumer: Option<&str>,
        start: EventId,
        end: EventId,
        count: usize,
    ) -> Result<Vec<PendingInfo>> {
        self.group_access(p, stream, Scope::Consume)?;
        let count = self.clamp_read_count(ReadOp::Pending, count);
        Ok(self
            .store()
            .pending(stream, group, consumer, start, end, count)
            .await?)
    }

    /// Pauses or resumes one group (admin).
    ///
    /// # Errors
    /// Scope/tenant errors, store errors.
    pub async fn set_group_paused(
        &self,
        p: &Principal,
        stream: &StreamName,
        group: &str,
        paused: bool,
    ) -> Result<()> {
        self.group_access(p, stream, Scope::Admin)?;
        self.store().set_paused(stream, group, paused).await?;
        self.administered(
            p,
            &AdminAction::GroupPause {
                stream,
                group,
                paused,
            },
        );
        Ok(())
    }

    /// Pauses or resumes all group delivery the caller may see at once
    /// (admin): a tenant-bound caller's tenant's streams' groups, an
    /// untenanted caller's every group. Publishing goes on; nothing is
    /// lost. Not persisted: a restart resumes. Other pauses are left as
    /// they are (see the module docs).
    ///
    /// # Errors
    /// [`EngineError::Forbidden`].
    pub fn set_all_paused(&self, p: &Principal, paused: bool) -> Result<()> {
        p.require(Scope::Admin)?;
        match p.tenant() {
            None => self.pauses.all.store(paused, Ordering::Release),
            Some(t) => {
                let mut tenants = self.pauses.tenants.write();
                if paused {
                    tenants.insert(t.to_owned());
                } else {
                    tenants.remove(t);
                }
            }
        }
        self.administered(p, &AdminAction::PauseAll { paused });
        Ok(())
    }

    /// Whether everyone's delivery is paused (by an untenanted caller).
    pub fn all_paused(&self) -> bool {
        self.pauses.all.load(Ordering::Acquire)
    }

    /// Whether a pause of all delivery (everyone's, or the tenant's of
    /// `stream`) stops delivery to the groups of `stream`. A group's own
    /// pause is in its info.
    pub fn delivery_paused(&self, stream: &StreamName) -> bool {
        self.pauses.cover(stream)
    }

    /// Removes a consumer (admin); its pending entries go to whoever reads
    /// next. Returns how many it held.
    ///
    /// # Errors
    /// Scope/tenant errors, store errors.
    pub async fn delete_consumer(
        &self,
        p: &Principal,
        stream: &StreamName,
        group: &str,
        consumer: &str,
    ) -> Result<u64> {
        self.group_access(p, stream, Scope::Admin)?;
        let pending = self
            .store()
            .delete_consumer(stream, group, consumer)
            .await?;
        self.administered(
            p,
            &AdminAction::ConsumerDelete {
                stream,
                group,
                consumer,
                pending,
            },
        );
        Ok(pending)
    }

    /// Moves a group's cursor (admin).
    ///
    /// # Errors
    /// Scope/tenant errors, store errors.
    pub async fn set_group_cursor(
        &self,
        p: &Principal,
        stream: &StreamName,
        group: &str,
        cursor: EventId,
    ) -> Result<()> {
        self.group_access(p, stream, Scope::Admin)?;
        self.store().set_cursor(stream, group, cursor).await?;
        self.administered(
            p,
            &AdminAction::GroupCursor {
                stream,
                group,
                cursor,
            },
        );
        Ok(())
    }

    /// One sweep: dead-letters (or drops) exhausted entries that are due in
    /// every group of every stream. Returns how many were retired.
    pub async fn sweep(&self) -> u64 {
        let Ok(streams) = self.store().streams().await else {
            return 0;
        };
        let mut retired = 0;
        for stream in streams {
            match self.store().expire(&stream).await {
                Ok(outcomes) => {
                    for o in outcomes {
                        if o.dead_lettered > 0 {
                            self.metrics()
                                .group_dead_lettered
                                .get([stream.as_str(), &o.group])
                                .add(u64::from(o.dead_lettered));
                        }
                        retired += u64::from(o.dead_lettered + o.dropped);
                    }
                }
                Err(e) => tracing::warn!(stream = %stream, error = %e, "group sweep failed"),
            }
        }
        retired
    }

    /// Runs [`Engine::sweep`] every `every` until shutdown begins.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if engine.readiness().is_shutting_down() {
                    return;
                }
                engine.sweep().await;
            }
        })
    }
}
