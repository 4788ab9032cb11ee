# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""After side_effect: v2 everywhere, the topology kept, the load summaries clean, one build per release."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("prod")


def pm2_home(host):
    """The app user's PM2_HOME on this host: node3's pm2_runtime gives it one of its own (host_vars)."""
    users = host.ansible.get_variables().get("pm2_runtime_users", [])
    return next((u.get("pm2_home") for u in users if u["name"] == "app" and u.get("pm2_home")), "/home/app/.pm2")


def jlist(host, home=None):
    return json.loads(host.check_output("runuser -u app -- env PM2_HOME=%s pm2 jlist", home or pm2_home(host)))


def test_current_is_a_release_and_the_app_runs_v2(host):
    target = host.check_output("readlink /srv/shop/current")
    assert target.startswith("releases/")
    reply = json.loads(host.check_output("curl -fsS http://127.0.0.1:31000/"))
    assert reply["version"] == "2.0.0"
    assert reply["release"] == target.split("/")[1]


def test_topology_singletons(host):
    apps = jlist(host)
    by_name = {}
    for proc in apps:
        by_name.setdefault(proc["name"], []).append(proc)
    assert len(by_name["api"]) == 2
    assert [p["pm2_env"]["exec_mode"] for p in by_name["device"]] == ["fork_mode"]
    assert ("billing" in by_name) is (host.backend.get_hostname() == "node1")


def test_no_lock_left(host):
    assert host.run("ls /var/lib/nodefleet/deploy-locks/*.lock").rc != 0


def test_load_through_the_lb_lost_nothing():
    for name in ("deploy", "rollback", "switch", "switch-back"):
        summary = json.loads((EPHEMERAL / f"load-{name}.json").read_text())
        for app in ("api", "device", "notify"):
            assert summary["targets"][app]["requests"] > 200
            assert summary["targets"][app]["failed"] == 0
            assert summary["targets"][app]["hung"] == 0


def test_one_build_per_release():
    builds = (EPHEMERAL / "build" / "builds.log").read_text().splitlines()
    assert len(builds) == len({line.split()[1] for line in builds}) == 2


def test_systemd_app_runs_the_current_release_and_not_in_pm2(host):
    assert host.service("nodefleet-notify@0.service").is_running
    assert host.service("nodefleet-notify@0.service").is_enabled
    pid = int(host.check_output("systemctl show -p MainPID --value nodefleet-notify@0.service"))
    with host.sudo():
        cwd = host.check_output("readlink /proc/%s/cwd", str(pid))
    assert cwd == "/srv/shop/" + host.check_output("readlink /srv/shop/current")
    names = {proc["name"] for proc in jlist(host)}
    assert "notify" not in names


def test_status_shows_both_supervisors():
    rows = json.loads((EPHEMERAL / "status.json").read_text())
    notify = [r for r in rows if r["app"] == "notify"]
    assert len(notify) == 3
    assert {(r["supervisor"], r["online"], r["desired"]) for r in notify} == {("systemd", 1, 1)}
    assert {r["supervisor"] for r in rows if r["app"] == "api"} == {"pm2"}


def test_a_custom_pm2_home_is_deployed_to(host):
    """node3's daemon lives in /var/lib/app-pm2 (pm2_runtime_users): the deploy ran the apps there, not in ~/.pm2."""
    if host.backend.get_hostname() != "node3":
        pytest.skip("only node3 has a PM2_HOME of its own")
    assert pm2_home(host) == "/var/lib/app-pm2"
    assert {"api", "device"} <= {proc["name"] for proc in jlist(host)}
    default_home = "/home/app/.pm2"
    if host.file(default_home + "/pm2.pid").exists:
        assert not {"api", "device"} & {proc["name"] for proc in jlist(host, default_home)}
