#!/usr/bin/env bash
# The machine's physical limits next to which the store's figures are read:
# sequential buffered write bandwidth (dd, fdatasync at the end) and
# synchronous 4 KiB writes per second (dd oflag=dsync: one fsync each).
set -euo pipefail
dir="${1:-${TMPDIR:-/tmp}}"
f="$dir/busbar-disk-limits.$$"
trap 'rm -f "$f"' EXIT
echo "sequential write (2 GiB, 1 MiB blocks, fdatasync):"
dd if=/dev/zero of="$f" bs=1M count=2048 conv=fdatasync 2>&1 | tail -n 1
echo "synchronous 4 KiB writes (4000, oflag=dsync):"
dd if=/dev/zero of="$f" bs=4k count=4000 oflag=dsync 2>&1 | tail -n 1
