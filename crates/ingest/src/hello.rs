//! The first line of an ingest connection: a hello (acks, token) or the
//! first event or op, and who the caller is.

use busbar_engine::{EngineError, Principal, Transport};
use busbar_event::{LineKind, StreamNames};
use serde::Deserialize;

use crate::answer::ErrorLine;
use crate::connection::ConnectionContext;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Hello {
    #[serde(default)]
    acks: bool,
    #[serde(default)]
    token: Option<String>,
}

/// The first line: a hello, or the first event or op.
pub(crate) enum First<'a> {
    Hello {
        acks: bool,
        principal: Principal,
    },
    /// Not a hello: answered when it is an op (`kind` says what it is,
    /// so the line is not parsed again).
    Line {
        acks: bool,
        principal: Principal,
        kind: Option<LineKind<'a>>,
    },
    Refuse(ErrorLine),
}

impl ConnectionContext {
    pub(crate) fn first_line<'l>(&self, line: &'l [u8]) -> First<'l> {
        let auth = self.engine.auth();
        let principal_for = |token: Option<&str>| -> Result<Principal, EngineError> {
            match self.transport {
                // The socket's file mode is the access control.
                Transport::Unix => Ok(Principal::Trusted),
                _ => auth.authenticate(token),
            }
        };
        if let Some(hello) = parse_hello(line, self.limits.max_depth) {
            return match hello {
                Ok(h) => match principal_for(h.token.as_deref()) {
                    Ok(principal) => First::Hello {
                        acks: h.acks,
                        principal,
                    },
                    Err(e) => {
                        self.engine.count_error(self.transport, &e);
                        First::Refuse(ErrorLine::from_engine(&e))
                    }
                },
                Err(message) => {
                    self.engine
                        .metrics()
                        .ingest_errors
                        .get([self.transport.as_str(), "bad_hello"])
                        .inc();
                    First::Refuse(ErrorLine::new("bad_hello", message))
                }
            };
        }
        // A connection that opens with a group op wants answers.
        let kind = busbar_event::parse_line_with(line, &self.limits, &mut StreamNames::new(1));
        self.no_hello(Some(kind))
    }

    /// A connection whose first line is not a hello (`kind`: what it is,
    /// when it fit in a line).
    pub(crate) fn no_hello<'l>(&self, kind: Option<LineKind<'l>>) -> First<'l> {
        let principal = match self.transport {
            Transport::Unix => Ok(Principal::Trusted),
            _ => self.engine.auth().authenticate(None),
        };
        let acks = matches!(kind, Some(LineKind::Op(_)));
        match principal {
            Ok(principal) => First::Line {
                acks,
                principal,
                kind,
            },
            Err(e) => {
                self.engine.count_error(self.transport, &e);
                First::Refuse(ErrorLine::new(
                    e.reason(),
                    format!("{e}: send {{\"hello\":{{\"token\":\"<secret>\"}}}} as the first line"),
                ))
            }
        }
    }
}

/// `Some` when the line is a hello: `Ok` if understood, `Err(message)` if
/// it names `hello` but is not a valid one. A line past the limits
/// (`max_depth`, the number rules) is no hello: it is then refused as the
/// event or op it claims to be, for that reason.
fn parse_hello(line: &[u8], max_depth: usize) -> Option<Result<Hello, String>> {
    // Cheap test first: most first lines are events.
    memchr::memmem::find(line, b"\"hello\"")?;
    busbar_event::check_json(line, max_depth).ok()?;
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let object = value.as_object()?;
    let hello = object.get("hello")?;
    if object.len() != 1 {
        return Some(Err(
            "a hello line holds only {\"hello\":{\"acks\":bool,\"token\":string}}".to_owned(),
        ));
    }
    Some(Hello::deserialize(hello).map_err(|e| {
        format!("invalid hello: {e}; expected {{\"hello\":{{\"acks\":bool,\"token\":string}}}}")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_detection() {
        assert!(parse_hello(br#"{"type":"t"}"#, 64).is_none());
        assert!(parse_hello(br#"{"type":"t","data":"hello"}"#, 64).is_none());
        assert!(parse_hello(br#"{"type":"t","hello":1}"#, 64)
            .unwrap()
            .is_err());
        let h = parse_hello(br#"{"hello":{"acks":true,"token":"x"}}"#, 64)
            .unwrap()
            .unwrap();
        assert!(h.acks);
        assert_eq!(h.token.as_deref(), Some("x"));
        assert!(!parse_hello(br#"{"hello":{}}"#, 64).unwrap().unwrap().acks);
        assert!(parse_hello(br#"{"hello":{"ack":true}}"#, 64)
            .unwrap()
            .is_err());
        // Past the limits a line is not read as a hello at all.
        let deep = format!(
            r#"{{"hello":{{"acks":true}},"x":{}{}}}"#,
            "[".repeat(8),
            "]".repeat(8)
        );
        assert!(parse_hello(deep.as_bytes(), 64).unwrap().is_err());
        assert!(parse_hello(deep.as_bytes(), 4).is_none());
        assert!(parse_hello(br#"{"hello":{"acks":true},"n":1e999}"#, 64).is_none());
    }
}
