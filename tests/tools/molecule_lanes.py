# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run Molecule scenarios in a few lanes at once (make molecule, make test).

    python tests/tools/molecule_lanes.py --jobs 2 SCENARIO ... [SCENARIO@ANSIBLE_CORE_BIN_DIR ...]

Why lanes: a scenario spends about half its wall time waiting (SSH round trips, apps booting, crash loops, log
rotation, restarts); on the 2-core CI machine a second scenario fills that time. Each scenario has its own fleet
(named after it) and its own Molecule ephemeral directory, so lanes share nothing but the CPU.

The scenarios that hold load through the load balancer while they deploy and count every slow request
(ALONE: deploy, deploy_bad, watchdog) run alone, first: they keep the CPU busy themselves, and with two of them at
once (load average 18 on 2 cores) a new connection once waited 5 s, a figure about the machine, not the deploy.

``SCENARIO@DIR`` runs the scenario with the ansible-core of DIR (a venv's bin directory, first on PATH); its fleet
name gets the prefix ``o`` and its ephemeral directory is its own, so it may run beside the same scenario on the
pinned ansible-core.

Longest first (from the last measured times in docs/ci.md; an unknown scenario counts as long). Each scenario's
output goes to build/molecule/<job>.log and is printed whole when the scenario ends, so the CI log reads one
scenario after another. The first failure stops new scenarios from starting; those already running finish (and
take their fleets down); the exit status is 1 and the failed scenarios are named last, each with the task that failed
and the head and tail of its message (why_failed): CI may keep only the end of a long log.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

# Seconds per scenario in the last full CI run alone on the machine (docs/ci.md); only the order depends on them.
LAST_MEASURED = {
    "deploy_bad": 600, "pm2_app": 283, "deploy": 281, "pm2_logrotate": 324, "watchdog": 245,
    "pm2_runtime": 188, "systemd": 147, "pm2_env": 122, "import_roundtrip": 100, "fleet": 37,
}
UNKNOWN = 400
# Scenarios that put load through the LB and assert no request failed or hung: never beside another scenario.
ALONE = {"deploy", "deploy_bad", "watchdog"}

ROOT = Path(__file__).resolve().parents[2]


class Job:
    def __init__(self, spec: str, log_dir: Path) -> None:
        self.scenario, _at, bin_dir = spec.partition("@")
        self.bin_dir = bin_dir or None
        self.name = self.scenario + ("@" + Path(bin_dir).parent.name if bin_dir else "")
        self.log = log_dir / (self.name.replace("/", "_") + ".log")
        self.seconds = 0
        self.rc: int | None = None

    @property
    def weight(self) -> int:
        return LAST_MEASURED.get(self.scenario, UNKNOWN)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.bin_dir:
            env["PATH"] = self.bin_dir + os.pathsep + env["PATH"]
            env["NODEFLEET_FLEET_PREFIX"] = env.get("NODEFLEET_FLEET_PREFIX", "") + "o"
            ephemeral = Path(self.log.parent, "ephemeral", self.name)
            ephemeral.mkdir(parents=True, exist_ok=True)
            env["MOLECULE_EPHEMERAL_DIRECTORY"] = str(ephemeral)
        return env

    def run(self) -> None:
        started = time.monotonic()
        with self.log.open("w") as out:
            if self.bin_dir:
                version = subprocess.run(["ansible", "--version"], env=self.environment(), text=True,
                                         capture_output=True, check=False).stdout.splitlines()[:1]
                out.write(f"=== molecule scenario {self.scenario} on {' '.join(version)}\n")
                out.flush()
            self.rc = subprocess.run(["molecule", "test", "-s", self.scenario], cwd=ROOT, env=self.environment(),
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     check=False).returncode
        self.seconds = round(time.monotonic() - started)


FATAL = re.compile(r"^(?:fatal|failed): \[(?P<host>[^]]+)\](?: \(item=.*?\))?(?:: FAILED!)? => (?P<result>.*)$")
TASK = re.compile(r"^TASK \[(?P<task>.*)\]")


def why_failed(log: str, limit: int = 1200) -> list[str]:
    """The first failed task of a scenario log in a few short lines: its name, the host, the assertion that did not
    hold (for asserts) and the head and tail of the message, where the figures of a failed check usually are."""
    task = ""
    lines = log.splitlines()
    for number, line in enumerate(lines):
        match = TASK.match(line)
        if match:
            task = match["task"]
            continue
        match = FATAL.match(line)
        if not match or lines[number + 1:number + 2] == ["...ignoring"]:
            continue
        text = match["result"]
        if text.strip() == "{":  # the default callback prints the result as indented JSON, up to a lone "}"
            end = next((i for i in range(number + 1, len(lines)) if lines[i] == "}"), len(lines) - 1)
            text = "\n".join(["{"] + lines[number + 1:end + 1])
        try:
            result = json.loads(text)
        except ValueError:
            result = {"msg": text}
        message = str(result.get("msg", "")) if isinstance(result, dict) else str(result)
        if len(message) > limit:
            message = message[: limit * 2 // 3] + " [...] " + message[-limit // 3:]
        why = [f"first failed task: {task} on {match['host']}"]
        if isinstance(result, dict) and result.get("assertion"):
            why.append(f"assertion that did not hold: {result['assertion']}")
        return why + [f"message: {message}"]
    return ["no failed task in the log (see the Molecule error above)"]


def run_scenarios(jobs: list[Job], lanes: int) -> list[Job]:
    """The ALONE scenarios one by one, then the others `lanes` at once; return the failed ones."""
    alone = [job for job in jobs if job.scenario in ALONE]
    failed = run_lanes(alone, 1) if alone else []
    if not failed:
        failed = run_lanes([job for job in jobs if job.scenario not in ALONE], lanes)
    return failed


def run_lanes(jobs: list[Job], lanes: int) -> list[Job]:
    """Run the jobs, longest first, at most `lanes` at once; return the failed ones."""
    pending = sorted(jobs, key=lambda job: -job.weight)
    failed: list[Job] = []
    lock = threading.Lock()

    def lane() -> None:
        while True:
            with lock:
                if failed or not pending:
                    return
                job = pending.pop(0)
                print(f"=== molecule scenario {job.name} started", flush=True)
            job.run()
            with lock:
                sys.stdout.write(job.log.read_text(errors="replace"))
                outcome = "passed" if job.rc == 0 else f"FAILED (rc {job.rc})"
                print(f"=== molecule scenario {job.name} took {job.seconds} s: {outcome}", flush=True)
                if job.rc != 0:
                    failed.append(job)

    threads = [threading.Thread(target=lane) for _lane in range(lanes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="scenarios at once (default 2)")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "build" / "molecule")
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO[@BIN_DIR]")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs: must be at least 1")
    args.log_dir.mkdir(parents=True, exist_ok=True)
    jobs = [Job(spec, args.log_dir) for spec in args.scenarios]
    for job in jobs:
        if not (ROOT / "molecule" / job.scenario / "molecule.yml").is_file():
            parser.error(f"scenario {job.scenario}: no molecule/{job.scenario}/molecule.yml")
    started = time.monotonic()
    failed = run_scenarios(jobs, args.jobs)
    done = [job for job in jobs if job.rc is not None]
    print(f"=== molecule: {len(done)} of {len(jobs)} scenarios ran in {round(time.monotonic() - started)} s "
          f"({args.jobs} at once; their own times add up to {sum(job.seconds for job in done)} s)")
    for job in sorted(done, key=lambda job: -job.seconds):
        print(f"  {job.name}: {job.seconds} s{'' if job.rc == 0 else ' FAILED'}")
    if failed:
        for job in failed:
            print(f"=== why {job.name} failed ({job.log}):")
            print("\n".join("  " + line for line in why_failed(job.log.read_text(errors="replace"))), flush=True)
        print("molecule: FAILED: " + ", ".join(job.name for job in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
