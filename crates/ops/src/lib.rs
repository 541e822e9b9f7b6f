//! busbar's operator surfaces, owned in one place: the command socket
//! (`commands.sock`, `busbar cmd`) with its registry of commands, and the
//! `/api/ops/*` HTTP routes.
//!
//! Other crates register what they bring instead of this crate (or the
//! transports) growing a dependency on each of them:
//!
//! - [`Ops::command`] adds a command to the socket (a relay's `reload`, the
//!   overload governor's `cleanup`). The built-in ones are `health`,
//!   `stats`, `rotate`, `flush` and `streams` ([`commands`]).
//! - [`Ops::add_flusher`] adds something `flush` pushes (a relay sink's
//!   backlog). With none registered, `flush` says so: there is nothing to
//!   flush.
//! - [`Ops::route`] adds an `/api/ops/*` route; [`OpsCaller`] authenticates
//!   its caller (the `admin` scope, with the caller's tenant, so an answer
//!   can be filtered by it). [`Ops::router`] is what the HTTP listener
//!   merges.
//!
//! ```
//! use std::sync::Arc;
//! use busbar_engine::Engine;
//! use busbar_ops::Ops;
//! use busbar_store::memory::MemoryStore;
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let engine = Engine::builder(Arc::new(MemoryStore::new())).build();
//! let ops = Ops::new(engine);
//! ops.command("hello", "answers hello", |_args| async { json!({"ok": true, "hello": "world"}) });
//! let answer = ops.handle_line("hello").await;
//! assert_eq!(answer["hello"], "world");
//! # });
//! ```

#![warn(missing_docs)]

pub mod commands;
pub mod events;
mod http;
pub mod pack;
pub mod redact;
mod socket;
pub mod summary;
pub mod trace;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::routing::MethodRouter;
use busbar_engine::{Engine, Principal};
use parking_lot::RwLock;
use serde_json::Value;

pub use http::{bad_query, deny, OpsCaller};
pub use socket::serve_commands;

/// The future a command runs as.
pub type CommandFuture = Pin<Box<dyn Future<Output = Value> + Send>>;

/// A command of the command socket: takes the arguments (`null` or an
/// object) and answers a JSON object with `ok`.
pub trait Command: Send + Sync + 'static {
    /// Runs the command.
    fn run(&self, args: Value) -> CommandFuture;
}

impl<F, Fut> Command for F
where
    F: Fn(Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Value> + Send + 'static,
{
    fn run(&self, args: Value) -> CommandFuture {
        Box::pin(self(args))
    }
}

/// What a flush of one registered backlog did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Flushed {
    /// The backlog (a relay sink's name).
    pub name: String,
    /// Events it sent.
    pub sent: u64,
    /// Why it could not finish, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The future a flush runs as.
pub type FlushFuture = Pin<Box<dyn Future<Output = Flushed> + Send>>;

/// Something `flush` pushes now, skipping any backoff (a relay sink).
pub trait Flusher: Send + Sync + 'static {
    /// Pushes what is waiting and says how much went.
    fn flush(&self) -> FlushFuture;
}

struct Registered {
    help: &'static str,
    command: Arc<dyn Command>,
}

/// A part of the summary a side service adds: what `principal` may see of
/// it, as JSON.
pub type Section = Arc<dyn Fn(&Principal) -> Value + Send + Sync>;

/// The registry of operator surfaces. Cheap to share (`Arc<Ops>`).
pub struct Ops {
    engine: Arc<Engine>,
    commands: RwLock<BTreeMap<&'static str, Registered>>,
    flushers: RwLock<Vec<Arc<dyn Flusher>>>,
    routes: RwLock<Vec<(&'static str, &'static [&'static str], MethodRouter)>>,
    sections: RwLock<Vec<(&'static str, Section)>>,
    sampler: summary::Sampler,
    traces: Arc<trace::Traces>,
    pack_parts: RwLock<Vec<(&'static str, Section)>>,
    session_lookup: RwLock<Option<SessionLookup>>,
    log_tail: RwLock<Arc<pack::LogTail>>,
    config_source: RwLock<pack::ConfigSource>,
    /// Whether trace mode and support packs are served (`[ops]
    /// diagnostics`).
    diagnostics: Arc<std::sync::atomic::AtomicBool>,
}

/// Finds one producer session's statistics as `principal` may see them
/// (`None`: unknown to it).
pub type SessionLookup = Arc<dyn Fn(&Principal, &str) -> Option<Value> + Send + Sync>;

/// Bytes of log lines kept for support packs.
pub const LOG_TAIL_BYTES: usize = 1 << 20;

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("commands", &self.command_names())
            .field("routes", &self.paths())
            .finish_non_exhaustive()
    }
}

impl Ops {
    /// The registry over `engine`, with the built-in commands and routes
    /// and trace mode's default bounds.
    pub fn new(engine: Arc<Engine>) -> Arc<Ops> {
        Ops::with_traces(engine, trace::TraceConfig::default())
    }

    /// [`Ops::new`] with trace mode's bounds.
    pub fn with_traces(engine: Arc<Engine>, traces: trace::TraceConfig) -> Arc<Ops> {
        let sampler = summary::Sampler::new(&engine);
        engine.add_hook(sampler.counting.clone());
        let traces = trace::Traces::new(traces);
        engine.add_hook(Arc::new(trace::TraceHook(traces.clone())));
        let ops = Arc::new(Ops {
            engine,
            commands: RwLock::new(BTreeMap::new()),
            flushers: RwLock::new(Vec::new()),
            routes: RwLock::new(Vec::new()),
            sections: RwLock::new(Vec::new()),
            sampler,
            traces,
            pack_parts: RwLock::new(Vec::new()),
            session_lookup: RwLock::new(None),
            log_tail: RwLock::new(pack::LogTail::new(LOG_TAIL_BYTES)),
            config_source: RwLock::new(pack::ConfigSource::default()),
            diagnostics: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        });
        commands::register_builtins(&ops);
        http::register_builtins(&ops);
        ops
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Adds (or replaces) the command `name`; `help` is one line for the
    /// list of commands.
    pub fn command(&self, name: &'static str, help: &'static str, command: impl Command) {
        self.commands.write().insert(
            name,
            Registered {
                help,
                command: Arc::new(command),
            },
        );
    }

    /// The registered commands, by name.
    pub fn command_names(&self) -> Vec<&'static str> {
        self.commands.read().keys().copied().collect()
    }

    /// Every command with its help line.
    pub fn command_help(&self) -> Vec<(&'static str, &'static str)> {
        self.commands
            .read()
            .iter()
            .map(|(name, r)| (*name, r.help))
            .collect()
    }

    fn find(&self, name: &str) -> Option<(&'static str, Arc<dyn Command>)> {
        self.commands
            .read()
            .get_key_value(name)
            .map(|(k, r)| (*k, r.command.clone()))
    }

    /// Adds a backlog `flush` pushes.
    pub fn add_flusher(&self, flusher: Arc<dyn Flusher>) {
        self.flushers.write().push(flusher);
    }

    fn flushers(&self) -> Vec<Arc<dyn Flusher>> {
        self.flushers.read().clone()
    }

    /// Adds a `GET` route (an `/api/ops/*` path in OpenAPI syntax,
    /// `{param}`). Handlers authenticate with [`OpsCaller`].
    pub fn route(&self, path: &'static str, methods: MethodRouter) {
        self.route_with(&["GET"], path, methods);
    }

    /// Adds a route answering `verbs` (`POST`...), for documentation and
    /// the checks that call every route.
    pub fn route_with(
        &self,
        verbs: &'static [&'static str],
        path: &'static str,
        methods: MethodRouter,
    ) {
        self.routes.write().push((path, verbs, methods));
    }

    /// The paths of the registered routes (for documentation checks).
    pub fn paths(&self) -> Vec<&'static str> {
        self.routes.read().iter().map(|(p, _, _)| *p).collect()
    }

    /// Every registered route's (method, path).
    pub fn endpoints(&self) -> Vec<(&'static str, &'static str)> {
        self.routes
            .read()
            .iter()
            .flat_map(|(p, verbs, _)| verbs.iter().map(move |v| (*v, *p)))
            .collect()
    }

    /// Adds (or replaces) a file of support packs ([`pack`]): `name` (such
    /// as `sessions.json`) holds what `principal` may see, as JSON.
    pub fn add_pack_part(
        &self,
        name: &'static str,
        part: impl Fn(&Principal) -> Value + Send + Sync + 'static,
    ) {
        let mut parts = self.pack_parts.write();
        parts.retain(|(n, _)| *n != name);
        parts.push((name, Arc::new(part)));
    }

    /// Sets how a support pack finds the session it is asked for.
    pub fn set_session_lookup(&self, lookup: SessionLookup) {
        *self.session_lookup.write() = Some(lookup);
    }

    /// The log lines support packs include.
    pub fn log_tail(&self) -> Arc<pack::LogTail> {
        self.log_tail.read().clone()
    }

    /// Sets the log lines support packs include: the tail the daemon's
    /// logging writes into ([`pack::LogTail::writer`]).
    pub fn set_log_tail(&self, tail: Arc<pack::LogTail>) {
        *self.log_tail.write() = tail;
    }

    /// Where the configuration came from (for `includeConfig`).
    pub fn set_config_source(&self, source: pack::ConfigSource) {
        *self.config_source.write() = source;
    }

    /// Serves trace mode and support packs (`true`, the default) or
    /// answers them 404 `diagnostics_off`.
    pub fn set_diagnostics(&self, on: bool) {
        self.diagnostics
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Trace mode ([`trace`]).
    pub fn traces(&self) -> &Arc<trace::Traces> {
        &self.traces
    }

    /// Adds (or replaces) the summary's section `name` (a side service's
    /// state: `live`, `relays`, `overload`, `audit`).
    pub fn add_section(
        &self,
        name: &'static str,
        section: impl Fn(&Principal) -> Value + Send + Sync + 'static,
    ) {
        let mut sections = self.sections.write();
        sections.retain(|(n, _)| *n != name);
        sections.push((name, Arc::new(section)));
    }

    /// The summary `principal` may see ([`summary`]).
    pub async fn summary(&self, principal: &Principal) -> Value {
        let sections = self.sections.read().clone();
        summary::summary(&self.engine, &self.sampler, &sections, principal).await
    }

    /// Samples the counters the summary's rates come from, every
    /// [`summary::SAMPLE_EVERY`], until the registry is dropped.
    pub fn spawn_sampler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(summary::SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(ops) = weak.upgrade() else { return };
                ops.sampler.sample(&ops.engine);
            }
        })
    }

    /// Every registered route, for the HTTP listener to merge.
    pub fn router(&self) -> axum::Router {
        http::router(self)
    }
}
