#!/usr/bin/env bash
# A short fuzzing run for CI: every target in fuzz/ runs for
# FUZZ_SECONDS (default 20) over its committed corpus, with the stable
# toolchain (RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass the flags it needs).
# Built with debug assertions and without AddressSanitizer (see
# FUZZING.md). Any crash, leak, timeout or out-of-memory fails the run;
# libFuzzer leaves the input under fuzz/artifacts/<target>/ (FUZZING.md
# says how to replay it). The committed corpus is not changed: new inputs go to a
# scratch directory.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

targets=(event_parser socket_protocol live_protocol config segment_reader)
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

cd fuzz
# One build for every target, then one short run each, one process at a
# time (no -jobs: libFuzzer then fuzzes in this process).
cargo fuzz build -O -a -s none
for t in "${targets[@]}"; do
    echo "== fuzz $t for ${seconds}s"
    mkdir -p "$scratch/$t"
    cargo fuzz run -O -a -s none "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1
done
echo "fuzz smoke: ${#targets[@]} targets ran ${seconds}s each without a crash"
