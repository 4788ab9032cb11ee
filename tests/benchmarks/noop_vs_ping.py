# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: a no-change pm2_app run of 6 apps on each of 3 hosts against `ansible all -m ping`, on one fleet.

Run from the repo root as root: `make bench-noop` (or .venv/bin/python tests/benchmarks/noop_vs_ping.py).
Writes the figures into docs/benchmarks.md between the markers of this benchmark.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLEET = ["python3", str(ROOT / "tests/fleet/fleet.py"), "--name", "bench"]
HERE = Path(__file__).parent
INVENTORY = ROOT / "build/bench-inventory.yml"
ROUNDS = 5
ENV = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_PIPELINING="True",
           ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build/collections"))
BIN = Path(sys.executable).parent


def run(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, env=ENV, **kw)


def timed(argv) -> float:
    start = time.monotonic()
    run(argv)
    return time.monotonic() - start


def calls_per_host() -> dict[str, int]:
    out = run([str(BIN / "ansible"), "all", "-i", str(INVENTORY), "-o", "-m", "ansible.builtin.command",
               "-a", "wc -l /var/log/pm2-calls.log"]).stdout
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+) \| .*\(stdout\) (\d+) ", out, re.M)}
    if len(counts) != 3:
        raise SystemExit(f"could not read the pm2 call log of every host: {out}")
    return counts


def main() -> int:
    subprocess.run(FLEET + ["down", "--missing-ok"], check=True)
    run(FLEET + ["up", "--hosts", "3", "--subnet", "192.168.241.0/24", "--inventory", str(INVENTORY)])
    try:
        playbook = [str(BIN / "ansible-playbook"), "-i", str(INVENTORY)]
        run(playbook + [str(HERE / "noop_setup.yml")])
        run(playbook + [str(HERE / "noop_run.yml")])  # warm: SSH control sockets, daemon, caches
        ping = [str(BIN / "ansible"), "all", "-i", str(INVENTORY), "-m", "ansible.builtin.ping"]
        pings, noops, per_host = [], [], {}
        for _round in range(ROUNDS):  # interleaved, so load on the machine hits both alike
            pings.append(timed(ping))
            before = calls_per_host()
            noops.append(timed(playbook + [str(HERE / "noop_run.yml")]))
            after = calls_per_host()
            for host in after:  # the worst round counts
                per_host[host] = max(per_host.get(host, 0), after[host] - before[host])
        out = run(playbook + [str(HERE / "noop_run.yml")]).stdout
        assert "changed=0" in out and "changed=1" not in out, out
    finally:
        subprocess.run(FLEET + ["down"], check=False)

    ping_s, noop_s = statistics.median(pings), statistics.median(noops)
    report = (
        f"Measured {time.strftime('%Y-%m-%d')} on this project's machine (2 cores), {ROUNDS} interleaved rounds, medians.\n\n"
        "| run | wall time (s) |\n|---|---|\n"
        f"| `ansible all -m ping`, 3 hosts | {ping_s:.2f} |\n"
        f"| no-change `pm2_app` run, 6 apps on each of 3 hosts | {noop_s:.2f} |\n"
        f"| ratio | **{noop_s / ping_s:.2f}x** (target <= 3x) |\n\n"
        f"pm2 CLI calls per host during one no-change run, counted by a logging wrapper around pm2: "
        f"**{', '.join(f'{h}: {n}' for h, n in sorted(per_host.items()))}** (target <= 2).\n"
        f"All rounds: ping {[round(p, 2) for p in pings]}, no-change {[round(n, 2) for n in noops]}.\n"
    )
    write_section("noop-vs-ping", report)
    print(report)
    ok = noop_s / ping_s <= 3 and all(n <= 2 for n in per_host.values())
    return 0 if ok else 1


def write_section(name: str, body: str) -> None:
    doc = ROOT / "docs/benchmarks.md"
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + begin + "\n" + body + end + rest.split(end, 1)[1]
    else:
        text += f"\n{begin}\n{body}{end}\n"
    doc.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
