//! What `busbar bench groups` found: a serialisable report and its table.

use serde::Serialize;

use super::{Outcome, Plan, System, Work};
use crate::ingest::Level;
use crate::report::Latency;

/// A whole `busbar bench groups` run.
#[derive(Debug, Clone, Serialize)]
pub struct GroupsReport {
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    /// CPUs available to the bench.
    pub cores: usize,
    /// Consumers in the group.
    pub consumers: usize,
    /// Events per read.
    pub batch: usize,
    /// Events pre-filled and consumed per run.
    pub events: u64,
    /// Bytes of each event's JSON.
    pub payload_bytes: usize,
    /// Rounds per level; each figure is the median round's.
    pub rounds: usize,
    /// Worker threads of the load client.
    pub client_threads: usize,
    /// One entry per durability level and system, levels first.
    pub systems: Vec<SystemReport>,
}

/// One system at one durability level.
#[derive(Debug, Clone, Serialize)]
pub struct SystemReport {
    /// `memory` or `always`.
    pub durability: String,
    /// `busbar`, `redis` or `nats`.
    pub system: String,
    /// The round with the median throughput.
    pub median: Option<GroupsRun>,
    /// busbar's median events/s ÷ this system's, at the same level (not
    /// given for busbar itself).
    pub busbar_ratio: Option<f64>,
    /// Every round, in the order they ran.
    pub rounds: Vec<GroupsRun>,
    /// Why the system was not measured (its later rounds were skipped).
    pub failure: Option<String>,
}

/// One round of one system.
#[derive(Debug, Clone, Serialize)]
pub struct GroupsRun {
    /// Events delivered and acked.
    pub events: u64,
    /// First read to last ack answer.
    pub seconds: f64,
    /// `events / seconds`.
    pub events_per_sec: f64,
    /// Per batch: read sent → deliveries received, µs.
    pub latency_us: Latency,
}

/// Every round of one system at one level, as the bench collects them.
pub(crate) struct Row {
    pub(crate) level: Level,
    pub(crate) system: System,
    pub(crate) rounds: Vec<Outcome>,
    pub(crate) failure: Option<String>,
}

impl Row {
    pub(crate) fn new(level: Level, system: System) -> Row {
        Row {
            level,
            system,
            rounds: Vec::new(),
            failure: None,
        }
    }
}

impl GroupsRun {
    fn new(o: &Outcome) -> GroupsRun {
        let us = |q: f64| o.latency.value_at_quantile(q) as f64;
        GroupsRun {
            events: o.events,
            seconds: o.elapsed.as_secs_f64(),
            events_per_sec: o.rate(),
            latency_us: Latency {
                p50: us(0.5),
                p99: us(0.99),
                p999: us(0.999),
                max: o.latency.max() as f64,
                mean: o.latency.mean(),
            },
        }
    }
}

/// The round with the median rate (the upper one of an even count).
fn median(rounds: &[GroupsRun]) -> Option<GroupsRun> {
    let mut sorted: Vec<&GroupsRun> = rounds.iter().collect();
    sorted.sort_by(|a, b| a.events_per_sec.total_cmp(&b.events_per_sec));
    sorted.get(sorted.len() / 2).map(|r| (*r).clone())
}

impl GroupsReport {
    pub(crate) fn new(plan: &Plan, work: &Work, rows: &[Row]) -> GroupsReport {
        let mut systems: Vec<SystemReport> = rows
            .iter()
            .map(|row| {
                let rounds: Vec<GroupsRun> = row.rounds.iter().map(GroupsRun::new).collect();
                SystemReport {
                    durability: row.level.name().to_owned(),
                    system: row.system.name().to_owned(),
                    median: median(&rounds),
                    busbar_ratio: None,
                    rounds,
                    failure: row.failure.clone(),
                }
            })
            .collect();
        let rate = |s: &SystemReport| s.median.as_ref().map(|m| m.events_per_sec);
        let busbar: Vec<(String, Option<f64>)> = systems
            .iter()
            .filter(|s| s.system == "busbar")
            .map(|s| (s.durability.clone(), rate(s)))
            .collect();
        for s in systems.iter_mut().filter(|s| s.system != "busbar") {
            let at_level = busbar.iter().find(|(level, _)| *level == s.durability);
            if let (Some((_, Some(b))), Some(r)) = (at_level, rate(s)) {
                s.busbar_ratio = Some(b / r);
            }
        }
        GroupsReport {
            date: crate::report::today(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            consumers: work.consumers,
            batch: work.batch,
            events: work.events,
            payload_bytes: work.payload_bytes,
            rounds: plan.rounds.max(1),
            client_threads: plan.client_threads.max(1),
            systems,
        }
    }

    /// The report as a Markdown table, as `BENCHMARKS.md` quotes it.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} consumers, batches of {}, {} events of {} bytes\n\n\
             | durability | system | delivered+acked/s (median) | busbar ÷ system | every round (k/s) | read latency p50 | p99 |\n\
             |---|---|---|---|---|---|---|\n",
            self.consumers, self.batch, self.events, self.payload_bytes
        );
        for s in &self.systems {
            if let Some(e) = &s.failure {
                out.push_str(&format!(
                    "| {} | {} | not measured: {e} | | | | |\n",
                    s.durability, s.system
                ));
                continue;
            }
            let Some(m) = &s.median else { continue };
            let ratio = s
                .busbar_ratio
                .map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×"));
            let all: Vec<String> = s
                .rounds
                .iter()
                .map(|r| format!("{:.0}", r.events_per_sec / 1000.0))
                .collect();
            out.push_str(&format!(
                "| {} | {} | {:.0} | {} | {} | {:.2} ms | {:.2} ms |\n",
                s.durability,
                s.system,
                m.events_per_sec,
                ratio,
                all.join(" / "),
                m.latency_us.p50 / 1000.0,
                m.latency_us.p99 / 1000.0
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn outcome(events: u64, ms: u64, latency_us: &[u64]) -> Outcome {
        let mut latency = super::super::histogram();
        for &us in latency_us {
            latency.record(us).unwrap();
        }
        Outcome {
            events,
            elapsed: Duration::from_millis(ms),
            latency,
        }
    }

    fn plan() -> Plan {
        Plan {
            exe: "busbar".into(),
            levels: vec![Level::Memory],
            systems: vec![System::Busbar, System::Redis, System::Nats],
            consumers: 4,
            batch: 100,
            events: 1000,
            payload_bytes: 200,
            max_run: Duration::from_secs(1),
            redis_url: "127.0.0.1:6379".into(),
            nats: "127.0.0.1:4222".parse().unwrap(),
            rounds: 3,
            client_threads: 1,
            work_dir: None,
        }
    }

    #[test]
    fn medians_ratios_and_failures_make_the_table() {
        let plan = plan();
        let work = Work {
            consumers: 4,
            batch: 100,
            events: 1000,
            payload_bytes: 200,
            max_run: plan.max_run,
        };
        let mut busbar = Row::new(Level::Memory, System::Busbar);
        // 1000, 2000 and 4000 events/s: the median is the 2000 one.
        busbar.rounds = vec![
            outcome(1000, 1000, &[250]),
            outcome(1000, 500, &[300, 1500]),
            outcome(1000, 250, &[100]),
        ];
        let mut redis = Row::new(Level::Memory, System::Redis);
        redis.rounds = vec![outcome(1000, 1000, &[600])];
        let mut nats = Row::new(Level::Memory, System::Nats);
        nats.rounds = vec![outcome(1000, 1000, &[600])];
        nats.failure = Some("NATS: no JetStream".to_owned());
        let report = GroupsReport::new(&plan, &work, &[busbar, redis, nats]);

        let b = &report.systems[0];
        assert_eq!(b.median.as_ref().unwrap().events_per_sec, 2000.0);
        assert_eq!(b.busbar_ratio, None);
        assert_eq!(b.rounds.len(), 3);
        assert_eq!(report.systems[1].busbar_ratio, Some(2.0));
        let table = report.table();
        assert!(
            table.starts_with("4 consumers, batches of 100, 1000 events of 200 bytes\n\n"),
            "{table}"
        );
        assert!(
            table.contains("| memory | busbar | 2000 | — | 1 / 2 / 4 | 0.30 ms | 1.50 ms |\n"),
            "{table}"
        );
        assert!(
            table.contains("| memory | redis | 1000 | 2.00× | 1 | 0.60 ms | 0.60 ms |\n"),
            "{table}"
        );
        assert!(
            table.contains("| memory | nats | not measured: NATS: no JetStream | | | | |\n"),
            "{table}"
        );
    }
}
