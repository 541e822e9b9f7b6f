//! One audit record: its fields, its line, and the canonical encoding its
//! hash covers.

use std::fmt;
use std::str::FromStr;

use busbar_engine::Principal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `prev` of the first record: 32 zero bytes.
pub const GENESIS: Hash = Hash([0; 32]);

/// The blake3 key-derivation context of record hashes: a record hash of
/// this log can never be mistaken for a hash of anything else.
const HASH_CONTEXT: &str = "busbar audit log 2026-12 record v1";

/// A record's (or the genesis) blake3 hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// The first `n` hex digits (the metric label uses 16).
    pub fn prefix(&self, n: usize) -> String {
        let mut hex = self.to_hex();
        hex.truncate(n);
        hex
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.prefix(16))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Hash {
    type Err = String;

    /// Exactly 64 lowercase hex digits: the one spelling the log writes,
    /// so a record cannot be altered by re-spelling its hashes.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!("`{s}` is not 64 lowercase hex digits"));
        }
        blake3::Hash::from_hex(s)
            .map(|h| Hash(*h.as_bytes()))
            .map_err(|e| e.to_string())
    }
}

/// Who performed an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// `token` (a caller that presented a token), `trusted` (a Unix socket
    /// or the command socket), `open` (no token is configured) or
    /// `system` (the audit log's own records).
    pub kind: String,
    /// The token's name (never its secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The token's tenant, if it is bound to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl Actor {
    /// The actor of `principal`: a token by name and tenant, `trusted` or
    /// `open`.
    pub fn of(principal: &Principal) -> Actor {
        match principal {
            Principal::Token { name, tenant, .. } => Actor {
                kind: "token".to_owned(),
                name: Some(name.clone()),
                tenant: tenant.clone(),
            },
            Principal::Trusted => Actor::kind("trusted"),
            Principal::Open => Actor::kind("open"),
        }
    }

    /// The audit log itself (repairs, lost records, a restarted chain).
    pub fn system() -> Actor {
        Actor::kind("system")
    }

    fn kind(kind: &str) -> Actor {
        Actor {
            kind: kind.to_owned(),
            name: None,
            tenant: None,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}:{name}", self.kind)?,
            None => f.write_str(&self.kind)?,
        }
        if let Some(t) = &self.tenant {
            write!(f, "@{t}")?;
        }
        Ok(())
    }
}

/// What a record says, before it is chained.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
    /// Who.
    pub actor: Actor,
    /// What (`stream.trim`, `dlq.purge`, ...).
    pub action: String,
    /// On what.
    pub target: String,
    /// With which parameters (a JSON object; no secrets, no payloads).
    pub params: Value,
}

/// One line of the log, as written and read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 1 for the first record, then one more per record.
    pub seq: u64,
    /// Milliseconds since the Unix epoch when the record was written.
    pub ts: u64,
    /// Who.
    pub actor: Actor,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// Parameters.
    pub params: Value,
    /// The hash of the record before (or [`GENESIS`]), 64 hex digits.
    pub prev: String,
    /// This record's hash, 64 hex digits (see [`Record::compute_hash`]).
    pub hash: String,
}

impl Record {
    /// Chains `entry` after the record with `seq - 1` whose hash is `prev`.
    pub fn chain(seq: u64, prev: Hash, entry: Entry) -> Record {
        let mut record = Record {
            seq,
            ts: entry.ts,
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
            params: entry.params,
            prev: prev.to_hex(),
            hash: String::new(),
        };
        record.hash = record.compute_hash(&prev).to_hex();
        record
    }

    /// blake3 (in key-derivation mode, with this log's own context) over
    /// the record's canonical encoding: every field but `hash`, in order,
    /// each length-prefixed (see the crate docs), with `prev` as raw bytes.
    pub fn compute_hash(&self, prev: &Hash) -> Hash {
        let mut h = blake3::Hasher::new_derive_key(HASH_CONTEXT);
        h.update(&self.seq.to_le_bytes());
        h.update(&self.ts.to_le_bytes());
        field(&mut h, self.actor.kind.as_bytes());
        optional(&mut h, self.actor.name.as_deref());
        optional(&mut h, self.actor.tenant.as_deref());
        field(&mut h, self.action.as_bytes());
        field(&mut h, self.target.as_bytes());
        let mut params = String::new();
        canonical_json(&self.params, &mut params);
        field(&mut h, params.as_bytes());
        h.update(&prev.0);
        Hash(*h.finalize().as_bytes())
    }

    /// The line written for the record (JSON, then `\n`).
    pub fn to_line(&self) -> Vec<u8> {
        // Serialising a struct of strings, numbers and a `Value` cannot
        // fail; an empty line would be reported by `verify`, never hidden.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn optional(h: &mut blake3::Hasher, value: Option<&str>) {
    match value {
        None => {
            h.update(&[0]);
        }
        Some(v) => {
            h.update(&[1]);
            field(h, v.as_bytes());
        }
    }
}

/// JSON with object keys sorted (by bytes) and no whitespace: the same
/// text for the same value however the line spelled it.
pub fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(key, out);
                out.push(':');
                canonical_json(&map[key], out);
            }
            out.push('}');
        }
    }
}

fn string(s: &str, out: &mut String) {
    // serde_json's escaping is deterministic for a given string.
    out.push_str(&Value::String(s.to_owned()).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> Entry {
        Entry {
            ts: 1_765_000_000_000,
            actor: Actor::of(&Principal::Token {
                name: "ops".into(),
                scopes: vec![],
                tenant: Some("acme".into()),
            }),
            action: "stream.trim".into(),
            target: "acme:orders".into(),
            params: json!({"trim": {"max_len": 10, "approx": false}, "removed": 3}),
        }
    }

    #[test]
    fn a_line_reads_back_to_the_same_hash() {
        let r = Record::chain(1, GENESIS, entry());
        let line = r.to_line();
        let back: Record = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.compute_hash(&GENESIS).to_hex(), r.hash);
        assert_eq!(r.prev, "0".repeat(64));
    }

    #[test]
    fn key_order_and_spacing_do_not_change_the_hash() {
        let mut a = Record::chain(1, GENESIS, entry());
        let b = a.clone();
        a.params =
            serde_json::from_str(r#"{ "removed" : 3, "trim": {"approx":false,"max_len":10} }"#)
                .unwrap();
        assert_eq!(a.compute_hash(&GENESIS), b.compute_hash(&GENESIS));
    }

    #[test]
    fn every_field_is_covered() {
        let r = Record::chain(2, GENESIS, entry());
        let base = r.compute_hash(&GENESIS);
        let mut changed = Vec::new();
        let mut v = r.clone();
        v.seq = 3;
        changed.push(v);
        let mut v = r.clone();
        v.ts += 1;
        changed.push(v);
        let mut v = r.clone();
        v.actor.name = Some("op".into());
        changed.push(v);
        let mut v = r.clone();
        v.actor.tenant = None;
        changed.push(v);
        let mut v = r.clone();
        v.action = "stream.delete".into();
        changed.push(v);
        let mut v = r.clone();
        v.target = "acme:order".into();
        changed.push(v);
        let mut v = r.clone();
        v.params["removed"] = json!(4);
        changed.push(v);
        for v in changed {
            assert_ne!(v.compute_hash(&GENESIS), base, "{v:?}");
        }
        assert_ne!(r.compute_hash(&Hash([1; 32])), base, "prev is covered");
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let mut a = Record::chain(1, GENESIS, entry());
        let mut b = a.clone();
        a.action = "ab".into();
        a.target = "c".into();
        b.action = "a".into();
        b.target = "bc".into();
        assert_ne!(a.compute_hash(&GENESIS), b.compute_hash(&GENESIS));
    }

    #[test]
    fn hashes_have_one_spelling() {
        let h = Record::chain(1, GENESIS, entry()).hash;
        assert!(h.parse::<Hash>().is_ok());
        assert!(h.to_uppercase().parse::<Hash>().is_err());
        assert!(h[1..].parse::<Hash>().is_err());
    }

    #[test]
    fn actors_name_tokens_never_secrets() {
        let a = Actor::of(&Principal::Token {
            name: "ops".into(),
            scopes: vec![],
            tenant: None,
        });
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"kind":"token","name":"ops"}"#
        );
        assert_eq!(a.to_string(), "token:ops");
        assert_eq!(Actor::of(&Principal::Trusted).to_string(), "trusted");
        assert_eq!(Actor::of(&Principal::Open).to_string(), "open");
    }
}
