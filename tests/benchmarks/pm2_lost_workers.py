# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Measurement: whether PM2 loses track of a cluster worker when a crash-looping app is reloaded onto a good release.

    python3 tests/benchmarks/pm2_lost_workers.py [--cycles 100] [--pm2-version 7.0.4] [--via-module]

What a failed deploy's rollback does to a cluster app whose new release crash-loops. On this machine, no fleet:
PM2 (the version pm2_runtime pins, from npm) in a private directory and PM2_HOME, and the example app of docs/example
as a cluster app of 2 workers with wait_ready (as in molecule/deploy). Each cycle: `current` -> a release that exits
1.5 s after it starts, `pm2 reload`, a random 1-3 s of crash loop, `current` -> the good release, `pm2 reload`, 2 s,
then the daemon's child processes that `pm2 jlist` does not list are counted (a worker PM2 parks as `_old_N` during a
reload is one only for that moment; the count keeps those still there 2 s after the reload returned). A lost worker
keeps answering its share of requests; the script asks the app until it has seen each one answer. Prints one line
per cycle and the total; docs/zero-downtime.md keeps the figure. Nothing here is part of `make test`.

--via-module: the reload onto the good release is `ansible localhost -m nodefleet.pm2.pm2_app` (state reloaded) of
this checkout (build/collections, `make deps`), which stops the workers PM2 no longer lists and names them (strays).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PORT = 39000


def pinned_pm2() -> str:
    for line in (ROOT / "roles/pm2_runtime/defaults/main.yml").read_text().splitlines():
        if line.startswith("pm2_runtime_pm2_version:"):
            return line.split(":", 1)[1].strip().strip("'\"")
    raise SystemExit("pm2_runtime_pm2_version not found in roles/pm2_runtime/defaults/main.yml")


def children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if stat[stat.rfind(")") + 2:].split()[1] == str(pid):
                found.add(int(entry))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--pm2-version", default=pinned_pm2())
    parser.add_argument("--via-module", action="store_true", help="reload onto the good release with pm2_app")
    args = parser.parse_args()
    if not shutil.which("node") or not shutil.which("npm"):
        raise SystemExit("node and npm are needed on this machine")
    work = Path(tempfile.mkdtemp(prefix="pm2-lost-workers-"))
    subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(work), f"pm2@{args.pm2_version}"],
                   check=True, stdout=subprocess.DEVNULL)
    pm2 = str(work / "node_modules/.bin/pm2")
    env = dict(os.environ, PM2_HOME=str(work / "home"), PM2_DISCRETE_MODE="true")
    releases = {"good": {"version": "1.0.0"},
                "crash": {"version": "2.0.0-crash", "crash": True, "crash_after_ms": 1500}}
    for name, switch in releases.items():
        (work / "releases" / name / "dist").mkdir(parents=True)
        shutil.copy(ROOT / "docs/example/app/src/server.js", work / "releases" / name / "dist/server.js")
        (work / "releases" / name / "release.json").write_text(json.dumps(switch))
    current = work / "current"
    ecosystem = work / "ecosystem.json"
    ecosystem.write_text(json.dumps({"apps": [{
        "name": "api", "script": str(current / "dist/server.js"), "exec_mode": "cluster", "instances": 2,
        "wait_ready": True, "listen_timeout": 8000, "kill_timeout": 3000, "env": {"SERVICE": "api", "PORT": str(PORT)}}]}))

    def point(release: str) -> None:
        link = work / "current.new"
        link.symlink_to(work / "releases" / release)
        link.replace(current)

    def pm2_cli(*argv: str) -> str:
        return subprocess.run([pm2, *argv], env=env, check=True, capture_output=True, text=True).stdout

    def module_reload() -> list[int]:
        module_args = json.dumps({"name": "api", "state": "reloaded", "pm2_home": env["PM2_HOME"], "executable": pm2})
        done = subprocess.run(["ansible", "localhost", "-m", "nodefleet.pm2.pm2_app", "-a", module_args, "-o"],
                              env=dict(env, ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build/collections"),
                                       ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false"),
                              check=False, capture_output=True, text=True)
        result = json.loads(done.stdout.split(" => ", 1)[1]) if " => " in done.stdout else {}
        if done.returncode != 0:
            # PM2 itself may refuse a reload of a crash-looping app ("process already online"): counted, not fatal.
            failures.append(result.get("msg") or done.stderr[-300:])
            print(f"  pm2_app failed: {failures[-1]}", flush=True)
        return (result.get("strays") or {}).get("api", [])

    lost: set[int] = set()
    stopped = 0
    failures: list[str] = []
    try:
        point("good")
        pm2_cli("start", str(ecosystem))
        time.sleep(2)
        daemon = int((work / "home/pm2.pid").read_text())
        for cycle in range(1, args.cycles + 1):
            point("crash")
            pm2_cli("reload", str(ecosystem), "--only", "api")
            time.sleep(random.uniform(1.0, 3.0))
            point("good")
            said = ""
            if args.via_module:
                strays = module_reload()
                stopped += len(strays)
                said = f"; pm2_app stopped {strays}" if strays else ""
            else:
                pm2_cli("reload", str(ecosystem), "--only", "api")
            time.sleep(2)
            listed = {p["pid"] for p in json.loads(pm2_cli("jlist"))}
            now_lost = children(daemon) - listed
            lost |= now_lost
            print(f"cycle {cycle}: {len(now_lost)} workers PM2 does not list {sorted(now_lost)}{said}", flush=True)
        still = {pid for pid in lost if Path(f"/proc/{pid}").exists()}
        answering = set()
        deadline = time.time() + 10
        while still - answering and time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/", timeout=2) as response:
                    answering.add(json.load(response)["pid"])
            except OSError:
                time.sleep(0.1)
        print(f"PM2 {args.pm2_version}: {len(still)} workers lost in {args.cycles} reloads of a crash-looping cluster app "
              f"(2 workers); {len(still & answering)} of them seen answering requests"
              + (f"; pm2_app stopped {stopped} it found, failed {len(failures)} times" if args.via_module else ""))
    finally:
        subprocess.run([pm2, "kill"], env=env, check=False, capture_output=True)
        for pid in lost:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
