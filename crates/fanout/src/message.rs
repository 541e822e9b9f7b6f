//! What a connection sends: text messages (one JSON message each), and the
//! few control messages a transport may or may not have.

use bytes::Bytes;

/// A text message: UTF-8 by construction, shared by reference count, so
/// one rendered event goes to a thousand subscribers without a copy and a
/// transport can frame it without checking it again.
#[derive(Clone, PartialEq, Eq)]
pub struct Text(Bytes);

impl Text {
    /// A message from a static string.
    pub const fn from_static(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// A message from bytes, if they are UTF-8.
    ///
    /// # Errors
    /// The bytes are not UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Text, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Text(bytes))
    }

    /// The message.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor takes a `str` or checks the bytes, and
        // the bytes are never changed afterwards.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The message's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The shared buffer (UTF-8).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        // A `String` whose length is its capacity becomes the buffer
        // without a copy.
        Text(Bytes::from(s))
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Self {
        Text::from_static(s)
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why busbar closes a connection, for transports that can say it (a
/// WebSocket close frame; RFC 6455 section 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// The status code (1000 normal, 1008 policy, 1009 too big, 1011
    /// internal error, 1013 try again later...).
    pub code: u16,
    /// A short reason (at most 123 bytes on the wire).
    pub reason: &'static str,
}

/// A message on a connection's send queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A JSON message.
    Text(Text),
    /// A heartbeat (WebSocket ping; line transports skip it).
    Ping,
    /// The last message: the transport closes after writing it.
    Close(Option<CloseReason>),
}

impl From<Text> for Outgoing {
    fn from(t: Text) -> Self {
        Outgoing::Text(t)
    }
}

impl From<String> for Outgoing {
    fn from(s: String) -> Self {
        Outgoing::Text(s.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_utf8_and_shares_its_buffer() {
        let s = String::from("{\"a\":\"é\"}");
        let ptr = s.as_ptr();
        let t = Text::from(s);
        assert_eq!(t.as_str(), "{\"a\":\"é\"}");
        assert_eq!(t.clone().into_bytes().as_ptr(), ptr);
        assert!(Text::from_utf8(Bytes::from_static(b"\xff")).is_err());
        assert_eq!(
            Text::from_utf8(Bytes::from_static(b"ok")).unwrap().as_str(),
            "ok"
        );
    }
}
