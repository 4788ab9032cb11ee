# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The platform `make demo` deployed (docs/example), checked on the hosts and through the load balancer.

Run by `make demo-test` after `make demo`, against the fleet named by DEMO_FLEET. PM2 is read on each host
(`pm2 jlist` of the platform user), not through the collection's status playbook, and every app with an LB
backend is asked through HAProxy, whose own view of its servers is read from its admin socket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FLEET_TOOL = REPO / "tests" / "fleet" / "fleet.py"
FLEET = os.environ.get("DEMO_FLEET", "demo")
# When set: the version (release.json) every app must answer with.
VERSION = os.environ.get("DEMO_VERSION")
PROD = ["prod-h1", "prod-h2", "prod-h3"]
STAGING = ["staging-h1"]
PM2 = "runuser -u platform -- env PM2_HOME=/home/platform/.pm2 /usr/local/bin/pm2"
# What docs/example/inventory asks for: app -> host -> instances ("max": one per CPU of the host).
EXPECTED = {
    "api-gateway": {"prod-h1": 4, "prod-h2": 4, "prod-h3": "max", "staging-h1": 1},
    "user-service": {"prod-h1": 2, "prod-h2": 2, "prod-h3": 2, "staging-h1": 1},
    "device-service": {h: 1 for h in PROD + STAGING},
    "app-service": {h: 1 for h in PROD + STAGING},
    "billing-service": {"prod-h1": 1, "staging-h1": 1},  # a fleet singleton: one host per environment
    "notification-service": {h: 1 for h in PROD + STAGING},
    "trackflow": {"prod-h1": "max", "prod-h2": "max", "prod-h3": "max", "staging-h1": 1},
}
# LB frontends of docs/example (lb_backend, lb_port): the prod apps with a backend.
# The fleet's bridge is local: never through a proxy of the environment.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
LB_PORTS = {"api-gateway": 30000, "user-service": 30001, "device-service": 30002, "app-service": 30003,
            "notification-service": 30006, "trackflow": 3000}


def fleet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FLEET_TOOL), "--name", FLEET, *args], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def hosts() -> dict:
    status = fleet("status", "--json")
    assert status.returncode == 0, f"fleet {FLEET!r} is not up (run make demo first): {status.stderr}"
    return json.loads(status.stdout)["hosts"]


def ssh(host: str, command: str) -> str:
    argv = fleet("ssh", host).stdout.split()
    result = subprocess.run(argv + [command], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{host}: {command}: rc {result.returncode}: {result.stderr}"
    return result.stdout


def jlist(host: str) -> list:
    out = ssh(host, f"{PM2} jlist")
    return json.loads(out[out.index("["):])  # a first call in a fresh PM2_HOME prints a banner first


@pytest.mark.parametrize("host", PROD + STAGING)
def test_every_app_online_with_its_instance_count(hosts, host):
    cpus = int(ssh(host, "nproc").strip())
    want = {app: (cpus if per_host[host] == "max" else per_host[host])
            for app, per_host in EXPECTED.items() if host in per_host}
    processes = jlist(host)
    online = Counter(p["name"] for p in processes if p["pm2_env"]["status"] == "online")
    assert dict(online) == want, f"{host}: online processes by app"
    assert len(processes) == sum(want.values()), f"{host}: processes that are not online: " + ", ".join(
        f"{p['name']}={p['pm2_env']['status']}" for p in processes if p["pm2_env"]["status"] != "online")


def current_release(host: str) -> str:
    return Path(ssh(host, "readlink -f /srv/platform/current").strip()).name


def test_every_host_runs_the_same_release(hosts):
    releases = {host: current_release(host) for host in PROD + STAGING}
    assert len(set(releases.values())) == 1, releases


def test_haproxy_has_every_prod_host_up_in_every_backend(hosts):
    stat = ssh("lb-h1", "python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); "
                        "s.connect('/run/haproxy/admin.sock'); s.sendall(b'show stat\\n'); "
                        "print(b''.join(iter(lambda: s.recv(65536), b'')).decode())\"")
    lines = [line.split(",") for line in stat.splitlines() if line and not line.startswith("#")]
    servers = {(row[0], row[1]): row[17] for row in lines if row[1] not in ("FRONTEND", "BACKEND")}
    want = {(app, host): "UP" for app in LB_PORTS for host in PROD}
    assert servers == want


@pytest.mark.parametrize("app", sorted(LB_PORTS))
def test_every_lb_app_answers_through_haproxy(hosts, app):
    release = current_release("prod-h1")
    seen = set()
    for _request in range(12):
        with DIRECT.open(f"http://{hosts['lb-h1']['ip']}:{LB_PORTS[app]}/", timeout=10) as response:
            body = json.loads(response.read())
        assert (body["service"], body["release"]) == (app, release)
        if VERSION:
            assert body["version"] == VERSION
        seen.add(body["pid"])
    # Round robin over three hosts: the answers come from more than one process.
    assert len(seen) > 1, f"{app}: every answer came from pid {seen}"
