# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: what the pm2_watchdog role costs and how fast it heals, from the `watchdog` Molecule scenario.

Run from the repo root as root: `make bench-watchdog`. Runs `molecule test -s watchdog` once (its side effect writes
its measurements to NODEFLEET_WATCHDOG_MEASUREMENTS) and times it. Figures: fault to heal per fault kind (with the
heal command's own time), broken app to give-up, `pm2 stop` to a firing Pm2AppDown, the deploy under load, CPU and
peak memory of one watchdog pass and one metrics sample per host (from their own metrics in Prometheus), the CPU
share that makes at the test rhythm and at the role's defaults, and the scenario's wall time (what it costs CI).
Writes docs/benchmarks.md between the markers of this benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OUT = ROOT / "build/bench-watchdog/measurements.json"
MARKERS = ("<!-- watchdog-cost:begin -->", "<!-- watchdog-cost:end -->")
TEST_RHYTHM = {"watchdog": 2, "metrics": 3}  # molecule/watchdog/molecule.yml
DEFAULTS = {"watchdog": 10, "metrics": 15}  # roles/pm2_watchdog/defaults/main.yml


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.unlink(missing_ok=True)
    env = dict(os.environ, NODEFLEET_WATCHDOG_MEASUREMENTS=str(OUT), PATH=f"{BIN}:{os.environ['PATH']}",
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build/collections"), MOLECULE_GLOB="molecule/*/molecule.yml")
    started = time.monotonic()
    proc = subprocess.run([str(BIN / "molecule"), "test", "-s", "watchdog"], cwd=ROOT, env=env, check=False,
                          capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0 or not OUT.exists():
        sys.exit(f"molecule test -s watchdog failed (rc {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    figures = json.loads(OUT.read_text())
    write(render(figures, wall))
    print(render(figures, wall))


def render(m: dict, wall: float) -> str:
    cost = m["cost"]
    lines = [
        MARKERS[0],
        f"Measured {time.strftime('%Y-%m-%d')} by `make bench-watchdog` (2 vCPU shared with other work; load average "
        f"{os.getloadavg()[0]:.1f} at the end). Test rhythm: a pass every {TEST_RHYTHM['watchdog']} s, K = 3, "
        f"metrics every {TEST_RHYTHM['metrics']} s; 3 apps, 4 processes per host.",
        "",
        "| fault | fault to healed | of which the heal command |",
        "|---|---|---|",
    ]
    for name, heal in m["fault_to_heal"].items():
        lines.append(f"| {name} | {heal['fault_to_healed_s']} s | {heal['heal_command_s']} s |")
    lines += [
        "",
        f"A permanently broken app (M = 2): broken to the give-up alert {m['broken_to_give_up_s']} s. "
        f"`pm2 stop` to a firing Pm2AppDown (`for: 4s`, scrape and evaluation every 2 s): "
        f"{m['stop_to_app_down_firing_s']} s. Rolling deploy under load while the watchdog runs: "
        + ", ".join(f"{app} {t['requests']} requests, {t['failed']} failed, {t['hung']} hung"
                    for app, t in m["deploy_under_load"].items()) + "; no heal, no alert.",
        "",
        "| host | watchdog pass: CPU / wall / peak RSS | metrics sample: CPU / peak RSS | CPU share at 2 s + 3 s | at the defaults 10 s + 15 s |",
        "|---|---|---|---|---|",
    ]
    for host in sorted(cost["watchdog_cpu_s_per_pass"]):
        pass_cpu, sample_cpu = cost["watchdog_cpu_s_per_pass"][host], cost["metrics_cpu_s_per_sample"][host]
        test_share = pass_cpu / TEST_RHYTHM["watchdog"] + sample_cpu / TEST_RHYTHM["metrics"]
        default_share = pass_cpu / DEFAULTS["watchdog"] + sample_cpu / DEFAULTS["metrics"]
        lines.append(
            f"| {host} | {pass_cpu * 1000:.0f} ms / {cost['watchdog_pass_wall_s'][host] * 1000:.0f} ms / "
            f"{cost['watchdog_peak_rss_mib'][host]:.0f} MiB | {sample_cpu * 1000:.0f} ms / "
            f"{cost['metrics_peak_rss_mib'][host]:.0f} MiB | {test_share:.1%} of a core | {default_share:.1%} of a core |")
    lines += [
        "",
        "Peak RSS counts the children of a pass: `pm2 jlist` (metrics) and `pm2 reload` (a heal) are Node.js processes. "
        "Nothing of the watchdog stays in memory between passes.",
        "",
        f"`molecule test -s watchdog` (create, prepare with a first deploy, check, converge, idempotence, side effect, "
        f"verify, destroy): **{wall / 60:.1f} min** wall time.",
        MARKERS[1],
    ]
    return "\n".join(lines)


def write(section: str) -> None:
    doc = ROOT / "docs/benchmarks.md"
    text = doc.read_text()
    if MARKERS[0] in text:
        head, rest = text.split(MARKERS[0], 1)
        text = head + section + rest.split(MARKERS[1], 1)[1]
    else:
        text = text.rstrip("\n") + (
            "\n\n## Watchdog: heal times and cost (`make bench-watchdog`, `tests/benchmarks/watchdog_cost.py`)\n\n"
            + section + "\n")
    doc.write_text(text)


if __name__ == "__main__":
    main()
