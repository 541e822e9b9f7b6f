//! A stream's health as the HYVVE runbook's `/events/health` reports it:
//! its length, its dead-letter length, its groups and when one last
//! acknowledged an event, and whether any of it crosses a threshold.
//!
//! `degraded` means the runbook's warning level is crossed: more than
//! [`HealthThresholds::max_dlq`] dead letters (default 100), or a group
//! more than [`HealthThresholds::max_lag`] events behind (default 1000).
//! The numbers are the ones `/metrics` exports (which also exports the
//! verdict of every stream as `busbar_stream_degraded`); like a read of the
//! stream they need the `consume` scope, and a stream the caller may not
//! see is reported exactly as one that does not exist, so the answer is no
//! existence oracle for another tenant's streams.

use busbar_event::StreamName;
use busbar_store::group::dlq_stream;
use busbar_store::StoreError;
use serde::Serialize;

use crate::{Engine, EngineError, Principal, Scope};

/// When a stream's health turns `degraded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthThresholds {
    /// Most dead letters of a healthy stream (default 100).
    pub max_dlq: u64,
    /// Largest lag of a healthy stream's groups (default 1000).
    pub max_lag: u64,
}

impl HealthThresholds {
    /// Whether a stream with `dlq_length` dead letters and groups at most
    /// `max_lag` events behind is `degraded`.
    ///
    /// ```
    /// use busbar_engine::HealthThresholds;
    /// let limits = HealthThresholds { max_dlq: 0, max_lag: 1000 };
    /// assert!(!limits.is_degraded(0, 1000));
    /// assert!(limits.is_degraded(1, 0));
    /// assert!(limits.is_degraded(0, 1001));
    /// ```
    pub fn is_degraded(&self, dlq_length: u64, max_lag: u64) -> bool {
        dlq_length > self.max_dlq || max_lag > self.max_lag
    }
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds {
            max_dlq: 100,
            max_lag: 1000,
        }
    }
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Every number is under its threshold.
    Healthy,
    /// The dead-letter stream or a group's lag is over its threshold.
    Degraded,
}

/// One stream's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHealth {
    /// The verdict.
    pub status: HealthStatus,
    /// Whether the stream exists (all numbers are zero when not).
    pub exists: bool,
    /// Events in the stream.
    pub stream_length: u64,
    /// Events in `<stream>:dlq`.
    pub dlq_length: u64,
    /// Consumer groups of the stream.
    pub consumer_groups: u64,
    /// The largest lag among them.
    pub max_lag: u64,
    /// The last time any of them acknowledged an event (ms since the epoch).
    pub last_processed_ms: Option<u64>,
}

impl Engine {
    /// The health of `stream` as `principal` may see it: the `consume`
    /// scope is needed, and a stream of another tenant is reported as
    /// missing (`exists: false`, every number zero), exactly like a stream
    /// that does not exist.
    ///
    /// # Errors
    /// [`EngineError::Forbidden`]; store errors other than a missing stream.
    pub async fn stream_health(
        &self,
        principal: &Principal,
        stream: &StreamName,
    ) -> Result<StreamHealth, EngineError> {
        principal.require(Scope::Consume)?;
        let mut health = StreamHealth {
            status: HealthStatus::Healthy,
            exists: true,
            stream_length: 0,
            dlq_length: 0,
            consumer_groups: 0,
            max_lag: 0,
            last_processed_ms: None,
        };
        if !principal.can_access(stream) {
            health.exists = false;
            return Ok(health);
        }
        match self.store().info(stream).await {
            Ok(info) => health.stream_length = info.length,
            Err(StoreError::NoSuchStream { .. }) => {
                health.exists = false;
                return Ok(health);
            }
            Err(e) => return Err(e.into()),
        }
        match self.store().info(&dlq_stream(stream)?).await {
            Ok(info) => health.dlq_length = info.length,
            Err(StoreError::NoSuchStream { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        match self.store().groups(stream).await {
            Ok(groups) => {
                health.consumer_groups = groups.len() as u64;
                health.max_lag = groups.iter().map(|g| g.lag).max().unwrap_or(0);
                health.last_processed_ms = groups.iter().filter_map(|g| g.last_ack_ms).max();
            }
            // Deleted between the two calls.
            Err(StoreError::NoSuchStream { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if self
            .config()
            .health
            .is_degraded(health.dlq_length, health.max_lag)
        {
            health.status = HealthStatus::Degraded;
        }
        Ok(health)
    }
}
