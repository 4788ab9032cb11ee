# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: the deploy, rollback and status playbooks against `ansible -m ping`, and 3 vs 12 hosts, in one run.

Run from the repo root as root: `make bench-deploy` (or .venv/bin/python tests/benchmarks/deploy_scale.py).
One fleet: the example platform of docs/example (7 apps per host, HAProxy on lb-h1 in front of every prod host)
on 12 prod hosts; group prod3 is the first 3 of them. Measured, with `ansible <group> -m ping` on the same hosts
interleaved in the same run (ROUNDS rounds, medians, every round listed):
  1. a no-change deploy, a rollback to the release already current, and status, each / ping, on 3 and 12 hosts
     (during the 3-host items, the other 9 hosts' watchdog and metrics timers are stopped: on this one machine the
     12 hosts' timers fire together, a load a 3-host fleet does not have);
  2. a one-app env change (api-gateway's LOG_LEVEL, info <-> debug) on 3 hosts, pm2_deploy_serial 1, / ping, and
     per batch the real work vs the wall time from the run's summary.json; each round also runs the same change
     with the deploy's two deliberate waits set to 0 (pm2_deploy_lb_grace, api-gateway's pm2.settle_time): what
     PM2, the hosts and Ansible cost without them, for comparison;
  3. growth: a new release on 3 hosts (serial 1) vs on 12 hosts (serial 4), 3 batches each, under load through the
     LB (tests/load/loadgen.py as molecule/deploy/tasks/load.yml runs it), failed and hung (> 1 s) requests counted;
     first the same load for 60 s with nothing deploying (a control: what the machine alone does to the requests).
Writes the figures, the commands and the date into docs/benchmarks.md between the markers of this benchmark; exits
1 when a target is missed (the figures are written either way). Nothing here is part of `make test`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml  # from the venv (ansible-core depends on it)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORK = ROOT / "build/bench-deploy"
EXAMPLE = ROOT / "docs/example"
HOSTS = [f"prod-h{i}" for i in range(1, 13)]
LB = "lb-h1"
SUBNET = "192.168.242.0/24"
CHANGED_APP = "api-gateway"
WATCHDOG_TIMERS = ("nodefleet-pm2-watchdog.timer", "nodefleet-pm2-metrics.timer")  # roles/pm2_watchdog, on via site.yml
GROWTH_RELEASES = ("v2", "v3", "v4", "v5")  # two rounds of item 3 at most
CONTROL_SECONDS = 60
MARKERS = ("<!-- deploy-bench:begin -->", "<!-- deploy-bench:end -->")
ENV = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_PIPELINING="True", ANSIBLE_FORCE_COLOR="0",
           ANSIBLE_FORKS="16", ANSIBLE_VAULT_PASSWORD_FILE=str(EXAMPLE / "vault-password.txt"),
           ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build/collections"), PATH=f"{BIN}:{os.environ['PATH']}")
# Shown once in the report; every command below ran with them.
SHOWN_ENV = ("ANSIBLE_HOST_KEY_CHECKING", "ANSIBLE_PIPELINING", "ANSIBLE_FORKS", "ANSIBLE_VAULT_PASSWORD_FILE",
             "ANSIBLE_COLLECTIONS_PATH")


def shown(argv) -> str:
    """A command as it ran, from the repo root ($PWD)."""
    return " ".join(shlex.quote(str(a)).replace(str(ROOT), "$PWD") if " " in str(a) or "'" in str(a)
                    else str(a).replace(str(ROOT), "$PWD") for a in argv)


def run(argv, quiet=False) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], check=False, capture_output=True, text=True, env=ENV, cwd=ROOT)
    if proc.returncode != 0 and not quiet:
        sys.exit(f"{shown(argv)} failed (rc {proc.returncode}):\n{proc.stdout[-8000:]}\n{proc.stderr[-3000:]}")
    return proc


def timed(argv) -> float:
    start = time.monotonic()
    run(argv)
    return time.monotonic() - start


class MachineLoad(threading.Thread):
    """The machine's 1-minute load average every 10 s while the benchmark runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(float(Path("/proc/loadavg").read_text().split()[0]))
            self.stop.wait(10)


class Fleet:
    def __init__(self, name: str) -> None:
        self.cmd = ["python3", ROOT / "tests/fleet/fleet.py", "--name", name]
        self.inventory = WORK / "inventory.yml"

    def up(self) -> None:
        groups = {"prod": HOSTS, "prod3": HOSTS[:3], "lb": [LB]}
        run(self.cmd + ["up", "--subnet", SUBNET, "--host-names", ",".join(HOSTS + [LB]), "--inventory", self.inventory]
            + [a for g, hosts in groups.items() for a in ("--group", f"{g}={','.join(hosts)}")])

    def down(self) -> None:
        subprocess.run([str(a) for a in self.cmd + ["down", "--missing-ok"]], check=False)

    def lb_ip(self) -> str:
        return json.loads(run(self.cmd + ["status", "--json"]).stdout)["hosts"][LB]["ip"]


class Bench:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.inv = ["-i", fleet.inventory, "-i", EXAMPLE / "inventory"]
        self.common = ["-e", f"pm2_deploy_build_root={WORK / 'build'}"]
        self.commands: dict[str, list] = {}

    # --- the commands measured -------------------------------------------------------------------------------
    def ping(self, group):
        return ["ansible", group, *self.inv, "-m", "ansible.builtin.ping"]

    def deploy(self, group, release="v1", extra=()):
        return ["ansible-playbook", *self.inv, *self.common, "-e", f"pm2_deploy_source_path={WORK / 'src' / release}",
                *extra, "nodefleet.pm2.deploy", "-l", group]

    def rollback(self, group, release_id):
        return ["ansible-playbook", *self.inv, *self.common, "-e", f"pm2_deploy_rollback_to={release_id}",
                "nodefleet.pm2.rollback", "-l", group]

    def status(self, group):
        return ["ansible-playbook", *self.inv, *self.common, "nodefleet.pm2.status", "-l", group]

    def others_timers(self, state: str) -> None:
        """Stops or starts the watchdog and metrics timers of the hosts outside prod3, so the prod3 items run on a
        machine that carries what the 3-host demo fleet carries. One site.yml run started the 12 hosts' timers, so
        they fire at nearly the same moments on this one 2-core machine (the 12 metrics samples alone are about 3 s
        of CPU every 15 s), a load that a fleet of real machines never shares."""
        for unit in WATCHDOG_TIMERS:
            argv = ["ansible", "prod:!prod3", *self.inv, "-m", "ansible.builtin.systemd_service",
                    "-a", f"name={unit} state={state}"]
            self.commands[f"{unit} {state} on the hosts outside prod3 (around the prod3 items)"] = argv
            run(argv)

    # --- summaries -------------------------------------------------------------------------------------------
    def reports(self) -> set[Path]:
        return set((WORK / "build/reports").glob("*/summary.json"))

    def summarised(self, argv, expect: str, hosts: list[str]) -> tuple[float, dict]:
        """Runs a deploy or rollback; returns its wall time and its summary.json, after checking every host's outcome."""
        before = self.reports()
        seconds = timed(argv)
        new = sorted(self.reports() - before)
        if len(new) != 1:
            sys.exit(f"{shown(argv)}: expected one new summary.json, found {new}")
        summary = json.loads(new[0].read_text())
        outcomes = {h["host"]: h["outcome"] for h in summary["hosts"]}
        if outcomes != {h: expect for h in hosts}:
            sys.exit(f"{shown(argv)}: expected every host of {hosts} {expect}, got {outcomes}")
        return seconds, summary

    # --- the parts of the run --------------------------------------------------------------------------------
    def prepare(self) -> str:
        """Release sources, runtime + env files + HAProxy, release v1 on every host. Returns v1's release id."""
        for name in ("v1", *GROWTH_RELEASES):
            dest = WORK / "src" / name
            shutil.copytree(EXAMPLE / "app", dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("node_modules", "dist"))
            (dest / "release.json").write_text(json.dumps({"version": f"{name[1:]}.0.0"}) + "\n")
        apps = yaml.safe_load((EXAMPLE / "inventory/group_vars/all/main.yml").read_text())["pm2_deploy_apps"]
        changed = next(app for app in apps if app["name"] == CHANGED_APP)
        changed["env"] = dict(changed["env"], LOG_LEVEL="debug")
        (WORK / "apps-debug.yml").write_text(yaml.safe_dump({"pm2_deploy_apps": apps}, sort_keys=False))
        changed["env"]["LOG_LEVEL"] = "info"
        changed["pm2"] = dict(changed["pm2"], settle_time=0)
        (WORK / "apps-nowait.yml").write_text(yaml.safe_dump({"pm2_deploy_apps": apps}, sort_keys=False))
        site, first = ["ansible-playbook", *self.inv, EXAMPLE / "site.yml", "-l", "prod:lb"], self.deploy("prod", extra=["-e", "pm2_deploy_serial=4"])
        self.commands.update({"setup (not measured): runtime, env files, HAProxy": site,
                              "setup (not measured): release v1 on every host": first})
        run(site)
        _s, summary = self.summarised(first, "deployed", HOSTS)
        return summary["release"]

    def ratios(self, rounds: int, group: str, hosts: list[str], release_id: str) -> dict[str, list[float]]:
        """Item 1: no-change deploy, rollback to the current release, status; ping before each, interleaved."""
        cmds = {"ping": self.ping(group), "deploy": self.deploy(group), "rollback": self.rollback(group, release_id),
                "status": self.status(group)}
        for key, argv in cmds.items():
            self.commands[f"{key} {group}"] = argv
        times: dict[str, list[float]] = {k: [] for k in cmds}
        run(cmds["ping"])  # warm: SSH control sockets
        run(cmds["deploy"])
        for _round in range(rounds):
            times["ping"].append(timed(cmds["ping"]))
            times["deploy"].append(self.summarised(cmds["deploy"], "unchanged", hosts)[0])
            times["ping"].append(timed(cmds["ping"]))
            times["rollback"].append(self.summarised(cmds["rollback"], "unchanged", hosts)[0])
            times["ping"].append(timed(cmds["ping"]))
            times["status"].append(timed(cmds["status"]))
        return times

    def env_change(self, rounds: int) -> tuple[dict[str, list[float]], list[dict]]:
        """Item 2: api-gateway's env changed on prod3, serial 1, each round info -> debug as configured, then
        debug -> info with the deliberate waits at 0 (LB grace, api-gateway's crash watch)."""
        to_debug = self.deploy("prod3", extra=["-e", f"@{WORK / 'apps-debug.yml'}"])
        nowait = self.deploy("prod3", extra=["-e", f"@{WORK / 'apps-nowait.yml'}", "-e", "pm2_deploy_lb_grace=0"])
        self.commands["env change prod3 (to debug)"] = to_debug
        self.commands["env change prod3 (back to info, deliberate waits 0)"] = nowait
        times: dict[str, list[float]] = {"ping": [], "change": [], "nowait": []}
        batches = []
        for i in range(rounds):
            for key, argv in (("change", to_debug), ("nowait", nowait)):
                times["ping"].append(timed(self.ping("prod3")))
                seconds, summary = self.summarised(argv, "deployed", HOSTS[:3])
                changed = {h["host"]: sorted(n for n, a in h["actions"].items() if a != "none") for h in summary["hosts"]}
                if any(apps != [CHANGED_APP] for apps in changed.values()):
                    sys.exit(f"expected only {CHANGED_APP} to change on each host, got {changed}")
                times[key].append(seconds)
                batches.append({"round": i + 1, "nowait": key == "nowait", "batches": summary["batches"]})
        return times, batches

    def growth(self, rounds: int) -> tuple[dict, list[dict]]:
        """Item 3: a new release on prod3 (serial 1) vs on prod (serial 4), 3 batches each, under load via the LB.

        First the load alone for CONTROL_SECONDS (nothing deploying): what the machine does to the load generator.
        The order of the two sizes alternates between rounds, so a drift in the machine's load hits both."""
        load = Load(self.fleet.lb_ip())
        self.commands["load generator (control, and during each growth deploy; repeated until the deploy ends)"] = load.argv(
            WORK / "load-<name>.stop", WORK / "load-<name>-<segment>.json")
        control = load.during("control", lambda: time.sleep(CONTROL_SECONDS))
        out = []
        releases = iter(GROWTH_RELEASES)  # each deploy ships a release no host has yet
        sizes = [("prod3", HOSTS[:3], "1"), ("prod", HOSTS, "4")]
        for i in range(rounds):
            for group, hosts, serial in sizes if i % 2 == 0 else sizes[::-1]:
                release = next(releases)
                argv = self.deploy(group, release, extra=["-e", f"pm2_deploy_serial={serial}"])
                self.commands[f"growth {group} ({len(hosts)} hosts, serial {serial}, release {release})"] = argv
                result = {}
                load_summary = load.during(release, lambda: result.update(zip(("seconds", "summary"),
                                                                              self.summarised(argv, "deployed", hosts))))
                out.append({"round": i + 1, "group": group, "hosts": len(hosts), "serial": serial, "release": release,
                            "seconds": result["seconds"], "batches": result["summary"]["batches"], "load": load_summary})
        return control, out


class Load:
    """tests/load/loadgen.py as molecule/deploy/tasks/load.yml runs it (every app behind the LB, 4 workers each), for
    as long as something runs: loadgen stops itself after 600 s, so a longer run gets a new segment at once."""

    def __init__(self, lb_ip: str) -> None:
        self.lb_ip = lb_ip
        apps = yaml.safe_load((EXAMPLE / "inventory/group_vars/all/main.yml").read_text())["pm2_deploy_apps"]
        self.targets = [f"{a['name']}={lb_ip}:{a['lb_port']}" for a in apps if "lb_port" in a]

    def argv(self, stop, out) -> list:
        return [sys.executable, ROOT / "tests/load/loadgen.py", "--allow-subnet", f"{self.lb_ip}/24",
                *[a for t in self.targets for a in ("--target", t)], "--workers", "4", "--duration", "600",
                "--max-requests", "500000", "--stop-file", stop, "--out", out]

    def during(self, name: str, action) -> dict:
        stop = WORK / f"load-{name}.stop"
        stop.unlink(missing_ok=True)
        segments: list[dict] = []

        def generate() -> None:
            while not stop.exists():
                out = WORK / f"load-{name}-{len(segments) + 1}.json"
                subprocess.run([str(a) for a in self.argv(stop, out)], stdout=subprocess.DEVNULL, cwd=ROOT, check=True)
                segments.append(json.loads(out.read_text()))

        thread = threading.Thread(target=generate, daemon=True)
        thread.start()
        time.sleep(2)  # steady state, as load.yml
        try:
            action()
        finally:
            stop.touch()
            thread.join(120)
        if not segments or segments[-1]["stopped_by"] != "stop-file":
            sys.exit(f"load {name}: the load generator did not end by the stop file: {segments}")
        total = {"segments": len(segments), "seconds": sum(s["seconds"] for s in segments)}
        for key in ("requests", "failed", "hung"):
            total[key] = sum(s[key] for s in segments)
        total["max_latency_s"] = max(m["max_latency_s"] for s in segments for t in s["targets"].values()
                                     for m in t["modes"].values())
        total["errors"] = {}
        for s in segments:
            for t in s["targets"].values():
                for m in t["modes"].values():
                    for error, n in m["errors"].items():
                        total["errors"][error] = total["errors"].get(error, 0) + n
        return total


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def rounded(values) -> list[float]:
    return [round(v, 1) for v in values]


def batch_lines(label: str, batches: list[dict]) -> list[str]:
    lines = []
    for b in batches:
        overhead = 100 * (b["wall"] - b["work"]) / b["wall"] if b["wall"] else 0
        lines.append(f"| {label} | {b['number']} | {', '.join(b['hosts'])} | {b['wall']:.1f} | {b['work']:.1f} "
                     f"| {overhead:.0f}% |")
    return lines


def safety_waits() -> tuple[float, float]:
    """(LB grace, settle time) in seconds, as the role's defaults and the module's default set them."""
    defaults = yaml.safe_load((ROOT / "roles/pm2_deploy/defaults/main.yml").read_text())
    spec = (ROOT / "plugins/module_utils/_spec.py").read_text()
    settle_ms = int(re.search(r"^DEFAULT_SETTLE_MS = (\d+)$", spec, re.M).group(1))
    return float(defaults["pm2_deploy_lb_grace"]), settle_ms / 1000


def report(args, bench: Bench, started: float, machine: MachineLoad, item1: dict, item2, item3) -> tuple[str, list[str]]:
    missed: list[str] = []

    def check(what: str, value: float, target: float) -> str:
        if value > target:
            missed.append(f"{what}: {value:.2f} (target <= {target:g})")
            return "**missed**"
        return "met"

    lines = [f"Measured {datetime.date.today().isoformat()} on this project's machine ({os.cpu_count()} cores), "
             f"{args.rounds} interleaved rounds, medians. Benchmark wall time {(time.monotonic() - started) / 60:.0f} min; "
             f"1-minute load average during the run: min {min(machine.samples):.1f}, median "
             f"{median(machine.samples):.1f}, max {max(machine.samples):.1f} (sampled every 10 s).", "",
             "### 1. No-change runs / ping", "",
             "The prod3 runs (here and in item 2) have the watchdog and metrics timers of the 9 other hosts stopped, "
             "so the machine carries what the 3-host demo fleet carries; the prod runs have all 12 hosts' timers on.",
             "",
             "| hosts | run | median wall (s) | / ping | target | |", "|---|---|---|---|---|---|"]
    for group, times in item1.items():
        ping = median(times["ping"])
        lines.append(f"| {group} | `ansible {group} -m ping` | {ping:.2f} | 1 | | |")
        for key, target in (("deploy", 2.5), ("rollback", 2.5), ("status", 2.0)):
            ratio = median(times[key]) / ping
            lines.append(f"| {group} | no-change {key} | {median(times[key]):.2f} | **{ratio:.2f}x** | <= {target:g}x "
                         f"| {check(f'{key} {group} / ping', ratio, target)} |")
    lines += ["", "All rounds (s):", ""]
    for group, times in item1.items():
        for key, values in times.items():
            lines.append(f"- {group} {key}: {rounded(values)}")

    times, rounds = item2
    grace, settle = safety_waits()
    ping, change, nowait = median(times["ping"]), median(times["change"]), median(times["nowait"])
    ratio = change / ping
    configured = [r for r in rounds if not r["nowait"]]

    def in_batches(runs, key) -> float:
        return median([sum(b[key] for b in r["batches"]) for r in runs])

    lines += ["", f"### 2. One-app env change on 3 hosts, serial 1 ({CHANGED_APP}: LOG_LEVEL info <-> debug)", "",
              "| run | median wall (s) | / ping | target | |", "|---|---|---|---|---|",
              f"| `ansible prod3 -m ping` | {ping:.2f} | 1 | | |",
              f"| env change, 3 batches of 1 host | {change:.2f} | **{ratio:.2f}x** | <= 6x "
              f"| {check('env change / ping', ratio, 6)} |",
              f"| the same with the deliberate waits at 0 (comparison, not a safe setting) | {nowait:.2f} "
              f"| {nowait / ping:.2f}x | | |", "",
              f"All rounds (s): ping {rounded(times['ping'])}, env change {rounded(times['change'])}, waits at 0 "
              f"{rounded(times['nowait'])}. In the batches (median): {in_batches(configured, 'wall'):.1f} s, of which "
              f"real work {in_batches(configured, 'work'):.1f} s (waits at 0: "
              f"{in_batches([r for r in rounds if r['nowait']], 'wall'):.1f} s, of which real work "
              f"{in_batches([r for r in rounds if r['nowait']], 'work'):.1f} s); the rest of the run (start-up, plan, "
              "locks, summary) takes the difference.", "",
              f"Waits the deploy keeps on purpose, per batch: {grace:g} s of grace at the LB after the host's last "
              f"session (`pm2_deploy_lb_grace`) and {settle:g} s of crash watch after PM2 reports the new workers "
              f"online (`settle_time`'s default; a crash loop still returns rc 0). Over the 3 batches they alone take "
              f"{3 * (grace + settle):g} s = **{3 * (grace + settle) / ping:.1f}x** ping. The comparison row sets both "
              f"to 0 (`-e pm2_deploy_lb_grace=0`, `pm2: {{settle_time: 0}}` on {CHANGED_APP}).", "",
              "Per batch (summary.json: `wall` from the batch's start to its close, `work` = drain + PM2 reload + "
              "readiness + health + re-enable of its slowest host), as configured:", "",
              "| run | batch | hosts | wall (s) | work (s) | overhead |", "|---|---|---|---|---|---|"]
    batches = [b for r in configured for b in r["batches"]] + [b for g in item3[1] for b in g["batches"]]
    for r in configured:
        lines += batch_lines(f"env change, round {r['round']}", r["batches"])
    for g in item3[1]:
        lines += batch_lines(f"new release, {g['hosts']} hosts, round {g['round']}", g["batches"])
    overheads = [100 * (b["wall"] - b["work"]) / b["wall"] for b in batches if b["wall"]]
    over = [o for o in overheads if o > 50]
    if over:
        missed.append(f"batch overhead: {len(over)} of {len(overheads)} batches over 50% (worst {max(over):.0f}%)")
    lines += ["", f"Overhead per batch: median {median(overheads):.0f}%, worst {max(overheads):.0f}%; "
              f"{len(over)} of {len(overheads)} batches over the target of 50%.", "",
              "### 3. Growth: a new release on 3 vs 12 hosts, 3 batches each, under load through the LB", "",
              "| round | hosts | serial | release | wall (s) | in batches (s) | requests via the LB (req/s) | failed "
              "| hung > 1 s | slowest (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    control, growth = item3
    for g in [{"round": "control", "hosts": "-", "serial": "-", "release": f"nothing deploying, {CONTROL_SECONDS} s",
               "seconds": None, "load": control}] + growth:
        ld = g["load"]
        wall = f"{g['seconds']:.1f}" if g["seconds"] else "-"
        batched = f"{sum(b['wall'] for b in g['batches']):.1f}" if g["seconds"] else "-"
        lines.append(f"| {g['round']} | {g['hosts']} | {g['serial']} | {g['release']} | {wall} | {batched} | {ld['requests']} "
                     f"({ld['requests'] / ld['seconds']:.0f}) | {ld['failed']} | {ld['hung']} | {ld['max_latency_s']} |")
        if ld["failed"] or ld["hung"]:
            missed.append(f"load, {g['release']}: {ld['failed']} failed, {ld['hung']} hung (errors {ld['errors']})")
    lines += ["", "The load generator asks for 200 req/s per app (1200 req/s); the rate it reached is in brackets. "
              "A run longer than loadgen's 600 s cap gets a new loadgen at once (a gap well under 1 s). Outside the "
              "batches: start-up, plan, build once, ship, locks, summary."]
    small = median([g["seconds"] for g in growth if g["hosts"] == 3])
    large = median([g["seconds"] for g in growth if g["hosts"] == 12])
    lines += ["", f"12 vs 3 hosts: **{large / small:.2f}x** (target <= 2x: {check('growth 12 vs 3 hosts', large / small, 2)}).",
              "", "### Commands", "",
              "From the repo root, with " + ", ".join(f"`{k}={shown([ENV[k]])}`" for k in SHOWN_ENV) + ":", "", "```sh"]
    for label, argv in bench.commands.items():
        lines += [f"# {label}", shown(argv)]
    lines += ["```", ""]
    return "\n".join(lines), missed


def write_section(body: str) -> None:
    doc = ROOT / "docs/benchmarks.md"
    text = doc.read_text()
    head, found, rest = text.partition(MARKERS[0])
    if not found:
        sys.exit(f"docs/benchmarks.md has no {MARKERS[0]}")
    doc.write_text(head + MARKERS[0] + "\n" + body + MARKERS[1] + rest.partition(MARKERS[1])[2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of items 1 and 2 (default 5)")
    parser.add_argument("--growth-rounds", type=int, default=2, choices=(1, 2), help="rounds of item 3 (default 2)")
    parser.add_argument("--fleet-name", default="bdeploy")
    parser.add_argument("--keep", action="store_true", help="leave the fleet up afterwards (to look at it)")
    args = parser.parse_args()
    started = time.monotonic()
    machine = MachineLoad()
    machine.start()
    fleet = Fleet(args.fleet_name)
    fleet.down()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    fleet.up()
    try:
        bench = Bench(fleet)
        release_id = bench.prepare()
        bench.others_timers("stopped")
        item1 = {"prod3": bench.ratios(args.rounds, "prod3", HOSTS[:3], release_id)}
        item2 = bench.env_change(args.rounds)
        bench.others_timers("started")
        item1["prod"] = bench.ratios(args.rounds, "prod", HOSTS, release_id)
        item3 = bench.growth(args.growth_rounds)
    finally:
        if not args.keep:
            fleet.down()
    machine.stop.set()
    (WORK / "results.json").write_text(json.dumps({"item1": item1, "item2": item2, "item3": item3,
                                                   "loadavg": machine.samples}, indent=1))
    body, missed = report(args, bench, started, machine, item1, item2, item3)
    write_section(body)
    print(body)
    for line in missed:
        print(f"target missed: {line}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
