//! The live hub's metrics: what it counts as it delivers, and the gauges
//! it reads from its registries at scrape time. Registered with the
//! daemon's registry by [`Fanout::new`](crate::Fanout::new); the names are
//! `busbar-metrics`'.

use crate::sockets::Role;
use busbar_metrics::{names, Collector, Counter, Encoder, Family, Kind};

use crate::Fanout;

/// Counters the hub records.
#[derive(Debug)]
pub struct FanoutMetrics {
    /// Events delivered to live clients, by subscription kind (`live`,
    /// `resumable`).
    pub delivered: Family<Counter, 1>,
    /// Events slow live clients missed, by subscription kind.
    pub dropped: Family<Counter, 1>,
    /// Refused WebSocket upgrades and socket hand-overs, by reason.
    pub rejected: Family<Counter, 1>,
    /// Failed reads of live feeds, by reason.
    pub feed_errors: Family<Counter, 1>,
    /// Connections busbar closed, by reason.
    pub closes: Family<Counter, 1>,
}

impl Default for FanoutMetrics {
    fn default() -> Self {
        FanoutMetrics {
            delivered: Family::new(["kind"]),
            dropped: Family::new(["kind"]),
            rejected: Family::new(["reason"]),
            feed_errors: Family::new(["reason"]),
            closes: Family::new(["reason"]),
        }
    }
}

impl Collector for Fanout {
    fn collect(&self, out: &mut Encoder<'_>) {
        let m = &self.metrics;
        out.counters(
            names::WS_DELIVERED,
            "Events delivered to live clients (WebSocket or socket), by subscription kind.",
            &m.delivered,
        );
        out.counters(
            names::WS_DROPPED,
            "Events slow live clients missed, by subscription kind.",
            &m.dropped,
        );
        out.counters(
            names::WS_REJECTED,
            "Refused WebSocket upgrades and socket hand-overs, by reason.",
            &m.rejected,
        );
        out.counters(
            names::LIVE_FEED_ERRORS,
            "Failed reads of live feeds (retried), by reason.",
            &m.feed_errors,
        );
        out.counters(
            names::LIVE_CLOSES,
            "Live connections busbar closed, by reason (too_slow, message too big, protocol error, ...).",
            &m.closes,
        );
        out.header(
            names::WS_CLIENTS,
            Kind::Gauge,
            "Connected live clients, by transport (ws, or a unix/tcp ingest connection that switched) and role.",
        );
        // Every WebSocket role is present, at 0 when nobody is connected,
        // so an alert on `busbar_ws_clients == 0` can fire.
        let mut clients = self.sockets.count_by_transport_and_role();
        for role in [
            Role::Producer,
            Role::Dashboard,
            Role::Overlay,
            Role::Consumer,
        ] {
            clients.entry(("ws", role)).or_insert(0);
        }
        for ((transport, role), n) in clients {
            out.sample(
                names::WS_CLIENTS,
                &[("transport", transport), ("role", role.as_str())],
                n,
            );
        }
        out.header(
            names::WS_SUBSCRIPTIONS,
            Kind::Gauge,
            "Open stream subscriptions and joined rooms.",
        );
        let rooms = self.sockets.rooms();
        let joined: u64 = rooms.values().sum();
        out.sample(
            names::WS_SUBSCRIPTIONS,
            &[("kind", "stream")],
            self.sockets.subscriptions(),
        );
        out.sample(names::WS_SUBSCRIPTIONS, &[("kind", "room")], joined);
        out.header(
            names::WS_ROOMS,
            Kind::Gauge,
            "Rooms with at least one member.",
        );
        out.sample(names::WS_ROOMS, &[], rooms.len());
        out.header(
            names::LIVE_FEEDS,
            Kind::Gauge,
            "Streams with a running live feed.",
        );
        out.sample(names::LIVE_FEEDS, &[], self.feeds.active());
        let stats = self.sessions.stats();
        out.header(names::SESSIONS, Kind::Gauge, "Producer sessions tracked.");
        out.sample(names::SESSIONS, &[], stats.len());
        out.header(
            names::SESSIONS_DRIFT_WARN,
            Kind::Gauge,
            "Producer sessions whose drift p95 is over the threshold.",
        );
        out.sample(
            names::SESSIONS_DRIFT_WARN,
            &[],
            stats.iter().filter(|s| s.drift_warn).count(),
        );
        out.header(
            names::DRIFT_P95_MAX,
            Kind::Gauge,
            "Largest drift p95 over all producer sessions, in seconds.",
        );
        let worst = stats.iter().map(|s| s.drift_p95).max().unwrap_or(0);
        out.sample(names::DRIFT_P95_MAX, &[], worst as f64 / 1000.0);
    }
}
