//! The producer-JSON parser against serde_json, in the same run.
//!
//! Every transport parses each event with `parse_event` (or
//! `parse_line_with`): one pass that validates the JSON and extracts the
//! reserved fields. The peers are serde_json validating the same bytes
//! into a `&RawValue` (the least serde_json can do to say the input is
//! JSON) and decoding them into a `Value` (what a reader does).
//!
//! Inputs: a small order event, a telemetry event made mostly of numbers,
//! a one-kilobyte event with nested objects and strings, and a 64 KiB
//! event of strings. Figures are bytes per second (criterion's
//! throughput).
//!
//! `cargo bench -p busbar-event --bench parse`

use std::hint::black_box;

use busbar_event::{parse_event, Limits};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::value::RawValue;

mod inputs;

fn parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("parse");
    for (name, input) in inputs::all() {
        let bytes = input.as_bytes();
        assert!(parse_event(bytes, &limits).is_ok(), "{name}");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("busbar", name), bytes, |b, input| {
            b.iter(|| parse_event(black_box(input), &limits).map(|e| e.ts))
        });
        group.bench_with_input(
            BenchmarkId::new("serde_json_raw", name),
            bytes,
            |b, input| {
                b.iter(|| {
                    serde_json::from_slice::<&RawValue>(black_box(input)).map(|v| v.get().len())
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("serde_json_value", name),
            bytes,
            |b, input| {
                b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(input)).is_ok())
            },
        );
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
