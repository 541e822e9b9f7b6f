#!/usr/bin/env python3
"""Resident memory of a busbar daemon through a connection storm.

    scripts/storm.py [path/to/busbar] [rounds]

Starts the daemon on a fresh data directory with HTTP on an ephemeral
loopback port, opens 4,000 HTTP connections per round from 127.0.0.2 to
127.0.0.21 (each sends one request), closes them, and prints the daemon's
resident set size before the storm, with the connections open, right after,
and every ten seconds for a minute. The daemon answers as many as its HTTP
connection limit allows and refuses the rest; what matters here is what it
gives back once they are gone.
"""

import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/busbar"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
per_round = 4000

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
if hard < per_round + 100:
    sys.exit(f"the open-file limit ({hard}) is below {per_round + 100}")

data = tempfile.mkdtemp(prefix="busbar-storm-")
probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
daemon = subprocess.Popen(
    [binary, "serve", "--data-dir", data, "--http-addr", f"127.0.0.1:{port}",
     "--tcp-addr", "127.0.0.1:0"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rss():
    with open(f"/proc/{daemon.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


try:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    time.sleep(1)
    before = rss()
    print(f"before: {before:.1f} MiB")
    for r in range(rounds):
        conns = []
        for i in range(per_round):
            s = socket.socket()
            s.bind((f"127.0.0.{2 + i % 20}", 0))
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(b"GET /health HTTP/1.1\r\nHost: storm\r\n\r\n")
                conns.append(s)
            except OSError:
                s.close()
        answered = 0
        for s in conns:
            s.settimeout(5)
            try:
                if s.recv(4096).startswith(b"HTTP/1.1 200"):
                    answered += 1
            except OSError:
                pass
        peak = rss()
        for s in conns:
            s.close()
        print(f"round {r}: {answered} answered, {peak:.1f} MiB with them open")
    time.sleep(2)
    print(f"2s after: {rss():.1f} MiB")
    for t in range(6):
        time.sleep(10)
        now = rss()
        print(f"{(t + 1) * 10}s after: {now:.1f} MiB ({now / before:.2f}x before)")
finally:
    daemon.terminate()
    daemon.wait()
    shutil.rmtree(data, ignore_errors=True)
