use thiserror::Error;

/// Why an event, id or stream name was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventError {
    /// The input is not valid JSON.
    #[error("malformed JSON: {reason}")]
    MalformedJson {
        /// What the JSON parser reported.
        reason: String,
    },
    /// The input is JSON but not an object.
    #[error("an event must be a JSON object")]
    NotAnObject,
    /// The object has no `type` member.
    #[error("missing required field `type`")]
    MissingType,
    /// A reserved field has the wrong JSON type or an invalid value.
    #[error("field `{field}` {reason}")]
    InvalidField {
        /// The reserved field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A reserved field appears twice.
    #[error("field `{field}` appears more than once")]
    DuplicateField {
        /// The reserved field.
        field: &'static str,
    },
    /// Objects and arrays nest deeper than the configured limit.
    #[error("nesting depth {depth} is over the limit of {limit}")]
    TooDeep {
        /// The depth reached when the input was refused.
        depth: usize,
        /// The limit (`max_depth`; the event's object is depth 1).
        limit: usize,
    },
    /// A number that not every reader can take back: more than 40 digits
    /// before its exponent or 4 in it, or out of a 64-bit float's range.
    #[error("number at byte {at} {reason}")]
    InvalidNumber {
        /// Where the number starts, in bytes from the start of the event.
        at: usize,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The event is larger than the configured limit.
    #[error("event is {len} bytes, over the limit of {limit}")]
    TooLarge {
        /// Size of the event.
        len: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// A stream name breaks the naming rules.
    #[error("invalid stream name: {reason}")]
    InvalidStreamName {
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// An event id is not of the form `<ms>-<seq>`.
    #[error("invalid event id `{input}`: expected <ms>-<seq>")]
    InvalidId {
        /// The text that was given (truncated to 64 bytes).
        input: String,
    },
    /// A stored record failed to decode.
    #[error("corrupt event record: {reason}")]
    CorruptRecord {
        /// What is inconsistent.
        reason: &'static str,
    },
}
