//! Answers that carry events (range and tail reads, group deliveries, dead
//! letters), decoded one event at a time.
//!
//! An event the CLI cannot decode (stored by a busbar that had no input
//! limits: nested deeper than serde_json reads, or holding a number out of
//! a float's range) is reported with its id and the reason, and the command
//! exits non-zero once it has printed every event it could. It never hides
//! the other events of the answer, and it is never taken for "no events".

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::client::ClientError;

/// Where an item of an answer holds its event's id.
#[derive(Debug, Clone, Copy)]
pub enum IdAt {
    /// The item is an event: `{"id":...}`.
    Item,
    /// The item is a delivery: `{"event":{"id":...}}`.
    Event,
}

/// An answer whose `field` holds events or deliveries.
#[derive(Debug)]
pub struct Page<'a> {
    /// The answer's members as they came, `field` among them.
    members: BTreeMap<String, &'a RawValue>,
    /// The items that decoded, in order.
    pub items: Vec<Item>,
    /// The items that did not.
    pub failed: Vec<Undecodable>,
    /// The id of the answer's last item, decoded or not.
    pub last_id: Option<String>,
}

/// An item of an answer, decoded.
#[derive(Debug)]
pub struct Item {
    /// Its value, for tables.
    pub value: Value,
    /// Its text as the daemon sent it, on one line: what `--json` prints,
    /// so numbers and payloads come out exactly as they were stored.
    pub text: String,
}

/// An item of an answer that could not be decoded.
#[derive(Debug)]
pub struct Undecodable {
    /// The event's id (`?` if even that could not be read).
    pub id: String,
    /// What the decoder said.
    pub reason: String,
}

impl<'a> Page<'a> {
    /// Splits `answer` and decodes each item of `field` on its own.
    ///
    /// # Errors
    /// [`ClientError::Undecodable`] when the answer itself is not a JSON
    /// object, or `field` is not an array.
    pub fn new(answer: &'a str, field: &str, id_at: IdAt) -> Result<Page<'a>, ClientError> {
        let undecodable = |e: serde_json::Error| ClientError::Undecodable {
            message: e.to_string(),
        };
        // Raw members are skipped, not decoded: nothing in an event can
        // fail this.
        let members: BTreeMap<String, &RawValue> =
            serde_json::from_str(answer).map_err(undecodable)?;
        let raw: Vec<&RawValue> = match members.get(field) {
            Some(list) => serde_json::from_str(list.get()).map_err(undecodable)?,
            None => Vec::new(),
        };
        let mut page = Page {
            members,
            items: Vec::with_capacity(raw.len()),
            failed: Vec::new(),
            last_id: None,
        };
        for item in raw {
            let id = id_of(item.get(), id_at);
            match serde_json::from_str::<Value>(item.get()) {
                Ok(value) => page.items.push(Item {
                    value,
                    text: one_line(item.get()),
                }),
                Err(e) => page.failed.push(Undecodable {
                    id: id.clone().unwrap_or_else(|| "?".to_owned()),
                    reason: e.to_string(),
                }),
            }
            if id.is_some() {
                page.last_id = id;
            }
        }
        Ok(page)
    }

    /// A member of the answer other than the items (`next`, counts).
    pub fn member(&self, name: &str) -> Value {
        self.members
            .get(name)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(Value::Null)
    }

    /// How many items the answer held, decoded or not.
    pub fn len(&self) -> usize {
        self.items.len() + self.failed.len()
    }

    /// Whether the answer held no item at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer as one line of JSON, with `field` holding only the items
    /// that decoded (each as the daemon sent it).
    pub fn to_json_line(&self, field: &str) -> String {
        let items: Vec<&str> = self.items.iter().map(|i| i.text.as_str()).collect();
        let list = format!("[{}]", items.join(","));
        let mut out = String::from("{");
        for (i, (name, raw)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(name).unwrap_or_default());
            out.push(':');
            if name == field {
                out.push_str(&list);
            } else {
                out.push_str(&one_line(raw.get()));
            }
        }
        out.push('}');
        out
    }
}

/// Writes one line to stderr per item that could not be decoded, and says
/// what the exit status is: non-zero when there was any.
pub fn report(what: &str, failed: &[Undecodable]) -> ExitCode {
    let mut err = std::io::stderr().lock();
    for f in failed {
        let _ = writeln!(
            err,
            "busbar: {what} {} could not be decoded: {}",
            f.id, f.reason
        );
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        let _ = writeln!(
            err,
            "busbar: {} {what}(s) not shown; the others were",
            failed.len()
        );
        ExitCode::FAILURE
    }
}

/// The id of an item, read without decoding the rest of it (skipped, not
/// decoded: it cannot fail for depth or numbers).
fn id_of(item: &str, id_at: IdAt) -> Option<String> {
    #[derive(Deserialize)]
    struct Event {
        id: String,
    }
    #[derive(Deserialize)]
    struct Delivery {
        event: Event,
    }
    match id_at {
        IdAt::Item => serde_json::from_str::<Event>(item).ok().map(|e| e.id),
        IdAt::Event => serde_json::from_str::<Delivery>(item)
            .ok()
            .map(|d| d.event.id),
    }
}

/// Valid JSON text without the whitespace between its tokens (a producer's
/// payload may span lines), strings untouched.
fn one_line(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep(n: usize) -> String {
        format!("{}1{}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn an_undecodable_event_is_reported_and_hides_no_other() {
        let answer = format!(
            r#"{{"events":[{{"id":"1-0","data":{{"n":1}}}},{{"id":"2-0","data":{}}},{{"id":"3-0","data":{{"n":1e999}}}},{{"id":"4-0","data":"x"}}],"next":"5-0"}}"#,
            deep(200)
        );
        let page = Page::new(&answer, "events", IdAt::Item).unwrap();
        let ids: Vec<&str> = page
            .items
            .iter()
            .map(|i| i.value["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["1-0", "4-0"]);
        assert_eq!(page.failed.len(), 2);
        assert_eq!(page.failed[0].id, "2-0");
        assert!(
            page.failed[0].reason.contains("recursion limit"),
            "{:?}",
            page.failed
        );
        assert_eq!(page.failed[1].id, "3-0");
        assert!(page.failed[1].reason.contains("out of range"));
        assert_eq!(page.last_id.as_deref(), Some("4-0"));
        assert_eq!(page.member("next"), "5-0");
        assert_eq!(page.len(), 4);
        assert_eq!(
            page.to_json_line("events"),
            r#"{"events":[{"id":"1-0","data":{"n":1}},{"id":"4-0","data":"x"}],"next":"5-0"}"#
        );
    }

    #[test]
    fn deliveries_name_their_event() {
        let answer = format!(
            r#"{{"deliveries":[{{"delivery_count":1,"event":{{"id":"7-1","data":{}}}}}]}}"#,
            deep(300)
        );
        let page = Page::new(&answer, "deliveries", IdAt::Event).unwrap();
        assert!(page.items.is_empty());
        assert_eq!(page.failed[0].id, "7-1");
    }

    #[test]
    fn text_is_kept_exactly_on_one_line() {
        let answer = "{\"events\":[{\"id\":\"1-0\",\"data\":{\"big\": 123456789012345678901234567890,\n \"s\":\"a b\\\" c\"}}]}";
        let page = Page::new(answer, "events", IdAt::Item).unwrap();
        assert_eq!(
            page.items[0].text,
            r#"{"id":"1-0","data":{"big":123456789012345678901234567890,"s":"a b\" c"}}"#
        );
    }

    #[test]
    fn an_answer_that_is_not_json_is_an_error() {
        assert!(Page::new("<html>", "events", IdAt::Item).is_err());
        assert!(Page::new(r#"{"events":5}"#, "events", IdAt::Item).is_err());
        let none = Page::new(r#"{"next":null}"#, "events", IdAt::Item).unwrap();
        assert!(none.is_empty());
    }
}
