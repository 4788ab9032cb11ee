# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Steady HTTP load against fleet addresses during a deploy; counts failed and hung requests.

python3 tests/load/loadgen.py --allow-subnet 192.168.213.0/24 --target api=192.168.213.5:8000 \
    --target device=192.168.213.5:8001 --duration 120 --stop-file /tmp/stop --out summary.json

Per target, half the workers keep one connection alive, half open a new connection per request. A request is
failed on a socket error or a non-2xx reply, hung when it takes longer than --hang-after seconds (1 s).
Each target gets --rate requests per second (default 200). Hard caps: duration <= 600 s, requests <= 500,000,
workers <= 64; targets must lie in --allow-subnet, a private subnet no larger than /16. Stops at --duration, at
--max-requests, or as soon as --stop-file exists.
Stdlib only.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import sys
import threading
import time

MAX_DURATION = 600
MAX_REQUESTS = 500_000
MAX_WORKERS = 64


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = self.failed = self.hung = 0
        self.max_latency = 0.0
        self.errors: dict[str, int] = {}

    def record(self, latency: float, error: str | None, hang_after: float) -> None:
        with self.lock:
            if error:
                self.failed += 1
                self.errors[error] = self.errors.get(error, 0) + 1
            else:
                self.ok += 1
            if latency > hang_after:
                self.hung += 1
            self.max_latency = max(self.max_latency, latency)

    def total(self) -> int:
        return self.ok + self.failed


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", action="append", required=True, help="NAME=IP:PORT (repeatable)")
    p.add_argument("--allow-subnet", required=True, help="the fleet's subnet; any other target is refused")
    p.add_argument("--path", default="/")
    p.add_argument("--workers", type=int, default=4, help="workers per target (half keep-alive, half new connections)")
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--max-requests", type=int, default=100_000, help="for all targets together")
    p.add_argument("--rate", type=float, default=200, help="requests per second per target, all workers together")
    p.add_argument("--hang-after", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--stop-file")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION:
        p.error(f"--duration must be in (0, {MAX_DURATION}]")
    if not 0 < args.max_requests <= MAX_REQUESTS:
        p.error(f"--max-requests must be in (0, {MAX_REQUESTS}]")
    if not 1 <= args.workers * len(args.target) <= MAX_WORKERS:
        p.error(f"workers x targets must be in [1, {MAX_WORKERS}]")
    subnet = ipaddress.ip_network(args.allow_subnet, strict=False)
    if not subnet.is_private or subnet.prefixlen < 16:
        p.error(f"--allow-subnet {subnet} must be a private subnet of /16 or smaller")
    args.targets = {}
    for spec in args.target:
        name, _sep, addr = spec.partition("=")
        host, _sep, port = addr.rpartition(":")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            p.error(f"target {spec!r}: give an IP address, not a name")
        if ip not in subnet:
            p.error(f"target {spec!r} is outside the fleet subnet {subnet}: refused")
        args.targets[name] = (host, int(port))
    return args


def worker(addr, args, stats: Stats, keepalive: bool, budget, stop: threading.Event) -> None:
    conn = None
    interval = args.workers / args.rate  # steady load, not a flood: the controller also runs the deploy
    next_at = time.monotonic()
    while not stop.is_set() and budget.take():
        next_at += interval
        stop.wait(max(0.0, next_at - time.monotonic()))
        start = time.monotonic()
        error = None
        try:
            if conn is None or not keepalive:
                conn = http.client.HTTPConnection(*addr, timeout=args.timeout)
            conn.request("GET", args.path, headers={} if keepalive else {"Connection": "close"})
            reply = conn.getresponse()
            reply.read()
            if not 200 <= reply.status < 300:
                error = f"status {reply.status}"
            if not keepalive or reply.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as exc:
            error = type(exc).__name__
            if conn is not None:
                conn.close()
            conn = None
        stats.record(time.monotonic() - start, error, args.hang_after)
    if conn is not None:
        conn.close()


class Budget:
    def __init__(self, n: int) -> None:
        self.left, self.lock = n, threading.Lock()

    def take(self) -> bool:
        with self.lock:
            self.left -= 1
            return self.left >= 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    stop, budget = threading.Event(), Budget(args.max_requests)
    stats = {(name, mode): Stats() for name in args.targets for mode in ("keepalive", "new")}
    threads = []
    for name, addr in args.targets.items():
        for i in range(args.workers):
            mode = "keepalive" if i % 2 == 0 else "new"
            threads.append(threading.Thread(target=worker, daemon=True,
                                            args=(addr, args, stats[(name, mode)], mode == "keepalive", budget, stop)))
    started = time.monotonic()
    for t in threads:
        t.start()
    reason = "duration"
    while time.monotonic() - started < args.duration:
        if args.stop_file and os.path.exists(args.stop_file):
            reason = "stop-file"
            break
        if budget.left <= 0:
            reason = "max-requests"
            break
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(args.timeout + 1)
    summary = {
        "seconds": round(time.monotonic() - started, 2), "stopped_by": reason, "hang_after": args.hang_after,
        "targets": {},
    }
    for (name, mode), s in stats.items():
        t = summary["targets"].setdefault(name, {"requests": 0, "failed": 0, "hung": 0, "modes": {}})
        t["modes"][mode] = {"requests": s.total(), "failed": s.failed, "hung": s.hung,
                            "max_latency_s": round(s.max_latency, 3), "errors": s.errors}
        t["requests"] += s.total()
        t["failed"] += s.failed
        t["hung"] += s.hung
    summary["requests"] = sum(t["requests"] for t in summary["targets"].values())
    summary["failed"] = sum(t["failed"] for t in summary["targets"].values())
    summary["hung"] = sum(t["hung"] for t in summary["targets"].values())
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    print(json.dumps({k: summary[k] for k in ("seconds", "requests", "failed", "hung", "stopped_by")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
