#!/usr/bin/env bash
# Long crash test of the embedded store: many SIGKILL cycles against a child
# appending under durability=always. Every acknowledged event must survive.
#   BUSBAR_CRASH_CYCLES (default 500)   BUSBAR_CRASH_SEED (default random)
set -euo pipefail
cd "$(dirname "$0")/.."
export BUSBAR_CRASH_CYCLES="${BUSBAR_CRASH_CYCLES:-500}"
exec cargo test --release -p busbar-store --test crash -- --nocapture
