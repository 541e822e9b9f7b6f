//! busbar's core engine: what every transport calls.
//!
//! Transports (Unix socket, TCP, HTTP, command socket) decode requests and
//! call the [`Engine`]; the engine checks the caller's [`Principal`], asks
//! its [`Hook`]s for admission, talks to the [`Store`](busbar_store::Store),
//! counts what happened in [`Metrics`] and wakes readers waiting for new
//! events. A transport never touches storage directly. The extension
//! points side services use are listed in the [`Engine`]'s module
//! (`engine.rs`) docs and in [`hooks`].

#![warn(missing_docs)]

pub mod admin;
mod auth;
mod builder;
mod dlq;
mod engine;
mod error;
mod gauges;
mod groups;
mod health;
pub mod hooks;
mod jobs;
pub mod journal;
pub mod metrics;
mod readiness;
mod replay;
mod transport;

pub use admin::AdminAction;
pub use auth::{bearer_token, Auth, Principal, Scope, TokenSpec};
pub use builder::{EngineBuilder, EngineConfig};
pub use dlq::{DlqEntry, DlqPage, DlqQuery, Reprocessed};
pub use engine::Engine;
pub use error::EngineError;
pub use groups::MAX_BLOCK;
pub use health::{HealthStatus, HealthThresholds, StreamHealth};
pub use hooks::{Admit, Hook, Refusal};
pub use jobs::{JobKind, JobState, JobStatus, JobsConfig};
pub use journal::{Journal, JournalConfig, OpsEvent};
pub use metrics::Metrics;
pub use readiness::{NotReady, Readiness};
pub use replay::{ReplaySpec, ReplayTarget, DEFAULT_REPLAY_BATCH};
pub use transport::{ReadOp, Transport};
