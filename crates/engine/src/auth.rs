//! Tokens, scopes and tenants.
//!
//! When no token is configured every caller is [`Principal::Open`]. Once any
//! token is configured, TCP and HTTP callers must present one; the Unix
//! sockets stay [`Principal::Trusted`] (guarded by their file permissions).
//!
//! A tenant-bound token sees only streams named `<tenant>:...`, and events it
//! publishes carry its tenant (an event naming another tenant is refused).
//! Everything else it reaches is filtered the same way: the `/metrics`
//! samples of its streams, its groups' pauses, its jobs, its producer
//! sessions and live connections. A token without a tenant is the
//! operator's: it sees every tenant.

use std::sync::Arc;

use arc_swap::ArcSwap;
use busbar_event::StreamName;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::EngineError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Publish events.
    Publish,
    /// Read streams (and, later, consume in groups).
    Consume,
    /// Trim, delete, rotate and run operator commands. Implies
    /// [`Scope::Metrics`].
    Admin,
    /// Set broadcast delays of live sessions.
    Director,
    /// Scrape `/metrics` (for Prometheus; a tenant-bound token sees only
    /// its streams' samples and the process-wide ones).
    Metrics,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Consume => "consume",
            Scope::Admin => "admin",
            Scope::Director => "director",
            Scope::Metrics => "metrics",
        }
    }
}

/// A configured token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSpec {
    /// A name for logs and metrics (never the secret).
    pub name: String,
    /// The secret the client presents.
    pub secret: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The tenant it is bound to, if any.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No tokens are configured: everything is allowed.
    Open,
    /// A Unix-socket caller, trusted through file permissions.
    Trusted,
    /// A caller that presented a valid token.
    Token {
        /// The token's name.
        name: String,
        /// Its scopes.
        scopes: Vec<Scope>,
        /// Its tenant, if bound.
        tenant: Option<String>,
    },
}

impl Principal {
    /// Fails unless the principal has `scope`.
    ///
    /// # Errors
    /// [`EngineError::Forbidden`].
    pub fn require(&self, scope: Scope) -> Result<(), EngineError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(EngineError::Forbidden {
                scope: scope.as_str(),
            })
        }
    }

    /// Whether the principal has `scope` (`admin` implies `metrics`; open
    /// and trusted callers have every scope).
    pub fn has(&self, scope: Scope) -> bool {
        match self {
            Principal::Token { scopes, .. } => {
                scopes.contains(&scope)
                    || (scope == Scope::Metrics && scopes.contains(&Scope::Admin))
            }
            _ => true,
        }
    }

    /// Who it is, for counters and journals: the token's name (never its
    /// secret), `trusted` or `open`.
    pub fn name(&self) -> &str {
        match self {
            Principal::Token { name, .. } => name,
            Principal::Trusted => "trusted",
            Principal::Open => "open",
        }
    }

    /// The tenant the principal is bound to.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Principal::Token { tenant, .. } => tenant.as_deref(),
            _ => None,
        }
    }

    /// Whether the principal may see `stream`.
    pub fn can_access(&self, stream: &StreamName) -> bool {
        self.can_access_name(stream.as_str())
    }

    /// [`Principal::can_access`] for a name that may not be a valid
    /// stream name (a metric's `stream` label).
    pub fn can_access_name(&self, stream: &str) -> bool {
        match self.tenant() {
            None => true,
            Some(t) => stream
                .strip_prefix(t)
                .is_some_and(|rest| rest.starts_with(':')),
        }
    }

    /// Whether the principal may see what belongs to `tenant` (a producer
    /// session, a live connection): an untenanted principal sees every
    /// tenant's, a tenant-bound one only its own.
    pub fn sees_tenant(&self, tenant: Option<&str>) -> bool {
        match self.tenant() {
            None => true,
            Some(t) => tenant == Some(t),
        }
    }

    /// Fails unless the principal may see `stream`.
    ///
    /// # Errors
    /// [`EngineError::WrongTenant`].
    pub fn check_stream(&self, stream: &StreamName) -> Result<(), EngineError> {
        if self.can_access(stream) {
            Ok(())
        } else {
            Err(EngineError::WrongTenant {
                tenant: self.tenant().unwrap_or_default().to_owned(),
                stream: stream.clone(),
            })
        }
    }
}

/// The configured tokens.
///
/// They can be replaced while the daemon runs ([`Auth::replace`], a
/// config reload): every HTTP request, WebSocket handshake and socket
/// `hello` after the swap is checked against the new set; a connection
/// authenticated before keeps the principal it got. Clones share the set.
/// Reading it is one atomic load (`arc-swap`), no lock on the publish path.
#[derive(Clone, Default)]
pub struct Auth {
    tokens: Arc<ArcSwap<Vec<TokenSpec>>>,
}

// Hand-written so secrets never reach a log line through `{:?}`.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tokens = self.tokens.load();
        let names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("Auth").field("tokens", &names).finish()
    }
}

impl Auth {
    /// Auth over `tokens` (none: open).
    pub fn new(tokens: Vec<TokenSpec>) -> Self {
        Auth {
            tokens: Arc::new(ArcSwap::from_pointee(tokens)),
        }
    }

    /// Every configured secret, for redaction (a support pack removes each
    /// wherever it appears).
    pub fn secrets(&self) -> Vec<String> {
        self.tokens
            .load()
            .iter()
            .map(|t| t.secret.clone())
            .collect()
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.load().is_empty()
    }

    /// Replaces the configured tokens (none: open from now on).
    pub fn replace(&self, tokens: Vec<TokenSpec>) {
        self.tokens.store(Arc::new(tokens));
    }

    /// Resolves a presented secret (a bearer token, a `hello` token...).
    /// Every configured token is compared in constant time, so timing does
    /// not reveal which one nearly matched.
    ///
    /// # Errors
    /// [`EngineError::Unauthenticated`] without a secret when tokens are
    /// required, [`EngineError::BadToken`] for an unknown one.
    pub fn authenticate(&self, presented: Option<&str>) -> Result<Principal, EngineError> {
        let tokens = self.tokens.load();
        if tokens.is_empty() {
            return Ok(Principal::Open);
        }
        let presented = presented.ok_or(EngineError::Unauthenticated)?;
        let mut found = None;
        for token in tokens.iter() {
            let eq: bool = token.secret.as_bytes().ct_eq(presented.as_bytes()).into();
            if eq && found.is_none() {
                found = Some(token);
            }
        }
        let token = found.ok_or(EngineError::BadToken)?;
        Ok(Principal::Token {
            name: token.name.clone(),
            scopes: token.scopes.clone(),
            tenant: token.tenant.clone(),
        })
    }
}

/// The token of a `Bearer` authorization value (the scheme is
/// case-insensitive, as RFC 7235 says).
///
/// ```
/// assert_eq!(busbar_engine::bearer_token("bearer  abc "), Some("abc"));
/// assert_eq!(busbar_engine::bearer_token("Basic abc"), None);
/// ```
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(vec![
            TokenSpec {
                name: "ops".into(),
                secret: "s3cret".into(),
                scopes: vec![Scope::Admin, Scope::Publish, Scope::Consume],
                tenant: None,
            },
            TokenSpec {
                name: "acme-pub".into(),
                secret: "acme".into(),
                scopes: vec![Scope::Publish],
                tenant: Some("acme".into()),
            },
        ])
    }

    #[test]
    fn replaced_tokens_apply_to_the_next_check_and_clones_share_them() {
        let a = auth();
        let shared = a.clone();
        a.replace(vec![TokenSpec {
            name: "new".into(),
            secret: "n3w-secret".into(),
            scopes: vec![Scope::Publish],
            tenant: None,
        }]);
        assert!(matches!(
            shared.authenticate(Some("s3cret")),
            Err(EngineError::BadToken)
        ));
        assert!(matches!(
            shared.authenticate(Some("n3w-secret")),
            Ok(Principal::Token { ref name, .. }) if name == "new"
        ));
        assert!(!format!("{shared:?}").contains("n3w-secret"));
        a.replace(Vec::new());
        assert_eq!(shared.authenticate(None).unwrap(), Principal::Open);
    }

    #[test]
    fn open_without_tokens() {
        assert_eq!(Auth::default().authenticate(None).unwrap(), Principal::Open);
    }

    #[test]
    fn tokens_are_required_and_checked() {
        let a = auth();
        assert!(matches!(
            a.authenticate(None),
            Err(EngineError::Unauthenticated)
        ));
        assert!(matches!(
            a.authenticate(Some("nope")),
            Err(EngineError::BadToken)
        ));
        let p = a.authenticate(Some("acme")).unwrap();
        assert!(p.require(Scope::Publish).is_ok());
        assert!(matches!(
            p.require(Scope::Admin),
            Err(EngineError::Forbidden { scope: "admin" })
        ));
    }

    #[test]
    fn admin_implies_metrics_and_nothing_else_does() {
        let with = |scopes: Vec<Scope>| Principal::Token {
            name: "t".into(),
            scopes,
            tenant: None,
        };
        assert!(with(vec![Scope::Admin]).require(Scope::Metrics).is_ok());
        assert!(with(vec![Scope::Metrics]).require(Scope::Metrics).is_ok());
        assert!(with(vec![Scope::Metrics]).require(Scope::Admin).is_err());
        for other in [Scope::Publish, Scope::Consume, Scope::Director] {
            assert!(matches!(
                with(vec![other]).require(Scope::Metrics),
                Err(EngineError::Forbidden { scope: "metrics" })
            ));
        }
        assert!(Principal::Open.has(Scope::Metrics));
        assert!(Principal::Trusted.has(Scope::Metrics));
    }

    #[test]
    fn tenant_tokens_see_only_their_streams() {
        let p = auth().authenticate(Some("acme")).unwrap();
        assert!(p.can_access(&StreamName::new("acme:orders").unwrap()));
        assert!(!p.can_access(&StreamName::new("acmeco:orders").unwrap()));
        assert!(!p.can_access(&StreamName::new("events").unwrap()));
        assert!(p.sees_tenant(Some("acme")));
        assert!(!p.sees_tenant(Some("acmeco")));
        assert!(!p.sees_tenant(None));
        assert!(Principal::Open.sees_tenant(Some("acme")));
    }
}

#[cfg(test)]
mod bearer_tests {
    use super::bearer_token as bearer;

    #[test]
    fn parses_bearer_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer  "), None);
    }
}
