//! Parses one of the bench's inputs N times, for counting instructions
//! (the same on a busy machine as on an idle one):
//!
//! ```text
//! cargo build --release -p busbar-event --example parse_loop
//! valgrind --tool=cachegrind --cache-sim=no target/release/examples/parse_loop telemetry 5000
//! valgrind --tool=cachegrind --cache-sim=no target/release/examples/parse_loop telemetry 0
//! ```
//!
//! (the difference over N is the cost of one parse). `raw` as a third
//! argument validates with serde_json into a `&RawValue` instead, the peer.

use std::hint::black_box;

use busbar_event::{parse_event, Limits};
use serde_json::value::RawValue;

#[path = "../benches/inputs/mod.rs"]
mod inputs;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: parse_loop <small|telemetry|nested_1k|strings_64k> <n> [raw]";
    let (Some(name), Some(n)) = (
        args.get(1),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let Some((_, input)) = inputs::all().into_iter().find(|(i, _)| i == name) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let raw = args.get(3).is_some_and(|a| a == "raw");
    let limits = Limits::default();
    let mut ok = 0;
    for _ in 0..n {
        let parsed = if raw {
            serde_json::from_slice::<&RawValue>(black_box(input.as_bytes())).is_ok()
        } else {
            parse_event(black_box(input.as_bytes()), &limits).is_ok()
        };
        ok += usize::from(parsed);
    }
    assert_eq!(ok, n);
}
