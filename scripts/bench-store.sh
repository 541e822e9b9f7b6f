#!/usr/bin/env bash
# Store benchmarks next to the disk's own limits, in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/disk-limits.sh "${TMPDIR:-/tmp}"
cargo bench -p busbar-store --bench store "$@"
