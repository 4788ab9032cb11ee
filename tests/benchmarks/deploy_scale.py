# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: nodefleet.pm2.deploy on 3 and on 9 hosts behind HAProxy, under load through the LB.

Run from the repo root as root: `make bench-deploy`. One fleet of 9 app hosts + 1 LB; the 3-host figure limits the
deploy to the first 3. Per size: a first deploy (v1), then the measured deploy of v2 with tests/load/loadgen.py
running for its whole length. Serial is 34%, so both sizes roll in 3 batches. Figures: wall time, builds per
deploy (lines added to builds.log), failed and hung (> 1 s) requests. Writes docs/benchmarks.md between the
markers of this benchmark.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORK = ROOT / "build/bench-deploy"
FLEET = ["python3", str(ROOT / "tests/fleet/fleet.py"), "--name", "bdeploy"]
SUBNET = "192.168.242.0/24"
HOSTS = [f"app{i}" for i in range(1, 10)]
ENV = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_PIPELINING="True", ANSIBLE_FORCE_COLOR="0",
           ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build/collections"), PATH=f"{BIN}:{os.environ['PATH']}")
MARKERS = ("<!-- deploy-scale:begin -->", "<!-- deploy-scale:end -->")


def run(argv, env=None, **kw):
    proc = subprocess.run([str(a) for a in argv], check=False, capture_output=True, text=True, env=env or ENV, **kw)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(str(a) for a in argv)} failed (rc {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    return proc


def vars_file() -> Path:
    """The inventory of molecule/deploy (3 apps: cluster, host-singleton fork, fleet singleton), serial 34%."""
    import yaml  # from the venv (ansible-core depends on it)

    molecule = yaml.safe_load((ROOT / "molecule/deploy/molecule.yml").read_text())
    data = dict(molecule["provisioner"]["inventory"]["group_vars"]["all"])
    data.update(deploy_test_dir=str(WORK), pm2_deploy_serial="34%", pm2_deploy_build_root=str(WORK / "build"),
                pm2_deploy_source_path=str(WORK / "src/v1"), lb_pool_group="prod9")
    for app in data["pm2_deploy_apps"]:  # the scenario's fleet singleton runs on node1; here the hosts are app1..
        if app.get("run_on"):
            app["run_on"] = HOSTS[0]
    path = WORK / "vars.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def sources() -> None:
    for name, release in {"v1": {"version": "1.0.0"}, "v2": {"version": "2.0.0"}}.items():
        dest = WORK / "src" / name
        shutil.copytree(ROOT / "docs/example/app", dest, dirs_exist_ok=True)
        (dest / "release.json").write_text(json.dumps(release) + "\n")


def builds() -> int:
    log = WORK / "build/builds.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def deploy(inventory, extra, limit, release, lb_ip=None) -> dict:
    playbook = ["ansible-playbook", "-i", inventory, "-e", f"@{extra}", "nodefleet.pm2.deploy", "-l", limit,
                "-e", f"pm2_deploy_source_path={WORK / 'src' / release}"]
    before, load, stop, out = builds(), None, WORK / "load.stop", WORK / f"load-{limit}.json"
    if lb_ip:
        stop.unlink(missing_ok=True)
        load = subprocess.Popen([sys.executable, ROOT / "tests/load/loadgen.py", "--allow-subnet", SUBNET,
                                 "--target", f"api={lb_ip}:8000", "--target", f"device={lb_ip}:8001",
                                 "--duration", "600", "--stop-file", stop, "--out", out], stdout=subprocess.DEVNULL)
        time.sleep(2)
    start = time.monotonic()
    run(playbook)
    seconds = time.monotonic() - start
    summary = {}
    if load:
        stop.touch()
        load.wait(30)
        summary = json.loads(out.read_text())
    return {"seconds": round(seconds, 1), "builds": builds() - before, "load": summary}


def main() -> int:
    subprocess.run(FLEET + ["down", "--missing-ok"], check=True)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    inventory = WORK / "inventory.yml"
    groups = [f"prod3={','.join(HOSTS[:3])}", f"prod9={','.join(HOSTS)}", "prod=" + ",".join(HOSTS), "lb=lb"]
    run(FLEET + ["up", "--subnet", SUBNET, "--host-names", ",".join(HOSTS + ["lb"]), "--inventory", inventory]
        + [a for g in groups for a in ("--group", g)])
    try:
        sources()
        extra = vars_file()
        lb_ip = json.loads(run(FLEET + ["status", "--json"]).stdout)["hosts"]["lb"]["ip"]
        run(["ansible-playbook", "-i", inventory, "-e", f"@{extra}", ROOT / "molecule/deploy/prepare.yml"],
            cwd=ROOT, env=dict(ENV, MOLECULE_EPHEMERAL_DIRECTORY=str(WORK), MOLECULE_PROJECT_DIRECTORY=str(ROOT)))
        results = {}
        for size in (3, 9):
            deploy(inventory, extra, f"prod{size}", "v1")
            results[size] = deploy(inventory, extra, f"prod{size}", "v2", lb_ip)
            deploy(inventory, extra, f"prod{size}", "v1")  # back, so the next size deploys v2 again
    finally:
        subprocess.run(FLEET + ["down", "--missing-ok"], check=False)
    r3, r9 = results[3], results[9]
    lines = [MARKERS[0], "", "| hosts | deploy wall time | builds | requests through the LB | failed | hung > 1 s |",
             "|---|---|---|---|---|---|"]
    for size, r in results.items():
        lines.append(f"| {size} | {r['seconds']} s | {r['builds']} | {r['load']['requests']} | {r['load']['failed']} "
                     f"| {r['load']['hung']} |")
    lines += ["", f"9 vs 3 hosts: {r9['seconds'] / r3['seconds']:.2f}x (target <= 2x).", "", MARKERS[1]]
    doc = ROOT / "docs/benchmarks.md"
    text = doc.read_text()
    head, _sep, rest = text.partition(MARKERS[0])
    tail = rest.partition(MARKERS[1])[2]
    doc.write_text(head + "\n".join(lines) + tail)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
