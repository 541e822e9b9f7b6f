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

fn small() -> String {
    r#"{"type":"order.created","stream":"orders","key":"cust-42","ts":1700000000123,"order_id":"o-981","amount":12.5,"currency":"EUR","items":[{"sku":"a-1","qty":2},{"sku":"b-7","qty":1}]}"#.to_owned()
}

fn telemetry() -> String {
    let mut s = String::from(r#"{"type":"telemetry","session":"car7","ts":1700000000123"#);
    for i in 0..24 {
        s.push_str(&format!(
            r#","ch{i}":{{"v":{}.{:03},"min":-{}.5,"max":{}e2,"n":{}}}"#,
            100 + i * 7,
            i * 37 % 1000,
            i,
            i + 1,
            1_000_000 + i * 12_345
        ));
    }
    s.push('}');
    s
}

fn nested_kib() -> String {
    let mut s = String::from(
        r#"{"type":"user.updated","tenant":"acme","user":{"id":"u-1","name":"Ada Lovelace","tags":["admin","ops","billing"],"address":{"street":"12 St James's Square","city":"London","zip":"SW1Y 4JH"}},"changes":["#,
    );
    for i in 0..8 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"field":"prefs.f{i}","old":{{"on":false,"level":{i}}},"new":{{"on":true,"level":{},"note":"changed by \"self\" at step {i}\n"}}}}"#,
            i + 1
        ));
    }
    s.push_str("]}");
    s
}

fn strings_64k() -> String {
    let mut s = String::from(r#"{"type":"log.batch","lines":["#);
    let mut i = 0;
    while s.len() < 64 * 1024 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#""2026-01-01T00:00:{:02}Z INFO request {i} served in {}ms path=/api/v1/items/{i}""#,
            i % 60,
            i % 97
        ));
        i += 1;
    }
    s.push_str("]}");
    s
}

fn parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("parse");
    for (name, input) in [
        ("small", small()),
        ("telemetry", telemetry()),
        ("nested_1k", nested_kib()),
        ("strings_64k", strings_64k()),
    ] {
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
