//! Redaction for support packs: what leaves the machine in a pack has no
//! secret and no whole identifier in it.
//!
//! | what | becomes | how it is found |
//! |---|---|---|
//! | a configured token's secret | `[redacted:token]` | every secret the daemon knows, wherever it appears |
//! | a JWT | `[redacted:jwt]` | `eyJ…` in three dot-separated base64url parts |
//! | a bearer credential | `Bearer [redacted]` | the `Bearer` scheme |
//! | the value of a secret-like key (`secret`, `token`, `password`, `api_key`, `authorization`, `private_key`, `client_secret`...) | `[redacted]` | `key = value`, `key: value`, `"key":"value"`, in config, JSON and log lines |
//! | well-known API key shapes (`sk_live_…`, `AKIA…`, `ghp_…`, `xox…-`) | `[redacted:key]` | their prefixes |
//! | an e-mail address | its first character, `***@***` | the address shape |
//! | a session or user id (`session`, `sessionId`, `user`, `userId`...) | its first 4 characters and `…` | the key it is the value of |
//!
//! Redaction works on text, so it applies to every file of a pack alike
//! (config, JSON, metrics, logs); JSON stays valid because replacements
//! keep to the quoted value they replace.

use regex::{Captures, Regex};

/// Keeps the first this many characters of an id.
pub const KEEP_ID_CHARS: usize = 4;

/// The redaction rules, with the daemon's own secrets.
#[derive(Debug)]
pub struct Redactor {
    secrets: Vec<String>,
    jwt: Regex,
    bearer: Regex,
    keyed_secret: Regex,
    api_key: Regex,
    email: Regex,
    keyed_id: Regex,
}

impl Redactor {
    /// Rules that also remove each of `secrets` (shorter than 4 characters
    /// are ignored: they would redact ordinary text).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        // Longest first, so a secret containing another goes whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let re = |p: &str| Regex::new(p).unwrap_or_else(|e| panic!("redaction pattern {p}: {e}"));
        Redactor {
            secrets,
            jwt: re(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
            bearer: re(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=-]+"),
            keyed_secret: re(
                r#"(?i)((?:secret|token|passw(?:or)?d|pwd|api[_-]?key|apikey|access[_-]?key|private[_-]?key|client[_-]?secret|authorization|credentials?|auth[_-]?token)[A-Za-z0-9_-]*"?'?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|'[^']*'|[^\s,}\]&;\[{][^\s,}\]&;]*)"#,
            ),
            api_key: re(
                r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{8,}|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{20,}|\bxox[abposr]-[A-Za-z0-9-]{10,}",
            ),
            email: re(
                r"([A-Za-z0-9])[A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            ),
            keyed_id: re(
                r#"(?i)((?:session|user|customer|account)(?:[_-]?id)?"?\s*[:=]\s*"?)([A-Za-z0-9_.:@+/-]{5,})"#,
            ),
        }
    }

    /// `text` with every rule applied.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "[redacted:token]");
            }
        }
        let out = self.jwt.replace_all(&out, "[redacted:jwt]");
        let out = self.api_key.replace_all(&out, "[redacted:key]");
        let out = self.bearer.replace_all(&out, "${1}${2}[redacted]");
        let out = self.keyed_secret.replace_all(&out, |c: &Captures<'_>| {
            let value = &c[2];
            let quoted = value.starts_with('"') || value.starts_with('\'');
            let q = if quoted { &value[..1] } else { "" };
            // Already redacted, or no value: leave it.
            if value.contains("[redacted") || value == "\"\"" {
                return format!("{}{value}", &c[1]);
            }
            // A count or a boolean is not a secret (`tokens = 3`).
            if value.chars().all(|ch| ch.is_ascii_digit()) || value == "true" || value == "false" {
                return format!("{}{value}", &c[1]);
            }
            format!("{}{q}[redacted]{q}", &c[1])
        });
        let out = self.email.replace_all(&out, "${1}***@***");
        let out = self.keyed_id.replace_all(&out, |c: &Captures<'_>| {
            let id = &c[2];
            if id.contains("[redacted") || id.ends_with('…') {
                return format!("{}{id}", &c[1]);
            }
            let kept: String = id.chars().take(KEEP_ID_CHARS).collect();
            format!("{}{kept}…", &c[1])
        });
        out.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Redactor {
        Redactor::new(["s3cret-admin-token".to_owned(), "abc".to_owned()])
    }

    #[test]
    fn configured_secrets_go_wherever_they_are() {
        let out = r().text("called with s3cret-admin-token in a log line");
        assert_eq!(out, "called with [redacted:token] in a log line");
        // Too short to be told from text: kept.
        assert!(r().text("abc").contains("abc"));
    }

    #[test]
    fn jwts_bearers_and_key_shapes_go() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl";
        let out = r().text(&format!(
            "token {jwt} and Authorization: Bearer abc.def-ghi"
        ));
        assert!(!out.contains("eyJ"), "{out}");
        assert!(!out.contains("abc.def-ghi"), "{out}");
        let out = r().text("key sk_live_4eC39HqLyjWDarjtT1zdp7dc and AKIAIOSFODNN7EXAMPLE");
        assert!(
            !out.contains("4eC39H") && !out.contains("AKIAIOSF"),
            "{out}"
        );
    }

    #[test]
    fn secret_like_keys_lose_their_values_in_toml_json_and_logs() {
        let toml = "[auth]\ntokens = [{ name = \"ops\", secret = \"hunter2hunter2\" }]\napi_key = 'k-123'\n";
        let out = r().text(toml);
        assert!(!out.contains("hunter2") && !out.contains("k-123"), "{out}");
        assert!(out.contains("name = \"ops\""), "{out}");
        let json = r#"{"password":"pa ss","client_secret":"cs","tokens":3}"#;
        let out = r().text(json);
        assert_eq!(
            out,
            r#"{"password":"[redacted]","client_secret":"[redacted]","tokens":3}"#
        );
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
        let out = r().text("INFO login password=pw123 user=bob");
        assert!(!out.contains("pw123"), "{out}");
    }

    #[test]
    fn emails_are_masked_and_ids_truncated() {
        let out = r().text(r#"{"email":"jane.doe@example.com","sessionId":"sess_abcdef123","userId":"user-98765"}"#);
        assert!(
            !out.contains("jane.doe") && !out.contains("example.com"),
            "{out}"
        );
        assert!(out.contains("j***@***"), "{out}");
        assert!(
            !out.contains("sess_abcdef123") && out.contains("\"sessionId\":\"sess…\""),
            "{out}"
        );
        assert!(!out.contains("user-98765"), "{out}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
        let out = r().text("drift_warn session=race-2024-monza tenant=acme");
        assert!(out.contains("session=race…"), "{out}");
    }
}
