//! `busbar serve`: wires storage, engine and transports together, and shuts
//! them down in order.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use busbar_audit::{AuditConfig, AuditLog, OnBroken};
use busbar_config::{Addresses, Backend, Config, OnAuditBroken, OnCorruption};
use busbar_engine::{
    Auth, Engine, EngineConfig, HealthThresholds, JobsConfig, JournalConfig, Readiness,
};
use busbar_ingest::{Ingest, IngestOptions};
use busbar_listen::{bind_tcp, bind_unix};
use busbar_store::embedded::{CorruptionPolicy, EmbeddedConfig, EmbeddedStore};
use busbar_store::memory::MemoryStore;
use busbar_store::{Dedup, Durability, Retention, Store};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use crate::logging::LogControl;
use crate::reload::{Loader, Reloader};

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP reloads the
/// configuration through `load`. `config_path` is the file it came from
/// (support packs include it, redacted, when asked to).
pub fn run(config: Config, load: Loader, config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let log_tail = busbar_ops::pack::LogTail::new(busbar_ops::LOG_TAIL_BYTES);
    let log = crate::logging::init(&config.log, log_tail.clone())?;
    for variable in busbar_config::unknown_env_vars(
        std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()),
    ) {
        tracing::warn!(
            %variable,
            "unknown BUSBAR_* variable ignored (busbar.example.toml names every variable busbar reads)"
        );
    }
    raise_open_file_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = worker_threads(&config) {
        builder.worker_threads(workers);
    }
    let runtime = builder
        .enable_all()
        .thread_name("busbar")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, load, log, config_path, log_tail))?;
    Ok(ExitCode::SUCCESS)
}

/// How many async workers to run; `None` leaves it to tokio (one per core,
/// or `TOKIO_WORKER_THREADS`).
///
/// With the embedded store under `durability = always`, throughput is bound
/// by the writer thread's fsyncs, and that thread needs a core of its own:
/// the workers get the other cores. A worker more than that adds nothing
/// under load and costs every lone request extra cross-thread wake-ups
/// (`busbar bench ingest` measured, on 2 cores: one lone unpipelined
/// producer 4.4k → 5.2k events/s, 50 pipelining producers unchanged). Under
/// the other policies parsing is the bottleneck and every core is used.
fn worker_threads(config: &Config) -> Option<usize> {
    if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        return None;
    }
    let always = config.storage.backend == Backend::Embedded
        && config.storage.durability == Durability::Always;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (always && cores > 1).then(|| cores - 1)
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let storage = &config.storage;
    let retention = Retention {
        max_len: storage.retention.max_len,
        max_age: storage.retention.max_age.map(|d| d.0),
        max_bytes: storage.retention.max_bytes.map(|b| b.bytes()),
    };
    let dedup = Dedup {
        window: storage.dedup_window.0,
        max_keys: storage.dedup_max_keys,
    };
    match storage.backend {
        Backend::Memory => Ok(Arc::new(
            MemoryStore::with_retention(retention).with_dedup(dedup),
        )),
        Backend::Embedded => {
            let mut embedded = EmbeddedConfig::new(storage.data_dir.clone());
            embedded.dedup = dedup;
            embedded.durability = storage.durability;
            embedded.segment_bytes = storage.segment_size.bytes();
            embedded.index_interval_bytes = storage.index_interval.bytes();
            embedded.queue_depth = storage.queue_depth;
            embedded.reserve_bytes = storage.reserve.bytes();
            embedded.on_corruption = match storage.on_corruption {
                OnCorruption::Fail => CorruptionPolicy::Fail,
                OnCorruption::Quarantine => CorruptionPolicy::Quarantine,
            };
            embedded.retention = retention;
            let dir = storage.data_dir.display().to_string();
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(embedded))
                .await
                .context("the store's recovery task failed")?
                .with_context(|| {
                    format!(
                        "cannot open the embedded store in {dir} (storage.on_corruption = \"quarantine\" \
                         starts without damaged segments)"
                    )
                })?;
            Ok(Arc::new(store))
        }
    }
}

/// Opens the audit log when `[audit] enabled`, continuing its chain.
async fn open_audit(config: &Config) -> anyhow::Result<Option<Arc<AuditLog>>> {
    if !config.audit.enabled {
        tracing::info!("audit log disabled ([audit] enabled = false)");
        return Ok(None);
    }
    let mut audit = AuditConfig::new(config.audit_path());
    audit.on_broken = match config.audit.on_broken {
        OnAuditBroken::Fail => OnBroken::Fail,
        OnAuditBroken::NewFile => OnBroken::NewFile,
    };
    let log = tokio::task::spawn_blocking(move || AuditLog::open(audit))
        .await
        .context("the audit log's recovery task failed")??;
    Ok(Some(log))
}

async fn serve(
    config: Config,
    load: Loader,
    log: Arc<LogControl>,
    config_path: Option<PathBuf>,
    log_tail: Arc<busbar_ops::pack::LogTail>,
) -> anyhow::Result<()> {
    // Before anything else: SIGHUP's default action would end the process.
    let hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let data_dir = config.storage.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let run_dir = config.run_dir();
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let addresses_path = run_dir.join("addresses.json");
    // A file left by an earlier run would point tools at dead ports.
    let _ = std::fs::remove_file(&addresses_path);

    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        backend = config.storage.backend.as_str(),
        durability = %config.storage.durability,
        data_dir = %data_dir.display(),
        tokens = config.auth.tokens.len(),
        "busbar starting"
    );
    let store = open_store(&config).await?;
    let readiness = Readiness::new(
        (config.storage.backend == Backend::Embedded).then(|| data_dir.clone()),
        config.readiness.min_free_disk.bytes(),
    );
    let engine = Engine::builder(store)
        .auth(Auth::new(config.auth.tokens.clone()))
        .config(engine_config(&config))
        .readiness(readiness)
        .build();
    // The ops journal's writer: what the engine and side services record
    // goes to `_busbar:ops`.
    let journal = {
        let (journal, store) = (engine.journal().clone(), engine.store().clone());
        tokio::spawn(async move { journal.run(store).await })
    };
    let audit = open_audit(&config).await?;
    if let Some(audit) = &audit {
        engine.add_hook(audit.clone());
        engine.registry().register(audit.clone());
    }
    // Operator surfaces: the command socket's commands and `/api/ops/*`;
    // side services register theirs with it.
    let traces = busbar_ops::trace::TraceConfig {
        max_running: config.trace.max_running,
        max_duration: config.trace.max_duration.0,
        max_events: config.trace.max_events,
        max_bytes: config.trace.max_bytes.bytes(),
        keep: config.trace.keep,
    };
    let ops = busbar_ops::Ops::with_traces(engine.clone(), traces);
    ops.set_log_tail(log_tail);
    ops.set_diagnostics(config.ops.diagnostics);
    if let Some(audit) = &audit {
        // The chain head in the summary, for an operator to note down and
        // later check with `busbar audit verify --expect-head`. Not a
        // tenant's to see: it counts every tenant's actions.
        let audit = Arc::downgrade(audit);
        ops.add_section("audit", move |p| match (audit.upgrade(), p.tenant()) {
            (Some(audit), None) => {
                let (seq, hash) = audit.head();
                serde_json::json!({
                    "path": audit.path(),
                    "headSeq": seq,
                    "headHash": hash,
                    "expectHead": format!("{seq}:{hash}"),
                })
            }
            _ => serde_json::Value::Null,
        });
    }
    ops.set_config_source(busbar_ops::pack::ConfigSource { path: config_path });
    let sampler = ops.spawn_sampler();

    let events_path = config.events_socket();
    let commands_path = config.commands_socket();
    let events_socket = bind_unix(&events_path, config.ingest.socket_mode.0)?;
    let commands_socket = bind_unix(&commands_path, config.commands.socket_mode.0)?;
    let tcp = bind_tcp(config.ingest.tcp_addr).await?;
    let tcp_addr = tcp.local_addr().context("cannot read the TCP address")?;
    let http = tokio::net::TcpListener::bind(config.http.addr)
        .await
        .with_context(|| format!("cannot listen on HTTP {}", config.http.addr))?;
    let http_addr = http.local_addr().context("cannot read the HTTP address")?;

    // Every listener's connections together stay within the open-file
    // limit, less what the store and the rest of the process need.
    let cap = (config.listen.max_connections > 0).then_some(config.listen.max_connections);
    let (budget, open_files) =
        busbar_listen::Budget::from_open_file_limit(config.listen.fd_reserve, cap);
    // One share per listener (Unix socket, TCP, HTTP, WebSocket): a flood
    // spends its own listener's share, never the others'.
    let [unix_budget, tcp_budget, http_budget, ws_budget]: [busbar_listen::Budget; 4] = budget
        .shares(4)
        .try_into()
        .map_err(|_| anyhow::anyhow!("the connection budget did not split in four"))?;
    tracing::info!(
        open_files,
        connections = budget.max(),
        per_listener = unix_budget.max(),
        "connection budget set from the open-file limit"
    );
    let live = busbar_fanout::Fanout::new(engine.clone(), live_config(&config));
    busbar_live::register_ops(&live, &ops);

    // Moves exhausted pending entries to the dead-letter streams even when
    // no consumer reads; it stops by itself once shutdown begins.
    let sweeper = engine.spawn_sweeper(config.groups.sweep_interval.0);

    let (stop, stopping) = watch::channel(false);
    let ingest = Ingest::new(
        engine.clone(),
        IngestOptions {
            max_line_bytes: config.ingest.max_line_bytes.as_usize(),
            max_connections: config.ingest.max_connections,
            max_connections_per_peer: config.ingest.max_connections_per_peer,
            first_line_timeout: config.ingest.first_line_timeout.0,
            idle_timeout: config.ingest.idle_timeout.0,
            max_unauthenticated: config.ingest.max_unauthenticated,
            max_unauthenticated_per_peer: config.ingest.max_unauthenticated_per_peer,
            unauthenticated_bytes: config.ingest.unauthenticated_bytes.as_usize(),
            drain_timeout: config.ingest.drain_timeout.0,
            budget: Some(tcp_budget),
            unix_budget: Some(unix_budget),
            max_depth: config.ingest.max_depth,
        },
        stopping.clone(),
    )
    // A socket connection that sends a live op (`subscribe`, `join`...) is
    // served by the hub from then on.
    .with_live(Arc::new(busbar_live::SocketUpgrade(live.clone())));
    let reloader = Reloader::new(
        load,
        config.clone(),
        engine.clone(),
        ingest.clone(),
        live.clone(),
        log,
    );
    reloader.register(&ops);
    let reloads = tokio::spawn(reload_on_hangup(hangup, reloader));
    let mut tasks = tokio::task::JoinSet::new();
    {
        let ingest = ingest.clone();
        tasks.spawn(async move { ingest.serve_unix(events_socket).await });
    }
    tasks.spawn(async move { ingest.serve_tcp(tcp).await });
    tasks.spawn(busbar_ops::serve_commands(
        commands_socket,
        ops.clone(),
        stopping.clone(),
    ));
    {
        let http_config = busbar_api::HttpConfig {
            max_body_bytes: config.http.max_body_bytes.as_usize(),
            event_limits: busbar_event::Limits {
                max_event_bytes: config.ingest.max_line_bytes.as_usize(),
                max_depth: config.ingest.max_depth,
            },
            max_connections: config.http.max_connections,
            max_connections_per_peer: config.http.max_connections_per_peer,
            header_timeout: config.http.header_timeout.0,
            body_timeout: config.http.body_timeout.0,
            drain_timeout: config.ingest.drain_timeout.0,
            budget: Some(http_budget),
            metrics_enabled: config.metrics.enabled,
            ..busbar_api::HttpConfig::default()
        };
        let mut stopping = stopping.clone();
        let closing = live.clone();
        let shutdown = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
            // WebSocket connections would hold the graceful shutdown open.
            closing.shutdown();
        };
        let engine = engine.clone();
        let mut live_routes = busbar_live::router(live.clone(), Some(ws_budget));
        // `[ops] enabled = false` leaves every /api/ops/* path unrouted: 404.
        if config.ops.enabled {
            live_routes = live_routes.merge(ops.router());
        }
        tasks.spawn(async move {
            let served = busbar_api::serve_with(http, engine, http_config, live_routes, shutdown);
            if let Err(e) = served.await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
    }

    write_addresses(
        &addresses_path,
        &Addresses {
            pid: std::process::id(),
            backend: engine.backend().to_owned(),
            tcp: tcp_addr,
            http: http_addr,
            events_socket: events_path.clone(),
            commands_socket: commands_path.clone(),
        },
    )?;
    tracing::info!(
        tcp = %tcp_addr,
        http = %http_addr,
        events_socket = %events_path.display(),
        commands_socket = %commands_path.display(),
        "busbar ready"
    );

    wait_for_signal().await?;
    tracing::info!("shutting down: no new connections, finishing in-flight appends");
    engine.readiness().set_shutting_down();
    let _ = stop.send(true);
    // Each transport drains within its own timeout; this bound only guards
    // against a transport that never returns.
    let bound = config.ingest.drain_timeout.0 + Duration::from_secs(5);
    let drained =
        tokio::time::timeout(bound, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("transports did not stop in time; closing the store anyway");
        tasks.abort_all();
    }
    reloads.abort();
    // No sweep may start a dead-letter move once the store is closing.
    sweeper.abort();
    let _ = sweeper.await;
    // What happened during the drain (disconnects) is journaled first.
    busbar_ops::events::settle(&engine, Duration::from_secs(1)).await;
    journal.abort();
    sampler.abort();
    if let Some(audit) = audit {
        // Writes every record still queued.
        let closed = tokio::task::spawn_blocking(move || audit.close()).await;
        if closed.is_err() {
            tracing::error!("the audit log did not close cleanly");
        }
    }
    engine
        .shutdown()
        .await
        .context("cannot make the store durable at shutdown")?;
    let _ = std::fs::remove_file(&addresses_path);
    tracing::info!("busbar stopped");
    Ok(())
}

fn write_addresses(path: &Path, addresses: &Addresses) -> anyhow::Result<()> {
    // Written whole then renamed, so a reader never sees half a file.
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(addresses)?;
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reloads the configuration on every SIGHUP until aborted.
async fn reload_on_hangup(mut hangup: Signal, reloader: Arc<Reloader>) {
    while hangup.recv().await.is_some() {
        tracing::info!(
            signal = "SIGHUP",
            "signal received: reloading the configuration"
        );
        let reloader = reloader.clone();
        // Reading the file is blocking I/O; the outcome is logged.
        let _ = tokio::task::spawn_blocking(move || reloader.reload("SIGHUP")).await;
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "signal received");
    // A second signal means the operator does not want to wait for the
    // drain.
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    Ok(())
}

/// The engine's limits from `[http]`, `[jobs]` and `[health]`.
fn engine_config(config: &Config) -> EngineConfig {
    let jobs = &config.jobs;
    EngineConfig {
        max_batch_events: config.http.max_batch_events,
        max_read_count: config.http.max_read_count,
        jobs: JobsConfig {
            max_running: jobs.max_running,
            history: jobs.history,
            default_rate: jobs.default_rate,
            max_rate: jobs.max_rate,
        },
        health: HealthThresholds {
            max_dlq: config.health.max_dlq,
            max_lag: config.health.max_lag,
        },
        journal: JournalConfig {
            queue: config.journal.queue,
            max_events: config.journal.max_events,
            max_age: config.journal.max_age.0,
            error_interval: config.journal.error_interval.0,
        },
    }
}

/// The live hub's limits from `[live]`.
fn live_config(config: &Config) -> busbar_fanout::FanoutConfig {
    let l = &config.live;
    busbar_fanout::FanoutConfig {
        feed_capacity: l.feed_capacity,
        send_queue: l.send_queue,
        write_deadline: l.write_deadline.0,
        stall_timeout: l.stall_timeout.0,
        heartbeat: l.heartbeat.0,
        max_message_bytes: l.max_message_bytes.as_usize(),
        max_depth: config.ingest.max_depth,
        allowed_origins: l.allowed_origins.clone(),
        max_connections: l.max_connections,
        max_subscriptions: l.max_subscriptions,
        max_delay: l.max_delay.0,
        sessions: busbar_fanout::sessions::SessionConfig {
            drift_warn: l.drift_warn.0,
            ..busbar_fanout::sessions::SessionConfig::default()
        },
        ..busbar_fanout::FanoutConfig::default()
    }
}

/// Raises the soft open-file limit to the hard one. Every WebSocket client,
/// producer connection and segment file holds a descriptor, and the usual
/// soft default (1024) is below `[live] max_connections` alone.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur >= limit.rlim_max
    {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        tracing::debug!(
            from = limit.rlim_cur,
            to = limit.rlim_max,
            "raised the open-file limit"
        );
    } else {
        tracing::warn!(
            limit = limit.rlim_cur,
            error = %std::io::Error::last_os_error(),
            "cannot raise the open-file limit"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_limits_follow_the_config() {
        assert_eq!(engine_config(&Config::default()), EngineConfig::default());
        let config = Config::from_toml_str(
            "[http]\nmax_batch_events = 7\nmax_read_count = 600\n\
             [jobs]\nmax_running = 1\nhistory = 2\ndefault_rate = 3\nmax_rate = 4\n\
             [health]\nmax_dlq = 5\nmax_lag = 6\n",
            "t",
        )
        .unwrap();
        let engine = engine_config(&config);
        assert_eq!((engine.max_batch_events, engine.max_read_count), (7, 600));
        assert_eq!(
            engine.jobs,
            JobsConfig {
                max_running: 1,
                history: 2,
                default_rate: 3,
                max_rate: 4,
            }
        );
        assert_eq!(
            engine.health,
            HealthThresholds {
                max_dlq: 5,
                max_lag: 6,
            }
        );
    }

    #[test]
    fn only_embedded_always_leaves_a_core_to_the_writer() {
        if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
            return; // The operator's choice wins; nothing to check.
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut config = Config::default();
        config.storage.backend = Backend::Embedded;
        config.storage.durability = Durability::Always;
        assert_eq!(worker_threads(&config), (cores > 1).then(|| cores - 1));
        config.storage.durability = Durability::Interval(Duration::from_secs(1));
        assert_eq!(worker_threads(&config), None);
        config.storage.durability = Durability::Always;
        config.storage.backend = Backend::Memory;
        assert_eq!(worker_threads(&config), None);
    }
}
