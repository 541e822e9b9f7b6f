//! Gauges read from the store at scrape time: each stream's length, bytes
//! and segments, its groups' lag and pending, its dead-letter stream's
//! length and health verdict, and the jobs running. One store call
//! ([`busbar_store::Store::stats`]) per scrape, whatever the number of
//! streams.

use std::collections::BTreeMap;

use busbar_metrics::{names, Collector, Encoder, Kind};
use busbar_store::group::DLQ_SUFFIX;
use busbar_store::{StreamStats, WriteHealth};
use parking_lot::Mutex;

use crate::{HealthThresholds, JobKind};

/// A per-stream gauge: name, help, and how to read it.
type StreamGauge = (&'static str, &'static str, fn(&StreamStats) -> u64);

/// What the last scrape read.
#[derive(Debug, Default)]
struct Snapshot {
    streams: Vec<StreamStats>,
    jobs_running: Vec<(JobKind, usize)>,
    write_health: WriteHealth,
}

/// The scrape-time gauges: refreshed by `Engine::render_metrics`, rendered
/// by the registry.
#[derive(Debug)]
pub(crate) struct ScrapeGauges {
    health: HealthThresholds,
    snapshot: Mutex<Snapshot>,
}

impl ScrapeGauges {
    pub(crate) fn new(health: HealthThresholds) -> Self {
        ScrapeGauges {
            health,
            snapshot: Mutex::new(Snapshot::default()),
        }
    }

    pub(crate) fn update(
        &self,
        streams: Vec<StreamStats>,
        jobs_running: Vec<(JobKind, usize)>,
        write_health: WriteHealth,
    ) {
        *self.snapshot.lock() = Snapshot {
            streams,
            jobs_running,
            write_health,
        };
    }
}

impl Collector for ScrapeGauges {
    fn collect(&self, out: &mut Encoder<'_>) {
        let snap = self.snapshot.lock();
        let stream_gauges: [StreamGauge; 3] = [
            (names::STREAM_LENGTH, "Events in each stream.", |s| {
                s.info.length
            }),
            (names::STREAM_BYTES, "Bytes of each stream's events.", |s| {
                s.info.bytes
            }),
            (
                names::STREAM_SEGMENTS,
                "Segment files of each stream.",
                |s| s.info.segments,
            ),
        ];
        for (name, help, value) in stream_gauges {
            out.header(name, Kind::Gauge, help);
            for s in &snap.streams {
                out.sample(name, &[("stream", s.info.name.as_str())], value(s));
            }
        }
        for (name, help, lag) in [
            (
                names::GROUP_LAG,
                "Events after a group's cursor not yet delivered.",
                true,
            ),
            (
                names::GROUP_PENDING,
                "Delivered, unacknowledged events of a group.",
                false,
            ),
        ] {
            out.header(name, Kind::Gauge, help);
            for s in &snap.streams {
                for g in &s.groups {
                    let labels = [("stream", s.info.name.as_str()), ("group", g.name.as_str())];
                    out.sample(name, &labels, if lag { g.lag } else { g.pending });
                }
            }
        }
        // By main stream: (dead letters, largest group lag, exists).
        let mut health: BTreeMap<&str, (u64, u64, bool)> = BTreeMap::new();
        out.header(
            names::DLQ_LENGTH,
            Kind::Gauge,
            "Events in a stream's dead-letter stream (<stream>:dlq).",
        );
        for s in &snap.streams {
            let name = s.info.name.as_str();
            if let Some(main) = name.strip_suffix(DLQ_SUFFIX) {
                out.sample(names::DLQ_LENGTH, &[("stream", main)], s.info.length);
                health.entry(main).or_default().0 = s.info.length;
            }
            let entry = health.entry(name).or_default();
            entry.1 = s.groups.iter().map(|g| g.lag).max().unwrap_or(0);
            entry.2 = true;
        }
        out.header(
            names::STREAM_DEGRADED,
            Kind::Gauge,
            "1 when a stream's /events/health is degraded (over [health] max_dlq or max_lag).",
        );
        for (stream, (dlq, lag, exists)) in health {
            if exists && !stream.ends_with(DLQ_SUFFIX) {
                let degraded = u8::from(self.health.is_degraded(dlq, lag));
                out.sample(names::STREAM_DEGRADED, &[("stream", stream)], degraded);
            }
        }
        out.header(
            names::JOBS_RUNNING,
            Kind::Gauge,
            "Background jobs running, by kind (at most jobs.max_running in all).",
        );
        for (kind, n) in &snap.jobs_running {
            out.sample(names::JOBS_RUNNING, &[("kind", kind.as_str())], *n);
        }
        out.header(
            names::STORAGE_WRITE_STATE,
            Kind::Gauge,
            "0 when the store takes writes, 1 while its disk is full, 2 while its writes fail for another reason.",
        );
        let state: u8 = match snap.write_health {
            WriteHealth::Full { .. } => 1,
            WriteHealth::Failed { .. } => 2,
            _ => 0,
        };
        out.sample(names::STORAGE_WRITE_STATE, &[], state);
    }
}
