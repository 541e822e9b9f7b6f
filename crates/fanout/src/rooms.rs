//! Rooms and the broadcast delay.
//!
//! `session:<id>` carries a session's events as they are published;
//! `broadcast:session:<id>` carries the same events `delay` later. The delay
//! is per session, set and changed at run time by a director of the
//! session's tenant (or an untenanted one); delayed rooms read from the
//! log, so a change of delay loses nothing: a shorter delay delivers the
//! backlog at once, a longer one holds delivery back. A room only ever
//! carries events of the streams and tenant its member may see.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use serde::Serialize;

use crate::FanoutError;

/// A room a connection can join.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Room {
    /// `session:<id>`: live.
    Session(String),
    /// `broadcast:session:<id>`: delayed.
    Broadcast(String),
}

fn valid_session(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

impl FromStr for Room {
    type Err = FanoutError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (room, id) = if let Some(id) = s.strip_prefix("broadcast:session:") {
            (Room::Broadcast(id.to_owned()), id)
        } else if let Some(id) = s.strip_prefix("session:") {
            (Room::Session(id.to_owned()), id)
        } else {
            return Err(FanoutError::BadRoom {
                reason: "rooms are session:<id> or broadcast:session:<id>",
            });
        };
        if valid_session(id) {
            Ok(room)
        } else {
            Err(FanoutError::BadRoom {
                reason: "a session id is 1 to 128 ASCII letters, digits or _ - . :",
            })
        }
    }
}

impl Room {
    /// The session the room follows.
    pub fn session(&self) -> &str {
        match self {
            Room::Session(s) | Room::Broadcast(s) => s,
        }
    }

    /// The room's name.
    pub fn name(&self) -> String {
        match self {
            Room::Session(s) => format!("session:{s}"),
            Room::Broadcast(s) => format!("broadcast:session:{s}"),
        }
    }
}

/// A session's broadcast delay, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelayState {
    /// The session.
    pub session: String,
    /// The tenant of the session it was set for (`None`: no tenant).
    pub tenant: Option<String>,
    /// The delay in ms.
    pub delay_ms: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Broadcast delays per session, each kept with the tenant of the session
/// it was set for: it applies to that tenant's rooms (and untenanted
/// callers'), never to another tenant's rooms of the same id.
#[derive(Debug)]
pub struct Delays {
    default: Duration,
    /// The longest delay a director may set, in milliseconds; changed by a
    /// config reload ([`Delays::set_max`]).
    max_ms: AtomicU64,
    map: RwLock<HashMap<String, (Duration, Option<String>)>>,
}

impl Delays {
    /// Delays defaulting to `default`, at most `max`.
    pub fn new(default: Duration, max: Duration) -> Self {
        Delays {
            default,
            max_ms: AtomicU64::new(millis(max)),
            map: RwLock::new(HashMap::new()),
        }
    }

    /// The delay of `session` in the rooms of a caller whose tenant is
    /// `viewer`: the delay set for it if it was set for `viewer`'s session
    /// (any, for an untenanted `viewer`), the default otherwise.
    pub fn get(&self, session: &str, viewer: Option<&str>) -> Duration {
        match self.map.read().get(session) {
            Some((delay, tenant)) if viewer.is_none() || tenant.as_deref() == viewer => *delay,
            _ => self.default,
        }
    }

    /// Fails unless `delay` is at most the configured maximum.
    ///
    /// # Errors
    /// [`FanoutError::DelayTooLong`].
    pub fn check(&self, delay: Duration) -> Result<(), FanoutError> {
        let max_ms = self.max_ms.load(Ordering::Relaxed);
        if millis(delay) > max_ms {
            return Err(FanoutError::DelayTooLong { max_ms });
        }
        Ok(())
    }

    /// Changes the longest delay a director may set from now on. Delays
    /// already set stay as they are.
    pub fn set_max(&self, max: Duration) {
        self.max_ms.store(millis(max), Ordering::Relaxed);
    }

    /// Sets the delay of `tenant`'s `session`.
    ///
    /// # Errors
    /// [`FanoutError::DelayTooLong`] past the configured maximum.
    pub fn set(
        &self,
        session: &str,
        tenant: Option<&str>,
        delay: Duration,
    ) -> Result<(), FanoutError> {
        self.check(delay)?;
        self.map
            .write()
            .insert(session.to_owned(), (delay, tenant.map(str::to_owned)));
        Ok(())
    }

    /// Every session with a delay set.
    pub fn list(&self) -> Vec<DelayState> {
        let mut v: Vec<DelayState> = self
            .map
            .read()
            .iter()
            .map(|(s, (d, tenant))| DelayState {
                session: s.clone(),
                tenant: tenant.clone(),
                delay_ms: d.as_millis() as u64,
            })
            .collect();
        v.sort_by(|a, b| a.session.cmp(&b.session));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rooms() {
        assert_eq!(
            "session:a1".parse::<Room>().unwrap(),
            Room::Session("a1".into())
        );
        assert_eq!(
            "broadcast:session:a1".parse::<Room>().unwrap(),
            Room::Broadcast("a1".into())
        );
        assert!("lobby".parse::<Room>().is_err());
        assert!("session:".parse::<Room>().is_err());
        assert!("session:a b".parse::<Room>().is_err());
    }

    #[test]
    fn delays_are_bounded() {
        let d = Delays::new(Duration::ZERO, Duration::from_secs(60));
        assert_eq!(d.get("x", None), Duration::ZERO);
        d.set("x", None, Duration::from_secs(5)).unwrap();
        assert_eq!(d.get("x", None), Duration::from_secs(5));
        assert!(d.set("x", None, Duration::from_secs(61)).is_err());
    }

    #[test]
    fn a_delay_applies_to_its_tenants_rooms_only() {
        let d = Delays::new(Duration::from_secs(1), Duration::from_secs(60));
        d.set("car7", Some("a"), Duration::from_secs(30)).unwrap();
        assert_eq!(d.get("car7", Some("a")), Duration::from_secs(30));
        assert_eq!(d.get("car7", None), Duration::from_secs(30));
        assert_eq!(d.get("car7", Some("b")), Duration::from_secs(1));
        assert_eq!(d.list()[0].tenant.as_deref(), Some("a"));
    }
}
