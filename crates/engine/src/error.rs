use busbar_event::{EventError, EventId, StreamName};
use busbar_store::StoreError;
use thiserror::Error;

/// Why the engine refused or failed a request. Every variant maps to a
/// client-visible reason ([`EngineError::reason`]) and an HTTP status.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The request carried no token but tokens are configured.
    #[error("a token is required")]
    Unauthenticated,
    /// The token is not known.
    #[error("invalid token")]
    BadToken,
    /// The token lacks a scope.
    #[error("token lacks the `{scope}` scope")]
    Forbidden {
        /// The missing scope.
        scope: &'static str,
    },
    /// A tenant-bound token touched another tenant's stream or event.
    #[error("token of tenant `{tenant}` cannot access stream `{stream}`")]
    WrongTenant {
        /// The token's tenant.
        tenant: String,
        /// The stream it tried to access.
        stream: StreamName,
    },
    /// A client published to one of busbar's own streams (`_busbar:...`).
    #[error("stream `{stream}` is busbar's own: clients may read it, not publish to it")]
    ReservedStream {
        /// The stream.
        stream: StreamName,
    },
    /// An event's `tenant` differs from the token's tenant.
    #[error("event tenant `{event_tenant}` does not match the token's tenant `{tenant}`")]
    TenantMismatch {
        /// The token's tenant.
        tenant: String,
        /// The tenant the event names.
        event_tenant: String,
    },
    /// Bad input: malformed JSON, a missing type, an invalid id...
    #[error(transparent)]
    Event(#[from] EventError),
    /// A batch larger than the configured limit.
    #[error("batch of {len} events is over the limit of {limit}")]
    BatchTooLarge {
        /// Events in the batch.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The storage layer failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A parameter of a group, DLQ or replay request is invalid.
    #[error("invalid `{name}`: {reason}")]
    InvalidParam {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// None of the ids of an ack or nack is pending in the group.
    #[error("no pending entry in group `{group}` for {}", list_ids(ids))]
    UnknownIds {
        /// The group.
        group: String,
        /// The ids.
        ids: Vec<EventId>,
    },
    /// Every id of an ack or nack is pending for another consumer.
    #[error(
        "{} pending for another consumer than `{consumer}` in group `{group}`",
        list_ids(ids)
    )]
    WrongConsumer {
        /// The group.
        group: String,
        /// The consumer that asked.
        consumer: String,
        /// The ids.
        ids: Vec<EventId>,
    },
    /// The dead-letter stream holds no entry with this id.
    #[error("no dead-letter entry {id} in `{stream}`")]
    NoSuchDlqEntry {
        /// The dead-letter stream.
        stream: StreamName,
        /// The id asked for.
        id: EventId,
    },
    /// A destructive operation was asked for without its confirmation.
    #[error(
        "{action} needs an explicit confirmation (`\"confirm\": true`, or `--yes` on the CLI)"
    )]
    ConfirmationRequired {
        /// What would have happened, e.g. "purging `orders:dlq` deletes all its events".
        action: String,
    },
    /// No job has this id (finished jobs are kept only up to the history limit).
    #[error("no job `{job}` (finished jobs are forgotten past the history limit and at restart)")]
    NoSuchJob {
        /// The id asked for.
        job: String,
    },
    /// The job already finished.
    #[error("job `{job}` is not running")]
    JobNotRunning {
        /// The job.
        job: String,
    },
    /// An admission hook found the daemon overloaded.
    #[error("overloaded: {reason}; retry in {} ms", retry_after.as_millis())]
    Overloaded {
        /// Why.
        reason: String,
        /// When to try again.
        retry_after: std::time::Duration,
    },
    /// An operator paused this kind of work.
    #[error("paused: {reason}")]
    Paused {
        /// Why.
        reason: String,
    },
    /// As many jobs as allowed (`jobs.max_running`) are running.
    #[error("the limit of {limit} running jobs is reached: wait for one to finish or cancel one")]
    TooManyJobs {
        /// The limit.
        limit: usize,
    },
}

/// The first ids of a list, for messages.
fn list_ids(ids: &[EventId]) -> String {
    const SHOWN: usize = 5;
    let mut text = ids
        .iter()
        .take(SHOWN)
        .map(EventId::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        text.push_str(&format!(" and {} more", ids.len() - SHOWN));
    }
    if ids.len() == 1 {
        format!("id {text}")
    } else {
        format!("ids {text}")
    }
}

impl EngineError {
    /// A short, stable, machine-readable reason (used as a metric label and
    /// in error responses).
    pub fn reason(&self) -> &'static str {
        match self {
            EngineError::Unauthenticated => "unauthenticated",
            EngineError::BadToken => "bad_token",
            EngineError::Forbidden { .. } => "forbidden",
            EngineError::WrongTenant { .. } | EngineError::TenantMismatch { .. } => "wrong_tenant",
            EngineError::ReservedStream { .. } => "reserved_stream",
            EngineError::Event(e) => match e {
                EventError::MalformedJson { .. } => "malformed_json",
                EventError::NotAnObject => "not_an_object",
                EventError::MissingType => "missing_type",
                EventError::InvalidField { .. } | EventError::DuplicateField { .. } => {
                    "invalid_field"
                }
                EventError::TooLarge { .. } => "too_large",
                EventError::TooDeep { .. } => "too_deep",
                EventError::InvalidNumber { .. } => "invalid_number",
                EventError::InvalidStreamName { .. } => "invalid_stream",
                EventError::InvalidId { .. } => "invalid_id",
                _ => "invalid_event",
            },
            EngineError::BatchTooLarge { .. } => "batch_too_large",
            EngineError::Store(e) => match e {
                StoreError::NoSuchStream { .. } => "no_such_stream",
                StoreError::NoSuchGroup { .. } => "no_such_group",
                StoreError::NoSuchPartition { .. } => "no_such_partition",
                StoreError::GroupExists { .. } => "group_exists",
                StoreError::InvalidName { .. } => "invalid_name",
                StoreError::IdNotGreater { .. } => "id_not_greater",
                StoreError::InvertedRange { .. } => "inverted_range",
                StoreError::Event(_) => "invalid_event",
                StoreError::Closed => "shutting_down",
                StoreError::Full { .. } => "storage_full",
                _ => "storage_error",
            },
            EngineError::InvalidParam { .. } => "invalid_param",
            EngineError::UnknownIds { .. } => "unknown_ids",
            EngineError::WrongConsumer { .. } => "wrong_consumer",
            EngineError::NoSuchDlqEntry { .. } => "no_such_dlq_entry",
            EngineError::ConfirmationRequired { .. } => "confirmation_required",
            EngineError::NoSuchJob { .. } => "no_such_job",
            EngineError::JobNotRunning { .. } => "job_not_running",
            EngineError::TooManyJobs { .. } => "too_many_jobs",
            EngineError::Overloaded { .. } => "overloaded",
            EngineError::Paused { .. } => "paused",
        }
    }

    /// The HTTP status this error maps to.
    pub fn http_status(&self) -> u16 {
        match self {
            EngineError::Unauthenticated | EngineError::BadToken => 401,
            EngineError::Forbidden { .. }
            | EngineError::WrongTenant { .. }
            | EngineError::TenantMismatch { .. }
            | EngineError::ReservedStream { .. } => 403,
            EngineError::Event(EventError::TooLarge { .. }) | EngineError::BatchTooLarge { .. } => {
                413
            }
            EngineError::Event(_) => 400,
            EngineError::Store(
                StoreError::NoSuchStream { .. }
                | StoreError::NoSuchGroup { .. }
                | StoreError::NoSuchPartition { .. },
            ) => 404,
            EngineError::Store(StoreError::GroupExists { .. }) => 409,
            EngineError::Store(StoreError::InvalidName { .. }) => 400,
            EngineError::Store(StoreError::IdNotGreater { .. }) => 409,
            EngineError::Store(StoreError::InvertedRange { .. } | StoreError::Event(_)) => 400,
            EngineError::Store(StoreError::Closed) => 503,
            EngineError::Store(StoreError::Full { .. }) => 507,
            EngineError::Store(_) => 500,
            EngineError::InvalidParam { .. } | EngineError::ConfirmationRequired { .. } => 400,
            EngineError::NoSuchDlqEntry { .. } | EngineError::NoSuchJob { .. } => 404,
            EngineError::UnknownIds { .. }
            | EngineError::WrongConsumer { .. }
            | EngineError::JobNotRunning { .. } => 409,
            EngineError::TooManyJobs { .. } => 429,
            EngineError::Overloaded { .. } | EngineError::Paused { .. } => 503,
        }
    }

    /// How long the caller should wait before trying again, for errors
    /// that pass (an HTTP `Retry-After`, a socket's `retry_after_ms`).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            EngineError::Overloaded { retry_after, .. } => Some(*retry_after),
            EngineError::Paused { .. } => Some(std::time::Duration::from_secs(1)),
            // Space may come back at any time; writes resume by themselves.
            EngineError::Store(StoreError::Full { .. }) => Some(std::time::Duration::from_secs(5)),
            _ => None,
        }
    }
}
