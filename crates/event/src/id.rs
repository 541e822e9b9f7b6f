use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::EventError;

/// An event id, `<ms>-<seq>`: milliseconds since the Unix epoch and a sequence
/// number within that millisecond, the form Redis Streams use.
///
/// Ids order first by `ms`, then by `seq`, so a range of ids is a range of
/// time. Within a stream they strictly increase.
///
/// ```
/// use busbar_event::EventId;
/// let id: EventId = "1700000000000-3".parse().unwrap();
/// assert_eq!(id, EventId::new(1_700_000_000_000, 3));
/// assert_eq!(id.to_string(), "1700000000000-3");
/// assert!(id < EventId::new(1_700_000_000_001, 0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    /// Milliseconds since the Unix epoch.
    pub ms: u64,
    /// Sequence number within the millisecond.
    pub seq: u64,
}

impl EventId {
    /// The smallest id, `0-0`. No event has it; it stands for "nothing yet".
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };
    /// The largest id.
    pub const MAX: EventId = EventId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// An id from its parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        EventId { ms, seq }
    }

    /// The next id after this one, or `None` at [`EventId::MAX`].
    pub fn successor(self) -> Option<EventId> {
        if self.seq < u64::MAX {
            Some(EventId::new(self.ms, self.seq + 1))
        } else if self.ms < u64::MAX {
            Some(EventId::new(self.ms + 1, 0))
        } else {
            None
        }
    }

    /// The id before this one, or `None` at [`EventId::ZERO`].
    pub fn predecessor(self) -> Option<EventId> {
        if self.seq > 0 {
            Some(EventId::new(self.ms, self.seq - 1))
        } else if self.ms > 0 {
            Some(EventId::new(self.ms - 1, u64::MAX))
        } else {
            None
        }
    }

    /// Parses a range bound the way `XRANGE` does: `-` is the smallest id,
    /// `+` the largest, and a bare `<ms>` means `<ms>-0` as a start and
    /// `<ms>-<max>` as an end.
    ///
    /// # Errors
    /// [`EventError::InvalidId`] when the text is none of those forms.
    ///
    /// ```
    /// use busbar_event::EventId;
    /// assert_eq!(EventId::parse_bound("-", true).unwrap(), EventId::ZERO);
    /// assert_eq!(EventId::parse_bound("5", false).unwrap(), EventId::new(5, u64::MAX));
    /// ```
    pub fn parse_bound(text: &str, is_start: bool) -> Result<EventId, EventError> {
        match text {
            "-" => Ok(EventId::ZERO),
            "+" => Ok(EventId::MAX),
            _ if !text.contains('-') => {
                let ms = text.parse::<u64>().map_err(|_| invalid_id(text))?;
                Ok(EventId::new(ms, if is_start { 0 } else { u64::MAX }))
            }
            _ => text.parse(),
        }
    }
}

fn invalid_id(text: &str) -> EventError {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    EventError::InvalidId {
        input: text[..end].to_owned(),
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EventId {
    type Err = EventError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = text.split_once('-').ok_or_else(|| invalid_id(text))?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(invalid_id(text));
        }
        Ok(EventId::new(
            ms.parse().map_err(|_| invalid_id(text))?,
            seq.parse().map_err(|_| invalid_id(text))?,
        ))
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Assigns strictly increasing ids within one stream.
///
/// The millisecond part follows the wall clock; when the clock steps back (or
/// many events arrive within one millisecond) the id keeps the last
/// millisecond and bumps the sequence, so ids never go backwards.
///
/// ```
/// use busbar_event::{EventId, IdClock};
/// let mut clock = IdClock::new(EventId::new(100, 7));
/// assert_eq!(clock.next_at(50), EventId::new(100, 8)); // clock stepped back
/// assert_eq!(clock.next_at(101), EventId::new(101, 0));
/// assert!(clock.accept(EventId::new(101, 0)).is_err()); // not greater
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdClock {
    last: EventId,
}

/// An explicit id that is not greater than the stream's last id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdNotGreater {
    /// The id that was asked for.
    pub requested: EventId,
    /// The stream's last id.
    pub last: EventId,
}

impl IdClock {
    /// A clock continuing after `last`.
    pub fn new(last: EventId) -> Self {
        IdClock { last }
    }

    /// The last id handed out or accepted.
    pub fn last(&self) -> EventId {
        self.last
    }

    /// The next id given the wall clock reads `now_ms`.
    pub fn next_at(&mut self, now_ms: u64) -> EventId {
        let id = if now_ms > self.last.ms {
            EventId::new(now_ms, 0)
        } else {
            // Saturating: a stream that used up u64 sequence numbers in its
            // last millisecond moves to the next millisecond.
            self.last.successor().unwrap_or(EventId::MAX)
        };
        self.last = id;
        id
    }

    /// Accepts an explicit id if it is greater than the last one.
    ///
    /// # Errors
    /// [`IdNotGreater`] when `id` is not greater than the last id.
    pub fn accept(&mut self, id: EventId) -> Result<EventId, IdNotGreater> {
        if id > self.last {
            self.last = id;
            Ok(id)
        } else {
            Err(IdNotGreater {
                requested: id,
                last: self.last,
            })
        }
    }
}

/// Milliseconds since the Unix epoch by the system clock (0 before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_malformed_ids() {
        for bad in ["", "-", "1-", "-1", "a-1", "1-b", "1-2-3", "1 -2", "+1-2"] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn clock_never_goes_backwards() {
        let mut clock = IdClock::new(EventId::ZERO);
        let mut last = EventId::ZERO;
        for now in [5, 5, 3, 9, 1, 9, 10, 2] {
            let id = clock.next_at(now);
            assert!(id > last);
            last = id;
        }
    }

    #[test]
    fn saturated_sequence_moves_to_next_millisecond() {
        let mut clock = IdClock::new(EventId::new(7, u64::MAX));
        assert_eq!(clock.next_at(7), EventId::new(8, 0));
    }

    proptest::proptest! {
        #[test]
        fn display_round_trips(ms: u64, seq: u64) {
            let id = EventId::new(ms, seq);
            proptest::prop_assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
        }
    }
}
