//! busbar's metrics: every metric name in one place ([`names`]), the
//! lock-free instruments that record them ([`Counter`], [`Gauge`],
//! [`Histogram`], labelled [`Family`]s of them), and a [`Registry`] that
//! renders everything registered with it in the Prometheus text format.
//!
//! The crate sits at the bottom of the stack and knows nothing of streams
//! or transports, so any crate (the store, the engine, the live hub, a
//! relay, the overload governor) can record metrics without depending on
//! the engine: it keeps its instruments in a struct of its own, implements
//! [`Collector`] for it, and the daemon registers it.
//!
//! Recording costs one relaxed atomic operation on a handle the caller
//! keeps; label lookups ([`Family::get`]) take a read lock and belong off
//! the per-event path. Labels carry bounded values only (stream names,
//! transports, reasons), never event ids or payload data, and every label
//! value is escaped in one place ([`Encoder`]).
//!
//! ```
//! use std::sync::Arc;
//! use busbar_metrics::{Collector, Counter, Encoder, Family, Kind, Registry};
//!
//! struct Relay {
//!     sent: Family<Counter, 1>,
//! }
//!
//! impl Collector for Relay {
//!     fn collect(&self, out: &mut Encoder<'_>) {
//!         out.header("busbar_example_sent_total", Kind::Counter, "Events sent.");
//!         self.sent.for_each(|labels, c| {
//!             out.sample("busbar_example_sent_total", &[("sink", &labels[0])], c.get());
//!         });
//!     }
//! }
//!
//! let relay = Arc::new(Relay { sent: Family::new(["sink"]) });
//! relay.sent.get(["up\"stream"]).add(3);
//! let registry = Registry::new();
//! registry.register(relay.clone());
//! let text = registry.render();
//! assert!(text.contains(r#"busbar_example_sent_total{sink="up\"stream"} 3"#));
//! ```

#![warn(missing_docs)]

mod encode;
mod instruments;
pub mod names;
mod registry;

pub use encode::{Encoder, Kind, StreamFilter, Value};
pub use instruments::{Counter, Family, Gauge, Histogram, LATENCY_BUCKETS};
pub use registry::{resident_bytes, Collector, ProcessMetrics, Registry};
