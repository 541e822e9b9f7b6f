#!/usr/bin/env bash
# The README's test command: installs what the tests use beyond cargo, then
# runs the workspace's tests.
#
# - promtool (Debian's `prometheus` package) checks the /metrics output and
#   the shipped alert rules; installed when missing and apt-get can run.
# - The daemon's full-disk test mounts a small tmpfs, which needs root: run
#   as another user it says so and is skipped (with CI=true it fails).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "promtool not found and cannot be installed here: its checks will be skipped" >&2
  fi
fi

cargo test --workspace "$@"
