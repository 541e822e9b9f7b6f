use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::EventError;

/// The longest stream name, in bytes.
pub const MAX_STREAM_NAME_LEN: usize = 200;

/// A validated stream name: 1 to 200 bytes of ASCII letters, digits and
/// `_ - . :`, not starting with `.` or `-`.
///
/// Names map to directories of the embedded store, so the rules keep them
/// safe as path components. Cloning is cheap (shared).
///
/// ```
/// use busbar_event::StreamName;
/// assert!(StreamName::new("hyvve:events").is_ok());
/// assert!(StreamName::new("../etc").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamName(Arc<str>);

impl StreamName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`EventError::InvalidStreamName`] naming the broken rule.
    pub fn new(name: &str) -> Result<Self, EventError> {
        validate(name)?;
        Ok(StreamName(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A few recently seen [`StreamName`]s, so a parser that meets the same
/// names over and over hands out clones instead of allocating each time.
///
/// Holds at most `capacity` names; past that the oldest is forgotten.
#[derive(Debug, Clone, Default)]
pub struct StreamNames {
    names: Vec<StreamName>,
    capacity: usize,
}

impl StreamNames {
    /// Remembers up to `capacity` names.
    pub fn new(capacity: usize) -> Self {
        StreamNames {
            names: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// The name `name`: a clone of the one held, or a new one, validated
    /// and remembered.
    ///
    /// # Errors
    /// [`EventError::InvalidStreamName`] as [`StreamName::new`].
    pub fn get(&mut self, name: &str) -> Result<StreamName, EventError> {
        if let Some(held) = self.names.iter().find(|n| n.as_str() == name) {
            return Ok(held.clone());
        }
        let new = StreamName::new(name)?;
        if self.capacity > 0 {
            if self.names.len() == self.capacity {
                self.names.remove(0);
            }
            self.names.push(new.clone());
        }
        Ok(new)
    }

    /// How many names are held.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no name is held.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

fn validate(name: &str) -> Result<(), EventError> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.len() > MAX_STREAM_NAME_LEN {
        "longer than 200 bytes"
    } else if name.starts_with('.') || name.starts_with('-') {
        "must not start with '.' or '-'"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        "only ASCII letters, digits and _ - . : are allowed"
    } else {
        return Ok(());
    };
    Err(EventError::InvalidStreamName { reason })
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for StreamName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for StreamName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for StreamName {
    type Err = EventError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StreamName::new(s)
    }
}

impl serde::Serialize for StreamName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for StreamName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        StreamName::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        for good in ["events", "hyvve:events", "a.b_c-d", "x:dlq", "0"] {
            assert!(StreamName::new(good).is_ok(), "{good}");
        }
        let long = "a".repeat(201);
        for bad in ["", ".hidden", "-x", "a/b", "a b", "ä", long.as_str(), ".."] {
            assert!(StreamName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_shared_validated_and_bounded() {
        let mut names = StreamNames::new(2);
        let a = names.get("a").unwrap();
        let again = names.get("a").unwrap();
        assert!(Arc::ptr_eq(&a.0, &again.0), "the held name is cloned");
        assert!(names.get("a/b").is_err());
        names.get("b").unwrap();
        names.get("c").unwrap();
        assert_eq!(names.len(), 2);
        let fresh = names.get("a").unwrap();
        assert!(!Arc::ptr_eq(&a.0, &fresh.0), "the oldest was forgotten");
    }
}
