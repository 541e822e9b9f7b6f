//! What goes on the wire for each system: the event bytes a producer sends
//! and how its answers are counted.

use crate::redis;

/// The JSON event both systems receive. busbar gets it as one NDJSON line;
/// Redis gets it as the value of one field (`XADD <key> * event <json>`).
///
/// It is padded to exactly `bytes` (when that is at least the skeleton's
/// length) so both systems store the same number of payload bytes.
pub(crate) fn event_json(bytes: usize, stream: &str) -> Vec<u8> {
    let head = format!(r#"{{"type":"bench.ingest","stream":"{stream}","n":1,"data":""#);
    let tail = "\"}";
    let pad = bytes.saturating_sub(head.len() + tail.len());
    let mut out = Vec::with_capacity(head.len() + pad + tail.len());
    out.extend_from_slice(head.as_bytes());
    out.extend(std::iter::repeat_n(b'x', pad));
    out.extend_from_slice(tail.as_bytes());
    out
}

/// A system's producer protocol.
#[derive(Debug, Clone)]
pub(crate) enum Wire {
    /// busbar NDJSON with acks: one `{"id":...}` or `{"error":...}` line per
    /// event.
    Busbar,
    /// Redis RESP: one bulk string (the id) or one error per `XADD`.
    Redis,
}

/// Answers counted in a buffer.
#[derive(Debug, Default)]
pub(crate) struct Answers {
    /// Events answered (accepted or refused).
    pub(crate) answered: u64,
    /// Events refused.
    pub(crate) errors: u64,
    /// The first refusal seen.
    pub(crate) first_error: Option<String>,
}

impl Wire {
    pub(crate) fn system(&self) -> &'static str {
        match self {
            Wire::Busbar => "busbar",
            Wire::Redis => "redis",
        }
    }

    /// What a connection sends once before its first event.
    pub(crate) fn hello(&self) -> &'static [u8] {
        match self {
            Wire::Busbar => b"{\"hello\":{\"acks\":true}}\n",
            Wire::Redis => b"",
        }
    }

    /// The bytes of one event.
    pub(crate) fn frame(&self, json: &[u8], key: &str) -> Vec<u8> {
        match self {
            Wire::Busbar => {
                let mut line = json.to_vec();
                line.push(b'\n');
                line
            }
            Wire::Redis => redis::command(&[b"XADD", key.as_bytes(), b"*", b"event", json]),
        }
    }

    /// Counts the complete answers at the start of `buf` into `answers` and
    /// returns how many bytes they took.
    pub(crate) fn answers(&self, buf: &[u8], answers: &mut Answers) -> usize {
        match self {
            Wire::Busbar => busbar_answers(buf, answers),
            Wire::Redis => redis_answers(buf, answers),
        }
    }
}

fn refused(answers: &mut Answers, line: &[u8]) {
    answers.errors += 1;
    if answers.first_error.is_none() {
        answers.first_error = Some(String::from_utf8_lossy(line).into_owned());
    }
}

fn busbar_answers(buf: &[u8], answers: &mut Answers) -> usize {
    let mut start = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[start..]) {
        let line = &buf[start..start + i];
        answers.answered += 1;
        if !line.starts_with(b"{\"id\":") {
            refused(answers, line);
        }
        start += i + 1;
    }
    start
}

fn redis_answers(buf: &[u8], answers: &mut Answers) -> usize {
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        let Some(eol) = memchr::memmem::find(rest, b"\r\n") else {
            return start;
        };
        let head = &rest[..eol];
        let taken = match head.first() {
            Some(b'$') => {
                let len = std::str::from_utf8(&head[1..])
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or(-1);
                if len < 0 {
                    refused(answers, head);
                    eol + 2
                } else {
                    let need = eol + 2 + len as usize + 2;
                    if rest.len() < need {
                        return start;
                    }
                    need
                }
            }
            _ => {
                // `-ERR ...` or anything an XADD does not answer.
                refused(answers, head);
                eol + 2
            }
        };
        answers.answered += 1;
        start += taken;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_is_padded_to_the_asked_size_and_is_json() {
        for n in [10, 100, 200, 1000] {
            let e = event_json(n, "bench");
            let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
            assert_eq!(v["type"], "bench.ingest");
            if n >= 100 {
                assert_eq!(e.len(), n);
            }
        }
    }

    #[test]
    fn busbar_answers_count_complete_lines_and_errors() {
        let mut a = Answers::default();
        let buf = b"{\"id\":\"1-0\"}\n{\"error\":\"x\",\"message\":\"m\"}\n{\"id\":";
        let used = Wire::Busbar.answers(buf, &mut a);
        assert_eq!((a.answered, a.errors), (2, 1));
        assert_eq!(&buf[used..], b"{\"id\":");
        assert!(a.first_error.unwrap().contains("\"x\""));
    }

    #[test]
    fn redis_answers_wait_for_whole_bulk_strings() {
        let mut a = Answers::default();
        let buf = b"$3\r\n1-0\r\n-ERR wrong\r\n$3\r\n1-";
        let used = Wire::Redis.answers(buf, &mut a);
        assert_eq!((a.answered, a.errors), (2, 1));
        assert_eq!(&buf[used..], b"$3\r\n1-");
        assert_eq!(a.first_error.as_deref(), Some("-ERR wrong"));
    }
}
