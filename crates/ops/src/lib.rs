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
mod http;
mod socket;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::routing::MethodRouter;
use busbar_engine::Engine;
use parking_lot::RwLock;
use serde_json::Value;

pub use http::OpsCaller;
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

/// The registry of operator surfaces. Cheap to share (`Arc<Ops>`).
pub struct Ops {
    engine: Arc<Engine>,
    commands: RwLock<BTreeMap<&'static str, Registered>>,
    flushers: RwLock<Vec<Arc<dyn Flusher>>>,
    routes: RwLock<Vec<(&'static str, MethodRouter)>>,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("commands", &self.command_names())
            .field("routes", &self.paths())
            .finish_non_exhaustive()
    }
}

impl Ops {
    /// The registry over `engine`, with the built-in commands.
    pub fn new(engine: Arc<Engine>) -> Arc<Ops> {
        let ops = Arc::new(Ops {
            engine,
            commands: RwLock::new(BTreeMap::new()),
            flushers: RwLock::new(Vec::new()),
            routes: RwLock::new(Vec::new()),
        });
        commands::register_builtins(&ops);
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

    /// Adds an HTTP route (an `/api/ops/*` path in OpenAPI syntax,
    /// `{param}`). Handlers authenticate with [`OpsCaller`].
    pub fn route(&self, path: &'static str, methods: MethodRouter) {
        self.routes.write().push((path, methods));
    }

    /// The paths of the registered routes (for documentation checks).
    pub fn paths(&self) -> Vec<&'static str> {
        self.routes.read().iter().map(|(p, _)| *p).collect()
    }

    /// Every registered route, for the HTTP listener to merge.
    pub fn router(&self) -> axum::Router {
        http::router(self)
    }
}
